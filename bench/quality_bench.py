"""Quality at CPU scale, one run: MQAR accuracy and Shakespeare held-out bits per byte for Hope,
Titans, Gated DeltaNet, DeltaNet, linear attention and a Transformer, with wall-clock; and
forgetting (Shakespeare, then Moby-Dick) for a CMS with a persistent slow level vs a Transformer.

    python bench/quality_bench.py                 # the whole grid; results in bench/results/quality.md
    python bench/quality_bench.py --quick         # one tiny cell per table (a smoke test)
    python bench/quality_bench.py --resume        # carry on a grid that was stopped: keep the runs done
    python bench/quality_bench.py --tasks mqar --dims 64 --shapes 128x8 --mqar-steps 1000 \
        --models hope deltanet deltanet_chunked --set hope:memory_period=16 --out bench/results/x.md
    python bench/quality_bench.py --tasks mqar --dims 64 --shapes 128x8 --mqar-steps 600 \
        --models titans_lmm titans_lmm_dgd titans_lmm_self titans_lmm_l2v titans_lmm_hope \
        --out bench/results/quality_ablation.md   # what each of Hope's memory choices costs

A model is a spec of specs/ or, failing that, of bench/specs/ (variants that exist to isolate one
difference, like deltanet_chunked, or the titans_lmm_* ablation: Titans' memory alone, then with one
of Hope's choices at a time).

The raw results (one record per run, with its time, commit and the machine's load average) go to
`quality.json` beside the Markdown file, which is rewritten from them after every run.

Every model is the shipped spec with `--set dim=D layers=2 heads=4 vocab=256`, trained by the same
outer optimizer (AdamW, lr 3e-3 for MQAR / the spec's own for text, weight decay 0.1, clip 1), the
same number of steps and tokens per step, on freshly generated batches (nothing can be memorized).
MQAR follows Zoology (keys in [1, 128), values in [128, 256), queries at p ∝ (i+1)^-0.99, no random
fill): accuracy over every query of 512 held-out sequences. Parameter counts are made equal where
a spec has a knob for it (EQUAL_SIZE: Hope's CMS width); the tables print them beside the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["hope", "titans", "gated_deltanet", "deltanet", "linear_attention", "transformer"]
MQAR_SHAPES = [(64, 4), (128, 8), (256, 16)]
TOKENS_PER_STEP = 2048          # MQAR: batch = 2048 / length sequences
# Header settings that bring a model to DeltaNet's parameter count at dim 64 and 128 (133,952 vs
# 133,568 and 464,512 vs 463,744): Hope's CMS levels hold most of its parameters. `--set` overrides
# them; they are recorded in the model's name like any setting.
EQUAL_SIZE = {"hope": {"cms_expand": 0.5}}
TEXT_BATCH, TEXT_CONTEXT = 4, 256


def spec_path(model: str) -> Path:
    """A shipped spec (specs/), or one that exists for the benchmarks only (bench/specs/)."""
    shipped = ROOT / "specs" / f"{model}.nl"
    return shipped if shipped.exists() else ROOT / "bench" / "specs" / f"{model}.nl"


def one_run(model: str, dim: int, task: str | None, length: int, pairs: int, steps: int, lr: float | None,
            extra: dict[str, float] | None = None) -> dict:
    """Train one model in this process and evaluate it (called in a subprocess per run)."""
    import torch

    import nldsl
    from nldsl.backends.torch.app import evals
    from nldsl.backends.torch.app.config import TrainConfig
    from nldsl.backends.torch.app.trainer import NonFinite, Trainer

    torch.set_num_threads(os.cpu_count() or 1)
    overrides = {"dim": dim, "layers": 2, "heads": 4, "vocab": 256, "context": length, **(extra or {})}
    spec = nldsl.load_spec(spec_path(model), overrides)
    unit = next(u for u in spec.local_units if u in spec.models)
    train = spec.models[unit].train
    group = train.groups[0]
    args = dict(group.args) | ({"lr": lr} if lr else {})
    config = TrainConfig(steps=steps, batch=TOKENS_PER_STEP // length if task else TEXT_BATCH, context=length,
                         task=task, pairs=pairs, seed=0, log_every=10**9, checkpoint_every=0,
                         groups=[("adamw", args, (), 1)],
                         settings={"clip": 1.0, "schedule": ("cosine", max(1, steps // 10), 0.1)})
    net = nldsl.load(spec_path(model), overrides=overrides)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    trainer = Trainer(net, {"adamw": nldsl.optimizer(ROOT / "specs/optim/adamw.nl")}, config, None)
    trainer.console.quiet = True
    start = time.time()
    losses: list[float] = []
    record = {"model": _name(model, extra), "dim": dim, "task": task or "text", "length": length, "pairs": pairs,
              "steps": steps, "params": params, "lr": lr}
    try:
        for _ in range(steps):
            losses.append(trainer.train_step())
    except NonFinite as e:      # a divergence is a result: the table says where it happened
        return record | {"score": None, "diverged": len(losses) + 1, "error": str(e), "final_loss": None,
                         "seconds": time.time() - start, "tokens": len(losses) * config.batch * length}
    seconds = time.time() - start
    net.eval()
    if task:
        score = evals.memory_task(net, "mqar", length, pairs, examples=512, batch=32)["accuracy"]
    else:
        from nldsl.backends.torch.app import data
        from nldsl.backends.torch.app.trainer import bits_per_byte
        score = bits_per_byte(net, data.corpus("shakespeare")[1], length, windows=64)
    return record | {"score": score, "final_loss": sum(losses[-10:]) / len(losses[-10:]), "seconds": seconds,
                     "tokens": steps * config.batch * length}


def continual_run(model: str, dim: int, steps: int) -> dict:
    """`nldsl continual` Shakespeare → Moby-Dick: held-out bpb on both after each phase."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        subprocess.run([sys.executable, "-m", "nldsl.cli", "continual", str(ROOT / "specs" / f"{model}.nl"),
                        "--set", f"dim={dim}", "--set", "layers=2", "--set", "heads=4", "--steps", str(steps),
                        "--batch", str(TEXT_BATCH), "--context", str(TEXT_CONTEXT), "--out", f"{tmp}/run",
                        "--corpora", "shakespeare", "moby-dick"], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows = json.loads(Path(f"{tmp}/run/continual.json").read_text())
    return {"model": model, "dim": dim, "task": "continual", "steps": steps, "rows": rows,
            "seconds": time.time() - start}


