"""Stage 2, check: the AST of a spec and its imports → a checked `Spec`, plus every diagnostic.

Checks run to completion: a broken statement is reported and skipped, and the rest of the spec
is still checked, so one run shows every error.
"""

from __future__ import annotations

import math
from collections.abc import Container

from nldsl import ast, catalog
from nldsl.check_decl import CmsGroup, Mode, check_memory, check_param
from nldsl.check_expr import MAX_EXACT_INT, Binding, Context, ExprChecker, Header, bind, const_eval, const_int
from nldsl.check_learn import LearnChecker, period_of
from nldsl.dataflow import Deps, Flow, learn_exprs
from nldsl.diagnostics import Diagnostics, did_you_mean
from nldsl.load import Loaded, library_specs
from nldsl.parse import MAX_EXPRESSION_DEPTH, gc_paused
from nldsl.source import Span
from nldsl.spec import (
    Assignment,
    Block,
    Memory,
    Model,
    Op,
    OptimGroup,
    Optimizer,
    Param,
    Schedule,
    Spec,
    Structure,
    Train,
)

RESERVED = set(catalog.FUNCTIONS) | set(catalog.OBJECTIVES) | {"self", "outer"}
MODEL_PARAMS = ("embed", "unembed", "final_norm")


@gc_paused()
def check(loaded: Loaded, diags: Diagnostics, overrides: dict[str, float] | None = None) -> Spec | None:
    """Check every unit of every loaded module; returns None when nothing could be checked.
    `overrides` replace header defaults of the entry file's models (`--set dim=64`)."""
    units: dict[str, ast.Model | ast.Optimizer] = {}
    local: list[str] = []
    for module in loaded.modules:
        for unit in module.units:
            name = unit.name.name
            if name in units:
                first = units[name].name.span
                diags.error("NL021", f"'{name}' is defined twice (first at {first})", unit.name.span,
                            "rename one of them")
                continue
            units[name] = unit
            if module.file == loaded.entry:
                local.append(name)
    entry = next((m for m in loaded.modules if m.file == loaded.entry), None)
    if entry is not None and not entry.units:
        diags.error("NL013", "this file defines no model and no optimizer", entry.span,
                    "start with `model Name(vocab = 256, dim = 128, context = 256) { ... }`")
    optimizers = {n: u for n, u in units.items() if isinstance(u, ast.Optimizer)}
    checked_opts = {}
    for name, unit in optimizers.items():
        o = check_optimizer(unit, diags)
        if o is not None:
            checked_opts[name] = o
    models = {}
    for name, unit in units.items():
        if isinstance(unit, ast.Model):
            m = check_model(unit, optimizers, checked_opts, diags, overrides if name in local else None)
            if m is not None:
                models[name] = m
    return Spec(file=loaded.entry, models=models, optimizers=checked_opts, local_units=tuple(local))


# ---- headers ------------------------------------------------------------------------------------

def check_header(params: list[ast.HeaderParam], diags: Diagnostics, mode: Mode,
                 overrides: dict[str, float] | None = None) -> Header:
    """The header's values, in order. A value that is refused is reported once and its name recorded
    in `failed`, so that its uses further down stay quiet."""
    config = Header()
    last = {p.name.name: i for i, p in enumerate(params)}   # where each name is declared last
    for i, p in enumerate(params):
        name = p.name.name
        if name in config or name in config.failed:
            diags.error("NL021", f"header parameter '{name}' is given twice", p.name.span)
            continue
        later = _DeclaredAfter(last, i)
        v = _header_value(p, mode, config, diags, later, overrides)
        if v is None:
            config.failed.add(name)
        else:
            config[name] = v
    return config


class _DeclaredAfter(Container[str]):
    """The header names declared after position `i`, without building a set per parameter."""

    def __init__(self, last: dict[str, int], i: int) -> None:
        self.last, self.i = last, i

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.last.get(name, -1) > self.i


