"""`nldsl`: the command line. One entry point, one subcommand per job.

    nldsl check SPEC...                 diagnostics, or one OK line per file
    nldsl explain SPEC                  the levels as a table, with costs
    nldsl render SPEC -o hope.svg       the level hierarchy (svg, png or dot); --timeline for firing times
    nldsl fmt SPEC...                   canonical formatting (--check to only report)
    nldsl compile SPEC -o DIR           generated PyTorch: model.py, optimizers, a runnable train.py
    nldsl train / continual / eval / generate      runs: see docs/training.md

Exit status: 0 when every spec is free of errors (warnings are printed) and the command did its
job, 1 when a spec has errors or an input is wrong (data, a run folder, a checkpoint, a setting the
model cannot take), 2 for usage errors (bad flags), 3 only for a bug in nldsl, 130 when
interrupted. A mistake is one `error:` line, never a Python traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console

from nldsl.api import CheckResult, check_file, match_parameters, parameter_count
from nldsl.backends.torch.app import config
from nldsl.backends.torch.app.config import RunError, UsageError
from nldsl.diagnostics import render_all

if TYPE_CHECKING:      # the trainer imports torch, which `check` never needs
    from nldsl.backends.torch.app.trainer import Tick


def console(**options) -> Console:
    """A console that prints text verbatim: spec lines, paths and prompts can hold `[...]` (rich
    markup) or `:x:` (an emoji code), and neither may change what is shown."""
    return Console(highlight=False, soft_wrap=True, markup=False, emoji=False, **options)


out = console()
err = console(stderr=True)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the command's --help has the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _show(diagnostics: str) -> None:
    """Diagnostics are plain text, written as they are: rich would measure and re-wrap every line
    (a third of the time of a spec with 100,000 warnings)."""
    sys.stderr.write(diagnostics + "\n")
    sys.stderr.flush()


def _report(result: CheckResult) -> None:
    if result.diagnostics:
        _show(render_all(result.diagnostics, result.sources))


def _checked(path: str, unit: str | None = None, overrides: dict[str, float] | None = None) -> CheckResult | None:
    """Check a file and print its diagnostics; None if it has errors or lacks the unit asked for."""
    result = check_file(path, overrides)
    _report(result)
    if not result.ok:
        return None
    if unit is not None and unit not in result.graphs:
        err.print(f"error: {path} defines no model or optimizer named '{unit}' "
                  f"(it defines: {', '.join(result.graphs) or 'nothing'})")
        return None
    return result


# What `nldsl check` built, kept for `entry` to exit without freeing it: a 100,000-line spec is
# millions of objects, and freeing them one by one took 2 of the 23 seconds of its check.
_checked_results: list[CheckResult] = []


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        result = check_file(path, _overrides(args.set))
        _checked_results.append(result)
        _report(result)
        if result.ok:
            spec = result.spec
            units = ", ".join(spec.local_units) if spec else ""
            warn = f", {len(result.warnings)} warning{'s' * (len(result.warnings) != 1)}" if result.warnings else ""
            out.print(f"OK {result.file}: {units}{warn}")
        else:
            failed += 1
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from nldsl.report import render
    result = _checked(args.spec, args.unit, _overrides(args.set))
    if result is None:
        return 1
    out.print(render(result.graph(args.unit), result.sources, width=args.width))
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
                  f"`dot -T{target.suffix.lstrip('.') or 'svg'} {dot_path} -o {target}`")
        return 0
    out.print(f"wrote {target}")
    return 0


def _overrides(pairs: list[tuple[str, float]] | None) -> dict[str, float] | None:
    """`--set dim=64 --set heads=2` (each parsed by config.override) → {"dim": 64.0, "heads": 2.0}."""
    return dict(pairs) if pairs else None


def cmd_compile(args: argparse.Namespace) -> int:
    from nldsl.backends.torch.codegen.emit import write_package
    result = check_file(args.spec, _overrides(args.set))
    _report(result)
    if not result.ok or result.spec is None:
        return 1
    unit = _model(result.spec, args.unit, args.spec, "compile")
    for path in write_package(result.spec, unit, Path(args.output)):
        out.print(f"wrote {path}")
    return 0


def _model(spec, unit: str | None, path: str, verb: str) -> str:
    """The model a command works on: the one --unit names, or the file's first (RunError if none)."""
    models = [u for u in spec.local_units if u in spec.models]
    name = unit or next(iter(models), None)
    if name is None or name not in spec.models:
        named = f" named {name!r}" if name else ""
        defined = f" (it defines {', '.join(models)})" if models else ""
        raise RunError(f"{path} defines no model{named} to {verb}{defined}")
    return name


