"""The checked spec: what the checker hands to the graph, the interpreters and the compiler.

Names are resolved, sugar (CMS, multi-memory `learn`) is expanded, sizes are integers, every
expression is a typed `Op` tree with a known width, and every node still points at its source.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from nldsl.catalog import DECORRELATE, RULES
from nldsl.ops import OBJECTIVES, OpKind
from nldsl.source import Span


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Op(Frozen):
    """A typed expression node.

    op: its kind (`nldsl.ops.OPS` says what each kind carries)
    attrs: kind-specific data (const: value; value: name, index; param: name; read: memory; ...)
    width: features per token (model code) or PARAM_SHAPED (optimizer code); constants have 1
    """

    op: OpKind
    args: tuple[Op, ...] = ()
    attrs: dict[str, Any] = {}
    width: int
    span: Span

    def walk(self):
        yield self
        for a in self.args:
            yield from a.walk()

    def structure(self) -> tuple:
        """What the expression computes, without where it was written: equal for equal expressions."""
        attrs = tuple(sorted((k, v) for k, v in self.attrs.items() if isinstance(v, str | int | float | bool)))
        return self.op, self.width, attrs, tuple(a.structure() for a in self.args)

    def is_self(self) -> bool:
        """Whether this node is a read of the memory being learned: `self(...)`, or a bare elementwise `self`."""
        return self.op == OpKind.SELF or (self.op == OpKind.STATE and bool(self.attrs.get("self")))

    def reads_self(self) -> bool:
        """Whether it reads the memory being learned anywhere."""
        return any(o.is_self() for o in self.walk())


class Time(Frozen):
    """When a component changes: every `period` tokens or steps, never, or per query (attention)."""

    base: Literal["token", "step", "never", "query"]
    period: int = 1

    def __str__(self) -> str:
        if self.base in ("never", "query"):
            return "never" if self.base == "never" else "per query"
        return f"every {self.base}" if self.period == 1 else f"every {self.period} {self.base}s"


class Structure(Frozen):
    kind: Literal["matrix", "mlp", "elementwise", "attention"]
    in_dim: int = 0               # per head; 0 for optimizer states (the parameter's shape)
    out_dim: int = 0
    depth: int = 1
    hidden: int = 0
    act: str = "identity"
    residual: bool = False
    norm: str = "none"
    window: int = 0

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each weight matrix, first layer first."""
        if self.kind == "matrix":
            return [(self.out_dim, self.in_dim)]
        if self.kind == "mlp":
            dims = [self.in_dim] + [self.hidden] * (self.depth - 1) + [self.out_dim]
            return [(dims[i + 1], dims[i]) for i in range(self.depth)]
        return []

    def state_size(self) -> int:
        """Numbers in one head's state (0 for non-parametric memories)."""
        if self.kind == "elementwise":
            return self.in_dim
        return sum(o * i for o, i in self.layer_shapes())

    def describe(self) -> str:
        if self.kind == "matrix":
            return f"matrix {self.in_dim}→{self.out_dim}"
        if self.kind == "mlp":
            extras = [self.act] + (["residual"] if self.residual else []) + \
                ([self.norm] if self.norm != "none" else [])
            return f"mlp {self.in_dim}→{self.hidden}→{self.out_dim} ×{self.depth} ({', '.join(extras)})"
        if self.kind == "attention":
            return "softmax attention" + (f", window {self.window}" if self.window else "")
        return f"elementwise {self.in_dim}" if self.in_dim else "elementwise"


