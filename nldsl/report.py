"""`nldsl explain`: the levels of a model as a table, with what each component learns from, how,
how often, and what it costs."""

from __future__ import annotations

import io
from itertools import groupby

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from nldsl.cost import Cost, component_costs, totals
from nldsl.graph import Component, NestingGraph
from nldsl.lower import Kernel, bind
from nldsl.ops import OBJECTIVES
from nldsl.schedule import Schedule, analyze
from nldsl.source import SourceFile, Span
from nldsl.spec import Block, Learn


class Row(BaseModel):
    level: int
    component: str
    structure: str
    time: str
    objective: str
    context: str
    rule: str
    slow_params: int
    fast_state: int
    flops_per_token: float
    algorithm: str = ""
    note: str = ""


KERNELS = {Kernel.ATTENTION: "attention (SDPA)", Kernel.STATIC: "static module",
           Kernel.TEACH: "teach signal, interleaved", Kernel.CHUNK_LINEAR_ATTENTION: "chunk_linear_attention",
           Kernel.CHUNK_DELTA_RULE: "chunk_delta_rule", Kernel.PERIOD_GD: "period_gd",
           Kernel.PERIOD_MOMENTUM: "period_momentum", Kernel.PERIOD_DGD: "period_dgd",
           Kernel.PERIOD_DGD_MOMENTUM: "period_dgd_momentum", Kernel.IN_CHUNK: "in_chunk (dual form)",
           Kernel.GENERIC: "generic_update (per token)"}


def _text(span: Span | None, sources: dict[str, SourceFile]) -> str:
    """The source text under a span, on one line."""
    if span is None or span.file not in sources:
        return ""
    lines = sources[span.file].lines[span.line - 1:span.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][span.col - 1:span.end_col - 1]
    lines[0] = lines[0][span.col - 1:]
    lines[-1] = lines[-1][:span.end_col - 1]
    return " ".join(line.strip() for line in lines)


def _time(c: Component) -> str:
    learn = c.memory.learn if c.memory is not None else None
    if c.kind == "attention":
        return "per query (∞)"
    if c.time.base == "never":
        return "never (frozen)"
    text = str(c.time)
    if learn is not None and learn.chunk > 1:
        text += f", grads every {learn.chunk}"
    if learn is not None and learn.time.base == "token" and learn.time.period > 1:
        text += ", applied at the boundary"
    return text


def _context(learn: Learn, sources: dict[str, SourceFile]) -> str:
    """What a memory is trained on: `keys → targets` for the known objectives."""
    obj = learn.objective
    if obj is None:
        return "outer loss gradient at its output"
    if obj.op in OBJECTIVES:
        pred, target = obj.args
        if pred.op == "state":            # dot(self, g): a vector memory compressing g
            return _text(target.span, sources)
        keys = _text(learn.key.span, sources) if learn.key is not None else _text(pred.span, sources)
        return f"{keys} → {_text(target.span, sources)}"
    return _text(obj.span, sources)


def _memory_row(c: Component, sources: dict[str, SourceFile], cost: Cost, block: Block | None) -> Row:
    m = c.memory
    assert m is not None
    learn = m.learn
    heads = f" ×{m.heads} heads" if m.heads > 1 else ""
    name = f"{c.name}" + (f" ×{c.repeat}" if c.repeat > 1 else "")
    if learn is None:
        objective, context, rule = "—", ("re-solved per query" if c.kind == "attention" else "outer gradient"), "—"
    else:
        objective = learn.objective_name()
        context = _context(learn, sources)
        rule = f"{_text(learn.rule.span, sources)}; read {learn.read}" + \
            (" (default)" if learn.read_default else "") + f"; backprop {learn.backprop}" + \
            (f" {learn.truncate}" if learn.backprop == "truncate" else "")
    note = c.note or (f"scope {m.scope}, init {m.init}" if learn is not None else "")
    return Row(level=c.level, component=name, structure=m.structure.describe() + heads, time=_time(c),
               objective=objective, context=context, rule=rule, slow_params=cost.slow_params,
               fast_state=cost.fast_state, flops_per_token=cost.flops_per_token, note=note,
               algorithm=KERNELS[bind(m, block).kernel])