def _header_value(p: ast.HeaderParam, mode: Mode, config: Header, diags: Diagnostics, later: Container[str],
                  overrides: dict[str, float] | None) -> float | None:
    name = p.name.name
    reserved = catalog.RESERVED_HEADER_NAMES[mode].get(name)
    if name in RESERVED or reserved:
        why = "a built-in name" if reserved is None else f"reserved: it is {reserved}"
        diags.error("NL024", f"'{name}' is {why}", p.name.span, _reserved_hint(name, mode))
        return None
    if overrides and name in overrides:
        v, origin = overrides[name], f" (from --set {name}=...)"
        if not math.isfinite(v):
            diags.error("NL042", f"the value --set gives '{name}' ({v}) is not a finite number", p.value.span,
                        "give it a finite number")
            return None
    else:
        v, origin = const_eval(p.value, config, diags, f"'{name}'", later), ""
    if v is None or name not in catalog.RESERVED_HEADER:
        return v
    if v != int(v) or v < 1:
        diags.error("NL042", f"'{name}' must be a positive integer, got {v:g}{origin}", p.value.span)
        return None
    if v > MAX_EXACT_INT:
        diags.error("NL042", f"'{name}' must be at most {MAX_EXACT_INT:,}, got {v:g}{origin}", p.value.span,
                    "no machine runs a size that large")
        return None
    return v


def _reserved_hint(name: str, mode: Mode) -> str:
    if name == "params" and mode == "optimizer":
        return "the generated optimizer keeps its hyperparameters in torch.optim param groups; rename it"
    if name in catalog.RESERVED_HEADER_NAMES[mode]:
        return f"inside the {mode}, '{name}' always means that input, never this parameter; rename it"
    return "rename it"


# ---- models -------------------------------------------------------------------------------------

def check_model(unit: ast.Model, optimizers: dict[str, ast.Optimizer], checked_opts: dict[str, Optimizer],
                diags: Diagnostics, overrides: dict[str, float] | None = None) -> Model | None:
    config = check_header(unit.params, diags, "model", overrides)
    unknown = sorted(set(overrides or {}) - {p.name.name for p in unit.params})
    if unknown:
        diags.error("NL040", f"cannot set {', '.join(unknown)}: model '{unit.name.name}' has no such header "
                             "parameter", unit.name.span, did_you_mean(unknown[0], [p.name.name for p in unit.params]))
    missing = [k for k in ("vocab", "dim", "context") if k not in config]
    if missing and not any(p.name.name in missing for p in unit.params):
        diags.error("NL040", f"model '{unit.name.name}' does not declare {', '.join(missing)}", unit.name.span,
                    "add them to the header: `model " + unit.name.name + "(vocab = 256, dim = 128, "
                    "context = 256)`")
    if missing:
        return None
    dim, vocab = int(config["dim"]), int(config["vocab"])
    params: dict[str, Param] = {
        "embed": Param(name="embed", shape=(vocab, dim), span=unit.name.span, implicit=True),
        "final_norm": Param(name="final_norm", shape=(dim,), init="ones", span=unit.name.span, implicit=True),
        "unembed": Param(name="unembed", shape=(dim, vocab), span=unit.name.span, implicit=True),
    }
    blocks: list[Block] = []
    trains = [i for i in unit.items if isinstance(i, ast.Train)]
    for item in unit.items:
        if isinstance(item, ast.ParamDecl):
            _declare_param(item, config, params, diags, global_names=params)
    ast_blocks = [b for b in unit.items if isinstance(b, ast.Block)]
    owners = {n.name: (b.name.name if b.name else f"block{i}") for i, b in enumerate(ast_blocks)
              for st in b.body if isinstance(st, ast.MemoryDecl) for n in st.names}
    first_of: dict[str, Block] = {}
    scope = _scope_for(config, params)      # what every block sees first: copied per block, not rebuilt
    for i, item in enumerate(ast_blocks):
        block = check_block(item, i, config, params, scope, diags, owners)
        if block is not None:
            first = first_of.setdefault(block.name, block)
            if first is not block:
                assert item.name is not None
                diags.error("NL021", f"block '{block.name}' is defined twice (first at line {first.span.line})",
                            item.name.span, "give each block its own name")
            blocks.append(block)
    for t in trains[1:]:
        diags.error("NL021", f"a model has one `train` block (the first is at line {trains[0].span.line})", t.span,
                    "merge the two blocks")
    learnable = set(params) | {st.name.name for b in ast_blocks for st in b.body if isinstance(st, ast.ParamDecl)}
    for b in blocks:
        learnable |= set(b.params) | {m for m, mem in b.memories.items()
                                      if mem.parametric and (mem.init == "learned" or mem.learn is None)}
    train = check_train(trains[0] if trains else None, unit, config, optimizers, checked_opts, learnable, diags)
    return Model(name=unit.name.name, config=_ints(config), blocks=tuple(blocks), params=params,
                 train=train, span=unit.span)


