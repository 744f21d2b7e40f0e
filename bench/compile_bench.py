"""Compiled vs eager vs reference training speed of one spec, side by side on this machine.

    python bench/compile_bench.py specs/hope.nl --set dim=128 --set layers=2 --set heads=4 --set context=512

Each mode runs in its own process (so peak memory is its own): a training step is forward, the
next-token loss, backward and an AdamW step over a batch of random bytes. The reference
interpreter is timed on a shorter prefix of the same batch (it runs token by token; its cost per
token does not fall with length), which the table states. Results go to bench/results/.

Model FLOP utilisation (MFU) = training FLOPs per token (counted by
`torch.utils.flop_counter.FlopCounterMode` on one eager forward + backward of the same batch) ×
tokens/s ÷ this machine's fp32 matmul FLOP/s (the best of square products of 512 and 2048, measured
in the same run, in a process of its own).

`--before DIR` measures an older version side by side in the same run: DIR holds it installed
(`git worktree add /tmp/old REV && pip install --no-deps --target DIR /tmp/old`); its eager and
compiled modes (and its FLOPs per token) run right before the current version's, each in a process
whose `nldsl` is DIR's, and the table gains their rows and the speedups.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))    # the helpers every benchmark shares
from _measure import cpu_name, matmul_peak

ROOT = Path(__file__).resolve().parent.parent


def run_mode(spec: str, overrides: dict, mode: str, batch: int, steps: int, length: int) -> dict:
    import torch

    import nldsl
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = nldsl.reference(spec, overrides=overrides) if mode == "reference" else nldsl.load(spec, overrides=overrides)
    context = int(overrides.get("context", 256)) if mode != "reference" or not length else length
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    tokens = torch.randint(0, int(overrides.get("vocab", 256)), (batch, context))
    if mode == "compiled":
        model.compile()
    times = []
    first = None
    for i in range(steps):
        t0 = time.perf_counter()
        loss = model.loss(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        else:
            times.append(dt)
    steady = sorted(times)[len(times) // 2] if times else first
    return {"mode": mode, "tokens_per_s": batch * context / steady, "first_step_s": first, "step_s": steady,
            "tokens": batch * context, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def flops_per_token(spec: str, overrides: dict, batch: int) -> float:
    """Training FLOPs per token: one eager forward + backward, counted by FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import nldsl
    torch.manual_seed(0)
    model = nldsl.load(spec, overrides=overrides)
    context = int(overrides.get("context", 256))
    tokens = torch.randint(0, int(overrides.get("vocab", 256)), (batch, context))
    with FlopCounterMode(display=False) as counter:
        model.loss(tokens).backward()
    return counter.get_total_flops() / (batch * context)


def child(args, mode: str, before: bool = False) -> dict:
    """One measurement in a process of its own (peak memory and the inductor cache are its own);
    `before`: of the version installed in `--before`."""
    sets = [arg for s in args.set for arg in ("--set", s)]
    cmd = [sys.executable, __file__, args.spec, "--batch", str(args.batch), "--steps", str(args.steps),
           "--reference-length", str(args.reference_length), "--mode", mode, *sets]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(ROOT / "build" / f"inductor-{time.time_ns()}")}
    if before:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.before).resolve()), env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reference-length", type=int, default=0, help="tokens per sequence for the reference "
                   "(default: the full context, as the other modes)")
    p.add_argument("--before", metavar="DIR", help="an older version installed in DIR, measured side by side")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    overrides = {k: float(v) for k, v in (s.split("=") for s in args.set)}
    if args.mode == "peak":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        print(json.dumps({"flops": matmul_peak()}))
        return
    if args.mode == "flops":
        print(json.dumps({"flops_per_token": flops_per_token(args.spec, overrides, args.batch)}))
        return
    if args.mode:   # a child process: one mode, printed as JSON
        steps = 1 if args.mode == "reference" else args.steps
        print(json.dumps(run_mode(args.spec, overrides, args.mode, args.batch, steps, args.reference_length)))
        return
    results = {}
    for mode in ("eager", "compiled", "reference"):
        if args.before and mode != "reference":    # back to back, so both see the machine alike
            results[f"{mode} (before)"] = {**child(args, mode, before=True), "mode": f"{mode} (before)"}
            print(results[f"{mode} (before)"], flush=True)
        results[mode] = child(args, mode)
        print(mode, results[mode], flush=True)
    results["flops_per_token"] = child(args, "flops")["flops_per_token"]
    if args.before:
        results["flops_before"] = child(args, "flops", before=True)["flops_per_token"]
    results["peak"] = child(args, "peak")["flops"]
    print(f"{results['flops_per_token']:,.0f} FLOPs/token, matmul peak {results['peak'] / 1e9:.0f} GFLOP/s")
    write(args, overrides, results)


def write(args, overrides: dict, results: dict) -> None:
    import torch
    e, c, r = results["eager"], results["compiled"], results["reference"]
    name = Path(args.spec).stem
    config = ", ".join(f"{k} {int(v) if v == int(v) else v}" for k, v in overrides.items())
    lines = [f"# {name}: compiled vs eager vs reference (training)", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
             f"Config: {config}, batch {args.batch}. A step = forward + next-token loss + backward + AdamW.",
             "Compiled = `model.compile()` (torch.compile, inductor, fullgraph per block) on a cold inductor cache;"
             f" the reference interpreter runs one step on {r['tokens'] // args.batch} tokens per sequence.", "",
             f"Training FLOPs per token {results['flops_per_token'] / 1e6:,.2f} M (FlopCounterMode, one eager forward"
             f" + backward); fp32 matmul peak {results['peak'] / 1e9:,.0f} GFLOP/s (measured in this run).", ""]
    rows = [c, e, r]
    if args.before:
        lines += [f"Before = the version installed in `{args.before}`, measured in the same run (its FLOPs per "
                  f"token: {results['flops_before'] / 1e6:,.2f} M).", ""]
        rows = [results["compiled (before)"], c, results["eager (before)"], e, r]
    lines += ["| mode | tokens/s | MFU | steady step (s) | first step (s) | peak RSS (MB) |",
              "|---|---:|---:|---:|---:|---:|"]
    for m in rows:
        flops = results["flops_before" if m["mode"].endswith("(before)") else "flops_per_token"]
        mfu = m["tokens_per_s"] * flops / results["peak"]
        lines.append(f"| {m['mode']} | {m['tokens_per_s']:,.1f} | {100 * mfu:.1f} % | {m['step_s']:.2f} | "
                     f"{m['first_step_s']:.1f} | {m['peak_rss_mb']:,.0f} |")
    lines += ["", f"compiled / eager = **{c['tokens_per_s'] / e['tokens_per_s']:.2f}×**, "
                  f"compiled / reference = **{c['tokens_per_s'] / r['tokens_per_s']:,.0f}×**, "
                  f"first compiled step (compile included) = **{c['first_step_s']:.0f} s**.", ""]
    if args.before:
        speedup = {m: results[m]["tokens_per_s"] / results[f"{m} (before)"]["tokens_per_s"]
                   for m in ("compiled", "eager")}
        lines += [f"Against before: compiled **{speedup['compiled']:.2f}×**, eager **{speedup['eager']:.2f}×** "
                  f"(tokens/s); first compiled step {results['compiled (before)']['first_step_s']:.0f} s before.", ""]
    out = ROOT / "bench" / "results" / f"compile_{name}.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
