"""`learn` statements: objective, update rule and the time clauses, one `spec.Learn` per memory."""

from __future__ import annotations

from nldsl import ast, catalog
from nldsl.check_decl import CmsGroup, Mode
from nldsl.check_expr import Context, ExprChecker, Header, bind, const_eval, const_int, name_option
from nldsl.diagnostics import Diagnostics, did_you_mean
from nldsl.ops import OpKind
from nldsl.spec import Learn, Memory, Op, Rule, Time


def period_of(p: ast.Period, config: Header, diags: Diagnostics) -> Time | None:
    if p.unit == "never":
        return Time(base="never")
    count = 1
    if isinstance(p.count, int):
        if p.count < 1:
            diags.error("NL066", "a period is a positive number of tokens or steps", p.count_span or p.span)
            return None
        count = p.count
    elif isinstance(p.count, str):
        assert p.count_span is not None
        c = const_int(ast.Name(id=p.count, span=p.count_span), config, diags, "a period")
        if c is None:
            return None
        count = c
    return Time(base=p.unit, period=count)


def _nearest_divisors(n: int, near: int, search: int = 10_000) -> list[int]:
    """The divisors of `n` just below and just above `near`. Only `search` numbers each way are tried
    (a context can be huge); past them, 1 and `n` itself always divide."""
    start = min(near - 1, n)
    below = next((d for d in range(start, max(start - search, 1), -1) if n % d == 0), 1)
    if near >= n:
        return [below]
    above = next((d for d in range(near + 1, min(near + search, n)) if n % d == 0), n)
    return [below, above]


def _key_of(objective: Op) -> list[Op]:
    """Inputs of the `self(...)` calls not under stopgrad or fixed: the keys a prediction reads."""
    keys: list[Op] = []

    def visit(op: Op) -> None:
        if op.op in ("stopgrad", "fixed"):
            return
        if op.op == "self":
            keys.append(op.args[0])
        for a in op.args:
            visit(a)
    visit(objective)
    return keys