def _ints(config: Header) -> dict[str, int | float]:
    return {k: int(v) if v == int(v) else v for k, v in config.items()}


def _declare_param(decl: ast.ParamDecl, config: Header, into: dict[str, Param], diags: Diagnostics,
                   global_names: dict[str, Param]) -> None:
    name = decl.name.name
    if name in RESERVED or name in config or name in catalog.MODEL_INPUTS:
        diags.error("NL024", f"'{name}' is a built-in or header name", decl.name.span, "pick another name")
        return
    if name in into or (into is not global_names and name in global_names):
        first = (into.get(name) or global_names[name]).span.line
        diags.error("NL021", f"'{name}' is defined twice (first at line {first})", decl.name.span, "rename one of them")
        return
    p = check_param(decl, config, diags)
    if p is not None:
        into[name] = p


def _scope_for(config: Header, params: dict[str, Param]) -> dict[str, Binding]:
    scope = {k: Binding(kind="poisoned") for k in config.failed}
    scope |= {k: Binding(kind="config", value=v) for k, v in config.items()}
    for name, p in params.items():
        if not p.implicit:
            scope[name] = Binding(kind="param", width=p.shape[-1] if p.shape else 1, param=p)
    return scope


def check_block(block: ast.Block, index: int, config: Header, model_params: dict[str, Param],
                scope: dict[str, Binding], diags: Diagnostics, elsewhere: dict[str, str] | None = None) -> Block | None:
    name = block.name.name if block.name else f"block{index}"
    repeat = 1 if block.repeat is None else const_int(block.repeat, config, diags, "a repeat count",
                                                       maximum=catalog.MAX_REPEAT)
    ctx = Context(diags=diags, config=config, scope=dict(scope),
                  block=name, elsewhere=elsewhere or {})   # shared, not copied: linear in the number of blocks
    ctx.scope["h"] = Binding(kind="input", width=int(config["dim"]))
    params: dict[str, Param] = {}
    memories: dict[str, Memory] = {}
    groups: dict[str, CmsGroup] = {}
    declared: dict[str, Span] = {}
    # Declarations are visible everywhere in the block; values only after their assignment.
    for stmt in block.body:
        if isinstance(stmt, ast.ParamDecl):
            if stmt.name.name in declared:
                diags.error("NL021", f"'{stmt.name.name}' is defined twice (first at line "
                                     f"{declared[stmt.name.name].line})", stmt.name.span, "rename one of them")
                continue
            _declare_param(stmt, config, params, diags, global_names=model_params)
            if stmt.name.name in params:
                p = params[stmt.name.name]
                ctx.scope[p.name] = Binding(kind="param", width=p.shape[-1] if p.shape else 1, param=p)
            else:
                ctx.scope.setdefault(stmt.name.name, Binding(kind="poisoned"))
        elif isinstance(stmt, ast.MemoryDecl):
            if any(_bad_name(n, ctx, declared, diags) for n in stmt.names):
                continue
            mems, group = check_memory(stmt, config, diags, "model")
            _declare_memories(ctx, stmt, mems, memories)
            if group is not None and mems:
                groups[group.name] = group
                first, last = mems[0].structure, mems[-1].structure
                ctx.scope[group.name] = Binding(kind="memory", memory=mems[0].model_copy(update={
                    "name": group.name, "structure": Structure(kind="mlp", in_dim=first.in_dim,
                                                               out_dim=last.out_dim)}))
            for n in stmt.names:
                declared[n.name] = n.span
    for stmt in block.body:
        if isinstance(stmt, ast.Assign):
            ctx.later.setdefault(stmt.target.name, stmt.target.span)
    assignments: list[Assignment] = []
    learns = LearnChecker(ctx, "model", groups)
    learned: dict[str, Span] = {}
    results: dict[str, object] = {}
    for stmt in block.body:
        if isinstance(stmt, ast.Assign):
            target = stmt.target.name
            if target in RESERVED or target in config or (target in ctx.scope and
                                                           ctx.scope[target].kind in ("param", "memory")):
                kind = ctx.scope[target].kind if target in ctx.scope else "built-in"
                diags.error("NL024", f"cannot assign to '{target}': it names a "
                                     f"{'parameter' if kind == 'param' else kind}", stmt.target.span,
                            "pick another name")
                ctx.later.pop(target, None)
                continue
            ctx.base = target
            op = ExprChecker(ctx).check(stmt.value)
            ctx.later.pop(target, None)
            if op is None:
                ctx.scope.setdefault(target, Binding(kind="poisoned"))  # reported once; later uses stay quiet
                continue
            if target == "h" and op.width != int(config["dim"]):
                diags.error("NL057", f"the residual stream must keep width {int(config['dim'])}, got {op.width}",
                            stmt.value.span)
            ctx.scope[target] = Binding(kind="value", width=op.width, index=len(assignments))
            assignments.append(Assignment(target=target, expr=op, span=stmt.span))
        elif isinstance(stmt, ast.Learn):
            for mem_name, learn in learns.check(stmt).items():
                if mem_name in learned:
                    diags.error("NL080", f"'{mem_name}' is already learned at line {learned[mem_name].line}",
                                stmt.span, "merge the two `learn` statements")
                    continue
                learned[mem_name] = stmt.span
                results[mem_name] = learn
        elif isinstance(stmt, ast.Update):
            diags.error("NL024", "`param = ...` updates a parameter inside an optimizer spec, not a model",
                        stmt.span)
    for mem_name, learn in results.items():
        memories[mem_name] = memories[mem_name].model_copy(update={"learn": learn})
    params.update(ctx.implicit)
    if groups:
        assignments = _expand_cms_reads(assignments, groups)
        if not _shallow_enough(assignments, diags):
            return None
    if repeat is None:
        return None
    return Block(name=name, repeat=repeat, assignments=tuple(assignments), memories=memories, params=params,
                 span=block.span)


