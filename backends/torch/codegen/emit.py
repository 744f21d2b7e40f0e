"""Stage 5, emit: a checked, lowered model → the source of a readable PyTorch module.

One function per block (one segment of tokens through one layer), statements in the order
`nldsl.lower.token_order` gives, each line commented with the spec line it comes from. Nothing
from the spec reaches the source except through `names`: identifiers from a `Scope` (distinct by
construction, never a keyword, builtin or generated name), constants through `literal` (repr),
and comment and docstring text through `text`.
"""

from __future__ import annotations

import dataclasses
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

from nldsl.backends.torch.codegen.names import Scope, literal, text
from nldsl.backends.torch.codegen.pretty import wrap
from nldsl.backends.torch.runtime.memspec import MemSpec, Rule
from nldsl.dataflow import learn_exprs
from nldsl.lower import (
    Assign,
    Commit,
    FusedRead,
    Kernel,
    LoweredBlock,
    ParamInfo,
    Read,
    TeachCoefficients,
    Update,
    lower_block,
    lower_objective,
    memory_parts,
    memory_shapes,
    parameter_table,
    segment_length,
    teach_kernel,
)
from nldsl.ops import OBJECTIVES, OPS, OpKind
from nldsl.spec import Memory, Model, Op, Optimizer, Spec

# Names the generated modules define or import, and the parameters of their functions: every
# name allocated for the spec's things avoids them.
MODEL_MODULE = ("torch", "F", "fn", "rt", "CompiledModel", "ParamInfo", "PARAMS", "MODEL")
BLOCK_ARGS = ("P", "S", "cache", "h", "fires")
OBJECTIVE_ARGS = ("w", "probe", "at")
OPTIMIZER_MODULE = ("torch", "fn", "opt", "rt", "update", "OPTIMIZER")
UPDATE_ARGS = ("param", "grad", "S", "hp", "step")
UNARY = {OpKind.SIGMOID: "torch.sigmoid", OpKind.SILU: "F.silu", OpKind.GELU: "F.gelu", OpKind.RELU: "torch.relu",
         OpKind.TANH: "torch.tanh", OpKind.SOFTPLUS: "F.softplus", OpKind.EXP: "torch.exp", OpKind.LOG: "torch.log",
         OpKind.SQRT: "torch.sqrt", OpKind.ABS: "torch.abs", OpKind.SQUARE: "torch.square", OpKind.SIGN: "torch.sign"}
BINARY = {OpKind.ADD: "+", OpKind.SUB: "-", OpKind.MUL: "*", OpKind.DIV: "/", OpKind.POW: "**"}


def value_names(assignments, scope: Scope, inputs: tuple[str, ...]) -> dict[int, str]:
    """An identifier per assignment: the spec's name, numbered from its second version (`x`,
    `x_2`) and from the first when it reassigns an input (`h_2`); so every version of every value
    has its own name, and statements can run in any order their dependencies allow."""
    names: dict[int, str] = {}
    versions: dict[str, int] = {}
    for i, a in enumerate(assignments):
        versions[a.target] = versions.get(a.target, 1 if a.target in inputs else 0) + 1
        n = versions[a.target]
        names[i] = scope.name(("value", i), a.target if n == 1 else f"{a.target}_{n}")
    return names


def attention_site(read: Op) -> str:
    """The name of one attention read's key/value cache: the memory and where it is read."""
    return f"{read.attrs['memory']}@{read.span.line}:{read.span.col}"


def where(line: int, width: int | None = None) -> str:
    """Provenance: a line of the spec file (named once, in the module's docstring), and the shape
    of the value made there ([B, T, width]: batch, tokens, features)."""
    return f"line {line}" if width is None else f"[B, T, {width}]  line {line}"


def groups(op: Op) -> str:
    """The `groups=` argument of a built-in, when it is not 1."""
    n = op.attrs.get("groups", 1)
    return f", groups={literal(n)}" if n != 1 else ""


