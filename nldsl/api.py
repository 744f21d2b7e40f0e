"""The front end as one call: parse → check → graph, with every diagnostic collected."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nldsl.check import check
from nldsl.cost import outer_params
from nldsl.diagnostics import Diagnostic, Diagnostics, SpecError, render_all
from nldsl.draw import Diagram, diagram
from nldsl.graph import NestingGraph, build
from nldsl.load import load as load_files
from nldsl.schedule import analyze
from nldsl.source import SourceFile
from nldsl.spec import Spec


@dataclass
class CheckResult:
    file: str
    diagnostics: list[Diagnostic]
    sources: dict[str, SourceFile]
    spec: Spec | None = None
    graphs: dict[str, NestingGraph] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def render(self) -> str:
        return render_all(self.diagnostics, self.sources)

    def graph(self, name: str | None = None) -> NestingGraph:
        """The nesting graph of a unit (default: the file's first model or optimizer)."""
        if name is None:
            assert self.spec is not None
            name = next(u for u in self.spec.local_units if u in self.graphs)
        return self.graphs[name]

    def raise_for_errors(self) -> None:
        if not self.ok:
            raise SpecError(self.errors + self.warnings, self.sources)


Overrides = dict[str, float] | None


def check_text(text: str, file: str = "<spec>", overrides: Overrides = None) -> CheckResult:
    """Check spec text; imports resolve against the working directory, then the spec library."""
    return _run(file, text, overrides)


def check_file(path: str | Path, overrides: Overrides = None) -> CheckResult:
    """Check a `.nl` file and its imports. Never raises for a bad spec: read `.diagnostics`.
    `overrides` replace the header defaults of the file's models, e.g. {"dim": 64}."""
    return _run(path, None, overrides)


def _run(entry: str | Path, text: str | None, overrides: Overrides = None) -> CheckResult:
    loaded = load_files(entry, text)
    diags = Diagnostics()
    diags.extend(loaded.diagnostics)
    result = CheckResult(file=loaded.entry, diagnostics=[], sources=loaded.sources)
    syntax_ok = not diags.errors
    if syntax_ok or loaded.modules:
        spec = check(loaded, diags, overrides)
        result.spec = spec
        if spec is not None and syntax_ok:
            clean = not diags.errors
            for name in spec.local_units:
                graph = build(spec, name, diags, lint=clean)
                if graph is not None:
                    analyze(graph, diags)
                    result.graphs[name] = graph
    result.diagnostics = [d for d in diags.sorted() if not _allowed(d, loaded.sources)]
    return result


def _allowed(d: Diagnostic, sources: dict[str, SourceFile]) -> bool:
    """A warning is silenced by `# allow NL0xx` on its line or on a comment line just above."""
    src = sources.get(d.span.file)
    if d.severity != "warning" or src is None:
        return False
    mark = f"allow {d.code}"
    above = src.line(d.span.line - 1).strip()
    return mark in src.line(d.span.line).partition("#")[2] or (above.startswith("#") and mark in above)


def load_spec(path: str | Path, overrides: Overrides = None) -> Spec:
    """The checked spec of a file; raises `SpecError` (every diagnostic, rendered) if it has errors."""
    result = check_file(path, overrides)
    result.raise_for_errors()
    assert result.spec is not None
    return result.spec


def nesting_graph(path: str | Path, name: str | None = None, overrides: Overrides = None) -> NestingGraph:
    """The nesting graph of a model or optimizer in a file (header parameters set by `overrides`)."""
    result = check_file(path, overrides)
    result.raise_for_errors()
    return result.graph(name)


def render(path: str | Path, name: str | None = None, timeline: bool = False, overrides: Overrides = None) -> Diagram:
    """The level hierarchy (or firing timeline) of a spec; displays as SVG in a notebook."""
    return diagram(nesting_graph(path, name, overrides), timeline=timeline)


def explain(path: str | Path, name: str | None = None, width: int = 160, overrides: Overrides = None) -> str:
    """The `nldsl explain` table of a spec, as text."""
    # the explain table, and the lowering it shows, are not needed to check: imported on first use
    from nldsl import report
    result = check_file(path, overrides)
    result.raise_for_errors()
    return report.render(result.graph(name), result.sources, width=width)


def load(path: str | Path, name: str | None = None, overrides: Overrides = None, seed: int = 0, dtype=None):
    """The compiled PyTorch model of a spec (an `nn.Module`: `model(tokens) -> (logits, state)`).
    Raises MemoryError (nldsl's TooBig, with the estimate) before allocating parameters that would
    not fit in this machine's available memory."""
    import torch

    from nldsl.backends.torch.app.trainer import footprint, require_memory
    from nldsl.backends.torch.codegen.load import model_class
    spec = load_spec(path, overrides)
    cls = model_class(spec, name)
    dtype = dtype or torch.float32
    require_memory(footprint(cls, dtype.itemsize), "cpu", f"{cls.__name__}'s parameters")
    return cls(seed=seed, dtype=dtype)


def reference(path: str | Path, name: str | None = None, overrides: Overrides = None, seed: int = 0, dtype=None):
    """The reference interpreter of a spec: exact and slow, the oracle of the compiled model."""
    import torch

    from nldsl.backends.reference import Reference
    return Reference(load_spec(path, overrides), name, dtype=dtype or torch.float32, seed=seed)


def optimizer(path: str | Path, name: str | None = None) -> type:
    """An optimizer spec compiled to a `torch.optim.Optimizer` subclass."""
    from nldsl.backends.torch.codegen.load import optimizer_class
    spec = load_spec(path)
    name = name or next(u for u in spec.local_units if u in spec.optimizers)
    return optimizer_class(spec, name)


# Header parameters that set a model's shape rather than one of its parts: matching parameter counts
# changes any other numeric setting first (Hope's `cms_expand`, say), and the width only as a last resort.
SHAPE_SETTINGS = ("vocab", "dim", "heads", "layers", "context")
# Factors tried on a setting's value when matching parameter counts: 1/16 to 4 in quarter octaves.
SCALES = [2 ** (k / 4) for k in range(-16, 9)]


def parameter_count(path: str | Path, overrides: Overrides = None, name: str | None = None) -> int | None:
    """How many numbers the outer optimizer trains in a model (the count `nldsl explain` prints),
    from the front end alone; None if the spec does not check with these settings."""
    result = check_file(path, overrides)
    if not result.ok or result.spec is None:
        return None
    name = name or next((u for u in result.spec.local_units if u in result.spec.models), None)
    return outer_params(result.graphs[name]) if name in result.graphs else None


def match_parameters(path: str | Path, target: int, shared: Overrides = None, own: Overrides = None,
                     by: str | None = None) -> dict[str, float]:
    """`own` (a model's header settings, over the `shared` ones) with one more setting that brings
    its parameter count as close as it can get to `target`: the setting `by` if given, else whichever
    of its numeric settings gets closest, the width (`dim`, in multiples of `heads`) only when no other
    setting changes the count. A setting in `own` is left alone; a shared one may change. Values are
    tried on a grid (`SCALES`; whole numbers stay whole), each checked by the front end, so none is
    out of range. ValueError when no setting changes the count, or `by` is not a header setting."""
    own = dict(own or {})
    fixed = {**(shared or {}), **own}
    result = check_file(path, fixed or None)
    result.raise_for_errors()
    assert result.spec is not None
    model = next(result.spec.models[u] for u in result.spec.local_units if u in result.spec.models)
    header = {k: float(v) for k, v in model.config.items()}
    if by is not None and by not in header:
        raise ValueError(f"model '{model.name}' has no header setting {by!r}")
    knobs = [by] if by is not None else [k for k in header if k not in SHAPE_SETTINGS and k not in own]
    for group in ([knobs] if by is not None else [knobs, [] if "dim" in own else ["dim"]]):
        best: tuple[int, float, str, float] | None = None     # (distance, change, setting, value)
        for knob in group:
            counts = {v: n for v in _candidates(knob, header) if (n := parameter_count(path, {**fixed, knob: v}))}
            if len(set(counts.values())) < 2:
                continue                            # this setting does not change the parameters
            for value, n in counts.items():
                key = (abs(n - target), abs(math.log(value / header[knob])), knob, value)
                best = key if best is None or key < best else best
        if best is not None:
            return {**own, best[2]: best[3]}
    raise ValueError(f"no header setting of model '{model.name}' changes its parameter count")


def _candidates(knob: str, header: dict[str, float]) -> list[float]:
    value = header[knob]
    if value <= 0:
        return []                                   # nothing to scale (an off switch, say)
    if knob == "dim":
        heads = int(header.get("heads", 1)) or 1
        return [float(heads * m) for m in range(1, int(4 * value) // heads + 1)]
    grid = {value * s for s in SCALES}
    if value == int(value):
        grid = {float(max(1, round(v))) for v in grid}
    return sorted(grid)