def _declare_memories(ctx: Context, stmt: ast.MemoryDecl, mems: list[Memory], into: dict[str, Memory]) -> None:
    """Bind checked memories; a declaration that failed binds its names as poisoned (no echoes)."""
    if not mems:
        for n in stmt.names:
            ctx.scope.setdefault(n.name, Binding(kind="poisoned"))
    for m in mems:
        into[m.name] = m
        ctx.scope[m.name] = Binding(kind="memory", memory=m)


def _bad_name(n: ast.Ident, ctx: Context, declared: dict[str, Span], diags: Diagnostics) -> bool:
    if n.name in RESERVED or n.name in catalog.MODEL_INPUTS or n.name in ctx.config:
        diags.error("NL024", f"'{n.name}' is a built-in or header name", n.span, "pick another name")
        return True
    if n.name in declared or n.name in ctx.scope:
        where = declared.get(n.name)
        diags.error("NL021", f"'{n.name}' is defined twice" + (f" (first at line {where.line})" if where else ""),
                    n.span)
        return True
    return False


def _shallow_enough(assignments: list[Assignment], diags: Diagnostics) -> bool:
    """The parser bounds how deep an expression nests; reading a CMS adds one level per CMS level, so
    the bound is checked again where CMS reads were expanded."""
    ok = True
    for a in assignments:
        depth = op_depth(a.expr)
        if depth > MAX_EXPRESSION_DEPTH:
            diags.error("NL004", f"with each level of its cms read in turn, this expression nests {depth:,} levels "
                                 f"deep; at most {MAX_EXPRESSION_DEPTH} are supported", a.expr.span,
                        "a cms read goes through every one of its levels: give the cms fewer levels")
            ok = False
    return ok


