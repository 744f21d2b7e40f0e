"""The nldsl side of the peer benchmark: one model, one mode per process, one JSON line out.

    .venv/bin/python bench/peers/nldsl_side.py --model hope --mode compiled
    .venv/bin/python bench/peers/nldsl_side.py --model titans_memory --mode eager

hope           specs/hope.nl at dim 128, 2 layers (heads 4, vocab 256 are its defaults), context 256
titans_memory  bench/specs/titans_memory.nl: one Titans neural-memory layer (specs/titans.nl's
               memory M and its learn statement, dim 128, 4 heads, chunk 16), vocab 16

A step is `model.loss(tokens)` on a batch of 4 × 256 random tokens (the in-context memory updates
run inside the forward, as the spec says), backward, gradient clipping at 1.0 and an AdamW step
(torch.optim.AdamW, lr and weight decay from the spec's train block). `compiled` calls
`model.compile()` first; the compilation happens during the first (warm-up) steps, is excluded
from the throughput and reported as `compile_s` (the time of the first step, compile included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import StepClock, emit, peak_rss_mb, set_threads, step_flops

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "hope": (ROOT / "specs" / "hope.nl", {"dim": 128, "layers": 2, "heads": 4, "vocab": 256, "context": 256},
             {"lr": 3e-4, "weight_decay": 0.1}),
    "titans_memory": (ROOT / "bench" / "specs" / "titans_memory.nl",
                      {"dim": 128, "heads": 4, "layers": 1, "vocab": 16, "context": 256},
                      {"lr": 4e-4, "weight_decay": 0.1}),
}
BATCH, CONTEXT = 4, 256


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=tuple(MODELS), required=True)
    p.add_argument("--mode", choices=("compiled", "eager"), required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--per-window", type=int, default=2)
    args = p.parse_args()
    threads = set_threads()

    import torch

    import nldsl
    spec, overrides, adamw = MODELS[args.model]
    torch.manual_seed(0)
    model = nldsl.load(spec, overrides=overrides)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), **adamw)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, overrides["vocab"], (BATCH, CONTEXT), generator=g)

    def step() -> None:
        loss = model.loss(tokens)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()

    flops = step_flops(step)       # one eager step, before compiling: FlopCounterMode counts eager ops
    if args.mode == "compiled":
        model.compile()
    clock = StepClock(args.warmup, args.windows, args.per_window, BATCH * CONTEXT)
    t0 = time.perf_counter()
    clock.start = t0
    clock.run(step)
    res = clock.result()
    emit({
        "side": "nldsl", "model": args.model, "mode": args.mode, "torch": torch.__version__,
        "threads": threads, **res, "flops_per_token": flops / (BATCH * CONTEXT),
        "compile_s": res["first_step_s"] if args.mode == "compiled" else None,
        "wall_s": time.perf_counter() - t0, "peak_rss_mb_end": peak_rss_mb(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {"spec": str(spec.relative_to(ROOT)), "overrides": overrides, "batch": BATCH,
                   "tokens_per_sequence": CONTEXT, "adamw": adamw, "clip": 1.0,
                   "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")},
    })


if __name__ == "__main__":
    main()