def fields_literal(callee: str, values: dict[str, object], defaults: object) -> str:
    """`callee(name=value, ...)` with only the fields that differ from `defaults`' (a dataclass)."""
    default = {f.name: f.default for f in dataclasses.fields(defaults)}
    shown = {k: v for k, v in values.items() if v != default[k]}
    return f"{callee}(" + ", ".join(f"{k}={v if isinstance(v, Code) else literal(v)}" for k, v in shown.items()) + ")"


def tuple_of(items: list[str]) -> str:
    """Python for a tuple of expressions."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


class Code(str):
    """Source text that is printed as it is (a reference to a generated or runtime name)."""


@dataclasses.dataclass(frozen=True)
class Within:
    """Where an expression is printed: by `emitter`, in a function body, or in an objective whose
    hoisted parts are `args` (`arg` i) and whose weights are named `weights`. Calling it prints a
    sub-expression in the same place."""

    emitter: Emitter
    args: tuple[str, ...] = ()
    weights: str = ""

    def __call__(self, op: Op) -> str:
        return RENDER[op.op](self, op)


class Emitter(ABC):
    """Python for expressions (`RENDER`, one entry per op). Subclasses say how inputs, states and
    memory reads are named."""

    def __init__(self, module: Scope) -> None:
        self.module = module        # the module's names
        self.scope = module         # the function the statements go in (see `enter`)
        self.names: dict[int, str] = {}

    def enter(self, scope: Scope, assignments, inputs: tuple[str, ...]) -> None:
        """Start emitting a function body: its scope and the names of its values."""
        self.scope = scope
        self.names = value_names(assignments, scope, inputs)

    def expr(self, op: Op, args: list[str] | None = None, weights: str = "") -> str:
        """Python for an expression. Inside an objective, `args` names its hoisted parts (`arg` i)
        and `weights` is the memory's weights."""
        return Within(self, tuple(args or ()), weights)(op)

    def input(self, op: Op) -> str:
        return "h"

    @abstractmethod
    def read(self, op: Op, c: Within) -> str: ...

    @abstractmethod
    def state(self, op: Op, c: Within) -> str: ...

    @abstractmethod
    def self_call(self, op: Op, c: Within) -> str: ...

    def fixed(self, op: Op, c: Within) -> str:
        """`fixed(x)`: x with no inner gradient. Here nothing differentiates the objective from
        outside (optimizer states), so that is a detach."""
        return f"{c(op.args[0])}.detach()"

    def coefficients(self, statement, names: tuple[str, ...] = ("lr", "retain", "momentum", "precond")) -> str:
        """A statement's coefficients that are set, as keyword arguments."""
        return ", ".join(f"{k}={self.expr(getattr(statement, k))}" for k in names if getattr(statement, k) is not None)


def _binary(c: Within, op: Op) -> str:
    a, b = op.args
    left, right = c(a), c(b)
    if a.width != b.width and 1 not in (a.width, b.width):   # one value per head against a vector
        if a.width < b.width:
            left = f"fn.expand_heads({left}, {b.width})"
        else:
            right = f"fn.expand_heads({right}, {a.width})"
    return f"({left} {BINARY[op.op]} {right})"


def _extremum(c: Within, op: Op) -> str:
    return f"torch.{op.op}imum(*fn.broadcast_pair({c(op.args[0])}, {c(op.args[1])}))"


def _unary(c: Within, op: Op) -> str:
    return f"{UNARY[op.op]}({c(op.args[0])})"


def _norm(c: Within, op: Op) -> str:
    scale = c(op.args[1]) if len(op.args) == 2 else f"P[{literal(op.attrs['param'])}]"   # 2: in an objective
    return f"fn.{op.op}({c(op.args[0])}, {scale}{groups(op)})"


def _reduce(c: Within, op: Op) -> str:
    return f"fn.reduce({c(op.args[0])}, groups={literal(op.attrs['groups'])}, mean={op.op == OpKind.MEAN})"


def _conv(c: Within, op: Op) -> str:
    name = literal(op.attrs["param"])
    return f"rt.conv(cache, {name}, {c(op.args[0])}, P[{name}])"


