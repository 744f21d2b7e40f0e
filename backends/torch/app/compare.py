"""`nldsl compare`: several specs, or variants of one, trained one after another on the same data
with the same settings, then one table of what each reached.

A variant is written `SPEC[:NAME=VALUE,...]`: the spec file and header settings of its own, applied
over the settings every variant shares (`--set`). Each variant trains in a run folder of its own
(under the comparison's folder) exactly as `nldsl train` would make it, so every run can be opened,
evaluated, resumed or reported later. `--match-params REF` first changes one header setting of each
other variant so that its parameter count is as close as it can get to REF's
(`nldsl.api.match_parameters`). Kept free of torch: the runs themselves go through `run.train`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from nldsl.backends.torch.app.config import RunError, UsageError


class Variant(BaseModel):
    """One entry of a comparison: a spec and the header settings of its own."""

    spec: Path
    settings: dict[str, float] = {}

    @property
    def label(self) -> str:
        """The spec's name, with its own settings: `hope[cms_expand=0.5]`."""
        own = ",".join(f"{k}={v:g}" for k, v in self.settings.items())
        return self.spec.stem + (f"[{own}]" if own else "")


class Outcome(BaseModel):
    """What one variant reached: its run folder, size, final training loss, speed and evaluation."""

    label: str
    spec: str
    settings: dict[str, float]          # every header setting the run used: shared, its own, matched
    run: str
    parameters: int
    steps: int
    loss: float | None                  # the last logged training loss
    tokens_per_second: float | None
    seconds: float
    metrics: dict[str, float]           # the final evaluation (held-out bits per byte, or a task's accuracy)
    failed: str = ""                    # why the run stopped (a loss that is not a number), if it did


def parse_variant(text: str) -> Variant:
    """`specs/hope.nl:cms_expand=0.5,memory_period=16` → a Variant. The spec is everything up to the
    last ':' that is followed by settings, so paths with ':' in folder names still work."""
    spec, sep, rest = text.rpartition(":")
    if not sep or "=" not in rest:
        return Variant(spec=Path(text))
    settings: dict[str, float] = {}
    for item in rest.split(","):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise UsageError(f"variant {text!r}: settings are written NAME=VALUE, separated by ','")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise UsageError(f"variant {text!r}: {name} must be a finite number, got {value.strip()!r}")
        if name in settings:
            raise UsageError(f"variant {text!r}: {name} is set twice")
        settings[name] = number
    return Variant(spec=Path(spec), settings=settings)


def labels_unique(variants: list[Variant]) -> None:
    seen: set[str] = set()
    for v in variants:
        if v.label in seen:
            raise UsageError(f"{v.label} is compared twice: give each variant its own spec or settings")
        seen.add(v.label)


def compare(variants: list[Variant], shared: dict[str, float], parameters: dict[str, int], out: Path,
            train_one: Callable[[Variant, Path], dict[str, float]], console=None) -> list[Outcome]:
    """Train every variant in `out/<label>/` by `train_one(variant, run_folder)` (which makes the run
    and returns its final evaluation), then write `out/compare.md` and `out/compare.json`; after each
    run, so a comparison stopped part way keeps what it had. `parameters` holds each label's count.
    A run whose loss stops being a number is recorded as failed and the others go on."""
    outcomes: list[Outcome] = []
    for v in variants:
        folder = out / _folder_name(v.label)
        started = time.time()
        failed = ""
        metrics: dict[str, float] = {}
        try:
            metrics = train_one(v, folder)
        except RunError as e:
            if not (folder / "run.json").exists():
                raise           # the run was never made: the same mistake would stop every variant
            failed = str(e)
        settings = {**shared, **v.settings}
        last = _last_step(folder / "metrics.jsonl")
        outcomes.append(Outcome(label=v.label, spec=str(v.spec), settings=settings, run=str(folder),
                                parameters=parameters[v.label], steps=int(last.get("step", 0)),
                                loss=last.get("loss"), tokens_per_second=last.get("tok_s"),
                                seconds=round(time.time() - started, 1), metrics=metrics, failed=failed))
        write(outcomes, out)
        if console is not None:
            console.print(f"{v.label}: " + (f"stopped: {failed}" if failed else
                                             "  ".join(f"{k.replace('_', ' ')} {x:.4f}" for k, x in metrics.items())),
                          markup=False)
    return outcomes


def _folder_name(label: str) -> str:
    """A label as a folder name: the settings' brackets, '=' and ',' kept readable, nothing else odd."""
    return "".join(c if c.isalnum() or c in "._-=[]," else "_" for c in label)


def _last_step(metrics: Path) -> dict[str, float]:
    """The last training record (one with a loss) of a run's metrics.jsonl; {} when there is none."""
    last: dict[str, float] = {}
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "loss" in record:
                last = record
    return last


def write(outcomes: list[Outcome], out: Path) -> None:
    """compare.json (every outcome, in full) and compare.md (the table) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps([o.model_dump() for o in outcomes], indent=2) + "\n",
                                      encoding="utf-8")
    (out / "compare.md").write_text(table(outcomes), encoding="utf-8")


def table(outcomes: list[Outcome]) -> str:
    """The Markdown table: one row per variant, one column per evaluation metric."""
    names = list(dict.fromkeys(k for o in outcomes for k in o.metrics))
    head = ["variant", "parameters", "steps", "final loss", "tokens/s", "seconds",
            *(k.replace("_", " ") for k in names)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for o in outcomes:
        cells = [o.label + (f" (stopped: {o.failed})" if o.failed else ""), f"{o.parameters:,}", str(o.steps),
                 "—" if o.loss is None or not math.isfinite(o.loss) else f"{o.loss:.4f}",
                 "—" if o.tokens_per_second is None else f"{o.tokens_per_second:,.0f}", f"{o.seconds:.0f}",
                 *("—" if k not in o.metrics else f"{o.metrics[k]:.4f}" for k in names)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