def rows(ng: NestingGraph, sources: dict[str, SourceFile]) -> list[Row]:
    costs = component_costs(ng)
    blocks = {b.name: b for b in ng.model.blocks} if ng.model else {}
    out: list[Row] = []
    comps = sorted((c for c in ng.components() if c.kind != "loss"),
                   key=lambda c: (c.level, c.kind, c.block or "", c.id))
    for (level, kind, block), group in groupby(comps, key=lambda c: (c.level, c.kind, c.block)):
        members = list(group)
        if kind in ("param", "init"):
            # a persistent memory's initial state starts only the first sequence (NL076): its own row
            first_only = [c for c in members if kind == "init" and _persistent(blocks.get(c.block or ""), c)]
            for part, time in ((first_only, "first sequence only"),
                               ([c for c in members if c not in first_only], _time(members[0]))):
                if not part:
                    continue
                cost = [costs.get(c.id, Cost()) for c in part]
                where = f"{block}: " if block else ""
                label = "parameters" if kind == "param" else \
                    "initial states" + (" (persistent)" if part is first_only else "")
                out.append(Row(level=level, component=f"{where}{label}" + (f" ×{part[0].repeat}"
                                                                           if part[0].repeat > 1 else ""),
                               structure=", ".join(c.name for c in part), time=time, objective="outer",
                               context="gradient of the training loss", rule="outer optimizer",
                               slow_params=sum(c.slow_params for c in cost), fast_state=0,
                               flops_per_token=sum(c.flops_per_token for c in cost)))
            continue
        for c in members:
            cost = costs.get(c.id, Cost())
            if c.memory is not None and c.kind in ("memory", "attention"):
                out.append(_memory_row(c, sources, cost, blocks.get(c.block or "")))
            elif c.kind == "state":
                learn = c.memory.learn if c.memory is not None else None
                out.append(Row(level=c.level, component=c.name, structure="elementwise" if c.memory else "buffer",
                               time=_time(c), objective=learn.objective_name() if learn else "—",
                               context=_context(learn, sources) if learn else c.note,
                               rule=_text(learn.rule.span, sources) if learn else "—",
                               slow_params=0, fast_state=cost.optimizer_state or cost.fast_state,
                               flops_per_token=cost.flops_per_token, note=c.note))
            else:
                out.append(Row(level=c.level, component=c.name, structure="", time=_time(c), objective="", context="",
                               rule="", slow_params=cost.slow_params, fast_state=0, flops_per_token=0, note=c.note))
    return out


def _persistent(block: Block | None, init: Component) -> bool:
    """Whether a learned initial state belongs to a memory that carries its state across sequences."""
    memory = block.memories.get(init.name.removesuffix("₀")) if block is not None else None
    return memory is not None and memory.scope == "persistent"


def _n(x: float) -> str:
    if abs(x) >= 1e12:          # past giga, a power of ten reads better than a stack of prefixes
        return f"{x:.3g}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}" if x else "—"


def render(ng: NestingGraph, sources: dict[str, SourceFile], width: int = 180) -> str:
    """The explain table and a summary, as plain text (rich renders it for terminals and tests)."""
    table = Table(title=f"{ng.kind} {ng.name}: {len(ng.levels)} levels, fastest first", show_lines=False,
                  title_justify="left")
    for col in ("lvl", "component", "structure", "updates", "objective", "trained on", "rule", "compiled as",
                "slow", "fast", "flop/tok"):
        table.add_column(col, overflow="fold", justify="right" if col in ("lvl", "slow", "fast", "flop/tok")
                         else "left")
    for r in rows(ng, sources):
        table.add_row(str(r.level), r.component, r.structure, r.time, r.objective, r.context, r.rule, r.algorithm,
                      _n(r.slow_params), _n(r.fast_state), _n(r.flops_per_token))
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None, markup=False,
                      emoji=False, highlight=False)
    console.print(table)
    text = console.file.getvalue()
    if ng.model is not None:
        text += "\n" + summary(ng, analyze(ng))
    return text


def summary(ng: NestingGraph, schedule: Schedule) -> str:
    costs = component_costs(ng)
    t = totals(ng, costs)
    model = ng.model
    assert model is not None
    batch = model.train.batch
    tok = schedule.tokens
    lines = [
        f"parameters (outer level): {t.slow_params:,}   in-context state per sequence: {t.fast_state:,}   "
        f"outer optimizer state: {t.optimizer_state:,}",
        f"forward+update FLOPs per token ≈ {_n(t.flops_per_token)}   activation memory kept for the outer "
        f"backward ≈ {t.activation_bytes * batch / 2**20:,.0f} MiB per step (batch {batch}, float32)",
        f"token schedule: periods {sorted(set(tok.periods.values())) or '—'}, hyperperiod {tok.hyperperiod}, "
        f"{len(tok.patterns)} firing patterns{'' if tok.nested else ' (not nested)'};   compiled step graphs: "
        f"{schedule.compiled_graphs}",
    ]
    return "\n".join(lines) + "\n"