def _rope(c: Within, op: Op) -> str:
    base = f", base={literal(float(op.attrs['base']))}" if op.attrs["base"] != 10000 else ""
    return f"fn.rope({c(op.args[0])}, cache.positions{groups(op)}{base})"


def _objective(c: Within, op: Op) -> str:
    delta = f", delta={literal(float(op.attrs['delta']))}" if op.op == OpKind.HUBER else ""
    return f"fn.objective({literal(str(op.op))}, {c(op.args[0])}, {c(op.args[1])}{delta}{groups(op)})"


# How each op prints: one entry per op of the vocabulary (tests/test_ops.py checks it is complete).
RENDER: dict[OpKind, Callable[[Within, Op], str]] = {
    OpKind.CONST: lambda c, op: literal(float(op.attrs["value"])),
    OpKind.INPUT: lambda c, op: c.emitter.input(op),
    OpKind.VALUE: lambda c, op: c.emitter.names[op.attrs["index"]],
    OpKind.PARAM: lambda c, op: f"P[{literal(op.attrs['name'])}]",
    OpKind.HYPER: lambda c, op: f"hp[{literal(op.attrs['name'])}]",
    OpKind.STATE: lambda c, op: c.emitter.state(op, c),
    **{kind: _binary for kind in BINARY},
    OpKind.MATMUL: lambda c, op: f"({c(op.args[0])} @ {c(op.args[1])})",
    OpKind.NEG: lambda c, op: f"(-{c(op.args[0])})",
    OpKind.MIN: _extremum,
    OpKind.MAX: _extremum,
    **{kind: _unary for kind in UNARY},
    OpKind.STOPGRAD: lambda c, op: f"{c(op.args[0])}.detach()",
    OpKind.FIXED: lambda c, op: c.emitter.fixed(op, c),
    OpKind.RMSNORM: _norm,
    OpKind.LAYERNORM: _norm,
    OpKind.L2NORM: lambda c, op: f"fn.l2norm({c(op.args[0])}{groups(op)})",
    OpKind.SUM: _reduce,
    OpKind.MEAN: _reduce,
    OpKind.CONV: _conv,
    OpKind.ROPE: _rope,
    OpKind.NEWTON_SCHULZ: lambda c, op: f"fn.newton_schulz({c(op.args[0])}, steps={literal(op.attrs['steps'])})",
    **{kind: _objective for kind in OBJECTIVES},
    OpKind.READ: lambda c, op: c.emitter.read(op, c),
    OpKind.SELF: lambda c, op: c.emitter.self_call(op, c),
    OpKind.ARG: lambda c, op: c.args[op.attrs["index"]],
    OpKind.FUSED: lambda c, op: c.emitter.read(op, c),
}


