"""Sampling bytes from a trained model. The prompt runs as one sequence; then each new byte is fed
alone with the state carried over, so the memories keep learning in context as the text grows —
exactly what they would do had the whole text been one training sequence."""

from __future__ import annotations

import torch


def generate(model, prompt: bytes, length: int, temperature: float = 0.8, top_k: int | None = None,
             seed: int = 0) -> bytes:
    """`length` bytes after `prompt` (temperature 0: greedy)."""
    if not prompt:
        prompt = b"\n"
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=model.device)
    out = bytearray()
    with torch.no_grad():
        logits, state = model(tokens, final=False)
        for _ in range(length):
            nxt = pick(logits[0, -1].float().cpu(), temperature, top_k, gen)
            out.append(nxt)
            logits, state = model(torch.tensor([[nxt]], device=model.device), state, final=False)
    return bytes(out)


def pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    logits = logits[:256]       # byte-level: a larger vocabulary's extra tokens are never text
    if temperature <= 0:
        return int(logits.argmax())
    if top_k:
        cut = logits.topk(min(top_k, len(logits))).values[-1]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    probs = torch.softmax(logits / temperature, -1)
    return int(torch.multinomial(probs, 1, generator=gen))
