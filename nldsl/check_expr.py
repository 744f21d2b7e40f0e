"""Typing of expressions: names resolved, calls bound to their signatures, widths inferred.

Turns `ast.Expr` into `spec.Op`. Every problem becomes a diagnostic and the offending node
becomes `None`, which its parents pass on quietly, so one bad name yields one error.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Literal

from nldsl import ast, catalog
from nldsl.diagnostics import MAX_SUGGESTION_POOL, Diagnostics, did_you_mean
from nldsl.ops import OPS, PARAM_SHAPED, OpKind, broadcast, result_width
from nldsl.source import Span, unvalidated
from nldsl.spec import Memory, Op, Param

# The largest integer a header value (a float) holds exactly; sizes, periods and counts above it are
# refused, which also keeps every product of them in the cost preview a finite float.
MAX_EXACT_INT = 2**53


class Header(dict[str, float]):
    """A unit's header parameters by name, with their values. `failed` names those whose value was
    refused (and reported): later uses of them stay quiet instead of reporting unknown names."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: set[str] = set()


@dataclass
class Binding:
    kind: Literal["config", "input", "value", "param", "memory", "hyper", "poisoned"]
    width: int = 1
    index: int = -1                  # values: which assignment defines this version
    value: float = 0.0               # config constants
    param: Param | None = None
    memory: Memory | None = None


@dataclass
class Context:
    diags: Diagnostics
    config: Header
    mode: Literal["model", "optimizer"] = "model"
    scope: dict[str, Binding] = field(default_factory=dict)
    later: dict[str, Span] = field(default_factory=dict)   # values assigned further down the block
    self_memory: Memory | None = None
    implicit: dict[str, Param] = field(default_factory=dict)
    base: str = "value"                                     # names implicit parameters
    block: str = ""                                         # the block being checked
    elsewhere: dict[str, str] = field(default_factory=dict)  # memories of the model's blocks → their block
    next_suffix: dict[str, int] = field(default_factory=dict)  # implicit names: the first number to try

    def memory_names(self) -> list[str]:
        """The memories in scope, to suggest one for a misspelled name (none in a scope too large to
        search: see `did_you_mean`)."""
        if len(self.scope) > MAX_SUGGESTION_POOL:
            return []
        return [k for k, v in self.scope.items() if v.kind == "memory"]

    def fresh_param(self, suffix: str, shape: tuple[int, ...], span: Span, init: str = "normal") -> str:
        """`x_rmsnorm`, then `x_rmsnorm_2`, ...: the first of these names not taken. Names once taken
        stay taken, so the search resumes where it stopped last time (linear over a whole block)."""
        stem = f"{self.base}_{suffix}"
        n = self.next_suffix.get(stem, 1)     # 1 stands for the stem itself
        while (name := stem if n == 1 else f"{stem}_{n}") in self.implicit or name in self.scope:
            n += 1
        self.next_suffix[stem] = n + 1
        self.implicit[name] = Param(name=name, shape=shape, init=init, implicit=True, span=span)
        return name


# ---- constants ----------------------------------------------------------------------------------

ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "^": operator.pow}


def fold(op: str, a: float, b: float) -> float | None:
    """`a op b` for numbers known before training; None when it has no finite real value (it divides
    by zero, overflows, or is complex, like `(-8) ^ (1 / 3)`)."""
    try:
        v = ARITHMETIC[op](a, b)
    except (OverflowError, ZeroDivisionError):
        return None
    if isinstance(v, complex) or not math.isfinite(v):
        return None
    return float(v)


def no_value(op: str, a: float, b: float) -> str:
    """Why `fold(op, a, b)` has no value, as the end of a sentence."""
    if (op == "/" and b == 0) or (op == "^" and a == 0 and b < 0):
        return "divides by zero"
    return "is not a finite real number"


