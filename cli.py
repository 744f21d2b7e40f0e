"""`nldsl`: the command line. One entry point, one subcommand per job.

    nldsl check SPEC...                 diagnostics, or one OK line per file
    nldsl explain SPEC                  the levels as a table, with costs
    nldsl render SPEC -o hope.svg       the level hierarchy (svg, png or dot); --timeline for firing times
    nldsl fmt SPEC...                   canonical formatting (--check to only report)
    nldsl compile SPEC -o DIR           generated PyTorch: model.py, optimizers, a runnable train.py

Exit status: 0 when every spec is free of errors (warnings are printed), 1 when any has errors,
2 for usage errors. A bad spec never produces a Python traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from nldsl.api import CheckResult, check_file
from nldsl.diagnostics import render_all

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _report(result: CheckResult) -> None:
    if result.diagnostics:
        err.print(render_all(result.diagnostics, result.sources), markup=False)


def _checked(path: str, unit: str | None = None, overrides: dict[str, float] | None = None) -> CheckResult | None:
    """Check a file and print its diagnostics; None if it has errors or lacks the unit asked for."""
    result = check_file(path, overrides)
    _report(result)
    if not result.ok:
        return None
    if unit is not None and unit not in result.graphs:
        err.print(f"error: {path} defines no model or optimizer named '{unit}' "
                  f"(it defines: {', '.join(result.graphs) or 'nothing'})", markup=False)
        return None
    return result


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        result = check_file(path, _overrides(args.set))
        _report(result)
        if result.ok:
            spec = result.spec
            units = ", ".join(spec.local_units) if spec else ""
            warn = f", {len(result.warnings)} warning{'s' * (len(result.warnings) != 1)}" if result.warnings else ""
            out.print(f"OK {result.file}: {units}{warn}", markup=False)
        else:
            failed += 1
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from nldsl.report import render
    result = _checked(args.spec, args.unit, _overrides(args.set))
    if result is None:
        return 1
    out.print(render(result.graph(args.unit), result.sources, width=args.width), markup=False)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from nldsl.draw import GraphvizMissing, diagram
    result = _checked(args.spec, args.unit, _overrides(args.set))
    if result is None:
        return 1
    target = Path(args.output)
    d = diagram(result.graph(args.unit), timeline=args.timeline)
    try:
        d.save(target)
    except GraphvizMissing as e:
        dot_path = target.with_suffix(".dot")
        d.save(dot_path)
        err.print(f"warning: {e}\nwrote {dot_path} instead; turn it into a picture with "
                  f"`dot -T{target.suffix.lstrip('.') or 'svg'} {dot_path} -o {target}`", markup=False)
        return 0
    out.print(f"wrote {target}", markup=False)
    return 0


def _overrides(pairs: list[str] | None) -> dict[str, float] | None:
    """`--set dim=64 --set heads=2` → {"dim": 64.0, "heads": 2.0}."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit(f"nldsl: error: --set expects NAME=NUMBER, got {pair!r}")
    return out


def cmd_compile(args: argparse.Namespace) -> int:
    from nldsl.backends.torch.emit import write_package
    result = check_file(args.spec, _overrides(args.set))
    _report(result)
    if not result.ok or result.spec is None:
        return 1
    models = [u for u in result.spec.local_units if u in result.spec.models]
    if not models:
        err.print(f"error: {args.spec} defines no model to compile", markup=False)
        return 1
    for path in write_package(result.spec, args.unit, Path(args.output)):
        out.print(f"wrote {path}", markup=False)
    return 0


