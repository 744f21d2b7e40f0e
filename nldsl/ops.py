"""The op vocabulary: every kind of node an expression in the checked spec can hold, one entry each.

`spec.Op.op` is an `OpKind`. Everything a stage needs to know about an op *kind*, as opposed to one
node, is in its `OpDef` here: its family, how many arguments and which attributes it carries, whether
it works element by element, and a line of documentation. The backends hold the other half of the
registry, one entry per op for how it runs (`backends/torch/codegen/emit.py: RENDER`,
`backends/reference/interpreter.py: EVALUATE`); tests check that each covers the vocabulary exactly
and that the built-in functions and objectives here are the catalog's.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    # works element by element, so an optimizer update using it can run on a shard of a parameter (a
    # memory's read is as elementwise as its structure, which the optimizer's emitter checks itself)
    elementwise: bool = True
    doc: str = ""
    # reads the token's place in the sequence (a history of earlier tokens, or the position): defined
    # for the block's values, token by token, not for a memory's output inside its objective, which
    # the update evaluates away from the token stream (NL087)
    sequence: bool = False


def _function(name: str, attrs: tuple[str, ...] = (), elementwise: bool = False, sequence: bool = False) -> OpDef:
    signature = catalog.FUNCTIONS[name]
    return OpDef(Family.FUNCTION, (len(signature.positional),), attrs, elementwise, signature.doc, sequence)


OPS: dict[OpKind, OpDef] = {
    OpKind.CONST: OpDef(Family.LEAF, (0,), ("value",), doc="a number"),
    OpKind.INPUT: OpDef(Family.LEAF, (0,), ("name",), doc="an input of the unit"),
    OpKind.VALUE: OpDef(Family.LEAF, (0,), ("name", "index"), doc="an earlier value, by assignment index"),
    OpKind.PARAM: OpDef(Family.LEAF, (0,), ("name",), doc="a learned parameter"),
    OpKind.HYPER: OpDef(Family.LEAF, (0,), ("name",), doc="an optimizer hyperparameter"),
    OpKind.STATE: OpDef(Family.LEAF, (0,), ("memory",), doc="a memory's state, read bare"),
    OpKind.ADD: OpDef(Family.BINARY, (2,), doc="a + b"),
    OpKind.SUB: OpDef(Family.BINARY, (2,), doc="a - b"),
    OpKind.MUL: OpDef(Family.BINARY, (2,), doc="a * b"),
    OpKind.DIV: OpDef(Family.BINARY, (2,), doc="a / b"),
    OpKind.POW: OpDef(Family.BINARY, (2,), doc="a ^ b"),
    OpKind.MATMUL: OpDef(Family.BINARY, (2,), elementwise=False, doc="x @ W, W a parameter"),
    OpKind.NEG: OpDef(Family.UNARY, (1,), doc="-x"),
    OpKind.MIN: OpDef(Family.BINARY, (2,), doc=catalog.FUNCTIONS["min"].doc),
    OpKind.MAX: OpDef(Family.BINARY, (2,), doc=catalog.FUNCTIONS["max"].doc),
    **{OpKind(name): OpDef(Family.UNARY, (1,), doc=doc) for name, doc in catalog.UNARY.items()},
    OpKind.STOPGRAD: _function("stopgrad", elementwise=True),
    OpKind.FIXED: _function("fixed", elementwise=True),
    OpKind.RMSNORM: _function("rmsnorm", ("param", "groups")),
    OpKind.LAYERNORM: _function("layernorm", ("param", "groups")),
    OpKind.L2NORM: _function("l2norm", ("groups",)),
    OpKind.SUM: _function("sum", ("groups",)),
    OpKind.MEAN: _function("mean", ("groups",)),
    OpKind.CONV: OpDef(Family.FUNCTION, (1,), ("param", "kernel"), False, catalog.FUNCTIONS["conv"].doc,
                       sequence=True),
    OpKind.ROPE: _function("rope", ("groups", "base"), sequence=True),
    OpKind.NEWTON_SCHULZ: _function("newton_schulz", ("steps",)),
    **{OpKind(name): OpDef(Family.OBJECTIVE, (2,), ("delta",) if name == "huber" else (), doc=signature.doc)
       for name, signature in catalog.OBJECTIVES.items()},
    OpKind.READ: OpDef(Family.MEMORY, (1, 3), ("memory",), doc="a memory's read: M(x), or attention's M(q, k, v)"),
    OpKind.SELF: OpDef(Family.MEMORY, (1,), ("memory",), doc="the memory being learned, in its objective"),
    OpKind.ARG: OpDef(Family.LOWERED, (0,), ("index",), doc="a hoisted part of an objective"),
    OpKind.FUSED: OpDef(Family.LOWERED, (0,), ("memory",), doc="a read fused with its memory's writes"),
}

OBJECTIVES = frozenset(k for k, d in OPS.items() if d.family is Family.OBJECTIVE)
UNARY = frozenset(k for k, d in OPS.items() if d.family is Family.UNARY and k is not OpKind.NEG)
# kinds that take a memory name: they name the memory they read in `attrs["memory"]`
MEMORY_READS = frozenset({OpKind.READ, OpKind.STATE})