def const_eval(e: ast.Expr, config: Header, diags: Diagnostics, what: str,
               later: Container[str] = frozenset()) -> float | None:
    """Fold a size or coefficient known before training: numbers, header names, arithmetic.
    `later` names header parameters declared further right, which cannot be used yet."""
    if isinstance(e, ast.Num):
        if not math.isfinite(e.value):
            diags.error("NL042", f"{e.text} is too large to be a number", e.span)
            return None
        return e.value
    if isinstance(e, ast.Name):
        if e.id in config:
            return config[e.id]
        if e.id in config.failed:      # its own value was refused and reported
            return None
        if e.id in later:
            diags.error("NL035", f"'{e.id}' is declared later in the header", e.span,
                        "a header parameter can only use the ones before it; move it left")
            return None
        diags.error("NL035", f"{what} must be a constant, but '{e.id}' is not a header parameter", e.span,
                    did_you_mean(e.id, config) or "use a number or a name from the header")
        return None
    if isinstance(e, ast.Neg):
        v = const_eval(e.operand, config, diags, what, later)
        return None if v is None else -v
    if isinstance(e, ast.BinOp) and e.op != "@":
        a = const_eval(e.left, config, diags, what, later)
        b = const_eval(e.right, config, diags, what, later)
        if a is None or b is None:
            return None
        v = fold(e.op, a, b)
        if v is None:
            diags.error("NL042", f"{what} {no_value(e.op, a, b)}", e.span)
        return v
    diags.error("NL035", f"{what} must be a constant known before training", e.span,
                "use a number or header parameter, not a computed value")
    return None


def const_int(e: ast.Expr, config: Header, diags: Diagnostics, what: str,
              minimum: int = 1, maximum: int = MAX_EXACT_INT) -> int | None:
    v = const_eval(e, config, diags, what)
    if v is None:
        return None
    if v != int(v) or v < minimum:
        diags.error("NL032" if v != int(v) else "NL066",
                    f"{what} must be an integer ≥ {minimum}, got {v:.6g}", e.span)
        return None
    if v > maximum:
        diags.error("NL042", f"{what} must be at most {maximum:,}, got {v:.6g}", e.span,
                    "no machine runs a size that large" if maximum == MAX_EXACT_INT else
                    "a limit of nldsl: the language reference lists it")
        return None
    return int(v)


# ---- calls: positional arguments, options and flags ---------------------------------------------

@dataclass
class Bound:
    args: list[ast.Expr]
    options: dict[str, ast.Expr]
    flags: set[str]
    spans: dict[str, Span]


def bind(call: ast.Call, sig: catalog.Signature, what: str, diags: Diagnostics) -> Bound | None:
    """Match a call against a signature: arity, known options, no repeats. Flags may be bare names."""
    flags = {k for k, o in sig.options.items() if o.type == "flag"}
    args: list[ast.Expr] = []
    options: dict[str, ast.Expr] = {}
    seen: set[str] = set()
    spans: dict[str, Span] = {}
    ok = True
    for a in call.args:
        if isinstance(a, ast.Name) and a.id in flags:
            if a.id in seen:
                diags.error("NL033", f"'{a.id}' is given twice", a.span)
            seen.add(a.id)
            spans[a.id] = a.span
        else:
            args.append(a)
    for kw in call.kwargs:
        if kw.name in seen:
            diags.error("NL033", f"option '{kw.name}' is given twice", kw.span)
            ok = False
        elif kw.name not in sig.options or kw.name in flags:
            hint = f"'{kw.name}' is a flag: write it bare" if kw.name in flags else \
                did_you_mean(kw.name, [*sig.options, *sig.positional])
            if kw.name in sig.positional:
                options[kw.name] = kw.value   # positional parameters may also be named
                spans[kw.name] = kw.span
                seen.add(kw.name)
                continue
            diags.error("NL030", f"{what} has no option '{kw.name}'", kw.span, hint)
            ok = False
        else:
            options[kw.name] = kw.value
            spans[kw.name] = kw.span
        seen.add(kw.name)
    unnamed = [p for p in sig.positional if p not in options]
    required = len(unnamed) - sig.optional_positional
    if len(args) > len(unnamed) or len(args) < required:
        expected = ", ".join(sig.positional) or "no positional arguments"
        diags.error("NL031", f"{what} takes {len(unnamed) if len(args) > len(unnamed) else required}"
                             f" positional argument{'s' * (len(unnamed) != 1)}, got {len(args)}",
                    call.span, f"{call.func.name}({expected}"
                    + (", ..." if sig.options else "") + ")")
        return None
    return Bound(args=args, options=options, flags={f for f in seen if f in flags}, spans=spans) if ok else None


def name_option(key: str, expr: ast.Expr, opt: catalog.Option, diags: Diagnostics) -> str | None:
    """The value of a word-valued option (`act = tanh`), or None once one outside its choices is reported."""
    if isinstance(expr, ast.Name) and expr.id in opt.choices:
        return expr.id
    got = expr.id if isinstance(expr, ast.Name) else "an expression"
    hint = did_you_mean(got, opt.choices)
    diags.error("NL034", f"'{key}' must be one of {', '.join(opt.choices)}; got {got}", expr.span,
                hint if "did you mean" in hint else "")
    return None