def op_depth(op: Op) -> int:
    """How deep an expression nests (a leaf is 0), measured without recursion."""
    deepest = 0
    pending = [(op, 0)]
    while pending:
        o, depth = pending.pop()
        deepest = max(deepest, depth)
        pending += [(a, depth + 1) for a in o.args]
    return deepest


def _expand_cms_reads(assignments: list[Assignment], groups: dict[str, CmsGroup]) -> list[Assignment]:
    """`C(x)` of a CMS becomes its levels: chained (C_3(C_2(C_1(x)))) or summed (parallel)."""

    def rewrite(op: Op) -> Op:
        args = tuple(rewrite(a) for a in op.args)
        if op.op == "read" and op.attrs["memory"] in groups:
            g = groups[op.attrs["memory"]]
            x = args[0]
            if g.mode == "chain":
                out = x
                for member in g.members:
                    out = Op(op="read", args=(out,), attrs={"memory": member}, width=op.width, span=op.span)
                return out
            reads = [Op(op="read", args=(x,), attrs={"memory": m}, width=op.width, span=op.span) for m in g.members]
            total = reads[0]
            for r in reads[1:]:
                total = Op(op="add", args=(total, r), width=op.width, span=op.span)
            return total
        return op.model_copy(update={"args": args}) if args != op.args else op

    return [a.model_copy(update={"expr": rewrite(a.expr)}) for a in assignments]


# ---- the outer level ----------------------------------------------------------------------------

def check_train(train: ast.Train | None, unit: ast.Model, config: Header,
                optimizers: dict[str, ast.Optimizer], checked: dict[str, Optimizer], learnable: set[str],
                diags: Diagnostics) -> Train:
    """The outer level. An optimizer whose import failed is reported there, not here again."""
    if train is None:
        diags.warn("NL092", f"model '{unit.name.name}' has no `train` block: it checks, but cannot be trained",
                   unit.name.span, "add `train { optimize all by adamw(lr = 3e-4) }`")
        return Train(declared=False, span=unit.name.span)
    fields: dict[str, object] = {}
    groups: list[OptimGroup] = []
    claimed: dict[str, Span] = {}
    for item in train.items:
        if isinstance(item, ast.Setting):
            _setting(item, config, fields, diags)
            continue
        g = _optimize(item, config, optimizers, checked, learnable, claimed, diags)
        if g is not None:
            groups.append(g)
    if not any(isinstance(i, ast.Optimize) for i in train.items):
        diags.warn("NL092", "this `train` block optimizes nothing: no parameter will change", train.span,
                   "add `optimize all by adamw(lr = 3e-4)`")
    return Train(groups=tuple(groups), span=train.span, **fields)  # type: ignore[arg-type]


def _setting(item: ast.Setting, config: Header, fields: dict[str, object], diags: Diagnostics) -> None:
    key = item.key.name
    if key not in catalog.TRAIN_SETTINGS:
        hint = did_you_mean(key, [*catalog.TRAIN_SETTINGS, "optimize"])
        if key in ("warmup", "min_ratio"):
            hint = f"'{key}' is an option of the schedule: `schedule cosine({key} = ...)`"
        diags.error("NL091", f"unknown train setting '{key}'", item.key.span, hint)
        return
    if key in fields:
        diags.error("NL033", f"'{key}' is set twice", item.key.span)
        return
    v = item.value
    if key == "loss":
        if not isinstance(v, ast.Name) or v.id not in catalog.LOSSES:
            got = v.id if isinstance(v, ast.Name) else "an expression"
            diags.error("NL034", f"unknown loss '{got}'", v.span, did_you_mean(got, catalog.LOSSES))
            return
        fields["loss"] = v.id
    elif key == "schedule":
        fields["schedule"] = _schedule(v, config, diags)
    elif key == "clip":
        c = const_eval(v, config, diags, "'clip'")
        if c is not None:
            fields["clip"] = c
    else:
        n = const_int(v, config, diags, f"'{key}'", minimum=0 if key == "seed" else 1)
        if n is not None:
            fields[key] = n


