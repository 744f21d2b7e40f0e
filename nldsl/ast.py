"""The abstract syntax tree: what a `.nl` file says, before any name or shape is checked.

Every node carries the `Span` it came from. Nodes are frozen pydantic models, so a tree can be
compared, hashed into golden files (`model_dump`) and printed back by the formatter.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nldsl.source import Span, unvalidated

N = TypeVar("N", bound="Node")


class Node(BaseModel):
    # Validators are built on first use, not at import: the parser builds nodes without validation
    # (`make`), so `nldsl check` never needs them, and building them took half its start-up.
    model_config = ConfigDict(frozen=True, defer_build=True)
    span: Span


class Ident(Node):
    name: str


# ---- expressions ------------------------------------------------------------------------------

class Num(Node):
    kind: Literal["num"] = "num"
    value: float
    text: str


class Name(Node):
    kind: Literal["name"] = "name"
    id: str


class SelfRef(Node):
    """`self` in an objective: the state of the memory being learned."""

    kind: Literal["self"] = "self"


class Kwarg(Node):
    name: str
    value: Expr


class Call(Node):
    kind: Literal["call"] = "call"
    func: Ident                    # `self` as a callee is spelled with func.name == "self"
    args: list[Expr] = []
    kwargs: list[Kwarg] = []
    bare: bool = False             # written without parentheses (structures only: `elementwise`)


class BinOp(Node):
    kind: Literal["binop"] = "binop"
    op: Literal["+", "-", "*", "/", "@", "^"]
    left: Expr
    right: Expr


class Neg(Node):
    kind: Literal["neg"] = "neg"
    operand: Expr


Expr = Annotated[Num | Name | SelfRef | Call | BinOp | Neg, Field(discriminator="kind")]


class Outer(Node):
    """The objective `outer`: the outer loss' gradient at the memory's output (teach signal)."""

    kind: Literal["outer"] = "outer"


# ---- time -------------------------------------------------------------------------------------

class Period(Node):
    """`token`, `16 tokens`, `step`, `period steps`, `never`."""

    unit: Literal["token", "step", "never"]
    count: int | str | None = None      # None means 1; a str is a header parameter's name
    count_span: Span | None = None


# ---- declarations -----------------------------------------------------------------------------

class Modifier(Node):
    key: Literal["per", "scope", "init", "level", "frozen"]
    value: str | int | None = None
    value_span: Span | None = None


class CmsLevel(Node):
    structure: Call
    period: Period


class Cms(Node):
    kind: Literal["cms"] = "cms"
    mode: Ident | None = None          # `cms [..]` chains the levels; `cms parallel [..]` sums them
    levels: list[CmsLevel]


class Assign(Node):
    kind: Literal["assign"] = "assign"
    target: Ident
    value: Expr


class Update(Node):
    """`param = expr` in an optimizer body: the new value of the parameter being optimized."""

    kind: Literal["update"] = "update"
    value: Expr


class ParamDecl(Node):
    kind: Literal["param"] = "param"
    name: Ident
    type: Call
    modifiers: list[Modifier] = []


class MemoryDecl(Node):
    kind: Literal["memory"] = "memory"
    names: list[Ident]
    structure: Call | Cms
    modifiers: list[Modifier] = []


class Clause(Node):
    key: Literal["every", "chunk", "anchor", "read", "backprop"]
    period: Period | None = None     # every
    value: int | str | None = None   # chunk size, anchor point, read order, backprop policy
    arg: int | None = None           # backprop truncate N
    value_span: Span | None = None


class Learn(Node):
    kind: Literal["learn"] = "learn"
    memories: list[Ident]
    objective: Annotated[Num | Name | SelfRef | Call | BinOp | Neg | Outer, Field(discriminator="kind")]
    rule: Call
    clauses: list[Clause] = []


Statement = Annotated[Assign | Update | ParamDecl | MemoryDecl | Learn, Field(discriminator="kind")]


class Block(Node):
    kind: Literal["block"] = "block"
    name: Ident | None = None
    repeat: Expr | None = None
    body: list[Statement] = []


class Optimize(Node):
    kind: Literal["optimize"] = "optimize"
    targets: list[Ident]
    rule: Call
    period: Period | None = None


class Setting(Node):
    kind: Literal["setting"] = "setting"
    key: Ident
    value: Expr


class Train(Node):
    kind: Literal["train"] = "train"
    items: list[Annotated[Optimize | Setting, Field(discriminator="kind")]] = []


class HeaderParam(Node):
    name: Ident
    value: Expr


class Model(Node):
    kind: Literal["model"] = "model"
    name: Ident
    params: list[HeaderParam] = []
    items: list[Annotated[Block | ParamDecl | Train, Field(discriminator="kind")]] = []


class Optimizer(Node):
    kind: Literal["optimizer"] = "optimizer"
    name: Ident
    params: list[HeaderParam] = []
    body: list[Statement] = []


class Import(Node):
    path: str


class Module(Node):
    """One parsed `.nl` file."""

    file: str
    imports: list[Import] = []
    units: list[Annotated[Model | Optimizer, Field(discriminator="kind")]] = []


class _Plan:
    """How `make` fills in a node class: its fields in order with their defaults, the fields that
    have none, and those whose default is a list (copied per node, as pydantic copies it)."""

    __slots__ = ("defaults", "fields_sets", "lists", "required")

    def __init__(self, cls: type[Node]) -> None:
        fields = cls.model_fields
        self.defaults = {name: None if f.is_required() else f.default for name, f in fields.items()}
        self.required = frozenset(name for name, f in fields.items() if f.is_required())
        self.lists = tuple(name for name, f in fields.items() if not f.is_required() and type(f.default) is list)
        self.fields_sets: dict[tuple[str, ...], set[str]] = {}     # shared, per combination of fields given


_PLANS = {cls: _Plan(cls) for cls in [Ident, Num, Name, SelfRef, Kwarg, Call, BinOp, Neg, Outer, Period, Modifier,
                                       CmsLevel, Cms, Assign, Update, ParamDecl, MemoryDecl, Clause, Learn, Block,
                                       Optimize, Setting, Train, HeaderParam, Model, Optimizer, Import, Module]}


def make(cls: type[N], **fields: object) -> N:
    """`cls(**fields)` without validation, for the parser (see `nldsl.source.unvalidated`): the
    fields must already have their declared types, as the grammar guarantees for what it parses."""
    plan = _PLANS[cls]
    values = plan.defaults | fields          # the class's order of fields, with the values given
    if len(values) != len(plan.defaults) or not plan.required <= fields.keys():
        raise TypeError(f"{cls.__name__} takes {', '.join(plan.defaults)}; given {', '.join(fields)}")
    for name in plan.lists:
        if name not in fields:
            values[name] = []
    given = tuple(fields)
    fields_set = plan.fields_sets.get(given)
    if fields_set is None:
        fields_set = plan.fields_sets[given] = set(given)
    return unvalidated(cls, values, fields_set)