# ---- expressions --------------------------------------------------------------------------------

_KINDS = {k.value: k for k in OpKind}
# The fields an `Op` was given, by whether args and attrs were: shared (see `unvalidated`).
_FIELDS_SET = {(has_args, has_attrs): {"op", "width", "span", *["args"] * has_args, *["attrs"] * has_attrs}
               for has_args in (False, True) for has_attrs in (False, True)}


def new_op(kind: str, width: int, span: Span, args: tuple[Op, ...] | None = None,
           attrs: dict[str, object] | None = None) -> Op:
    """`Op(op=kind, args=args, attrs=attrs, width=width, span=span)`, leaving out the arguments
    given as None, without validation: the checker makes one per operator and leaf, and a spec of
    100,000 values makes millions. For callers whose width is an int, args a tuple of ops and attrs
    a dict of their own (`tests/test_scan.py` checks the result is the one validation makes)."""
    values = {"op": _KINDS[kind], "args": () if args is None else args, "attrs": {} if attrs is None else attrs,
              "width": width, "span": span}
    return unvalidated(Op, values, _FIELDS_SET[args is not None, attrs is not None])


_ARITHMETIC = {"+": OpKind.ADD, "-": OpKind.SUB, "*": OpKind.MUL, "/": OpKind.DIV, "^": OpKind.POW}


def _width_name(w: int) -> str:
    return "the parameter's shape" if w == PARAM_SHAPED else f"width {w}"


