"""`every token chunk C` against `every C tokens` on one MLP memory, side by side on this machine.

    python bench/in_chunk_bench.py                      # eager; writes bench/results/in_chunk.md
    python bench/in_chunk_bench.py --compiled           # adds the compiled model (slow to compile on CPU)

The memory is bench/specs/titans_memory.nl's (a 2-layer residual MLP per head with layernorm, gd with
momentum and retention; dim 128, 4 heads, context 256, batch 4). Three variants of its learn clause:

- `every 16 tokens`: the state is held for 16 tokens, reads see the committed state (period kernel);
- `every token chunk 16`: the state changes every token, gradients are taken at each chunk's start,
  and reads see every token's state: the `in_chunk` kernel (dual form);
- the same clause on the per-token path it took before `in_chunk` existed (`generic_update`, one
  token per segment), by turning the in-chunk binding off in that process.

Each variant runs in a process of its own: a step is forward, next-token loss, backward and AdamW on
random tokens; tokens/s is the median step after warm-up. MFU = training FLOPs per token
(FlopCounterMode, one eager forward + backward) × tokens/s ÷ the fp32 matmul peak measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "bench" / "specs" / "titans_memory.nl"
PERIOD = "every 16 tokens"
VARIANTS = {"every 16 tokens": PERIOD, "every token chunk 16 (in_chunk)": "every token chunk 16",
            "every token chunk 16 (per-token path)": "every token chunk 16"}
BATCH, CONTEXT = 4, 256


def measure(variant: str, compiled: bool, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import nldsl
    from nldsl.lower import kernels
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    from _measure import matmul_peak, set_threads
    set_threads()
    if variant.endswith("(per-token path)"):
        kernels._one_prediction = lambda learn: False      # the binding `in_chunk` replaced
    text = SPEC.read_text(encoding="utf-8").replace(PERIOD, VARIANTS[variant])
    path = ROOT / "build" / f"in_chunk_{os.getpid()}.nl"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        spec = nldsl.load_spec(path)
        (block,) = spec.models["TitansMemory"].blocks
        kernel = str(kernels.bind(block.memories["M"], block).kernel)
        torch.manual_seed(0)
        model = nldsl.load(path)
    finally:
        path.unlink()
    tokens = torch.randint(0, 16, (BATCH, CONTEXT), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model.loss(tokens).backward()
    model.zero_grad()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    if compiled:
        model.compile()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.loss(tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[2:] if len(times) > 3 else times[1:])
    return {"variant": variant, "kernel": kernel, "compiled": compiled, "step_s": step,
            "tokens_per_s": BATCH * CONTEXT / step, "first_step_s": times[0],
            "flops_per_token": counter.get_total_flops() / (BATCH * CONTEXT), "peak": matmul_peak()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compiled", action="store_true", help="also measure the compiled model")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "in_chunk.md"))
    args = p.parse_args()
    if args.child:
        variant, mode = json.loads(args.child)
        print(json.dumps(measure(variant, mode == "compiled", args.steps)))
        return
    modes = ["eager", "compiled"] if args.compiled else ["eager"]
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    from _measure import cpu_name
    rows = []
    for mode in modes:
        for variant in VARIANTS:
            if mode == "compiled" and variant.endswith("(per-token path)"):
                continue       # 256 segments a sequence: compiling it measures the compiler, not the model
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", json.dumps([variant, mode])]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
            if not lines:
                raise SystemExit(f"{variant} ({mode}) failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(lines[-1]) | {"mode": mode})
            print(f"{mode:8} {variant:40} {rows[-1]['tokens_per_s']:10,.0f} tokens/s", flush=True)
    peak = max(r["peak"] for r in rows)
    lines = ["# `every token chunk C` (in_chunk, dual form) against `every C tokens`", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s (best of the run's "
             "processes). Memory: bench/specs/titans_memory.nl's M (dim 128, 4 heads, context 256, batch 4); "
             "`python bench/in_chunk_bench.py` (see its docstring).", "",
             "| mode | learn clause | kernel | tokens/s | step (s) | FLOPs/token (M) | MFU | ÷ `every 16 tokens` |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for mode in modes:
        base = next(r for r in rows if r["mode"] == mode and r["variant"] == "every 16 tokens")
        for r in (r for r in rows if r["mode"] == mode):
            mfu = r["flops_per_token"] * r["tokens_per_s"] / peak
            lines.append(f"| {mode} | {r['variant']} | `{r['kernel']}` | {r['tokens_per_s']:,.0f} | "
                         f"{r['step_s']:.3f} | {r['flops_per_token'] / 1e6:.2f} | {100 * mfu:.1f} % | "
                         f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}× |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
