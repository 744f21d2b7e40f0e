"""The peer side of the Titans comparison: titans-pytorch (0.5.5) NeuralMemory at dim 128, 4 heads,
chunk 16, 2-layer MLP memory with expansion 4, timed forward + backward + AdamW on 4 × 256 tokens.

Runs in bench/.peers-venv (bench/peers/setup.sh). One variant per process, one JSON line out:

    bench/.peers-venv/bin/python bench/peers/titans_peer.py --variant sequential
    bench/.peers-venv/bin/python bench/peers/titans_peer.py --variant parallel
    bench/.peers-venv/bin/python bench/peers/titans_peer.py --variant issue

sequential  NeuralMemory(batch_size = 16): the memory's weights advance every 16 tokens and each
            chunk's surprise is taken at the weights the previous chunks left, as specs/titans.nl's
            `every 16 tokens` (and the Titans paper's chunk-wise training, eq. 16-18).
parallel    NeuralMemory(batch_size = None), the package's default: every chunk's surprise is taken
            at the sequence's initial weights, so all 16 chunks run at once; the momentum and the
            forgetting scans then combine them. Less sequential work than the spec asks for.
issue       NeuralMemory(dim = 128, heads = 4, chunk_size = 16) and every other argument at its
            default, the call the issue timed (132 tokens/s). Its default dim_head is dim, so each
            of the 4 heads is 128 wide (an MLP 128 → 512 → 128 per head: 16× the weights of a
            32-wide head, 4× the model's width in all): not the spec's memory, shown to reconcile
            with the issue's number.

Both sides run the same model around the memory, so the loss is the same: token embedding
(vocab 16, as bench/specs/titans_memory.nl), h = h + NeuralMemory(h), RMSNorm, output head,
next-token cross-entropy. NeuralMemory's own projections play the spec's W_q, W_k, W_v, W_theta,
W_eta, W_alpha (to_queries, to_keys, to_values, to_adaptive_step, to_momentum, to_decay_factor)
and W_o (combine_heads).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import StepClock, emit, peak_rss_mb, set_threads, step_flops

VOCAB, DIM, HEADS, CHUNK, CONTEXT, BATCH = 16, 128, 4, 16, 256, 4

# NeuralMemory's arguments, with the reason for each (copied into bench/results/peers.md).
OPTIONS = {
    "dim": (DIM, "width, as titans_memory.nl"),
    "heads": (HEADS, "4 heads, as titans_memory.nl's `per head`"),
    "dim_head": (DIM // HEADS, "32 features per head, so the heads split dim 128 as nldsl's do (the "
                 "default, dim_head = dim, would give every head the full width: 4× the memory)"),
    "chunk_size": (CHUNK, "one surprise, learning rate, momentum and decay gate per 16-token chunk; "
                   "the spec's chunk is 16 tokens"),
    "default_model_kwargs": ({"depth": 2, "expansion_factor": 4.0},
                             "MemoryMLP 32→128→32 per head with GELU, as mlp(depth = 2, expand = 4, act = gelu)"),
    "mem_model_norm_add_residual": (True, "LayerNorm on the MLP branch plus a residual, as `norm = layernorm, "
                                    "residual` (the package's default)"),
    "per_head_learned_parameters": (True, "each head's initial memory weights are learned, as `per head init "
                                    "learned` (default)"),
    "momentum": (True, "momentum on the surprise, as gd(momentum = eta) (default)"),
    "momentum_order": (1, "first-order momentum (default)"),
    "activation": ("nn.SiLU()", "q, k, v = silu(x W), as titans.nl (default: none)"),
    "qk_rmsnorm": (True, "per-head normalization of q and k, the nearest option to titans.nl's "
                   "l2norm(·, groups = heads) (default: off)"),
    "pre_rmsnorm": (True, "RMSNorm of the input before the projections, as x = rmsnorm(h) (default)"),
    "post_rmsnorm": (False, "no norm on the read (default)"),
    "default_step_transform_max_lr": (0.1, "θ = 0.1·sigmoid(x W_θ), as titans.nl (default: 1.0)"),
    "use_accelerated_scan": (False, "the accelerated scan needs CUDA (default)"),
}


class Wrapped:
    """embed → h + NeuralMemory(h) → RMSNorm → head → next-token CE: the frame nldsl puts around
    every model, so both sides compute the same loss."""

    def __init__(self, variant: str):
        import torch
        from titans_pytorch import NeuralMemory
        from torch import nn
        if variant == "issue":
            kwargs = {"dim": DIM, "heads": HEADS, "chunk_size": CHUNK}
        else:
            kwargs = {k: v for k, (v, _) in OPTIONS.items()}
            kwargs["activation"] = nn.SiLU()
            kwargs["batch_size"] = CHUNK if variant == "sequential" else None
        self.kwargs = {k: (repr(v) if isinstance(v, nn.Module) else v) for k, v in kwargs.items()}
        self.embed = nn.Embedding(VOCAB, DIM)
        self.memory = NeuralMemory(**kwargs)
        # NeuralMemory's per-head initial weights are einops.repeat views of one tensor (stride 0
        # along the heads), so an in-place AdamW weight decay on them raises "more than one element
        # of the written-to tensor refers to a single memory location"; give each its own storage
        # (same values, same shapes: the heads start equal, as the package intends).
        for i, w in enumerate(self.memory.memory_model_parameters):
            self.memory.memory_model_parameters[i] = nn.Parameter(w.detach().clone())
        self.norm = nn.RMSNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.modules = nn.ModuleList([self.embed, self.memory, self.norm, self.head])
        self.torch = torch

    def loss(self, tokens):
        F = self.torch.nn.functional
        h = self.embed(tokens)
        retrieved, _state = self.memory(h)
        h = h + retrieved
        logits = self.head(self.norm(h))
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", choices=("sequential", "parallel", "issue"), required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--per-window", type=int, default=1)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    threads = set_threads()

    import torch
    torch.manual_seed(0)
    model = Wrapped(args.variant)
    model.modules.train()
    params = list(model.modules.parameters())
    opt = torch.optim.AdamW(params, lr=4e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=g)

    def step() -> None:
        loss = model.loss(tokens)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        opt.step()

    flops = step_flops(step)
    clock = StepClock(args.warmup, args.windows, args.per_window, BATCH * CONTEXT)
    t0 = time.perf_counter()
    clock.start = t0
    clock.run(step)
    res = clock.result()
    import importlib.metadata as md
    emit({
        "side": "peer", "package": "titans-pytorch", "version": md.version("titans-pytorch"),
        "torch": torch.__version__, "threads": threads, "variant": args.variant, **res,
        "flops_per_token": flops / (BATCH * CONTEXT),
        "wall_s": time.perf_counter() - t0, "peak_rss_mb_end": peak_rss_mb(),
        "parameters": sum(p.numel() for p in params),
        "memory_parameters": sum(p.numel() for p in model.memory.parameters()),
        "config": {"NeuralMemory": model.kwargs, "vocab": VOCAB, "batch": BATCH, "tokens_per_sequence": CONTEXT,
                   "adamw": {"lr": 4e-4, "weight_decay": 0.1}, "clip": 1.0},
        "options": {k: v[1] for k, v in OPTIONS.items()},
    })


if __name__ == "__main__":
    main()