class Rule(Frozen):
    kind: Literal["gd", "dgd", "adam"]
    lr: Op
    retain: Op | None = None
    momentum: Op | None = None
    precond: Op | None = None
    output_steps: int | None = None   # Newton-Schulz iterations on the update, when set
    decorrelate: str = str(RULES["dgd"].options["decorrelate"].default)   # dgd's layers: `catalog.DECORRELATE`
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    span: Span

    def decorrelated(self, depth: int) -> tuple[int, ...]:
        """The layers (0 first) of a memory of `depth` layers whose state dgd decorrelates along their input."""
        if self.kind != "dgd":
            return ()
        return tuple(range(depth)[DECORRELATE[self.decorrelate].layers])

    def describe(self) -> str:
        parts = [self.kind]
        if self.decorrelate != Rule.model_fields["decorrelate"].default:
            parts.append(f"decorrelate {self.decorrelate}")
        if self.retain is not None:
            parts.append("retention")
        if self.momentum is not None:
            parts.append("momentum" + (" (preconditioned)" if self.precond is not None else ""))
        if self.output_steps:
            parts.append(f"newton-schulz×{self.output_steps}")
        return " + ".join(parts)


class Learn(Frozen):
    """How one memory learns. One `learn` over several memories becomes one of these per memory."""

    objective: Op | None              # None: the outer loss' gradient at the memory output
    rule: Rule
    time: Time
    chunk: int = 1                    # gradient reference refreshed every `chunk` tokens
    anchor: Literal["chunk_start", "token"] = "chunk_start"
    read: Literal["before", "after"] = "after"
    read_default: bool = True
    backprop: Literal["through", "first_order", "stop", "truncate"] = "through"
    truncate: int = 0
    key: Op | None = None             # the input of self(...) in the prediction (DGD's k)
    span: Span

    def objective_name(self) -> str:
        if self.objective is None:
            return "outer (teach signal)"
        return self.objective.op if self.objective.op in OBJECTIVES else "custom"


class Memory(Frozen):
    name: str
    structure: Structure
    heads: int = 1
    per: Literal["head", "element"] | None = None
    scope: Literal["sequence", "persistent"] = "sequence"
    init: Literal["learned", "zeros", "identity"] = "learned"
    level: int | None = None          # asserted level, checked against the derived one
    frozen: bool = False
    learn: Learn | None = None
    group: str | None = None          # the CMS this memory was desugared from
    span: Span

    @property
    def parametric(self) -> bool:
        return self.structure.kind != "attention"


class Param(Frozen):
    name: str
    shape: tuple[int, ...]
    init: Literal["normal", "zeros", "ones", "conv", "layernorm"] = "normal"   # conv, layernorm: built-ins' own
    frozen: bool = False
    level: int | None = None
    implicit: bool = False            # created by a built-in (conv, norms), named after its value
    span: Span


class Assignment(Frozen):
    target: str
    expr: Op
    span: Span


class Block(Frozen):
    name: str
    repeat: int = 1
    assignments: tuple[Assignment, ...] = ()
    memories: dict[str, Memory] = {}
    params: dict[str, Param] = {}
    span: Span


class OptimGroup(Frozen):
    optimizer: str
    args: dict[str, float] = {}
    targets: tuple[str, ...] = ()     # empty: every parameter no other group claims
    period: int = 1                   # in outer steps
    span: Span


class Schedule(Frozen):
    kind: str = "constant"
    warmup: int = 0
    min_ratio: float = 0.1


class Train(Frozen):
    loss: str = "next_token"
    groups: tuple[OptimGroup, ...] = ()
    schedule: Schedule = Schedule()
    batch: int = 8
    steps: int = 1000
    clip: float = 0.0
    seed: int = 0
    declared: bool = True
    span: Span


class Model(Frozen):
    name: str
    config: dict[str, int | float]
    blocks: tuple[Block, ...]
    params: dict[str, Param] = {}     # model-level: embedding, output head, shared declarations
    train: Train
    span: Span

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def context(self) -> int:
        return int(self.config["context"])


class Optimizer(Frozen):
    name: str
    defaults: dict[str, float]
    memories: dict[str, Memory] = {}
    assignments: tuple[Assignment, ...] = ()
    update: Op
    span: Span


class Spec(Frozen):
    """Everything one entry file defines or imports, checked."""

    file: str
    models: dict[str, Model] = {}
    optimizers: dict[str, Optimizer] = {}
    local_units: tuple[str, ...] = ()  # names defined in the entry file itself, in order