class BlockEmitter(Emitter):
    """Prints one lowered block: its module-level names (memory constants, its objectives and its
    function), then the objectives and the function, statement by statement."""

    def __init__(self, lowered: LoweredBlock, module: Scope) -> None:
        super().__init__(module)
        self.lowered = lowered
        self.block = block = lowered.block
        self.consts = {n: module.name(("memory", block.name, n), f"{block.name}_{n}".upper())
                       for n, m in block.memories.items() if m.parametric}
        self.stack_consts = {ms: module.name(("stack", block.name, ms), "_".join([block.name, *ms]).upper())
                             for ms in lowered.stacks}
        self.objectives = {st.memories: module.name(("objective", block.name, st.memories),
                                                    "objective_" + "_".join(st.memories))
                           for st in lowered.statements if isinstance(st, Update)}
        self.function = module.name(("block", block.name), block.name)
        self.spec: str = ""              # the memory spec the objective being printed applies

    def kernel(self, name: str) -> Kernel:
        return self.lowered.bindings[name].kernel

    def self_call(self, op: Op, c: Within) -> str:
        probe = ", probe" if op.attrs.get("probe") else ""
        return f"rt.apply({self.spec}, {c.weights}, {c(op.args[0])}{probe})"

    def fixed(self, op: Op, c: Within) -> str:
        """`fixed(x)`: x at the state the gradient is taken at (`at`, passed by the runtime), outside
        the inner differentiation but inside the outer one."""
        return dataclasses.replace(c, weights="at")(op.args[0])

    def state(self, op: Op, c: Within) -> str:
        if op.attrs.get("self"):
            return f"rt.state_of({c.weights}, {c.args[0] if c.args else 'h'})"
        mem = self.block.memories[op.attrs["memory"]]
        if mem.learn:
            return f"rt.state_of(S[{literal(mem.name)}].seen, h)"
        return f"P[{literal(mem.name + '/s')}].flatten(-2)"

    def read(self, op: Op, c: Within) -> str:
        name = op.attrs["memory"]
        mem = self.block.memories[name]
        if op.op == OpKind.FUSED:
            return self.scope.name(("fused", name), f"{name}_out")
        kernel = op.attrs["kernel"]
        args = [c(a) for a in op.args]
        if kernel == Read.ATTENTION:
            site = literal(attention_site(op))
            return f"rt.attention(cache, {site}, {', '.join(args)}, heads={mem.heads}, window={mem.structure.window})"
        if kernel == Read.STATIC:
            names = ", ".join(f"P[{literal(f'{name}/{part}')}]" for part in memory_parts(mem))
            return f"rt.read_static({self.const(name)}, [{names}], {args[0]})"
        return f"rt.{kernel}(S[{literal(name)}], {args[0]})"

    def const(self, name: str) -> str:
        return self.consts[name]

    def spec_of(self, memories: tuple[str, ...]) -> str:
        """The constant an update's memories run as: their own, or their stack's."""
        return self.stack_consts[memories] if len(memories) > 1 else self.const(memories[0])

    # ---- statements -------------------------------------------------------------------------------
    def statement(self, st) -> list[str]:
        if isinstance(st, Assign):
            return [f"{self.names[st.index]} = {self.expr(st.expr)}   # {where(st.line, st.expr.width)}"]
        if isinstance(st, FusedRead):
            out = self.scope.name(("fused", st.memory), f"{st.memory}_out")
            args = [self.expr(x) for x in (st.query, st.key, st.value)]
            coeffs = [f"lr={self.expr(st.lr)}"] + ([f"erase={self.expr(st.erase)}"] if st.erase is not None else [])
            coeffs.append(f"retain={self.expr(st.retain) if st.retain is not None else None}")
            return [f"{out} = rt.{st.kernel}(S[{literal(st.memory)}], {', '.join(args + coeffs)})"
                    f"   # {where(st.line, st.query.width)}"]
        if isinstance(st, Update):
            spec = self.spec_of(st.memories)
            hoisted = [self.expr(v) for v in st.hoisted]
            out = []
            if st.key is not None and st.key.op == OpKind.ARG:     # a hoisted value, passed twice
                i = st.key.attrs["index"]
                if st.hoisted[i].op not in (OpKind.VALUE, OpKind.INPUT):    # computed: once, into a local
                    name = self.scope.name(("key", st.memories), f"{st.memories[0]}_key")
                    out.append(f"{name} = {hoisted[i]}   # {where(st.line, st.key.width)}")
                    hoisted[i] = name
            values = tuple_of(hoisted)
            coeffs = self.coefficients(st) + (f", key={self.expr(st.key, hoisted)}" if st.key is not None else "")
            states = ", ".join(f"S[{literal(m)}]" for m in st.memories)
            objective = self.objectives[st.memories]
            if len(st.memories) > 1:
                return [*out, f"rt.stacked(rt.{st.kernel}, [{states}], {spec}, {objective}, {values}, {coeffs})"
                              f"   # {where(st.line)}"]
            return [*out, f"rt.{st.kernel}({states}, {objective}, {values}, {coeffs})   # {where(st.line)}"]
        if isinstance(st, Commit):
            return [f"rt.commit(S[{literal(m)}], fires[{literal(m)}])" for m in st.memories]
        if isinstance(st, TeachCoefficients):
            return [f"rt.teach_coefficients(S[{literal(st.memory)}], {self.coefficients(st)})   # {where(st.line)}"]
        raise AssertionError(f"cannot emit statement {type(st).__name__}")

    def objective(self, st: Update) -> list[str]:
        """An update's objective as a module-level function of the weights `w` (its hoisted parts
        passed in as a0, a1, ...; `at`: the state the gradient is taken at; `probe`: dgd's)."""
        self.spec = self.spec_of(st.memories)
        inner = self.module.child(OBJECTIVE_ARGS)
        args = [inner.name(("arg", i), f"a{i}") for i in range(len(st.hoisted))]
        return [f"def {self.objectives[st.memories]}({', '.join(['w', 'probe', *args, '*', 'at'])}):"
                f"   # {where(st.objective.span.line)}",
                f"    return {self.expr(st.objective, args, 'w')}"]

    def function_lines(self) -> list[str]:
        """The block's objectives and function. Local names are allocated here, after every
        module-level one."""
        block = self.block
        out = []
        for st in self.lowered.statements:
            if isinstance(st, Update):
                out += [*self.objective(st), "", ""]
        self.enter(self.module.child(BLOCK_ARGS), block.assignments, ("h",))
        out += [f"def {self.function}({', '.join(BLOCK_ARGS)}):",
                f'    """Block `{text(block.name)}` ({where(block.span.line)}): one segment of tokens through one '
                'layer."""']
        for st in self.lowered.statements:
            out += ["    " + line for line in self.statement(st)]
        out.append(f"    return {self.names[self.lowered.output] if self.lowered.output is not None else 'h'}")
        return out

    def constants(self) -> list[str]:
        out = []
        for name, mem in self.block.memories.items():
            if not mem.parametric:
                continue
            s = mem.structure
            learn = mem.learn
            b = self.lowered.bindings[name]
            fields: dict[str, object] = {
                "name": name, "kind": s.kind, "heads": mem.heads, "shapes": tuple(memory_shapes(mem)),
                "init": "zeros" if mem.init == "zeros" and learn is not None else "param",
                "act": s.act, "residual": s.residual, "norm": s.norm}
            if learn is not None:
                r = learn.rule
                # dgd's layers that take the decorrelating term, printed where they are not the first alone
                layers = {"decorrelate": r.decorrelated(s.depth)} if r.kind == "dgd" else {}
                fields["rule"] = Code(fields_literal("rt.Rule", {
                    "kind": r.kind, "momentum": r.momentum is not None, "output_steps": r.output_steps or 0,
                    **layers, "beta1": r.beta1, "beta2": r.beta2, "eps": r.eps}, Rule))
                if fields["rule"] == "rt.Rule()":
                    fields["rule"] = Rule()     # the default: not printed
                # a per-step memory commits between sequences only (its shadow runs over the tokens)
                fields["period"] = learn.time.period if learn.time.base == "token" else Code("rt.NEVER")
                fields.update(steps=learn.time.period if learn.time.base == "step" else 0, chunk=learn.chunk,
                              read_after=learn.read == "after", backprop=learn.backprop, truncate=learn.truncate,
                              persistent=mem.scope == "persistent")
                if b.kernel is Kernel.TEACH:
                    fields["teach"] = Code(f"rt.{teach_kernel(mem)}")
                    fields["reads"] = self.lowered.teach_reads.get(name, ())
            out.append(f"{self.const(name)} = {fields_literal('rt.MemSpec', fields, MemSpec)}"
                       f"   # {where(mem.span.line)}: {b.kernel}")
        for members, const in self.stack_consts.items():
            out.append(f"{const} = rt.merged({self.const(members[0])}, {len(members)})"
                       f"   # {', '.join(text(m) for m in members)} learn stacked, heads side by side")
        return out