def _model_settings(args: argparse.Namespace) -> dict[str, float] | None:
    """The header parameters a run sets: --set, and --context (the model's `context`)."""
    overrides = _overrides(args.set) or {}
    if args.context is not None:
        if overrides.get("context", args.context) != args.context:
            raise UsageError(f"--context {args.context} and --set context={overrides['context']:g} disagree")
        overrides["context"] = float(args.context)
    return overrides or None


def _new_run(args: argparse.Namespace, corpora: list[str | None]) -> Path | None:
    """Check the spec with every setting that changes the model, check the data and the memory the
    run needs against it, then make its run folder (spec, levels, generated code, run.json). None
    (diagnostics printed) when the spec has errors; RunError for anything else that cannot work."""
    from nldsl.backends.torch.app import run
    from nldsl.backends.torch.codegen.load import model_class, optimizer_class
    overrides = _model_settings(args)
    result = check_file(args.spec, overrides)
    _report(result)
    if not result.ok or result.spec is None:
        return None
    spec = result.spec
    unit = _model(spec, args.unit, args.spec, "train")
    if args.run_dir is None and "WORLD_SIZE" in os.environ:
        raise UsageError("under torchrun, name the run folder with --out DIR")
    model = spec.models[unit]
    settings = {"steps": model.train.steps, "batch": model.train.batch, "context": model.context,
                "clip": model.train.clip, "seed": model.train.seed,
                "schedule": (model.train.schedule.kind, model.train.schedule.warmup, model.train.schedule.min_ratio)}
    for key in ("steps", "batch", "context", "seed"):
        if getattr(args, key) is None:
            setattr(args, key, settings[key])
    groups = [(g.optimizer, dict(g.args), tuple(g.targets), g.period) for g in model.train.groups]
    train_config = run.config_from(args, groups, settings)
    run.require_data(train_config, int(model.config["vocab"]), corpora)      # before torch loads: fast
    run.require_resources(train_config, model_class(spec, unit),
                          {name: optimizer_class(spec, name) for name, *_ in groups})
    directory = Path(args.run_dir or f"runs/{unit.lower()}-{time.strftime('%Y%m%d-%H%M%S')}")
    run.leader_writes(train_config.device, lambda: run.create(directory, result, unit, overrides, train_config))
    return directory


def _refuse_settings_with_resume(args: argparse.Namespace) -> None:
    """A resumed run keeps the spec and settings it was made with: only --steps and --sample apply."""
    defaults = vars(parser().parse_args(["train"]))
    given = sorted(k for k, v in vars(args).items() if k not in ("resume", "steps", "sample") and v != defaults[k])
    if given:
        flags = ", ".join("SPEC" if k == "spec" else "--" + {"run_dir": "out"}.get(k, k).replace("_", "-")
                          for k in given)
        raise UsageError(f"--resume continues a run with its own spec and settings: drop {flags} "
                         "(only --steps and --sample apply)")


