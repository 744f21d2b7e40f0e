"""The op vocabulary: every kind of node an expression in the checked spec can hold, one entry each.

`spec.Op.op` is an `OpKind`. Everything a stage needs to know about an op *kind*, as opposed to one
node, is in its `OpDef` here: its family, how many arguments and which attributes it carries, how its
result's width follows from its arguments' (`result_width`, which the checker computes widths by),
whether it works element by element, and a line of documentation. The backends hold the other half of the
registry, one entry per op for how it runs (`backends/torch/codegen/emit.py: RENDER`,
`backends/reference/interpreter.py: EVALUATE`); tests check that each covers the vocabulary exactly
and that the built-in functions and objectives here are the catalog's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from nldsl import catalog


class OpKind(StrEnum):
    # leaves
    CONST = "const"
    INPUT = "input"              # `h`, or an optimizer's `grad`/`param`/`step`
    VALUE = "value"              # an earlier assignment of the same unit
    PARAM = "param"
    HYPER = "hyper"              # an optimizer's hyperparameter
    STATE = "state"              # a memory's state read bare (elementwise memories, optimizer states)
    # arithmetic
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MATMUL = "matmul"
    NEG = "neg"
    MIN = "min"
    MAX = "max"
    # unary functions
    SIGMOID = "sigmoid"
    SILU = "silu"
    GELU = "gelu"
    RELU = "relu"
    TANH = "tanh"
    SOFTPLUS = "softplus"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    ABS = "abs"
    SQUARE = "square"
    SIGN = "sign"
    # gradient control
    STOPGRAD = "stopgrad"
    FIXED = "fixed"
    # functions over the width or over time
    RMSNORM = "rmsnorm"
    LAYERNORM = "layernorm"
    L2NORM = "l2norm"
    SUM = "sum"
    MEAN = "mean"
    CONV = "conv"
    ROPE = "rope"
    NEWTON_SCHULZ = "newton_schulz"
    # objectives: (prediction, target) → one loss per token
    L2 = "l2"
    DOT = "dot"
    L1 = "l1"
    HUBER = "huber"
    # memories
    READ = "read"                # M(x), or attention's M(q, k, v)
    SELF = "self"                # self(x): the memory being learned, inside its objective
    # made by lowering, never by the checker
    ARG = "arg"                  # a hoisted part of an objective, by position
    FUSED = "fused"              # the output of a read fused with its memory's writes


class Width(StrEnum):
    """How an op's result width follows from its arguments' widths (`result_width`)."""

    DECLARED = "declared"        # a leaf: the width of what it names (a number: 1)
    SAME = "same"                # its first argument's
    BROADCAST = "broadcast"      # its two arguments', broadcast: equal, one of them 1, or one value per head
    GROUPS = "groups"            # one value per group (`groups`); a parameter-shaped value reduces to 1
    RIGHT = "right"              # its second argument's: `x @ W` has W's output width
    LOSS = "loss"                # 1: one loss per token
    MEMORY = "memory"            # the memory's output width, from its declaration (attention: its values')


PARAM_SHAPED = 0  # the width of optimizer values: they have the shape of the parameter they update


class Family(StrEnum):
    LEAF = "leaf"
    BINARY = "binary"            # two operands, broadcast like `fn.broadcast_pair`
    UNARY = "unary"              # one operand, element by element
    FUNCTION = "function"        # a built-in with its own arguments and options
    OBJECTIVE = "objective"
    MEMORY = "memory"
    LOWERED = "lowered"


@dataclass(frozen=True)
class OpDef:
    family: Family
    arity: tuple[int, ...]             # how many arguments (`Op.args`) a node may have
    attrs: tuple[str, ...] = ()        # the attributes every node of this kind carries
    width: Width = Width.SAME
    # works element by element, so an optimizer update using it can run on a shard of a parameter (a
    # memory's read is as elementwise as its structure, which the optimizer's emitter checks itself)
    elementwise: bool = True
    doc: str = ""
    # reads the token's place in the sequence (a history of earlier tokens, or the position): defined
    # for the block's values, token by token, not for a memory's output inside its objective, which
    # the update evaluates away from the token stream (NL087, which refuses other memories' reads
    # there too)
    sequence: bool = False


def _function(name: str, attrs: tuple[str, ...] = (), elementwise: bool = False, sequence: bool = False) -> OpDef:
    signature = catalog.FUNCTIONS[name]
    width = Width.BROADCAST if len(signature.positional) == 2 else Width.SAME
    return OpDef(Family.FUNCTION, (len(signature.positional),), attrs, width, elementwise, signature.doc, sequence)


OPS: dict[OpKind, OpDef] = {
    OpKind.CONST: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("value",), doc="a number"),
    OpKind.INPUT: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("name",), doc="an input of the unit"),
    OpKind.VALUE: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("name", "index"),
                        doc="an earlier value, by assignment index"),
    OpKind.PARAM: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("name",), doc="a learned parameter"),
    OpKind.HYPER: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("name",), doc="an optimizer hyperparameter"),
    OpKind.STATE: OpDef(Family.LEAF, (0,), width=Width.DECLARED, attrs=("memory",),
                        doc="a memory's state, read bare"),
    OpKind.ADD: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc="a + b"),
    OpKind.SUB: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc="a - b"),
    OpKind.MUL: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc="a * b"),
    OpKind.DIV: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc="a / b"),
    OpKind.POW: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc="a ^ b"),
    OpKind.MATMUL: OpDef(Family.BINARY, (2,), width=Width.RIGHT, elementwise=False, doc="x @ W, W a parameter"),
    OpKind.NEG: OpDef(Family.UNARY, (1,), doc="-x"),
    OpKind.MIN: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc=catalog.FUNCTIONS["min"].doc),
    OpKind.MAX: OpDef(Family.BINARY, (2,), width=Width.BROADCAST, doc=catalog.FUNCTIONS["max"].doc),
    **{OpKind(name): OpDef(Family.UNARY, (1,), doc=doc) for name, doc in catalog.UNARY.items()},
    OpKind.STOPGRAD: _function("stopgrad", elementwise=True),
    OpKind.FIXED: _function("fixed", elementwise=True),
    # inside an objective, lowering passes the norm's scale as a second argument (`lower_objective`)
    OpKind.RMSNORM: replace(_function("rmsnorm", ("param", "groups")), arity=(1, 2)),
    OpKind.LAYERNORM: replace(_function("layernorm", ("param", "groups")), arity=(1, 2)),
    OpKind.L2NORM: _function("l2norm", ("groups",)),
    OpKind.SUM: replace(_function("sum", ("groups",)), width=Width.GROUPS),
    OpKind.MEAN: replace(_function("mean", ("groups",)), width=Width.GROUPS),
    OpKind.CONV: OpDef(Family.FUNCTION, (1,), ("param", "kernel"), doc=catalog.FUNCTIONS["conv"].doc,
                       elementwise=False, sequence=True),
    OpKind.ROPE: _function("rope", ("groups", "base"), sequence=True),
    OpKind.NEWTON_SCHULZ: _function("newton_schulz", ("steps",)),
    **{OpKind(name): OpDef(Family.OBJECTIVE, (2,), ("delta",) if name == "huber" else (), Width.LOSS,
                           doc=signature.doc)
       for name, signature in catalog.OBJECTIVES.items()},
    OpKind.READ: OpDef(Family.MEMORY, (1, 3), ("memory",), Width.MEMORY,
                       doc="a memory's read: M(x), or attention's M(q, k, v)"),
    OpKind.SELF: OpDef(Family.MEMORY, (1,), ("memory",), Width.MEMORY,
                       doc="the memory being learned, in its objective"),
    OpKind.ARG: OpDef(Family.LOWERED, (0,), ("index",), Width.DECLARED, doc="a hoisted part of an objective"),
    OpKind.FUSED: OpDef(Family.LOWERED, (0,), ("memory",), Width.MEMORY, doc="a read fused with its memory's writes"),
}

OBJECTIVES = frozenset(k for k, d in OPS.items() if d.family is Family.OBJECTIVE)
UNARY = frozenset(k for k, d in OPS.items() if d.family is Family.UNARY and k is not OpKind.NEG)
# kinds that take a memory name: they name the memory they read in `attrs["memory"]`
MEMORY_READS = frozenset({OpKind.READ, OpKind.STATE})


def result_width(kind: OpKind, widths: tuple[int, ...], attrs: Mapping[str, object], heads: int = 0) -> int | None:
    """The width of a node of `kind` whose arguments have `widths`, by its `Width` rule; None when
    the arguments' widths do not combine. DECLARED and MEMORY widths come from a declaration, not
    from arguments: asking for them is a mistake."""
    rule = OPS[kind].width
    if rule is Width.SAME:
        return widths[0]
    if rule is Width.RIGHT:
        return widths[1]
    if rule is Width.LOSS:
        return 1
    if rule is Width.GROUPS:
        groups = attrs.get("groups", 1)
        assert isinstance(groups, int)
        return 1 if widths[0] == PARAM_SHAPED else groups
    if rule is Width.BROADCAST:
        return broadcast(*widths, heads=heads) if len(widths) == 2 else widths[0]
    raise ValueError(f"the width of '{kind}' comes from a declaration, not from its arguments")


def broadcast(a: int, b: int, heads: int = 0) -> int | None:
    """The width of an elementwise result: equal widths, a scalar, or one value per head."""
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    if heads > 1 and PARAM_SHAPED not in (a, b):
        if b == heads and a % heads == 0:
            return a
        if a == heads and b % heads == 0:
            return b
    return None