def _new_run(args: argparse.Namespace) -> Path | None:
    """Check the spec, then make its run folder (spec, levels, generated code, run.json)."""
    from nldsl.backends.torch import run
    overrides = _overrides(args.set)
    result = check_file(args.spec, overrides)
    _report(result)
    if not result.ok or result.spec is None:
        return None
    unit = args.unit or next((u for u in result.spec.local_units if u in result.spec.models), None)
    if unit is None or unit not in result.spec.models:
        err.print(f"error: {args.spec} defines no model{f' named {unit!r}' if unit else ''} to train", markup=False)
        return None
    from nldsl.backends.torch.data import CORPORA
    for name in getattr(args, "corpora", None) or [args.corpus]:
        if name and not args.task and name not in CORPORA and not Path(name).exists():
            err.print(f"error: no corpus {name!r}: name one of {', '.join(CORPORA)}, or a text file or folder",
                      markup=False)
            return None
    model = result.spec.models[unit]
    settings = {"steps": model.train.steps, "batch": model.train.batch, "context": model.context,
                "clip": model.train.clip, "seed": model.train.seed,
                "schedule": (model.train.schedule.kind, model.train.schedule.warmup, model.train.schedule.min_ratio)}
    for key in ("steps", "batch", "context", "seed"):
        if getattr(args, key) is None:
            setattr(args, key, settings[key])
    groups = [(g.optimizer, dict(g.args), tuple(g.targets), g.period) for g in model.train.groups]
    config = run.config_from(args, groups, settings)
    if args.run_dir is None and "WORLD_SIZE" in os.environ:
        err.print("error: under torchrun, name the run folder with --out DIR", markup=False)
        return None
    directory = Path(args.run_dir or f"runs/{unit.lower()}-{time.strftime('%Y%m%d-%H%M%S')}")
    run.leader_writes(config.device, lambda: run.create(directory, result, unit, overrides, config))
    return directory


