"""The abstract syntax tree: what a `.nl` file says, before any name or shape is checked.

Every node carries the `Span` it came from. Nodes are slotted dataclasses that the parser builds
directly: a 100,000-line spec makes a million of them, so they cost what a plain Python object
costs. They compare by value, `dump` turns a tree into plain data (tests, golden files), and the
formatter prints them back. Nothing changes a node once the parser has built it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from nldsl.source import Span

node = dataclass(slots=True, kw_only=True)


@node
class Node:
    span: Span
    # How deep an expression nests (operators and calls; parentheses only group), set by the parser,
    # which refuses expressions deeper than `nldsl.parse.MAX_EXPRESSION_DEPTH` because every later
    # stage recurses over them. Nodes that are not expressions nest nothing.
    depth: ClassVar[int] = 0


@node
class Ident(Node):
    name: str


# ---- expressions ------------------------------------------------------------------------------

@node
class ExprNode(Node):
    depth: int = field(default=0, compare=False, repr=False)     # type: ignore[misc]


@node
class Num(ExprNode):
    value: float
    text: str


@node
class Name(ExprNode):
    id: str


@node
class SelfRef(ExprNode):
    """`self` in an objective: the state of the memory being learned."""


@node
class Kwarg(ExprNode):
    name: str
    value: Expr


@node
class Call(ExprNode):
    func: Ident                    # `self` as a callee is spelled with func.name == "self"
    args: list[Expr] = field(default_factory=list)
    kwargs: list[Kwarg] = field(default_factory=list)
    bare: bool = False             # written without parentheses (structures only: `elementwise`)


@node
class BinOp(ExprNode):
    op: Literal["+", "-", "*", "/", "@", "^"]
    left: Expr
    right: Expr


@node
class Neg(ExprNode):
    operand: Expr


Expr = Num | Name | SelfRef | Call | BinOp | Neg


@node
class Outer(Node):
    """The objective `outer`: the outer loss' gradient at the memory's output (teach signal)."""


# ---- time -------------------------------------------------------------------------------------

@node
class Period(Node):
    """`token`, `16 tokens`, `step`, `period steps`, `never`."""

    unit: Literal["token", "step", "never"]
    count: int | str | None = None      # None means 1; a str is a header parameter's name
    count_span: Span | None = None


# ---- declarations -----------------------------------------------------------------------------

@node
class Modifier(Node):
    key: Literal["per", "scope", "init", "level", "frozen"]
    value: str | int | None = None
    value_span: Span | None = None


@node
class CmsLevel(Node):
    structure: Call
    period: Period


@node
class Cms(Node):
    mode: Ident | None = None          # `cms [..]` chains the levels; `cms parallel [..]` sums them
    levels: list[CmsLevel]


@node
class Assign(Node):
    target: Ident
    value: Expr


@node
class Update(Node):
    """`param = expr` in an optimizer body: the new value of the parameter being optimized."""

    value: Expr


@node
class ParamDecl(Node):
    name: Ident
    type: Call
    modifiers: list[Modifier] = field(default_factory=list)


@node
class MemoryDecl(Node):
    names: list[Ident]
    structure: Call | Cms
    modifiers: list[Modifier] = field(default_factory=list)


@node
class Clause(Node):
    key: Literal["every", "chunk", "anchor", "read", "backprop"]
    period: Period | None = None     # every
    value: int | str | None = None   # chunk size, anchor point, read order, backprop policy
    arg: int | None = None           # backprop truncate N
    value_span: Span | None = None


@node
class Learn(Node):
    memories: list[Ident]
    objective: Expr | Outer
    rule: Call
    clauses: list[Clause] = field(default_factory=list)


Statement = Assign | Update | ParamDecl | MemoryDecl | Learn


@node
class Block(Node):
    name: Ident | None = None
    repeat: Expr | None = None
    body: list[Statement] = field(default_factory=list)


@node
class Optimize(Node):
    targets: list[Ident]
    rule: Call
    period: Period | None = None


@node
class Setting(Node):
    key: Ident
    value: Expr


@node
class Train(Node):
    items: list[Optimize | Setting] = field(default_factory=list)


@node
class HeaderParam(Node):
    name: Ident
    value: Expr


@node
class Model(Node):
    name: Ident
    params: list[HeaderParam] = field(default_factory=list)
    items: list[Block | ParamDecl | Train] = field(default_factory=list)


@node
class Optimizer(Node):
    name: Ident
    params: list[HeaderParam] = field(default_factory=list)
    body: list[Statement] = field(default_factory=list)


@node
class Import(Node):
    path: str


@node
class Module(Node):
    """One parsed `.nl` file."""

    file: str
    imports: list[Import] = field(default_factory=list)
    units: list[Model | Optimizer] = field(default_factory=list)


def dump(tree: object, spans: bool = True) -> object:
    """A node, and everything in it, as plain data: `{"node": class name, field: value, ...}`;
    spans as dicts, or left out with `spans=False` (to compare what two texts say)."""
    if isinstance(tree, Node):
        out: dict[str, object] = {"node": type(tree).__name__}
        for f in fields(tree):
            value = getattr(tree, f.name)
            if f.name == "depth" or (not spans and isinstance(value, Span | None) and f.name.endswith("span")):
                continue
            out[f.name] = dump(value, spans)
        return out
    if isinstance(tree, list):
        return [dump(item, spans) for item in tree]
    if isinstance(tree, Span):
        return tree.as_dict()
    return tree
