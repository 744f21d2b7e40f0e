"""The GPU check: exactness of CUDA against the CPU reference, then compiled bf16 training speed.

Installs nothing; runs from a source checkout (PYTHONPATH=.) with lark and pydantic importable
(bench/gpu_wheels.sh fetches them as wheels for a machine without internet). Prints one table and
writes it, with the machine's description, to --out (default bench/results/gpu.md).

    python bench/gpu_check.py                    # on a CUDA machine, under 8 minutes
    python bench/gpu_check.py --device cpu --quick   # the same path on a CPU, tiny, as a smoke test

1. Exactness: Hope and DeltaNet at a tiny size, compiled model on the device in float32 vs the
   reference interpreter on the CPU in float64, on the same tokens (logits, relative error).
2. Speed: DeltaNet and Hope at a GPU size (dim 512, 4 layers, 8 heads, 16×1024 tokens), `torch.compile`d, bf16
   autocast with float32 parameters and fast state, AdamW; tokens/s, model FLOP utilization (the
   cost model's forward FLOPs/token × 3 for forward + backward, over the chip's bf16 dense peak)
   and peak memory.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nldsl  # noqa: E402
from nldsl.cost import component_costs, totals  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}   # dense tensor-core FLOP/s


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def exactness(spec: str, device: torch.device) -> float:
    tiny = {"dim": 32, "heads": 2, "layers": 1, "context": 64}
    ref = nldsl.reference(ROOT / spec, overrides=tiny, dtype=torch.float64)
    model = nldsl.load(ROOT / spec, overrides=tiny, dtype=torch.float32)
    model.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    model.to(device)
    tok = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    want, _ = ref(tok)
    got, _ = model(tok.to(device))
    return ((got.double().cpu() - want).abs().max() / want.abs().max()).item()


def flops_per_token(spec: str, overrides: dict) -> float:
    graph = nldsl.check_file(ROOT / spec, overrides).graph()
    return totals(graph, component_costs(graph)).flops_per_token


def speed(spec: str, overrides: dict, batch: int, context: int, steps: int, device: torch.device,
          precision: str) -> dict:
    torch.manual_seed(0)
    model = nldsl.load(ROOT / spec, overrides=overrides).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, fused=device.type == "cuda")
    model.compile()
    tok = torch.randint(0, 256, (batch, context + 1), device=device)
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(
        device.type, enabled=False)

    def step() -> float:
        with cast:
            loss = model.loss(tok[:, :-1], tok[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    start = time.time()
    step()                                  # compiles
    step()                                  # and every pattern of firing memories
    compile_s = time.time() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.time()
    for _ in range(steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.time() - start
    rate = steps * batch * context / elapsed
    flops = 3 * flops_per_token(spec, overrides)
    peak = peak_flops(device)
    return {"tok_s": rate, "compile_s": compile_s, "loss": loss, "mfu": rate * flops / peak if peak else None,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a smoke test)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.md"))
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d')})", "", f"- device: {name}",
             f"- torch {torch.__version__}, Python {platform.python_version()}, precision {args.precision}", ""]
    lines += ["## Exactness: compiled float32 on the device vs the float64 reference on the CPU", "",
              "| spec | max relative error of the logits |", "|---|---|"]
    for spec in ("specs/hope.nl", "specs/deltanet.nl"):
        err = exactness(spec, device)
        lines.append(f"| {spec} | {err:.2e} |")
        print(lines[-1], flush=True)
    # one size per spec: every new shape is a new compile, and compiles dominate an 8-minute budget
    size = ("tiny", {"dim": 32, "layers": 1, "heads": 2}, 2, 64) if args.quick else \
        ("GPU size", {"dim": 512, "layers": 4, "heads": 8}, 16, 1024)
    lines += ["", "## Training speed: torch.compile, AdamW, fwd+bwd", "",
              "| spec | size | batch×context | tokens/s | MFU | peak memory | compile (s) | loss |",
              "|---|---|---|---|---|---|---|---|"]
    label, overrides, batch, context = size
    for spec in ("specs/deltanet.nl", "specs/hope.nl"):
        r = speed(spec, overrides, batch, context, 3 if args.quick else 20, device, args.precision)
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "—"
        mem = f"{r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else "—"
        dims = ", ".join(f"{k} {v}" for k, v in overrides.items())
        lines.append(f"| {spec} | {label}: {dims} | {batch}×{context} | {r['tok_s']:,.0f} | {mfu} | {mem} | "
                     f"{r['compile_s']:.0f} | {r['loss']:.3f} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