def cmd_train(args: argparse.Namespace) -> int:
    from nldsl.backends.torch import run
    from nldsl.backends.torch.trainer import NonFinite
    if args.resume:
        directory = Path(args.resume)
        info = run.read_info(directory)
        if args.steps is not None:
            info.config.steps = args.steps
            run.leader_writes(info.config.device, lambda: run.write_info(directory, info))
        out.print(f"resuming {directory} at its checkpoint, to step {info.config.steps}", markup=False)
    else:
        if args.spec is None:
            err.print("error: nldsl train needs a SPEC (or --resume RUN)", markup=False)
            return 2
        made = _new_run(args)
        if made is None:
            return 1
        directory, info = made, run.read_info(made)
        c = info.config
        out.print(f"training {info.model} ({args.spec}) on {c.task or c.corpus or 'shakespeare'}: {c.steps} steps "
                  f"of {c.batch}×{c.context} tokens, {c.device}, {c.precision}{', compiled' if c.compile else ''}; "
                  f"run folder {directory}", markup=False)
    try:
        result_metrics = run.train(directory, resume=bool(args.resume), console=out)
    except NonFinite as e:
        err.print(f"error: {e}; training stopped. The last good checkpoint is kept in {directory}", markup=False)
        return 1
    except (FileNotFoundError, ValueError) as e:     # data that is missing or too small for the run
        err.print(f"error: {e}", markup=False)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:     # under torchrun, the first process reports
        return 0
    out.print("  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result_metrics.items()), markup=False)
    if not info.config.task and args.sample:
        from nldsl.backends.torch.sample import generate
        model_, _ = run.load_model(directory)
        text = generate(model_, b"\n", args.sample, temperature=0.8, seed=0)
        out.print(f"sample:\n{text.decode('utf-8', 'replace')}", markup=False)
    out.print(f"wrote {directory}/ (run.json, code/, metrics.jsonl, curve.png, checkpoint.safetensors)", markup=False)
    return 0


def cmd_continual(args: argparse.Namespace) -> int:
    from nldsl.backends.torch import run
    from nldsl.backends.torch.trainer import NonFinite
    from rich.table import Table
    args.corpus, args.task = args.corpora[0], None
    directory = _new_run(args)
    if directory is None:
        return 1
    out.print(f"continual learning: {' → '.join(args.corpora)}, {args.steps} steps each; run folder {directory}",
              markup=False)
    try:
        rows = run.continual(directory, args.corpora, console=out)
    except NonFinite as e:
        err.print(f"error: {e}; training stopped", markup=False)
        return 1
    except (FileNotFoundError, ValueError) as e:
        err.print(f"error: {e}", markup=False)
        return 1
    table = Table(title="held-out bits per byte after each phase (lower is better)", title_justify="left")
    table.add_column("after training on")
    for name in args.corpora:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(f"{row['after']} (step {row['step']})", *(f"{row[f'{n}_bpb']:.4f}" for n in args.corpora))
    out.print(table)
    first = args.corpora[0]
    out.print(f"forgetting on {first}: {rows[-1][f'{first}_bpb'] - rows[0][f'{first}_bpb']:+.4f} bits per byte "
              f"(wrote {directory}/continual.json)", markup=False)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from nldsl.backends.torch import run
    from rich.table import Table
    model, info = run.load_model(args.target, args.device)
    c = info.config
    step = run.checkpoint_step(args.target)
    table = Table(title=f"{info.model}: {run.run_folder(args.target)} (step {step})", title_justify="left")
    for col in ("task", "metric", "value", "n", "note"):
        table.add_column(col, justify="right" if col in ("value", "n") else "left")
    records = []
    for task in args.task:
        with model.held_out():
            result, n, note = _evaluate(model, c, task, args)
        for i, (metric, value) in enumerate(result.items()):
            table.add_row(task if i == 0 else "", metric, f"{value:.4g}" if value > 1e4 else f"{value:.4f}",
                          str(n) if i == 0 else "", note if i == 0 else "")
        records.append({"task": task, "step": step, **result, "n": n})
    out.print(table)
    with open(run.run_folder(args.target) / "evals.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return 0


def _evaluate(model, c, task: str, args: argparse.Namespace) -> tuple[dict[str, float], int, str]:
    """One evaluation task of `nldsl eval`: its metrics, how many items it scored, a note."""
    from nldsl.backends.torch import evals
    from nldsl.backends.torch.data import corpus
    from nldsl.backends.torch.trainer import bits_per_byte
    if task == "bpb":
        name, windows = args.corpus or c.corpus or "shakespeare", args.limit or 64
        value = bits_per_byte(model, corpus(name)[1], args.context or c.context, windows=windows,
                              precision=c.precision)
        return {"bpb": value}, windows, f"held-out {name}"
    if task == "lambada":
        result = evals.lambada(model, args.limit, args.batch, args.window)
        return result, int(result.pop("docs")), "last word: greedy accuracy, bits per byte, perplexity"
    if task in evals.SUITE:
        result = evals.multiple_choice(model, task, args.limit, args.batch, args.window)
        n, chance = int(result.pop("docs")), result.pop("chance")
        return result, n, f"chance {chance:.2f}; small models sit near chance: a pipeline check, not a signal"
    if c.task != task:
        out.print(f"note: this run trained on {c.task or 'text'}, not {task}", markup=False)
    length, pairs = args.context or c.context, args.pairs or c.pairs
    result = evals.memory_task(model, task, length, pairs, args.limit or 256)
    n = int(result.pop("queries", result.pop("examples", 0)))
    return result, n, f"length {length}" + (f", {pairs} pairs" if task == "mqar" else "")


def cmd_generate(args: argparse.Namespace) -> int:
    from nldsl.backends.torch import run
    from nldsl.backends.torch.sample import generate
    model, _ = run.load_model(args.target, args.device)
    prompt = args.prompt.encode().decode("unicode_escape").encode("latin-1") if args.escapes else args.prompt.encode()
    text = generate(model, prompt, args.bytes, args.temperature, args.top_k, args.seed)
    sys.stdout.write((prompt + text).decode("utf-8", "replace") + "\n")
    return 0


def cmd_fmt(args: argparse.Namespace) -> int:
    from nldsl.fmt import format_source
    from nldsl.source import SourceFile
    status = 0
    for path in args.specs:
        try:
            source = SourceFile.read(path)
        except (OSError, UnicodeDecodeError) as e:
            err.print(f"error: cannot read {path}: {e}", markup=False)
            status = 1
            continue
        text, diagnostics = format_source(source)
        if text is None:
            err.print(render_all(diagnostics, {source.path: source}), markup=False)
            status = 1
        elif args.check:
            if text != source.text:
                out.print(f"would reformat {path}", markup=False)
                status = 1
        elif args.write:
            if text != source.text:
                Path(path).write_text(text, encoding="utf-8")
                out.print(f"reformatted {path}", markup=False)
        else:
            sys.stdout.write(text)
    return status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nldsl", description="Nested Learning specs: check, explain, draw, format.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="check specs and print their diagnostics")
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    c.set_defaults(run=cmd_check)

    e = sub.add_parser("explain", help="the levels of a model or optimizer, as a table with costs")
    e.add_argument("spec", metavar="SPEC")
    e.add_argument("--unit", help="which model or optimizer (default: the file's first)")
    e.add_argument("--width", type=int, default=180, help="table width in characters")
    e.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    e.set_defaults(run=cmd_explain)

    r = sub.add_parser("render", help="draw the level hierarchy (or the firing timeline)")
    r.add_argument("spec", metavar="SPEC")
    r.add_argument("-o", "--output", required=True, help="FILE.svg, FILE.png or FILE.dot")
    r.add_argument("--timeline", action="store_true", help="draw which levels fire over one hyperperiod")
    r.add_argument("--unit", help="which model or optimizer (default: the file's first)")
    r.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    r.set_defaults(run=cmd_render)

    k = sub.add_parser("compile", help="write the generated PyTorch model, optimizers and a train.py")
    k.add_argument("spec", metavar="SPEC")
    k.add_argument("-o", "--output", required=True, help="directory to write into")
    k.add_argument("--unit", help="which model (default: the file's first)")
    k.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    k.set_defaults(run=cmd_compile)

    t = sub.add_parser("train", help="compile a spec and train it; writes a run folder")
    t.add_argument("spec", nargs="?", metavar="SPEC")
    t.add_argument("--unit", help="which model (default: the file's first)")
    t.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    t.add_argument("--out", dest="run_dir", metavar="DIR", help="the run folder (default: runs/<model>-<date>-<time>)")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its checkpoint")
    t.add_argument("--sample", type=int, default=200, metavar="BYTES", help="bytes to sample at the end (0: none)")
    from nldsl.backends.torch.config import add_arguments
    add_arguments(t, {"steps": None, "batch": None, "context": None, "seed": None})
    t.set_defaults(run=cmd_train)

    n = sub.add_parser("continual", help="train on one corpus, then another: how much of the first is forgotten")
    n.add_argument("spec", metavar="SPEC")
    n.add_argument("--corpora", nargs="+", default=["shakespeare", "moby-dick"], metavar="CORPUS",
                   help="corpora in training order (names or paths; default: shakespeare moby-dick)")
    n.add_argument("--unit", help="which model (default: the file's first)")
    n.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a header parameter")
    n.add_argument("--out", dest="run_dir", metavar="DIR", help="the run folder (default: runs/<model>-<date>-<time>)")
    add_arguments(n, {"steps": None, "batch": None, "context": None, "seed": None})
    n.set_defaults(run=cmd_continual)

    v = sub.add_parser("eval", help="evaluate a trained run: held-out bpb, LAMBADA, multiple choice, memory tasks")
    v.add_argument("target", metavar="RUN_OR_CKPT", help="a run folder or a checkpoint file in one")
    v.add_argument("--task", nargs="+", default=["bpb"],
                   choices=["bpb", "lambada", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                            "mqar", "sniah"])
    v.add_argument("--limit", type=int, help="documents (or bpb windows, or memory-task examples) to score")
    v.add_argument("--corpus", help="bpb on this corpus's held-out split (default: the run's)")
    v.add_argument("--context", type=int, help="bpb window / memory-task length (default: the run's)")
    v.add_argument("--pairs", type=int, help="MQAR key-value pairs (default: the run's)")
    v.add_argument("--batch", type=int, default=8)
    v.add_argument("--window", type=int, default=1024, help="longest context scored, in bytes")
    v.add_argument("--device", help="cpu or cuda (default: the run's)")
    v.set_defaults(run=cmd_eval)

    g = sub.add_parser("generate", help="sample text from a trained run")
    g.add_argument("target", metavar="RUN_OR_CKPT", help="a run folder or a checkpoint file in one")
    g.add_argument("--prompt", default="\n")
    g.add_argument("--bytes", type=int, default=300)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--escapes", action="store_true", help=r"read \n and \t in the prompt as escapes")
    g.add_argument("--device", help="cpu or cuda (default: the run's)")
    g.set_defaults(run=cmd_generate)

    f = sub.add_parser("fmt", help="print specs in canonical form")
    f.add_argument("specs", nargs="+", metavar="SPEC")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only report files that would change (exit 1)")
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    f.set_defaults(run=cmd_fmt)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130
    except Exception as e:  # an internal error, not a spec error: say so in one line
        if os.environ.get("NLDSL_DEBUG"):
            raise
        err.print(f"internal error in nldsl ({type(e).__name__}: {e}); rerun with NLDSL_DEBUG=1 for the "
                  "traceback and please report it", markup=False)
        return 3


if __name__ == "__main__":
    sys.exit(main())