def _param_literal(info: ParamInfo) -> str:
    """One entry of the parameter table, with only the fields that differ from their defaults."""
    fields = info.model_dump(exclude_defaults=True)
    fields.setdefault("init", info.init)
    return "ParamInfo(" + ", ".join(f"{k}={literal(v)}" for k, v in fields.items()) + ")"


def pascal(name: str) -> str:
    """A class name from a spec's name: `sgd_momentum` → `SgdMomentum`, `LinearAttention` as it is."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) or name


def code_lines(lines: list[str]) -> list[str]:
    """Lines of code, each kept within the width (`pretty.wrap`)."""
    return [out for line in lines for out in wrap(line)]


def emit_model(spec: Spec, name: str | None = None) -> str:
    """The Python source of the compiled model `name` (default: the entry file's first model)."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    model: Model = spec.models[name]
    module = Scope(MODEL_MODULE + BLOCK_ARGS + OBJECTIVE_ARGS)
    blocks = [BlockEmitter(lower_block(b), module) for b in model.blocks]
    cls = module.name(("model",), pascal(name))
    lines = [f'"""Model `{text(name)}` compiled by nldsl from {text(Path(spec.file).name)}. Generated code: edit',
             "the spec, not this; `# line N` comments point at its lines, `[B, T, D]` is a value's shape",
             "(batch, tokens, features).",
             "",
             "The kernel each memory runs on:"]
    for blk in blocks:
        for mname, b in blk.lowered.bindings.items():
            lines += textwrap.wrap(f"{text(blk.block.name)}.{text(mname)}: {b.kernel} ({text(b.reason)})", 116,
                                   initial_indent="  ", subsequent_indent="      ")
    lines += ['"""', "", "import torch", "import torch.nn.functional as F", "",
              "from nldsl.backends import functional as fn", "from nldsl.backends.torch.runtime import calls as rt",
              "from nldsl.backends.torch.runtime.model import CompiledModel", "from nldsl.lower import ParamInfo", ""]
    for blk in blocks:
        lines += code_lines(blk.constants())
    lines += ["", "PARAMS = ("]
    lines += code_lines([f"    {_param_literal(info)}," for info in parameter_table(model).values()])
    lines += [")", ""]
    for blk in blocks:
        lines += ["", *code_lines(blk.function_lines()), ""]

    def per_block(entries) -> str:
        return "{" + ", ".join(f"{literal(blk.block.name)}: {{{', '.join(entries(blk))}}}" for blk in blocks) + "}"

    memories = per_block(lambda blk: [f"{literal(m)}: {blk.const(m)}" for m, mem in blk.block.memories.items()
                                      if mem.parametric and blk.kernel(m) is not Kernel.STATIC])
    # every convolution and attention read the block evaluates: in its values, and in the parts of
    # objectives and coefficients computed beside them
    convs = per_block(lambda blk: list(dict.fromkeys(
        f"{literal(o.attrs['param'])}: ({o.width}, {o.attrs['kernel']})"
        for o in blk.lowered.ops() if o.op == OpKind.CONV)))
    sites = per_block(lambda blk: list(dict.fromkeys(
        f"{literal(attention_site(o))}: ({o.args[1].width}, {o.args[2].width})"
        for o in blk.lowered.ops() if o.op == OpKind.READ and o.attrs.get("kernel") == Read.ATTENTION)))
    layers = tuple_of([f"({literal(b.name)}, {i})" for b in model.blocks for i in range(b.repeat)])
    lines += ["", f"class {cls}(CompiledModel):", *code_lines([
              "    PARAMS = PARAMS",
              f"    BLOCKS = {{{', '.join(f'{literal(blk.block.name)}: {blk.function}' for blk in blocks)}}}",
              f"    CONVS = {convs}   # convolution → (width, kernel)",
              f"    SITES = {sites}   # attention read → (key width, value width)",
              f"    LAYERS = {layers}",
              f"    MEMORIES = {memories}",
              f"    SEGMENT = {literal(segment_length(model))}   # tokens per step of the segment loop",
              f"    VOCAB = {int(model.config['vocab'])}"]),
              "", "", f"MODEL = {cls}"]
    return "\n".join(lines).rstrip() + "\n"


# ---- optimizers ---------------------------------------------------------------------------------

class OptimizerEmitter(Emitter):
    def __init__(self, opt: Optimizer, module: Scope) -> None:
        super().__init__(module)
        self.opt = opt

    def input(self, op: Op) -> str:
        return {"grad": "grad", "param": "param", "step": "step"}[op.attrs["name"]]

    def _map(self, m: Memory, weights: str, x: str) -> str:
        s = m.structure
        return f"opt.apply({literal(s.kind)}, {weights}, {x}, {literal(s.act)}, {s.residual}, {literal(s.norm)})"

    def self_call(self, op: Op, c: Within) -> str:
        return self._map(self.opt.memories[op.attrs["memory"]], c.weights, c(op.args[0]))

    def state(self, op: Op, c: Within) -> str:
        return f"{c.weights}[0]" if op.attrs.get("self") else f"opt.value(S[{literal(op.attrs['memory'])}])"

    def read(self, op: Op, c: Within) -> str:
        m = self.opt.memories[op.attrs["memory"]]
        return self._map(m, f"S[{literal(m.name)}].visible()", c(op.args[0]))

    def objective(self, m: Memory, name: str) -> tuple[list[str], tuple[Op, ...]]:
        """A state's objective as a module-level function of its weights `w` (its hoisted parts
        passed in as a0, a1, ...), and the values of those parts."""
        learn = m.learn
        assert learn is not None and learn.objective is not None
        body, hoisted = lower_objective(learn.objective, None, lambda op: 1, lambda op: op)
        inner = self.module.child(("w",))
        args = [inner.name(("arg", i), f"a{i}") for i in range(len(hoisted))]
        return [f"def {name}({', '.join(['w', *args])}):   # {where(learn.objective.span.line)}",
                f"    return {self.expr(body, args, 'w')}.sum()"], hoisted

    def learn(self, m: Memory, objective: str, hoisted: tuple[Op, ...]) -> str:
        learn = m.learn
        assert learn is not None
        rule = learn.rule
        r = fields_literal("rt.Rule", {"kind": rule.kind, "output_steps": rule.output_steps or 0,
                                        "beta1": rule.beta1, "beta2": rule.beta2, "eps": rule.eps}, Rule)
        values = tuple_of([self.expr(v) for v in hoisted])
        return (f"opt.learn(S[{literal(m.name)}], {objective}, {values}, step, {r}, {self.coefficients(rule)})"
                f"   # {where(learn.span.line)}")


def _elementwise(o: Optimizer) -> bool:
    """Whether every state and every operation of an optimizer works element by element, so that
    its update can run on a shard of a parameter."""
    plain = all(m.structure.kind == "elementwise" and not (m.learn and (m.learn.rule.output_steps or
                                                                        m.learn.rule.precond is not None))
                for m in o.memories.values())
    return plain and all(OPS[node.op].elementwise for e in _expressions(o) for node in e.walk())


def _expressions(o: Optimizer) -> Iterator[Op]:
    """Every expression of an optimizer: its values, its update and its states' learning."""
    yield from (a.expr for a in o.assignments)
    yield o.update
    for m in o.memories.values():
        if m.learn is not None:
            yield from (e for group in learn_exprs(m.learn).values() for e in group)
            yield from ([m.learn.key] if m.learn.key is not None else [])


def emit_optimizer(spec: Spec, name: str) -> str:
    """The Python source of an optimizer spec as a `torch.optim.Optimizer` subclass."""
    o: Optimizer = spec.optimizers[name]
    module = Scope(OPTIMIZER_MODULE + UPDATE_ARGS + ("w",))
    cls = module.name(("optimizer",), pascal(name))
    file = spec.file if name in spec.local_units else o.span.file
    em = OptimizerEmitter(o, module)
    learned = [m for m in o.memories.values() if m.learn is not None and m.learn.time.base != "never"]
    names = {m.name: module.name(("objective", m.name), f"objective_{m.name}") for m in learned}
    objectives = {m.name: em.objective(m, names[m.name]) for m in learned}
    em.enter(module.child(UPDATE_ARGS), o.assignments, ())
    steps: list[tuple[tuple[int, int], str]] = []
    for i, a in enumerate(o.assignments):
        steps.append(((a.span.line, a.span.col), f"{em.names[i]} = {em.expr(a.expr)}   # {where(a.span.line)}"))
    for m in learned:
        assert m.learn is not None
        steps.append(((m.learn.span.line, m.learn.span.col), em.learn(m, names[m.name], objectives[m.name][1])))
    states = []
    for m in o.memories.values():
        learn = m.learn
        s = m.structure
        info = {"kind": s.kind, "shapes": tuple(memory_shapes(m)) if s.kind == "mlp" else (), "init": m.init,
                "act": s.act, "residual": s.residual, "norm": s.norm,
                "period": learn.time.period if learn and learn.time.base == "step" else 1,
                "read_after": learn is None or learn.read == "after",
                "momentum": bool(learn and learn.rule.momentum is not None),
                "adam": bool(learn and learn.rule.kind == "adam")}
        states.append(f"        {literal(m.name)}: {literal(info)},   # {where(m.span.line)}")
    lines = [f'"""Optimizer `{text(name)}` compiled by nldsl from {text(Path(file).name)}. Generated code: edit',
             "the spec, not this; `# line N` comments point at its lines.",
             '"""', "", "import torch", "", "from nldsl.backends import functional as fn",
             "from nldsl.backends.torch.runtime import calls as rt",
             "from nldsl.backends.torch.runtime import optimizer as opt", ""]
    for body, _ in objectives.values():
        lines += ["", *code_lines(body), ""]
    lines += ["", f"def update({', '.join(UPDATE_ARGS)}):",
              f'    """One step of `{text(name)}` for one parameter: updates its states S, returns its new value."""']
    lines += code_lines(["    " + line for _, line in sorted(steps, key=lambda x: x[0])])
    lines += [*code_lines([f"    return {em.expr(o.update)}   # {where(o.update.span.line)}"]), "", "",
              f"class {cls}(opt.SpecOptimizer):",
              *code_lines([f"    DEFAULTS = {literal(dict(o.defaults))}"]),
              f"    ELEMENTWISE = {_elementwise(o)}   # whether a shard of a parameter can be updated alone",
              "    STATES = {", *code_lines(states),
              "    }", "    update = staticmethod(update)", "", "", f"OPTIMIZER = {cls}", ""]
    return "\n".join(lines)


# ---- the trainer script -------------------------------------------------------------------------

def emit_trainer(spec: Spec, name: str) -> str:
    """A runnable train.py next to model.py and the optimizer modules `nldsl compile` writes."""
    model = spec.models[name]
    t = model.train
    groups = [(g.optimizer, dict(g.args), tuple(g.targets), g.period) for g in t.groups]
    settings = {"steps": t.steps, "batch": t.batch, "context": model.context, "clip": t.clip, "seed": t.seed,
                "schedule": (t.schedule.kind, t.schedule.warmup, t.schedule.min_ratio)}
    return "\n".join([
        f'"""Train `{text(name)}`, compiled by nldsl from {text(Path(spec.file).name)}.',
        "",
        'Run: python train.py --help"""',
        "", "from pathlib import Path", "",
        "from nldsl.backends.torch.app import run", "",
        "# (optimizer, arguments, parameters (empty: the rest), period in steps)",
        *code_lines([f"GROUPS = {literal(groups)}"]),
        *code_lines([f"SETTINGS = {literal(settings)}"]), "",
        'if __name__ == "__main__":',
        f"    run.main(Path(__file__).parent, {literal(name)}, GROUPS, SETTINGS)", ""])


def write_package(spec: Spec, name: str | None, directory: Path) -> list[Path]:
    """`nldsl compile`: model.py, one optim_<name>.py per outer optimizer, and train.py."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"model.py": emit_model(spec, name)}
    for g in spec.models[name].train.groups:
        files[f"optim_{g.optimizer}.py"] = emit_optimizer(spec, g.optimizer)
    files["train.py"] = emit_trainer(spec, name)
    written = []
    for fname, source in files.items():
        path = directory / fname
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