class ExprChecker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def diags(self) -> Diagnostics:
        return self.ctx.diags

    @property
    def heads(self) -> int:
        """Per-head values (width = heads) broadcast over head-split vectors (width = heads × d)."""
        return int(self.ctx.config.get("heads", 0)) if self.ctx.mode == "model" else 0

    def check(self, e: ast.Expr) -> Op | None:
        return _CHECKS[type(e)](self, e)

    # -- leaves
    def _num(self, e: ast.Num) -> Op | None:
        if not math.isfinite(e.value):
            self.diags.error("NL042", f"{e.text} is too large to be a number", e.span)
            return None
        return new_op("const", 1, e.span, attrs={"value": e.value})

    def _selfref(self, e: ast.SelfRef) -> Op | None:
        m = self.ctx.self_memory
        if m is None:
            self.diags.error("NL027", "`self` is only defined inside a `learn` objective", e.span)
            return None
        if m.structure.kind != "elementwise":
            article = "an" if m.structure.kind[0] in "aeiou" or m.structure.kind == "mlp" else "a"
            self.diags.error("NL026", f"'{m.name}' is {article} {m.structure.kind} memory: bare `self` is only the "
                                      "state of an elementwise memory", e.span, "call it on an input: `self(k)`")
            return None
        return Op(op="state", attrs={"memory": m.name, "self": True}, width=self._memory_width(m, "in"),
                  span=e.span)

    def _name(self, e: ast.Name) -> Op | None:
        b = self.ctx.scope.get(e.id)
        if b is None:
            if e.id in self.ctx.later:
                self.diags.error("NL025", f"'{e.id}' is used before it is assigned", e.span,
                                 f"it is assigned at line {self.ctx.later[e.id].line}")
            else:
                self.diags.error("NL020", f"unknown name '{e.id}'", e.span, did_you_mean(e.id, self.ctx.scope))
            return None
        if b.kind == "poisoned":      # its definition already failed and was reported
            return None
        if b.kind == "config":
            return new_op("const", 1, e.span, attrs={"value": b.value, "name": e.id})
        if b.kind == "hyper":
            return new_op("hyper", 1, e.span, attrs={"name": e.id})
        if b.kind == "input":
            return new_op("input", b.width, e.span, attrs={"name": e.id})
        if b.kind == "value":
            return new_op("value", b.width, e.span, attrs={"name": e.id, "index": b.index})
        if b.kind == "param":
            assert b.param is not None
            if len(b.param.shape) == 2:
                self.diags.error("NL056", f"matrix '{e.id}' can only be applied as `x @ {e.id}`", e.span)
                return None
            return new_op("param", b.width, e.span, attrs={"name": e.id})
        assert b.memory is not None
        m = b.memory
        if m.structure.kind == "elementwise":
            return Op(op="state", attrs={"memory": m.name}, width=self._memory_width(m, "in"), span=e.span)
        self.diags.error("NL026", f"memory '{e.id}' is a map, not a value", e.span,
                         f"read it on an input: `{e.id}(x)`")
        return None

    # -- operators
    def _binop(self, e: ast.BinOp) -> Op | None:
        if e.op == "@":
            return self._matmul(e)
        a, b = self.check(e.left), self.check(e.right)
        if a is None or b is None:
            return None
        op = _ARITHMETIC[e.op]
        w = a.width if a.width == b.width else result_width(op, (a.width, b.width), {}, self.heads)  # common case first
        if w is None:
            self.diags.error("NL050", f"cannot combine {_width_name(a.width)} with {_width_name(b.width)} "
                                      f"in '{e.op}'", e.span,
                             "both sides need the same width, width 1, or one value per head")
            return None
        if a.op == "const" and b.op == "const":
            return self._fold(e, a.attrs["value"], b.attrs["value"])
        if e.op == "/" and b.op == "const" and b.attrs["value"] == 0:
            self.diags.error("NL042", "this divides by zero", e.span, "every value the model computes must stay finite")
            return None
        return new_op(op, w, e.span, args=(a, b))

    def _fold(self, e: ast.BinOp, a: float, b: float) -> Op | None:
        """Arithmetic on two constants is done now: a division by zero or an overflow is reported
        here, with its position, instead of failing (or giving nan) when the model runs."""
        v = fold(e.op, a, b)
        if v is None:
            self.diags.error("NL042", f"this constant {no_value(e.op, a, b)}", e.span,
                             "every number in a spec must be a finite real number (at most about 1.8e308)")
            return None
        return new_op("const", 1, e.span, attrs={"value": v})

    def _matmul(self, e: ast.BinOp) -> Op | None:
        x = self.check(e.left)
        right = e.right
        b = self.ctx.scope.get(right.id) if isinstance(right, ast.Name) else None
        if b is not None and b.kind == "poisoned":
            return None
        if b is None or b.kind != "param" or b.param is None or len(b.param.shape) != 2:
            if isinstance(right, ast.Name) and b is None:
                self.diags.error("NL020", f"unknown name '{right.id}'", right.span,
                                 did_you_mean(right.id, self.ctx.scope))
            else:
                self.diags.error("NL056", "the right side of '@' must be a matrix parameter", right.span,
                                 "declare it: `param W : matrix(in, out)`")
            return None
        if x is None:
            return None
        n_in, n_out = b.param.shape
        if x.width != n_in:
            self.diags.error("NL056", f"'{right.id}' maps width {n_in} to {n_out}, "
                                      f"but the left side has {_width_name(x.width)}", e.span)
            return None
        w = new_op("param", n_out, right.span, attrs={"name": right.id})
        return new_op("matmul", result_width(OpKind.MATMUL, (x.width, n_out), {}), e.span, args=(x, w))

    def _neg(self, e: ast.Neg) -> Op | None:
        x = self.check(e.operand)
        if x is not None and x.op == "const":
            return new_op("const", 1, e.span, attrs={"value": -x.attrs["value"]})
        return None if x is None else new_op("neg", result_width(OpKind.NEG, (x.width,), {}), e.span, args=(x,))

    # -- calls
    def _call(self, e: ast.Call) -> Op | None:
        op = self._callee(e)
        if op is None or not (OPS[op.op].sequence or op.op == OpKind.READ):
            return op
        if any(a.reads_self() for a in op.args):
            if op.op == OpKind.READ:
                what = f"memory '{op.attrs['memory']}'"
                why = "an objective is evaluated inside the update, where only the memory being learned is at hand"
            else:
                what = f"`{op.op}`"
                why = "it reads the token's place in the sequence, and an objective is evaluated away from the tokens"
            self.diags.error("NL087", f"{what} cannot take a value computed from `self`: {why}", e.span,
                             f"apply {what} to the input of `self(...)` instead, or compute it in the block")
            return None
        return op

    def _callee(self, e: ast.Call) -> Op | None:
        name = e.func.name
        if name == "self":
            if self.ctx.self_memory is None:
                self.diags.error("NL027", "`self` is only defined inside a `learn` objective", e.func.span)
                return None
            return self._read(e, self.ctx.self_memory, is_self=True)
        b = self.ctx.scope.get(name)
        if b is not None and b.kind == "poisoned":
            return None
        if b is not None and b.kind == "memory":
            assert b.memory is not None
            return self._read(e, b.memory, is_self=False)
        if b is not None:
            kind = {"param": "parameter", "config": "header parameter", "hyper": "hyperparameter"}.get(b.kind, b.kind)
            self.diags.error("NL023", f"'{name}' is a {kind}, not a memory: it cannot be called", e.func.span)
            return None
        if name in catalog.FUNCTIONS:
            return self._builtin(e, catalog.FUNCTIONS[name])
        if name in catalog.OBJECTIVES:
            return self._objective(e)
        if name in catalog.STRUCTURES or name in catalog.RULES:
            kind = "a memory structure" if name in catalog.STRUCTURES else "an update rule"
            self.diags.error("NL022", f"'{name}' is {kind}, not a function", e.func.span,
                             "structures follow `memory M :`, rules follow `by`")
            return None
        owner = self.ctx.elsewhere.get(name)
        if owner is not None and owner != self.ctx.block:
            self.diags.error("NL022", f"memory '{name}' belongs to block '{owner}'", e.func.span,
                             "memories are local to their block; declare it here or read it in its own block")
            return None
        self.diags.error("NL022", f"unknown function '{name}'", e.func.span,
                         did_you_mean(name, [*catalog.FUNCTIONS, *catalog.OBJECTIVES, *self.ctx.memory_names()]))
        return None

    def _memory_width(self, m: Memory, side: Literal["in", "out"]) -> int:
        if self.ctx.mode == "optimizer":
            return PARAM_SHAPED
        per_head = m.structure.in_dim if side == "in" else m.structure.out_dim
        return per_head * m.heads

    def _read(self, e: ast.Call, m: Memory, is_self: bool) -> Op | None:
        who = f"self ('{m.name}')" if is_self else f"memory '{m.name}'"
        if e.kwargs:
            self.diags.error("NL030", f"{who} takes no options when read", e.kwargs[0].span)
            return None
        args = [self.check(a) for a in e.args]
        if m.structure.kind == "attention":
            if len(args) != 3:
                self.diags.error("NL031", f"attention '{m.name}' is read as {m.name}(q, k, v), "
                                          f"got {len(args)} argument{'s' * (len(args) != 1)}", e.span)
                return None
            if any(a is None for a in args):
                return None
            q, k, v = args
            assert q is not None and k is not None and v is not None
            if q.width != k.width:
                self.diags.error("NL051", f"queries have width {q.width} but keys have width {k.width}", e.span)
                return None
            for x in (q, v):
                if x.width % m.heads:
                    self.diags.error("NL052", f"width {x.width} does not split into {m.heads} heads", x.span)
                    return None
            return Op(op="read", args=(q, k, v), attrs={"memory": m.name}, width=v.width, span=e.span)
        if len(args) != 1:
            self.diags.error("NL031", f"{who} is read on one input, got {len(args)}", e.span,
                             f"{'self' if is_self else m.name}(x)")
            return None
        x = args[0]
        if x is None:
            return None
        want = self._memory_width(m, "in")
        if x.width != want and not (self.ctx.mode == "optimizer" and x.width == 1):
            per = f" ({m.heads} heads × {m.structure.in_dim})" if m.heads > 1 else ""
            self.diags.error("NL051", f"{who} reads inputs of width {want}{per}, got width {x.width}",
                             e.args[0].span, f"declare it with `in = {x.width // m.heads}`"
                             if m.heads and x.width % m.heads == 0 else "")
            return None
        return new_op("self" if is_self else "read", self._memory_width(m, "out"), e.span, (x,), {"memory": m.name})

    def _builtin(self, e: ast.Call, sig: catalog.Signature) -> Op | None:
        name = e.func.name
        bound = bind(e, sig, f"'{name}'", self.diags)
        if bound is None:
            return None
        if name == "fixed" and self.ctx.self_memory is None:
            self.diags.error("NL027", "`fixed` is only defined inside a `learn` objective", e.func.span,
                             "it holds a value constant for the learned memory's own gradient; "
                             "elsewhere, `stopgrad` stops every gradient")
            return None
        if name in OPS and OPS[OpKind(name)].sequence and self.ctx.mode == "optimizer":
            self.diags.error("NL022", f"{name} reads the token's place in the sequence: there are no tokens in an "
                                      "optimizer spec", e.func.span, "use it in a model's block")
            return None
        if name == "newton_schulz" and self.ctx.mode != "optimizer":
            self.diags.error("NL022", "newton_schulz applies to whole parameters, in optimizer specs", e.func.span,
                             "inside a model, use `output = newton_schulz(...)` on an update rule")
            return None
        attrs: dict[str, object] = {}
        if name == "conv":
            width_expr = bound.args[1]
            k = const_int(width_expr, self.ctx.config, self.diags, "the convolution width")
            x = self.check(bound.args[0])
            if x is None or k is None:
                return None
            attrs["param"] = self.ctx.fresh_param("conv", (x.width, k), e.span, init="conv")
            attrs["kernel"] = k
            return new_op("conv", result_width(OpKind.CONV, (x.width,), attrs), e.span, (x,), attrs)
        args = [self.check(a) for a in bound.args]
        if any(a is None for a in args):
            return None
        ops: list[Op] = [a for a in args if a is not None]
        for key, opt in sig.options.items():
            if key in bound.options:
                v: float | None = const_int(bound.options[key], self.ctx.config, self.diags, f"'{key}'") \
                    if opt.type == "int" else const_eval(bound.options[key], self.ctx.config, self.diags, f"'{key}'")
                if v is None:
                    return None
                attrs[key] = v
            else:
                attrs[key] = opt.default
        width = result_width(OpKind(name), tuple(o.width for o in ops), attrs, self.heads)
        if width is None:
            self.diags.error("NL050", f"'{name}' got widths {ops[0].width} and {ops[1].width}", e.span)
            return None
        groups = attrs.get("groups")
        if isinstance(groups, int) and ops[0].width != PARAM_SHAPED and ops[0].width % groups:
            self.diags.error("NL052", f"width {ops[0].width} does not split into {groups} groups", e.span)
            return None
        if name == "rope" and not self._rope(e, ops[0], attrs):
            return None
        if name in ("rmsnorm", "layernorm"):
            shape, init = ((width,), "ones") if name == "rmsnorm" else ((2, width), "layernorm")
            attrs["param"] = self.ctx.fresh_param(name, shape, e.span, init=init)
        return new_op(name, width, e.span, tuple(ops), attrs)

    def _rope(self, e: ast.Call, x: Op, attrs: dict[str, object]) -> bool:
        """rope's own rules: it turns pairs, by positions only the block knows."""
        base = attrs["base"]
        assert isinstance(base, float | int)
        if base <= 0:
            self.diags.error("NL034", f"rope's 'base' must be a positive number, got {base:.6g}", e.span,
                             "10000 is the usual base (RoFormer, Llama)")
            return False
        groups = attrs["groups"]
        assert isinstance(groups, int)
        if (x.width // groups) % 2:
            self.diags.error("NL052", f"rope turns pairs: each of its {groups} group{'s' * (groups > 1)} needs an "
                                      f"even width, got {x.width // groups}", e.span,
                             "choose `groups` so that each group's width is even" if groups > 1 else
                             "use an even width")
            return False
        return True

    def _objective(self, e: ast.Call) -> Op | None:
        name = e.func.name
        sig = catalog.OBJECTIVES[name]
        bound = bind(e, sig, f"objective '{name}'", self.diags)
        if bound is None:
            return None
        args = [self.check(a) for a in bound.args]
        if any(a is None for a in args):
            return None
        pred, target = args
        assert pred is not None and target is not None
        if broadcast(pred.width, target.width, self.heads) is None:
            self.diags.error("NL050", f"'{name}' compares width {pred.width} with width {target.width}", e.span,
                             "prediction and target need the same width")
            return None
        attrs: dict[str, object] = {}
        if "delta" in bound.options:
            v = const_eval(bound.options["delta"], self.ctx.config, self.diags, "'delta'")
            if v is None:
                return None
            attrs["delta"] = v
        elif name == "huber":
            attrs["delta"] = 1.0
        return new_op(name, result_width(OpKind(name), (), attrs), e.span, (pred, target), attrs)


# The method that checks each kind of expression: `_num` for `ast.Num`, and so on.
_CHECKS = {cls: getattr(ExprChecker, f"_{cls.__name__.lower()}")
           for cls in (ast.Num, ast.Name, ast.SelfRef, ast.Call, ast.BinOp, ast.Neg)}