def _schedule(v: ast.Expr, config: Header, diags: Diagnostics) -> Schedule:
    name = v.func.name if isinstance(v, ast.Call) else v.id if isinstance(v, ast.Name) else ""
    if name not in catalog.SCHEDULES:
        span = v.func.span if isinstance(v, ast.Call) else v.span
        diags.error("NL034", f"unknown schedule '{name}'", span, did_you_mean(name, catalog.SCHEDULES))
        return Schedule()
    if isinstance(v, ast.Name):
        return Schedule(kind=name)
    assert isinstance(v, ast.Call)
    b = bind(v, catalog.SCHEDULES[name], f"schedule '{name}'", diags)
    if b is None:
        return Schedule(kind=name)
    warmup = const_int(b.options["warmup"], config, diags, "'warmup'", minimum=0) if "warmup" in b.options else 0
    ratio = const_eval(b.options["min_ratio"], config, diags, "'min_ratio'") if "min_ratio" in b.options else 0.1
    return Schedule(kind=name, warmup=warmup or 0, min_ratio=ratio if ratio is not None else 0.1)


def _optimize(item: ast.Optimize, config: Header, optimizers: dict[str, ast.Optimizer],
              checked: dict[str, Optimizer], learnable: set[str], claimed: dict[str, Span],
              diags: Diagnostics) -> OptimGroup | None:
    name = item.rule.func.name
    if name not in optimizers:
        hint = did_you_mean(name, optimizers)
        lib = f"optim/{name}.nl"
        broken_imports = [d for d in diags.errors if d.code in ("NL010", "NL011", "NL012") or
                          (d.code in ("NL001", "NL002", "NL003") and d.span.file != item.span.file)]
        if broken_imports:
            hint = f"an import failed (line {broken_imports[0].span.line} of {broken_imports[0].span.file}); " \
                   "fix it first"
        elif lib in library_specs():
            hint = f'add `import "{lib}"` at the top of the file'
        elif name in catalog.RULES:
            hint = f"'{name}' is an in-context update rule; the outer optimizer is an optimizer spec"
        diags.error("NL090", f"unknown optimizer '{name}'", item.rule.func.span, hint)
        return None
    header = {p.name.name for p in optimizers[name].params}
    args: dict[str, float] = {}
    for a in item.rule.args:
        diags.error("NL031", "optimizer arguments are named: `adamw(lr = 3e-4)`", a.span)
    for kw in item.rule.kwargs:
        if kw.name not in header:
            diags.error("NL030", f"optimizer '{name}' has no parameter '{kw.name}'", kw.span,
                        did_you_mean(kw.name, header))
            continue
        v = const_eval(kw.value, config, diags, f"'{kw.name}'")
        if v is not None:
            args[kw.name] = v
    targets: list[str] = []
    for t in item.targets:
        if t.name == "all":
            if len(item.targets) > 1:
                diags.error("NL091", "`all` stands alone", t.span,
                            "write `optimize all by ...` or list names: `optimize W_q, W_k by ...`")
            continue
        if t.name not in learnable:
            diags.error("NL020", f"'{t.name}' is not a trainable parameter", t.span, did_you_mean(t.name, learnable))
            continue
        if t.name in claimed:
            diags.error("NL093", f"'{t.name}' is already optimized by the group at line {claimed[t.name].line}",
                        t.span)
            continue
        claimed[t.name] = item.span
        targets.append(t.name)
    if not targets and not any(t.name == "all" for t in item.targets):
        return None
    if not targets and "all" in claimed:
        diags.error("NL093", "two groups claim `all`", item.span)
        return None
    if not targets:
        claimed["all"] = item.span
    period = 1
    if item.period is not None:
        time = period_of(item.period, config, diags)
        if time is None:
            return None
        if time.base != "step":
            diags.error("NL065", "the outer optimizer runs per step", item.period.span, "write `every N steps`")
            return None
        period = time.period
    if name not in checked:
        return None
    return OptimGroup(optimizer=name, args=args, targets=tuple(targets), period=period, span=item.span)