class LearnChecker:
    def __init__(self, ctx: Context, mode: Mode, groups: dict[str, CmsGroup]) -> None:
        self.ctx = ctx
        self.mode = mode
        self.groups = groups
        self.diags = ctx.diags

    def targets(self, learn: ast.Learn) -> list[tuple[Memory, ast.Period | None]]:
        """The memories a `learn` names, with a CMS expanded to its levels and their periods."""
        out: list[tuple[Memory, ast.Period | None]] = []
        for ident in learn.memories:
            if ident.name in self.groups:
                g = self.groups[ident.name]
                for member, period in zip(g.members, g.periods, strict=True):
                    if period.unit == "never":  # a frozen CMS level: the Transformer MLP (frequency 0)
                        continue
                    b = self.ctx.scope[member]
                    assert b.memory is not None
                    out.append((b.memory, period))
                continue
            b = self.ctx.scope.get(ident.name)
            if b is not None and b.kind == "poisoned":
                continue
            if b is None:
                names = self.ctx.memory_names() + list(self.groups)
                self.diags.error("NL020", f"unknown memory '{ident.name}'", ident.span,
                                 did_you_mean(ident.name, names))
            elif b.kind != "memory" or b.memory is None:
                kind = {"param": "parameter", "config": "header parameter"}.get(b.kind, b.kind)
                self.diags.error("NL023", f"'{ident.name}' is a {kind}, not a memory", ident.span,
                                 "only memories learn in context; parameters learn through `train`")
            elif not b.memory.parametric:
                self.diags.error("NL082", f"'{ident.name}' is softmax attention: it has no state to learn",
                                 ident.span, "attention is re-solved for every query; remove this `learn`")
            elif b.memory.frozen:
                self.diags.error("NL085", f"'{ident.name}' is declared frozen but is learned here", ident.span,
                                 "remove `frozen` or this `learn`")
            else:
                out.append((b.memory, None))
        return out

    def check(self, learn: ast.Learn) -> dict[str, Learn]:
        clauses: dict[str, ast.Clause] = {}
        for c in learn.clauses:
            if c.key in clauses:
                self.diags.error("NL033", f"'{'grad at' if c.key == 'anchor' else c.key}' is given twice", c.span)
            else:
                clauses[c.key] = c
        out: dict[str, Learn] = {}
        targets = self.targets(learn)
        for memory, cms_period in targets:
            result = self._one(learn, memory, clauses, cms_period)
            if result is not None:
                out[memory.name] = result
        if isinstance(learn.objective, ast.Outer) and self.mode == "model" and targets:
            self._teach_diagnostics(learn, clauses, targets, out)
        return out

    def _teach_diagnostics(self, learn: ast.Learn, clauses: dict[str, ast.Clause],
                           targets: list[tuple[Memory, ast.Period | None]], results: dict[str, Learn]) -> None:
        """Once per statement (a CMS is one statement, not one per level)."""
        name = ", ".join(i.name for i in learn.memories)
        read = clauses.get("read")
        if read is None or read.value == "after":
            self.diags.error("NL070", f"'{name}' learns from the outer loss but is read after its own write: its "
                                      "output would depend on its own update", learn.span,
                             "add `read before`: a teach signal can only update what was already read")
            return
        context = int(self.ctx.config.get("context", 0))
        passes = [-(-context // r.time.period) for r in results.values() if context and r.time.base == "token"]
        if passes:
            count = str(passes[0]) if len(passes) == 1 else f"{' + '.join(map(str, passes))} = {sum(passes)}"
            self.diags.warn("NL083", f"'{name}' learns from the outer gradient (teach signal): every sequence "
                                     f"needs {count} interleaved forward/backward passes", learn.objective.span,
                            "this is exact but sequential; a local objective like l2(self(x), target) stays "
                            "parallel")

    def _one(self, learn: ast.Learn, memory: Memory, clauses: dict[str, ast.Clause],
             cms_period: ast.Period | None) -> Learn | None:
        diags = self.diags
        self.ctx.self_memory = memory
        self.ctx.base = f"learn_{memory.name}"
        checker = ExprChecker(self.ctx)
        objective: Op | None = None
        ok = True
        if not isinstance(learn.objective, ast.Outer):
            objective = checker.check(learn.objective)
            if objective is None:
                ok = False
            elif objective.width != 1:
                diags.error("NL054", f"the objective has width {objective.width}; it must be one loss per token",
                            learn.objective.span, "wrap it in l2(...), dot(...), sum(...) or mean(...)")
                ok = False
            elif not objective.reads_self():
                diags.error("NL081", f"the objective never reads '{memory.name}': its gradient is zero",
                            learn.objective.span, "call the memory being learned as `self(...)`")
                ok = False
            elif not _differentiates_self(objective):
                diags.error("NL081", f"the objective reads '{memory.name}' only inside `fixed` or `stopgrad`: its "
                                     "gradient is zero", learn.objective.span,
                            "leave at least one `self(...)` outside them, as in `l2(self(k), fixed(self(v)))`")
                ok = False
        elif self.mode == "optimizer":
            diags.error("NL065", "`outer` is a model-level objective; optimizer states learn from gradients",
                        learn.objective.span)
            ok = False
        self.ctx.self_memory = None  # coefficients are produced outside the memory
        rule = self._rule(learn.rule, memory, objective, checker)
        self.ctx.base = "value"
        time = self._time(memory, clauses, cms_period, learn)
        if rule is None or time is None or not ok:
            return None
        return self._clauses(learn, memory, clauses, objective, rule, time)

    def _rule(self, call: ast.Call, memory: Memory, objective: Op | None, checker: ExprChecker) -> Rule | None:
        diags = self.diags
        name = call.func.name
        sig = catalog.RULES.get(name)
        if sig is None:
            hint = did_you_mean(name, catalog.RULES)
            if name in self.ctx.config or name.startswith("adam") or name.startswith("sgd"):
                hint = "optimizer specs train parameters in `train`; a memory's rule is gd, dgd or adam"
            diags.error("NL022", f"unknown update rule '{name}'", call.func.span, hint)
            return None
        bound = bind(call, sig, f"rule '{name}'", diags)
        if bound is None:
            return None
        if "lr" not in bound.options:
            diags.error("NL031", f"rule '{name}' needs a learning rate", call.span, f"{name}(lr = 0.1, ...)")
            return None
        coeffs: dict[str, Op] = {}
        ok = True
        for key in ("lr", "retain", "momentum", "precond"):
            if key not in bound.options:
                continue
            op = checker.check(bound.options[key])
            if op is None:
                ok = False
                continue
            allowed = {1, memory.heads} if self.mode == "model" else {0, 1}
            if op.width not in allowed:
                per = f" or {memory.heads} (one per head)" if memory.heads > 1 else ""
                diags.error("NL055", f"'{key}' has width {op.width}; it must be 1{per}", bound.options[key].span,
                            "reduce it to one value per head, e.g. `mean(x, groups = heads)`")
                ok = False
                continue
            coeffs[key] = op
        extra: dict[str, float | int | str | None] = {}
        for key, opt in sig.options.items():
            if opt.type == "name" and key in bound.options:
                extra[key] = name_option(key, bound.options[key], opt, diags)
                ok = extra[key] is not None and ok
        for key in ("beta1", "beta2", "eps"):
            if key in bound.options:
                v = const_eval(bound.options[key], self.ctx.config, diags, f"'{key}'")
                if v is None:
                    ok = False
                extra[key] = v
        if "output" in bound.options:
            out = bound.options["output"]
            if not (isinstance(out, ast.Call) and out.func.name == "newton_schulz"):
                diags.error("NL034", "`output` must be newton_schulz(steps = N)", out.span)
                ok = False
            else:
                nb = bind(out, catalog.OUTPUT_MAPS["newton_schulz"], "'newton_schulz'", diags)
                steps = const_int(nb.options["steps"], self.ctx.config, diags, "'steps'") \
                    if nb and "steps" in nb.options else 5
                extra["output_steps"] = steps
                if memory.structure.kind not in ("matrix", "mlp"):
                    diags.error("NL084", "Newton-Schulz needs matrix-shaped state", out.span)
                    ok = False
        if "precond" in coeffs and "momentum" not in coeffs:
            diags.error("NL084", "`precond` is the value of the momentum memory; it needs `momentum`",
                        bound.spans["precond"], "add `momentum = 0.9`")
            ok = False
        if name == "dgd":
            ok = self._dgd(call, memory, objective) and ok
        if not ok:
            return None
        return Rule(kind=name, span=call.span, **coeffs, **{k: v for k, v in extra.items() if v is not None})  # type: ignore[arg-type]

    def _dgd(self, call: ast.Call, memory: Memory, objective: Op | None) -> bool:
        if self.mode == "optimizer":
            # an optimizer's state memories apply one small map per element: their updates have no
            # decorrelation term (it would have run as plain gd)
            self.diags.error("NL084", "dgd decorrelates the keys of a model's memory; an optimizer's state "
                                      "memories learn by gd or adam", call.span, "use gd")
            return False
        if memory.structure.kind not in ("matrix", "mlp"):
            self.diags.error("NL084", "dgd decorrelates the keys of a matrix or MLP memory", call.span,
                             f"'{memory.name}' is {memory.structure.kind}; use gd")
            return False
        keys = _key_of(objective) if objective is not None else []
        if len({k.structure() for k in keys}) != 1:
            self.diags.error("NL084", "dgd needs one key: exactly one `self(k)` outside stopgrad and fixed", call.span,
                             "its `k k^T` term is built from the key the memory is trained on")
            return False
        return True

    def _time(self, memory: Memory, clauses: dict[str, ast.Clause], cms_period: ast.Period | None,
              learn: ast.Learn) -> Time | None:
        every = clauses.get("every")
        if cms_period is not None and every is not None:
            self.diags.error("NL033", "the CMS levels set their own periods; remove `every`", every.span)
            return None
        p = cms_period or (every.period if every else None)
        if p is None:
            return Time(base="token" if self.mode == "model" else "step")
        time = period_of(p, self.ctx.config, self.diags)
        if time is None:
            return None
        if self.mode == "optimizer" and time.base == "token":
            self.diags.error("NL065", "optimizer states update per step, not per token", p.span,
                             "write `every step` or `every N steps`")
            return None
        if self.mode == "model" and time.base == "step" and memory.scope == "sequence":
            self.diags.error("NL065", f"'{memory.name}' resets every sequence, so a per-step period never fires",
                             p.span, "declare it `scope persistent`, or use tokens")
            return None
        if time.base == "never":
            self.diags.warn("NL064", f"'{memory.name}' never updates: this `learn` has no effect", p.span,
                            "delete the `learn` or give it a period")
        context = int(self.ctx.config.get("context", 0))
        if self.mode == "model" and time.base == "token" and context:
            if time.period >= context and memory.scope == "sequence":
                self.diags.warn("NL064", f"'{memory.name}' updates every {time.period} tokens but resets every "
                                         f"{context}: its writes are never read", p.span,
                                "a period ≥ context acts as a slow parameter: declare it without `learn`, "
                                "or `scope persistent`")
            elif context % time.period:
                divisors = _nearest_divisors(context, time.period)
                self.diags.warn("NL060", f"period {time.period} does not divide the context {context}: the last "
                                         f"{context % time.period} tokens form a partial chunk, flushed at the end",
                                p.span, "periods that divide the context, near this one: "
                                        + " or ".join(map(str, divisors)))
        return time

    def _chunk_fits(self, memory: Memory, chunk: int, clause: ast.Clause) -> None:
        context = int(self.ctx.config.get("context", 0))
        if self.mode == "model" and context and chunk > context:
            self.diags.warn("NL068", f"'{memory.name}' takes its gradients every {chunk} tokens, but a sequence has "
                                     f"{context}: every gradient of a sequence is taken at the state it started with",
                            clause.value_span or clause.span,
                            f"that is `chunk {context}`; use a chunk that divides the context, or a longer context")

    def _clauses(self, learn: ast.Learn, memory: Memory, clauses: dict[str, ast.Clause], objective: Op | None,
                 rule: Rule, time: Time) -> Learn | None:
        diags = self.diags
        fields: dict[str, object] = {}
        ok = True
        chunk = clauses.get("chunk")
        if chunk is not None:
            value = chunk.value
            if isinstance(value, str):
                assert chunk.value_span is not None
                value = const_int(ast.Name(id=value, span=chunk.value_span), self.ctx.config, diags, "a chunk size")
            elif isinstance(value, int) and value < 1:
                diags.error("NL066", "a chunk size is a positive number of tokens", chunk.value_span or chunk.span)
                value = None
            if value is None:
                ok = False
            elif time.base != "token" or time.period != 1:
                diags.error("NL062", f"`chunk` applies to per-token updates; '{memory.name}' updates {time}",
                            chunk.span, "a memory updated every P tokens already holds its state fixed for P tokens")
                ok = False
            else:
                fields["chunk"] = value
                self._chunk_fits(memory, value, chunk)
        anchor = clauses.get("anchor")
        if anchor is not None:
            point = str(anchor.value)
            if point == "chunk_end":
                diags.error("NL063", "gradients at the chunk's end read tokens that have not arrived yet",
                            anchor.value_span or anchor.span, "use `grad at chunk_start` (the previous chunk's end)")
                ok = False
            elif point not in catalog.ANCHORS:
                diags.error("NL034", f"unknown gradient reference point '{point}'", anchor.value_span or anchor.span,
                            did_you_mean(point, [a for a in catalog.ANCHORS if a != "chunk_end"]))
                ok = False
            elif point == "token" and int(fields.get("chunk", 1)) > 1:  # type: ignore[call-overload]
                diags.error("NL062", "`grad at token` is exact per-token learning; it contradicts `chunk`",
                            anchor.span, "drop one of the two")
                ok = False
            else:
                fields["anchor"] = point
        read = clauses.get("read")
        if read is not None:
            if read.value not in catalog.READS:
                diags.error("NL034", f"unknown read order '{read.value}'", read.value_span or read.span,
                            did_you_mean(str(read.value), catalog.READS))
                ok = False
            else:
                fields["read"] = read.value
                fields["read_default"] = False
        if objective is None and self.mode == "model" and fields.get("read", "after") == "after":
            ok = False   # reported once for the statement by _teach_diagnostics
        backprop = clauses.get("backprop")
        if backprop is not None:
            policy = str(backprop.value)
            if policy not in catalog.BACKPROPS:
                diags.error("NL034", f"unknown backprop policy '{policy}'", backprop.value_span or backprop.span,
                            did_you_mean(policy, catalog.BACKPROPS))
                ok = False
            elif (policy == "truncate") != (backprop.arg is not None):
                diags.error("NL031", "`backprop truncate N` takes a number of chunks; other policies take none",
                            backprop.span)
                ok = False
            else:
                fields["backprop"] = policy
                fields["truncate"] = backprop.arg or 0
                if policy == "stop" and memory.init == "learned":
                    diags.error("NL075", f"'{memory.name}' has a learned initial state, but `backprop stop` "
                                         "cuts every gradient to it", backprop.span,
                                "use `backprop first_order` (straight-through) or `init zeros`")
                    ok = False
        if objective is None and fields.get("backprop") in ("through", "truncate"):
            diags.error("NL084", "differentiating through teach-signal writes needs second-order gradients",
                        backprop.span if backprop else learn.span,
                        "use `backprop first_order` (the default for `outer`) or `backprop stop`")
            ok = False
        elif objective is None:
            fields.setdefault("backprop", "first_order")
        if not ok:
            return None
        key = None
        if objective is not None:
            keys = _key_of(objective)
            key = keys[0] if keys else None
        return Learn(objective=objective, rule=rule, time=time, key=key, span=learn.span, **fields)  # type: ignore[arg-type]


def _differentiates_self(op: Op) -> bool:
    """Whether the memory's own gradient can reach a `self` read: one outside `fixed` and `stopgrad`."""
    if op.op in (OpKind.FIXED, OpKind.STOPGRAD):
        return False
    if op.is_self():
        return True
    return any(_differentiates_self(a) for a in op.args)