def machine() -> str:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"


def write(results: list[dict], out: Path, steps: dict) -> None:
    times = sorted(r["finished"] for r in results)
    commits = sorted({r["commit"] for r in results})
    busy = [r for r in results if r["load"] > LOAD_ALONE]
    lines = ["# Quality at CPU scale: MQAR and Shakespeare", "", f"Machine: {machine()}.", "",
             f"Written by `bench/quality_bench.py` (its docstring has the protocol), runs finished between "
             f"{times[0]} and {times[-1]} UTC at commit {', '.join(commits)}. Every model: 2 layers, 4 heads, byte "
             "vocabulary, AdamW with weight decay 0.1 and clip 1, cosine schedule, fresh batches every step.", ""]
    if busy:
        lines += ["Runs that shared the CPU with other work (1-minute load average above "
                  f"{LOAD_ALONE} at their end), whose seconds are inflated: "
                  + ", ".join(f"{r['model']} d={r['dim']} {r['task']}" + (f" L={r['length']}" if r["task"] == "mqar"
                                                                          else "") + f" ({r['load']:.1f})"
                              for r in busy) + ".", ""]
    mqar = [r for r in results if r["task"] == "mqar"]
    if mqar:
        shapes = sorted({(r["length"], r["pairs"]) for r in mqar})
        swept = sorted({r.get("lr") or 3e-3 for r in mqar})
        lrs = ", ".join(f"{lr:g}" for lr in swept)
        lines += [f"## MQAR accuracy ({steps['mqar']} steps of {TOKENS_PER_STEP} tokens, lr {lrs})", "",
                  *(["Each cell is the best over the learning rates (Zoology's protocol), the rate in brackets.", ""]
                    if len(swept) > 1 else []),
                  "| model | d | params | " + " | ".join(f"L={L}, N={N}" for L, N in shapes) + " | seconds |",
                  "|---|---|---|" + "---|" * len(shapes) + "---|"]
        # a model's rows in MODELS' order, whatever settings its name carries; other specs after them
        def place(name: str) -> tuple:
            base = name.split()[0]
            return (MODELS.index(base) if base in MODELS else len(MODELS), name)
        names = sorted({r["model"] for r in mqar}, key=place)
        for dim in sorted({r["dim"] for r in mqar}):
            for model in names:
                rows: dict[tuple, dict] = {}
                for r in (r for r in mqar if r["model"] == model and r["dim"] == dim):
                    shape = (r["length"], r["pairs"])
                    if shape not in rows or (r["score"] or -1.0) > (rows[shape]["score"] or -1.0):
                        rows[shape] = r      # the best learning rate of the cell
                if not rows:
                    continue
                cells = [(_score(rows[s], 3) + (f" ({rows[s].get('lr') or 3e-3:g})" if len(swept) > 1 else ""))
                         if s in rows else "—" for s in shapes]
                params = next(iter(rows.values()))["params"]
                secs = sum(r["seconds"] for r in mqar if r["model"] == model and r["dim"] == dim)
                lines.append(f"| {model} | {dim} | {params:,} | " + " | ".join(cells) + f" | {secs:.0f} |")
        lines.append("")
    text = [r for r in results if r["task"] == "text"]
    if text:
        lines += [f"## Shakespeare held-out bits per byte ({steps['text']} steps of {TEXT_BATCH}×{TEXT_CONTEXT} "
                  "bytes, each spec's own learning rate)", "",
                  "| model | d | params | held-out bpb | final train loss (nats) | tokens | seconds | tokens/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(text, key=lambda r: (r["score"] is None, r["score"] or 0)):
            loss = "—" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
            lines.append(f"| {r['model']} | {r['dim']} | {r['params']:,} | {_score(r, 4)} | {loss} | "
                         f"{r['tokens']:,} | {r['seconds']:.0f} | {r['tokens'] / r['seconds']:,.0f} |")
        lines.append("")
    cont = [r for r in results if r["task"] == "continual"]
    if cont:
        lines += [f"## Continual learning: Shakespeare, then Moby-Dick ({steps['continual']} steps of "
                  f"{TEXT_BATCH}×{TEXT_CONTEXT} bytes each, `nldsl continual`)", "",
                  "| model | d | Shakespeare bpb after Shakespeare | after Moby-Dick | forgetting | Moby-Dick bpb "
                  "after Moby-Dick | seconds |", "|---|---|---|---|---|---|---|"]
        for r in cont:
            first, last = r["rows"][0], r["rows"][-1]
            lines.append(f"| {r['model']} | {r['dim']} | {first['shakespeare_bpb']:.4f} | "
                         f"{last['shakespeare_bpb']:.4f} | {last['shakespeare_bpb'] - first['shakespeare_bpb']:+.4f} | "
                         f"{last['moby-dick_bpb']:.4f} | {r['seconds']:.0f} |")
        lines.append("")
    out.write_text("\n".join(lines))


def _score(run: dict, digits: int) -> str:
    return f"{run['score']:.{digits}f}" if run["score"] is not None else f"NaN at step {run['diverged']}"


LOAD_ALONE = 2.6     # a run's own two threads, plus the noise of an idle machine


def _name(model: str, extra: dict[str, float] | None) -> str:
    return model + "".join(f" {k}={v:g}" for k, v in (extra or {}).items())


def _key(run: dict) -> tuple:
    task = run["task"] or "text"
    shape = (run["length"], run["pairs"], run.get("lr") or 3e-3) if task == "mqar" else ()
    return (_name(run["model"], run.get("extra")), run["dim"], task, *shape)


def _stamp(result: dict, run: dict) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    result.update(task=run["task"] or "text", load=os.getloadavg()[0],
                  finished=time.strftime("%Y-%m-%d %H:%M", time.gmtime()), commit=commit.stdout.strip() or "?")
    return result


def _save(results: list[dict], store: Path, out: Path, steps: dict) -> None:
    store.write_text(json.dumps(results, indent=1) + "\n")
    write(results, out, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mqar-steps", type=int, default=400)
    p.add_argument("--mqar-lrs", type=float, nargs="+", default=[3e-3],
                   help="learning rates to sweep per MQAR cell; the table keeps each cell's best")
    p.add_argument("--text-steps", type=int, default=200)
    p.add_argument("--continual-steps", type=int, default=100)
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.md"))
    p.add_argument("--resume", action="store_true", help="keep the runs already in the .json beside --out")
    p.add_argument("--set", action="append", default=[], metavar="[MODEL:]NAME=VALUE",
                   help="override a header parameter of every model run, or of MODEL's runs only "
                        "(recorded in the model's name)")
    p.add_argument("--shapes", nargs="+", default=[f"{L}x{N}" for L, N in MQAR_SHAPES], metavar="LxN",
                   help="MQAR sequence lengths and pair counts")
    p.add_argument("--tasks", nargs="+", choices=["mqar", "text", "continual"], default=["mqar", "text", "continual"])
    p.add_argument("--one", help=argparse.SUPPRESS)     # internal: a JSON run description
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_run(**json.loads(args.one))), flush=True)
        return
    chosen = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
    shapes, dims = (MQAR_SHAPES[:1], [32]) if args.quick else (chosen, args.dims)
    steps = {"mqar": 3 if args.quick else args.mqar_steps, "text": 3 if args.quick else args.text_steps,
             "continual": 3 if args.quick else args.continual_steps}
    def mqar(dim: int) -> list[dict]:
        return [{"model": m, "dim": dim, "task": "mqar", "length": L, "pairs": N, "steps": steps["mqar"], "lr": lr}
                for m in args.models for L, N in shapes for lr in args.mqar_lrs]
    # the smallest width's MQAR grid first, then text and forgetting, then the wider MQAR grid: a grid
    # cut short still leaves every table started
    runs = mqar(dims[0])
    runs += [{"model": m, "dim": dims[-1], "task": None, "length": TEXT_CONTEXT, "pairs": 0, "steps": steps["text"],
              "lr": None} for m in args.models]
    runs += [{"model": m, "dim": dims[-1], "task": "continual"} for m in ("cms_continual", "transformer")]
    # the wider grid cheapest first, so that a grid cut short misses the fewest rows
    runs += sorted([r for d in dims[1:] for r in mqar(d)], key=lambda r: -args.models.index(r["model"]))
    store = Path(args.out).with_suffix(".json")
    runs = [r for r in runs if (r["task"] or "text") in args.tasks]
    settings = []     # (model or "" for every model, name, value)
    for setting in args.set:
        target, _, pair = setting.rpartition(":")
        name, value = pair.split("=", 1)
        settings.append((target, name, float(value)))
    for r in runs:
        extra = EQUAL_SIZE.get(r["model"], {}) | {name: value for target, name, value in settings
                                                  if target in ("", r["model"])}
        if r["task"] != "continual" and extra:
            r["extra"] = extra
    results: list[dict] = json.loads(store.read_text()) if args.resume and store.exists() else []
    done_keys = {_key(r) for r in results}
    for run in runs:
        if _key(run) in done_keys:
            continue
        if run["task"] == "continual":      # a persistent slow CMS level against none
            try:
                results.append(continual_run(run["model"], run["dim"], steps["continual"]))
            except subprocess.CalledProcessError as e:
                print(f"failed: continual {run['model']}\n{e.stderr[-2000:]}", file=sys.stderr)
                continue
            _stamp(results[-1], run)
            print(f"{run['model']:>16} continual {results[-1]['seconds']:.0f}s", flush=True)
            _save(results, store, Path(args.out), steps)
            continue
        # a process per run: no state or compiled code leaks between models
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(run)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode:
            print(f"failed: {run}\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = _stamp(results[-1], run)
        print(f"{r['model']:>16} d={r['dim']:<4} {r['task']:>5} L={r['length']:<4} N={r['pairs']:<3} "
              f"score {_score(r, 4)}  {r['seconds']:.0f}s  load {r['load']:.1f}", flush=True)
        _save(results, store, Path(args.out), steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