# ---- optimizers ---------------------------------------------------------------------------------

def check_optimizer(unit: ast.Optimizer, diags: Diagnostics) -> Optimizer | None:
    config = check_header(unit.params, diags, "optimizer")
    ctx = Context(diags=diags, config=config, mode="optimizer")
    ctx.scope = {k: Binding(kind="poisoned") for k in config.failed} | {k: Binding(kind="hyper") for k in config}
    for name in ("grad", "param"):
        ctx.scope[name] = Binding(kind="input", width=0)
    ctx.scope["step"] = Binding(kind="input", width=1)
    memories: dict[str, Memory] = {}
    declared: dict[str, Span] = {}
    for stmt in unit.body:
        if isinstance(stmt, ast.MemoryDecl):
            if any(_bad_name(n, ctx, declared, diags) for n in stmt.names):
                continue
            mems, _ = check_memory(stmt, config, diags, "optimizer")
            for m in mems:
                if m.structure.kind not in ("elementwise", "mlp"):
                    diags.error("NL084", f"an optimizer state is elementwise or a per-element mlp, not "
                                         f"{m.structure.kind}", stmt.structure.span,
                                "it has the shape of the parameter it serves: `memory m : elementwise`")
            _declare_memories(ctx, stmt, [m for m in mems if m.structure.kind in ("elementwise", "mlp")], memories)
            for n in stmt.names:
                declared[n.name] = n.span
        elif isinstance(stmt, ast.Assign):
            ctx.later.setdefault(stmt.target.name, stmt.target.span)
    learns = LearnChecker(ctx, "optimizer", {})
    assignments: list[Assignment] = []
    update: Op | None = None
    update_span: Span | None = None
    results: dict[str, object] = {}
    for stmt in unit.body:
        if isinstance(stmt, ast.Assign):
            target = stmt.target.name
            if target in RESERVED or target in ("grad", "param", "step") or target in config or \
                    (target in ctx.scope and ctx.scope[target].kind == "memory"):
                diags.error("NL024", f"cannot assign to '{target}'", stmt.target.span, "pick another name")
                continue
            op = ExprChecker(ctx).check(stmt.value)
            ctx.later.pop(target, None)
            if op is None:
                ctx.scope.setdefault(target, Binding(kind="poisoned"))
                continue
            ctx.scope[target] = Binding(kind="value", width=op.width, index=len(assignments))
            assignments.append(Assignment(target=target, expr=op, span=stmt.span))
        elif isinstance(stmt, ast.Learn):
            for mem_name, learn in learns.check(stmt).items():
                if mem_name in results:
                    diags.error("NL080", f"'{mem_name}' is learned twice", stmt.span)
                results[mem_name] = learn
        elif isinstance(stmt, ast.Update):
            if update_span is not None:
                diags.error("NL021", f"the parameter is already updated at line {update_span.line}", stmt.span)
                continue
            update_span = stmt.span
            update = ExprChecker(ctx).check(stmt.value)
        if update_span is not None and stmt.span != update_span and not isinstance(stmt, ast.Update):
            diags.error("NL086", "`param = ...` must be the last statement of an optimizer", stmt.span,
                        f"move this above line {update_span.line}: nothing runs after the parameter is updated")
    if update_span is None:
        diags.error("NL086", f"optimizer '{unit.name.name}' never updates the parameter", unit.name.span,
                    "end the body with `param = param - lr * grad` or similar")
        return None
    if update is None:
        return None
    for mem_name, learn in results.items():
        memories[mem_name] = memories[mem_name].model_copy(update={"learn": learn})
    used = Deps()     # values the update reads, directly or through other values
    flow = Flow(tuple(assignments))
    for e in [update, *(e for learn in results.values() for g in learn_exprs(learn).values() for e in g)]:
        flow.deps(e, used)
    for i, a in enumerate(assignments):
        if i not in used.values:
            diags.warn("NL073", f"'{a.target}' is computed but never used", a.span, "use it or delete it")
    return Optimizer(name=unit.name.name, defaults=config, memories=memories, assignments=tuple(assignments),
                     update=update, span=unit.span)