def cmd_train(args: argparse.Namespace) -> int:
    from nldsl.backends.torch.app import run
    if args.resume:
        _refuse_settings_with_resume(args)
        existing = run.open_run(args.resume)
        directory, info = existing.directory, existing.info
        out.print(f"resuming {directory} at its checkpoint, to step {args.steps or info.config.steps}")
    else:
        if args.spec is None:
            raise UsageError("nldsl train needs a SPEC (or --resume RUN)")
        made = _new_run(args, [args.corpus])
        if made is None:
            return 1
        directory, info = made, run.read_info(made)
        c = info.config
        out.print(f"training {info.model} ({args.spec}) on {c.task or c.corpus or 'shakespeare'}: {c.steps} steps "
                  f"of {c.batch}×{c.context} tokens, {c.device}, {c.precision}{', compiled' if c.compile else ''}; "
                  f"run folder {directory}")
    result_metrics = run.train(directory, resume=bool(args.resume), console=out,
                               steps=args.steps if args.resume else None)
    if int(os.environ.get("RANK", "0")) != 0:     # under torchrun, the first process reports
        return 0
    out.print("  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result_metrics.items()))
    if not info.config.task and args.sample:
        from nldsl.backends.torch.app.sample import generate
        text = generate(run.load_model(directory).model, b"\n", args.sample, temperature=0.8, seed=0)
        out.print(f"sample:\n{text.decode('utf-8', 'replace')}")
    out.print(f"wrote {directory}/ (run.json, code/, metrics.jsonl, curve.png, checkpoint.safetensors)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nldsl.backends.torch.app import compare, run
    variants = [compare.parse_variant(text) for text in args.variants]
    compare.labels_unique(variants)
    shared = _model_settings(args) or {}
    failed = 0
    for v in variants:             # every spec checks before anything trains
        result = check_file(v.spec, {**shared, **v.settings} or None)
        _report(result)
        failed += not result.ok
    if failed:
        return 1
    if args.match_params is not None:
        ref = _reference(variants, args.match_params)
        target = parameter_count(ref.spec, {**shared, **ref.settings})
        assert target is not None
        try:
            variants = [v if v is ref else compare.Variant(spec=v.spec, settings=match_parameters(
                v.spec, target, shared, v.settings, args.match_by)) for v in variants]
        except ValueError as e:
            raise UsageError(f"--match-params: {e}; name the setting to change with --match-by") from None
    sizes = {v.label: parameter_count(v.spec, {**shared, **v.settings}) or 0 for v in variants}
    if args.match_params is not None:
        out.print(f"matched to {ref.label}'s {target:,} parameters: "
                  + ", ".join(f"{v.label} {sizes[v.label]:,}" for v in variants if v is not ref))
    first = _first_model(variants[0])      # unset --steps, --batch, --context, --seed: the first spec's, for all
    for key in ("steps", "batch", "context", "seed"):
        if getattr(args, key) is None:
            setattr(args, key, int(first[key]))
    folder = Path(args.run_dir or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    if folder.exists() and any(folder.iterdir()):
        raise RunError(f"{folder} is not empty: a comparison starts in an empty folder; choose another --out")

    def train_one(v, directory: Path) -> dict[str, float]:
        each = argparse.Namespace(**{**vars(args), "spec": str(v.spec), "unit": None, "run_dir": str(directory),
                                     "set": list({**shared, **v.settings}.items()) or None})
        made = _new_run(each, [args.corpus])
        if made is None:
            raise RunError(f"{v.label} does not check")
        out.print(f"training {v.label}: {args.steps} steps of {args.batch}×{args.context} tokens")
        return run.train(made, console=out)

    outcomes = compare.compare(variants, shared, sizes, folder, train_one, console=out)
    out.print(compare.table(outcomes), markup=False)
    out.print(f"wrote {folder}/compare.md, {folder}/compare.json and a run folder per variant")
    return 1 if any(o.failed for o in outcomes) else 0


def _reference(variants: list, name: str):
    """The variant `--match-params` names: by its label, its spec's path or name, or its place (1, 2, ...)."""
    found = [v for v in variants if name in (v.label, str(v.spec), v.spec.stem)]
    if name.isdigit() and 1 <= int(name) <= len(variants):
        found = [variants[int(name) - 1]]
    if len(found) != 1:
        labels = ", ".join(v.label for v in variants)
        raise UsageError(f"--match-params {name}: name one of the variants ({labels}) or its place, 1 to "
                         f"{len(variants)}" + (" (several match)" if found else ""))
    return found[0]


def _first_model(variant) -> dict[str, float]:
    """The train-block settings (steps, batch, seed) and context of a variant's model."""
    result = check_file(variant.spec, variant.settings or None)
    assert result.spec is not None
    model = next(result.spec.models[u] for u in result.spec.local_units if u in result.spec.models)
    return {"steps": model.train.steps, "batch": model.train.batch, "context": model.context,
            "seed": model.train.seed}


def cmd_continual(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nldsl.backends.torch.app import run
    args.corpus, args.task = args.corpora[0], None
    directory = _new_run(args, args.corpora)
    if directory is None:
        return 1
    out.print(f"continual learning: {' → '.join(args.corpora)}, {args.steps} steps each; run folder {directory}")
    rows = run.continual(directory, args.corpora, console=out)
    table = Table(title="held-out bits per byte after each phase (lower is better)", title_justify="left")
    table.add_column("after training on")
    for name in args.corpora:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(f"{row['after']} (step {row['step']})", *(f"{row[f'{n}_bpb']:.4f}" for n in args.corpora))
    out.print(table)
    first = args.corpora[0]
    out.print(f"forgetting on {first}: {rows[-1][f'{first}_bpb'] - rows[0][f'{first}_bpb']:+.4f} bits per byte "
              f"(wrote {directory}/continual.json)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from nldsl.backends.torch.app import run
    trained = run.load_model(args.target, args.device)
    c = trained.run.info.config
    for task in args.task:      # every task checked before any is scored: all or nothing in evals.jsonl
        _require_evaluable(trained.model, c, task, args)
    table = Table(title=f"{trained.run.info.model}: {trained.run.directory} (step {trained.run.step})",
                  title_justify="left")
    for col in ("task", "metric", "value", "n", "note"):
        table.add_column(col, justify="right" if col in ("value", "n") else "left")
    records = []
    for task in args.task:
        with trained.model.held_out(), _progress(f"eval {task}") as tick:
            result, n, note = _evaluate(trained.model, c, task, args, tick)
        for i, (metric, value) in enumerate(result.items()):
            table.add_row(task if i == 0 else "", metric, _shown(metric, value), str(n) if i == 0 else "",
                          note if i == 0 else "")
        records.append({"task": task, "step": trained.run.step, **result, "n": n})
    out.print(table)
    with open(trained.run.directory / "evals.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return 0


def _shown(metric: str, value: float) -> str:
    """A metric for the eval table: a perplexity past 10⁶ says only that the model has not learned
    the task, so it is shown as such, with its bits (log₂ of the perplexity), not as `9.8e+08`."""
    if metric == "ppl" and value > 1e6:
        return f"≫ 10⁶ ({math.log2(value):.1f} bits)"
    return f"{value:.4g}" if value > 1e4 else f"{value:.4f}"


def _require_evaluable(model, c, task: str, args: argparse.Namespace) -> None:
    """Refuse (RunError) a task this model cannot be scored on with these settings."""
    from nldsl.backends.torch.app import data, evals, tasks
    if task == "bpb":
        data.require_text(args.corpus or c.corpus, args.context or c.context, model.VOCAB)
    elif task in evals.SUITE:
        data.require_bytes(model.VOCAB, task)
        evals.requests_file(task)
    else:
        tasks.require(task, model.VOCAB, args.context or c.context, args.pairs or c.pairs)


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Tick]:
    """A progress bar on standard error (on a terminal only, gone when done), advanced by `tick(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _evaluate(model, c, task: str, args: argparse.Namespace,
              tick: Tick) -> tuple[dict[str, float], int, str]:
    """One evaluation task of `nldsl eval`: its metrics, how many items it scored, a note."""
    from nldsl.backends.torch.app import evals
    from nldsl.backends.torch.app.data import corpus
    from nldsl.backends.torch.app.trainer import bits_per_byte
    if task == "bpb":
        name, windows = args.corpus or c.corpus or "shakespeare", args.limit or 64
        value = bits_per_byte(model, corpus(name)[1], args.context or c.context, windows=windows,
                              precision=c.precision, tick=tick)
        return {"bpb": value}, windows, f"held-out {name}"
    if task == "lambada":
        result = evals.lambada(model, args.limit, args.batch, args.window, tick)
        return result, int(result.pop("docs")), "last word: greedy accuracy, bits per byte, perplexity"
    if task in evals.SUITE:
        result = evals.multiple_choice(model, task, args.limit, args.batch, args.window, tick)
        n, chance = int(result.pop("docs")), result.pop("chance")
        return result, n, f"chance {chance:.2f}; small models sit near chance: a pipeline check, not a signal"
    if c.task != task:
        out.print(f"note: this run trained on {c.task or 'text'}, not {task}")
    length, pairs = args.context or c.context, args.pairs or c.pairs
    result = evals.memory_task(model, task, length, pairs, args.limit or 256, tick=tick)
    n = int(result.pop("queries", result.pop("examples", 0)))
    return result, n, f"length {length}" + (f", {pairs} pairs" if task == "mqar" else "")


def cmd_generate(args: argparse.Namespace) -> int:
    from nldsl.backends.torch.app import run
    prompt = _prompt(args.prompt, args.escapes)
    model = run.load_model(args.target, args.device).model
    from nldsl.backends.torch.app.sample import generate
    if prompt and max(prompt) >= model.VOCAB:
        raise RunError(f"the prompt holds byte {max(prompt)}, but this model's vocabulary has {model.VOCAB} tokens "
                       f"(0 to {model.VOCAB - 1}): it was not trained on text")
    text = generate(model, prompt, args.bytes, args.temperature, args.top_k, args.seed)
    sys.stdout.write((prompt + text).decode("utf-8", "replace") + "\n")
    return 0


def _prompt(text: str, escapes: bool) -> bytes:
    """The prompt's bytes: its UTF-8, or with --escapes, Python's byte escapes (\\n, \\t, \\xNN) read."""
    if not escapes:
        return text.encode()
    try:
        return text.encode().decode("unicode_escape").encode("latin-1")
    except UnicodeError:
        raise UsageError(f"--prompt {text}: with --escapes a prompt is bytes, written with \\n, \\t or \\xNN "
                         "escapes (no broken escapes, no \\u escapes above \\xff)") from None


def cmd_fmt(args: argparse.Namespace) -> int:
    from nldsl.fmt import format_source
    from nldsl.source import SourceFile
    status = 0
    for path in args.specs:
        try:
            source = SourceFile.read(path)
        except (OSError, UnicodeDecodeError) as e:
            err.print(f"error: cannot read {path}: {e.strerror if isinstance(e, OSError) else 'it is not UTF-8 text'}")
            status = 1
            continue
        text, diagnostics = format_source(source)
        if text is None:
            _show(render_all(diagnostics, {source.path: source}))
            status = 1
        elif args.check:
            if text != source.text:
                out.print(f"would reformat {path}")
                status = 1
        elif args.write:
            if text != source.text:
                Path(path).write_text(text, encoding="utf-8")
                out.print(f"reformatted {path}")
        else:
            sys.stdout.write(text)
    return status


PICTURES = ("svg", "png", "pdf", "jpg", "dot", "gv")      # what `render` writes (through Graphviz but .dot)


def _picture(text: str) -> str:
    """`render -o`: a file whose suffix names a picture format."""
    if Path(text).suffix.lstrip(".").lower() not in PICTURES:
        raise argparse.ArgumentTypeError(f"expects a file ending in {', '.join('.' + s for s in PICTURES)}, "
                                         f"got {text!r}")
    return text


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", type=config.override, metavar="NAME=VALUE",
                   help="override a header parameter (a finite number)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="nldsl", description="Nested Learning specs: check, explain, draw, format, train.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="check specs and print their diagnostics")
    c.add_argument("specs", nargs="+", metavar="SPEC")
    _add_set(c)
    c.set_defaults(run=cmd_check)

    e = sub.add_parser("explain", help="the levels of a model or optimizer, as a table with costs")
    e.add_argument("spec", metavar="SPEC")
    e.add_argument("--unit", help="which model or optimizer (default: the file's first)")
    e.add_argument("--width", type=config.whole(40, 10_000), default=180, help="table width in characters")
    _add_set(e)
    e.set_defaults(run=cmd_explain)

    r = sub.add_parser("render", help="draw the level hierarchy (or the firing timeline)")
    r.add_argument("spec", metavar="SPEC")
    r.add_argument("-o", "--output", required=True, type=_picture, help="FILE.svg, FILE.png, FILE.pdf or FILE.dot")
    r.add_argument("--timeline", action="store_true", help="draw which levels fire over one hyperperiod")
    r.add_argument("--unit", help="which model or optimizer (default: the file's first)")
    _add_set(r)
    r.set_defaults(run=cmd_render)

    k = sub.add_parser("compile", help="write the generated PyTorch model, optimizers and a train.py")
    k.add_argument("spec", metavar="SPEC")
    k.add_argument("-o", "--output", required=True, help="directory to write into")
    k.add_argument("--unit", help="which model (default: the file's first)")
    _add_set(k)
    k.set_defaults(run=cmd_compile)

    t = sub.add_parser("train", help="compile a spec and train it; writes a run folder")
    t.add_argument("spec", nargs="?", metavar="SPEC")
    t.add_argument("--unit", help="which model (default: the file's first)")
    _add_set(t)
    t.add_argument("--out", dest="run_dir", metavar="DIR", help="the run folder (default: runs/<model>-<date>-<time>)")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its checkpoint")
    t.add_argument("--sample", type=config.whole(0), default=200, metavar="BYTES",
                   help="bytes to sample at the end (0: none)")
    config.add_arguments(t, {"steps": None, "batch": None, "context": None, "seed": None})
    t.set_defaults(run=cmd_train)

    n = sub.add_parser("continual", help="train on one corpus, then another: how much of the first is forgotten")
    n.add_argument("spec", metavar="SPEC")
    n.add_argument("--corpora", nargs="+", default=["shakespeare", "moby-dick"], metavar="CORPUS",
                   help="corpora in training order (names or paths; default: shakespeare moby-dick)")
    n.add_argument("--unit", help="which model (default: the file's first)")
    _add_set(n)
    n.add_argument("--out", dest="run_dir", metavar="DIR", help="the run folder (default: runs/<model>-<date>-<time>)")
    config.add_arguments(n, {"steps": None, "batch": None, "context": None, "seed": None})
    n.set_defaults(run=cmd_continual)

    m = sub.add_parser("compare", help="train several specs or variants alike, one after another; writes a table")
    m.add_argument("variants", nargs="+", metavar="SPEC[:NAME=VALUE,...]",
                   help="a spec, with header settings of its own after ':' (specs/hope.nl:cms_expand=0.5)")
    _add_set(m)
    m.add_argument("--match-params", metavar="REF",
                   help="first bring every other variant to REF's parameter count (REF: a variant's name or place)")
    m.add_argument("--match-by", metavar="NAME", help="the header setting --match-params changes (default: the one "
                                                      "that gets closest; the width only as a last resort)")
    m.add_argument("--out", dest="run_dir", metavar="DIR", help="where the runs and the table go "
                                                                "(default: runs/compare-<date>-<time>)")
    config.add_arguments(m, {"steps": None, "batch": None, "context": None, "seed": None})
    m.set_defaults(run=cmd_compare)

    v = sub.add_parser("eval", help="evaluate a trained run: held-out bpb, LAMBADA, multiple choice, memory tasks")
    v.add_argument("target", metavar="RUN_OR_CKPT", help="a run folder or a checkpoint file in one")
    v.add_argument("--task", nargs="+", default=["bpb"],
                   choices=["bpb", "lambada", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                            "mqar", "sniah"])
    v.add_argument("--limit", type=config.whole(1), help="documents (or bpb windows, or memory-task examples) to score")
    v.add_argument("--corpus", help="bpb on this corpus's held-out split (default: the run's)")
    v.add_argument("--context", type=config.whole(1), help="bpb window / memory-task length (default: the run's)")
    v.add_argument("--pairs", type=config.whole(1), help="MQAR key-value pairs (default: the run's)")
    v.add_argument("--batch", type=config.whole(1), default=8)
    v.add_argument("--window", type=config.whole(1), default=1024, help="longest context scored, in bytes")
    v.add_argument("--device", type=config.device_name, help="cpu or cuda (default: the run's)")
    v.set_defaults(run=cmd_eval)

    g = sub.add_parser("generate", help="sample text from a trained run")
    g.add_argument("target", metavar="RUN_OR_CKPT", help="a run folder or a checkpoint file in one")
    g.add_argument("--prompt", default="\n")
    g.add_argument("--bytes", type=config.whole(0), default=300)
    g.add_argument("--temperature", type=config.real(0), default=0.8, help="0: greedy")
    g.add_argument("--top-k", type=config.whole(1))
    g.add_argument("--seed", type=config.whole(0, config.SEED_LIMIT - 1), default=0)
    g.add_argument("--escapes", action="store_true", help=r"read \n, \t and \xNN in the prompt as escapes")
    g.add_argument("--device", type=config.device_name, help="cpu or cuda (default: the run's)")
    g.set_defaults(run=cmd_generate)

    f = sub.add_parser("fmt", help="print specs in canonical form")
    f.add_argument("specs", nargs="+", metavar="SPEC")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only report files that would change (exit 1)")
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    f.set_defaults(run=cmd_fmt)
    return p


def entry() -> NoReturn:
    """The `nldsl` console script. After `check`, it exits without freeing the trees it built (as
    mypy does): nothing is left to flush but the standard streams, and freeing takes longer than
    the check's output did. Every other command exits normally, so that torch and the trainer's
    files close as usual."""
    code = main()
    if _checked_results:
        with contextlib.suppress(OSError):     # a reader that went away (`nldsl check ... | head`)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    _checked_results.clear()
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except UsageError as e:
        err.print(f"nldsl {args.command}: error: {e}")
        return 2
    except RunError as e:           # a mistake in what the command was given: it says what to do
        err.print(f"error: {e}")
        return 1
    except OSError as e:            # a file that cannot be read or written: the machine's answer, not a bug
        err.print(f"error: cannot use {e.filename}: {e.strerror}" if e.filename else f"error: {e}")
        return 1
    except Exception as e:
        if _out_of_memory(e):
            err.print(f"error: out of memory ({e}): make the model smaller, or the batch and context shorter")
            return 1
        if os.environ.get("NLDSL_DEBUG"):
            raise
        err.print(f"internal error in nldsl ({type(e).__name__}: {e}); rerun with NLDSL_DEBUG=1 for the "
                  "traceback and please report it")
        return 3


def _out_of_memory(e: Exception) -> bool:
    """An allocation that failed (past the estimate every run is checked against first)."""
    torch = sys.modules.get("torch")        # only a command that loaded torch can run out of its memory
    return isinstance(e, MemoryError) or (torch is not None and isinstance(e, torch.OutOfMemoryError))


if __name__ == "__main__":
    entry()
