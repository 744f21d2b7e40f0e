"""Declarations: parameters and memories (structures, modifiers, CMS desugaring)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from nldsl import ast, catalog
from nldsl.check_expr import MAX_EXACT_INT, Header, bind, const_eval, const_int, name_option
from nldsl.diagnostics import Diagnostics, did_you_mean
from nldsl.source import Span
from nldsl.spec import Memory, Param, Structure

Mode = Literal["model", "optimizer"]


@dataclass
class CmsGroup:
    """A `cms [...]` declaration: the memories it became, how they combine, their periods."""

    name: str
    members: list[str]
    mode: Literal["chain", "parallel"]
    periods: list[ast.Period]


def _modifiers(mods: list[ast.Modifier], allowed: dict[str, dict[str, str]], diags: Diagnostics,
               what: str) -> dict[str, str | int | bool]:
    out: dict[str, str | int | bool] = {}
    for m in mods:
        if m.key in out:
            diags.error("NL033", f"'{m.key}' is given twice", m.span)
            continue
        if m.key not in allowed:
            diags.error("NL030", f"{what} cannot be declared '{m.key}'", m.span,
                        f"{what.split()[-1]} modifiers: " + ", ".join(sorted(allowed)))
            continue
        if m.key == "frozen":
            out["frozen"] = True
        elif m.key == "level":
            assert isinstance(m.value, int)
            if m.value < 1:
                diags.error("NL066", "levels are numbered from 1 (fastest)", m.value_span or m.span)
                continue
            out["level"] = m.value
        else:
            choices = allowed[m.key]
            if m.value not in choices:
                if m.key == "per" and m.value in catalog.PER:
                    where = "optimizer states" if m.value == "element" else "model memories"
                    diags.error("NL034", f"`per {m.value}` is for {where}", m.value_span or m.span,
                                "model memories are `per head` (or shared); optimizer states `per element`")
                    continue
                diags.error("NL034", f"unknown {m.key} '{m.value}'", m.value_span or m.span,
                            did_you_mean(str(m.value), choices))
                continue
            out[m.key] = str(m.value)
    return out


PARAM_MODIFIERS = {"init": catalog.PARAM_INITS, "frozen": {}, "level": {}}


def check_param(decl: ast.ParamDecl, config: Header, diags: Diagnostics) -> Param | None:
    t = decl.type
    sig = catalog.PARAM_TYPES.get(t.func.name)
    mods = _modifiers(decl.modifiers, PARAM_MODIFIERS, diags, "a parameter")
    if sig is None:
        diags.error("NL022", f"unknown parameter type '{t.func.name}'", t.func.span,
                    did_you_mean(t.func.name, catalog.PARAM_TYPES))
        return None
    bound = bind(t, sig, f"'{t.func.name}'", diags)
    if bound is None:
        return None
    sizes = [*bound.args, *(bound.options[p] for p in sig.positional if p in bound.options)]
    shape = tuple(const_int(s, config, diags, "a parameter size") for s in sizes)
    if any(s is None for s in shape):
        return None
    return Param(name=decl.name.name, shape=tuple(int(s) for s in shape if s is not None),
                 init=str(mods.get("init", "normal")), frozen=bool(mods.get("frozen", False)),
                 level=mods.get("level"), span=decl.span)  # type: ignore[arg-type]


def memory_modifiers(mode: Mode) -> dict[str, dict[str, str]]:
    per = {"head": catalog.PER["head"]} if mode == "model" else {"element": catalog.PER["element"]}
    return {"per": per, "scope": catalog.SCOPES, "init": catalog.MEMORY_INITS, "level": {}, "frozen": {}}


def check_structure(call: ast.Call, heads: int, config: Header, diags: Diagnostics,
                    mode: Mode, heads_span: Span | None = None) -> Structure | None:
    sig = catalog.STRUCTURES.get(call.func.name)
    if sig is None:
        hint = did_you_mean(call.func.name, catalog.STRUCTURES)
        if call.func.name in catalog.PARAM_TYPES:
            hint = "that is a parameter type; memories are matrix, mlp, elementwise or attention"
        diags.error("NL022", f"unknown memory structure '{call.func.name}'", call.func.span, hint)
        return None
    bound = bind(call, sig, f"'{call.func.name}'", diags)
    if bound is None:
        return None
    kind = call.func.name
    dim = int(config.get("dim", 0))
    values: dict[str, object] = {}
    named = dict(zip(sig.positional, bound.args, strict=False)) | bound.options
    for key, expr in named.items():
        opt = sig.options.get(key, catalog.Option("int"))
        if opt.type == "name":
            word = name_option(key, expr, opt, diags)
            if word is None:
                return None
            values[key] = word
        elif opt.type == "number":
            v = const_eval(expr, config, diags, f"'{key}'")
            if v is None:
                return None
            values[key] = v
        else:
            v = const_int(expr, config, diags, f"'{key}'", maximum=opt.maximum or MAX_EXACT_INT)
            if v is None:
                return None
            values[key] = v
    if mode == "optimizer":
        in_dim = int(values.get("in", 1 if kind == "mlp" else 0))
    else:
        if "in" not in values and dim % heads:
            diags.error("NL052", f"the model width {dim} does not split into {heads} heads", heads_span or call.span,
                        "give the memory an explicit `in = ...` width, or change `heads`")
            return None
        in_dim = int(values.get("in", dim // heads))
    out_dim = int(values.get("out", in_dim))
    if kind == "matrix":
        return Structure(kind="matrix", in_dim=in_dim, out_dim=out_dim)
    if kind == "elementwise":
        return Structure(kind="elementwise", in_dim=in_dim, out_dim=in_dim)
    if kind == "attention":
        return Structure(kind="attention", in_dim=in_dim, out_dim=in_dim, window=int(values.get("window", 0)))
    residual = "residual" in bound.flags
    if residual and in_dim != out_dim:
        diags.error("NL053", f"a residual MLP needs out = in, got in {in_dim} and out {out_dim}",
                    bound.spans.get("residual", call.span), "drop `residual` or set `out` to the input width")
        return None
    expand = float(values.get("expand", 4))  # type: ignore[arg-type]
    hidden = int(values.get("hidden") or max(1, round(min(expand * max(in_dim, 1), MAX_EXACT_INT + 1))))
    if hidden > MAX_EXACT_INT:
        diags.error("NL042", f"the hidden width, {expand:g} × {in_dim}, is more than {MAX_EXACT_INT:,}",
                    named["expand"].span if "expand" in named else call.span, "no machine runs a size that large")
        return None
    depth = int(values.get("depth", 2))
    return Structure(kind="mlp", in_dim=in_dim, out_dim=out_dim, depth=depth, hidden=hidden,
                     act=str(values.get("act", "silu")), residual=residual,
                     norm=str(values.get("norm", "none")))


def check_memory(decl: ast.MemoryDecl, config: Header, diags: Diagnostics,
                 mode: Mode) -> tuple[list[Memory], CmsGroup | None]:
    """One declaration can name several memories (`memory A, B : ...`) or one CMS of several."""
    mods = _modifiers(decl.modifiers, memory_modifiers(mode), diags, "a memory")
    spans = {m.key: m.span for m in decl.modifiers}
    heads = 1
    if mods.get("per") == "head":
        if "heads" in config.failed:   # its value was refused, and reported, in the header
            return [], None
        if "heads" not in config:
            diags.error("NL041", "`per head` needs a `heads` parameter in the model header", spans["per"],
                        "add it to the header: `model M(..., heads = 4)`")
            return [], None
        heads = int(config["heads"])
    common = dict(heads=heads, per=mods.get("per"), scope=mods.get("scope", "sequence"),
                  init=mods.get("init", "zeros" if mode == "optimizer" else "learned"),
                  level=mods.get("level"), frozen=bool(mods.get("frozen", False)))
    if mode == "model" and common["scope"] == "persistent" and common["init"] == "learned":
        diags.warn("NL076", "a persistent memory's learned initial state trains on the first sequence only: from "
                            "the second on, the state carried over replaces it and no gradient reaches it",
                   spans.get("scope", decl.span),
                   "`init identity` (a residual MLP, a square matrix) or `init zeros` (a matrix) start it without "
                   "an outer parameter; `scope sequence` restarts each sequence from a state the outer level trains")
    if isinstance(decl.structure, ast.Cms):
        if len(decl.names) != 1:
            diags.error("NL031", "a `cms` declaration names one memory", decl.names[1].span)
            return [], None
        cms = decl.structure
        mode_name = cms.mode.name if cms.mode else "chain"
        if mode_name not in ("chain", "parallel"):
            assert cms.mode is not None
            diags.error("NL034", f"unknown cms mode '{mode_name}'", cms.mode.span,
                        did_you_mean(mode_name, ["chain", "parallel"]))
            return [], None
        base = decl.names[0].name
        members: list[Memory] = []
        periods: list[ast.Period] = []
        for i, level in enumerate(cms.levels, start=1):
            s = check_structure(level.structure, heads, config, diags, mode, spans.get("per"))
            if s is None:
                continue
            if s.kind not in ("mlp", "matrix"):
                diags.error("NL084", "CMS levels are MLP or matrix memories", level.structure.span)
                continue
            members.append(Memory(name=f"{base}_{i}", structure=s, group=base, span=level.span,
                                  **common))  # type: ignore[arg-type]
            periods.append(level.period)
        if len(members) != len(cms.levels):
            return [], None
        if mode_name == "chain":
            _check_fastest_first(base, cms, periods, config, diags)
            for i, (a, b) in enumerate(pairwise(members), start=1):
                if a.structure.out_dim != b.structure.in_dim:
                    diags.error("NL051", f"level {i} of cms '{base}' outputs width {a.structure.out_dim} but "
                                         f"level {i + 1} reads width {b.structure.in_dim}", b.span)
        group = CmsGroup(name=base, members=[m.name for m in members], mode=mode_name,  # type: ignore[arg-type]
                         periods=periods)
        return members, group
    s = check_structure(decl.structure, heads, config, diags, mode, spans.get("per"))
    if s is None:
        return [], None
    if common["init"] == "identity" and not ((s.kind == "matrix" and s.in_dim == s.out_dim) or s.residual):
        diags.error("NL034", f"`init identity` needs a square matrix or a residual MLP; this is "
                             f"{s.describe()}", spans["init"], "use `init learned` or `init zeros`")
        return [], None
    if s.kind == "attention":
        for key in ("init", "scope"):
            if key in mods:
                diags.error("NL030", f"attention has no state: `{key}` does not apply", spans[key],
                            "attention is re-solved from the context for every query")
    return [Memory(name=n.name, structure=s, span=n.span, **common) for n in decl.names], None  # type: ignore[arg-type]


def _tokens_between_updates(p: ast.Period, config: Header) -> float | None:
    """How many tokens of a sequence pass between two updates (a step is `context` tokens of every
    sequence); None when a count or the context is not known."""
    if p.unit == "never":
        return math.inf
    count = config.get(p.count) if isinstance(p.count, str) else (p.count or 1)
    per_unit = config.get("context") if p.unit == "step" else 1
    return None if count is None or per_unit is None else count * per_unit


def _check_fastest_first(name: str, cms: ast.Cms, periods: list[ast.Period], config: Header,
                         diags: Diagnostics) -> None:
    """NL067, comparing periods in one unit: tokens, even when some levels count steps."""
    tokens = [t for p in periods if (t := _tokens_between_updates(p, config)) is not None and t > 0]
    if len(tokens) < len(periods) or tokens == sorted(tokens):   # an unknown or bad period: reported elsewhere
        return
    mixed = len({p.unit for p in periods if p.unit != "never"}) > 1
    shown = ", ".join(_describe_period(p, t, mixed) for p, t in zip(periods, tokens, strict=True))
    hint = "a chained CMS reads its fastest level first (paper eq. 30): reorder the levels"
    if mixed:
        hint += f"; a step is the {int(config['context'])} tokens of a sequence (`context`)"
    diags.warn("NL067", f"the levels of cms '{name}' are not listed fastest first ({shown})", cms.span, hint)


def _describe_period(p: ast.Period, tokens: float, mixed: bool) -> str:
    """`16` as before when every level counts the same unit; `4 steps = 1,024 tokens` when they mix."""
    if p.unit == "never":
        return "never"
    count = p.count if p.count is not None else 1
    if not mixed:
        return str(count)
    unit = p.unit + ("" if count == 1 else "s")
    return f"{count} {unit}" + (f" = {int(tokens):,} tokens" if p.unit == "step" else "")
