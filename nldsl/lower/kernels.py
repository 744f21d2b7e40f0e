"""Which kernel runs each memory: chosen from its pattern (structure, objective, rule, time), never
from the spec's name. The kernels are the runtime's functions of the same names."""

from __future__ import annotations

from enum import StrEnum
from math import gcd

from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import learn_exprs
from nldsl.ops import MEMORY_READS, OBJECTIVES, OpKind
from nldsl.spec import Block, Learn, Memory, Model, Op


class Kernel(StrEnum):
    """How a memory runs; each value names the runtime function that runs it."""

    ATTENTION = "attention"                            # softmax attention over a key/value cache
    STATIC = "read_static"                             # no in-context learning: a plain module
    TEACH = "teach"                                    # the outer loss' gradient, chunk-interleaved
    CHUNK_LINEAR_ATTENTION = "chunk_linear_attention"  # reads and writes fused, chunkwise
    CHUNK_DELTA_RULE = "chunk_delta_rule"              # reads and writes fused, chunkwise (WY form)
    PERIOD_GD = "period_gd"                            # a segment's gradients at its start, closed form
    PERIOD_MOMENTUM = "period_momentum"                # the same with a momentum buffer
    PERIOD_DGD = "period_dgd"                          # the same with dgd's layers as delta rules
    PERIOD_DGD_MOMENTUM = "period_dgd_momentum"        # dgd and momentum: dgd's layers in UT form
    IN_CHUNK = "in_chunk"                              # per-token writes, gradients at the chunk's start;
                                                       # reads see them through the dual form
    GENERIC = "generic_update"                         # per-token gradients, the rule token by token


class Read(StrEnum):
    """How a memory's read runs (`attrs["kernel"]` of a read after lowering); each value names the
    runtime function."""

    ATTENTION = "attention"                # softmax attention over the segment and the cache
    STATIC = "read_static"                 # the outer level's weights
    CURRENT = "read_current"               # the state as of this token (one-token segments)
    COMMITTED = "read_committed"           # the state committed at the last period boundary
    REMEMBER = "remember"                  # kept until its window's losses give the teach signal
    IN_CHUNK = "read_in_chunk"             # through the per-token states of the segment's writes


FUSED = (Kernel.CHUNK_LINEAR_ATTENTION, Kernel.CHUNK_DELTA_RULE)
PERIOD = (Kernel.PERIOD_GD, Kernel.PERIOD_MOMENTUM, Kernel.PERIOD_DGD, Kernel.PERIOD_DGD_MOMENTUM)

class Binding(BaseModel):
    model_config = ConfigDict(frozen=True)

    memory: str
    kernel: Kernel
    reason: str


def _plain_prediction(m: Memory) -> bool:
    """objective(self(k), target) with the target free of the memory itself."""
    learn = m.learn
    if learn is None or learn.objective is None or learn.objective.op not in (OpKind.L2, OpKind.DOT):
        return False
    pred, target = learn.objective.args
    return pred.op == OpKind.SELF and not target.reads_self() \
        and not any(o.op == OpKind.SELF for o in pred.args[0].walk())


def read_sites(block: Block, name: str) -> list[tuple[int, Op]]:
    """Where a memory is read: (assignment index, read op) pairs; reads inside objectives count as -1."""
    sites = [(i, o) for i, a in enumerate(block.assignments) for o in a.expr.walk()
             if o.op in MEMORY_READS and o.attrs.get("memory") == name]
    for m in block.memories.values():
        if m.learn is not None:
            sites += [(-1, o) for e in learn_exprs(m.learn).values() for x in e for o in x.walk()
                      if o.op in MEMORY_READS and o.attrs.get("memory") == name and not o.attrs.get("self")]
    return sites


def _fusable(block: Block, m: Memory) -> bool:
    """A matrix memory read once, in an assignment that comes after everything its update needs:
    its reads and writes can then run together in one chunkwise kernel."""
    sites = read_sites(block, m.name)
    if len(sites) != 1 or sites[0][0] < 0 or m.learn is None:
        return False
    needed = {o.attrs["index"] for g in learn_exprs(m.learn).values() for e in g for o in e.walk()
              if o.op == OpKind.VALUE}
    return all(i < sites[0][0] for i in needed)


def _one_prediction(learn: Learn) -> bool:
    """The objective depends on the memory through one `self(k)` with k the learn's key (others only
    under `fixed`): its gradient at every layer is then an error signal times that layer's input."""
    live: list[Op] = []

    def visit(op: Op) -> None:
        if op.op == OpKind.FIXED:
            return
        if op.op == OpKind.SELF:
            live.append(op)
        for a in op.args:
            visit(a)

    assert learn.objective is not None
    visit(learn.objective)
    return len(live) == 1 and learn.key is not None and not learn.key.reads_self() \
        and live[0].args[0].structure() == learn.key.structure()


def _reads_after_update(block: Block, m: Memory) -> bool:
    """Every read of the memory is in an assignment that comes after every value its update needs,
    so its update can run first in a segment whatever its read mode."""
    sites = read_sites(block, m.name)
    assert m.learn is not None
    needed = {o.attrs["index"] for g in learn_exprs(m.learn).values() for e in g for o in e.walk()
              if o.op == OpKind.VALUE}
    needed |= {o.attrs["index"] for o in (m.learn.key.walk() if m.learn.key is not None else ())
               if o.op == OpKind.VALUE}
    return bool(sites) and all(i >= 0 and all(n < i for n in needed) for i, _ in sites)


def bind(m: Memory, block: Block | None = None) -> Binding:
    """The cheapest exact kernel for a memory, from its pattern."""
    learn = m.learn
    if not m.parametric:
        return Binding(memory=m.name, kernel=Kernel.ATTENTION, reason="softmax attention: scaled_dot_product_attention")
    if learn is None or learn.time.base == "never":
        return Binding(memory=m.name, kernel=Kernel.STATIC, reason="no in-context learning: a plain module")
    if learn.objective is None:
        return Binding(memory=m.name, kernel=Kernel.TEACH, reason="teach signal: chunk-interleaved forward/backward")
    rule = learn.rule
    simple_rule = rule.kind in ("gd", "dgd") and rule.momentum is None and rule.output_steps is None \
        and rule.precond is None
    per_token = learn.time.base == "token" and learn.time.period == 1
    if m.structure.kind == "matrix" and simple_rule and per_token and _plain_prediction(m) \
            and m.scope == "sequence" and (block is None or _fusable(block, m)):
        if learn.objective.op == OpKind.DOT and rule.kind == "gd":
            return Binding(memory=m.name, kernel=Kernel.CHUNK_LINEAR_ATTENTION,
                           reason="matrix + dot objective + gd: chunkwise (gated) linear attention")
        if learn.objective.op == OpKind.L2 and learn.chunk == 1:
            return Binding(memory=m.name, kernel=Kernel.CHUNK_DELTA_RULE,
                           reason=f"matrix + l2 objective + {rule.kind}: chunkwise delta rule (WY form)")
    if m.structure.kind in ("matrix", "mlp") and rule.kind in ("gd", "dgd") and rule.precond is None \
            and rule.output_steps is None and learn.time.base == "token" and learn.time.period == 1 \
            and learn.chunk > 1 and learn.anchor == "chunk_start" and m.scope == "sequence" \
            and learn.backprop != "first_order" and learn.objective.op in OBJECTIVES and _one_prediction(learn) \
            and (block is None or _reads_after_update(block, m)):
        return Binding(memory=m.name, kernel=Kernel.IN_CHUNK,
                       reason=f"per-token writes with gradients at the start of each {learn.chunk}-token chunk: "
                              "error signals of a segment in one vector-Jacobian product, reads through the "
                              "per-token states in the dual form")
    closed_form = rule.kind in ("gd", "dgd")
    if m.scope == "persistent":
        # the shared state takes the batch's mean write at every token: the closed form (each
        # sequence's segment, averaged at its end) is the same only while the rule is linear in the
        # state with one coefficient for all sequences
        closed_form = rule.kind == "gd" and \
            (rule.retain is None or all(o.op == OpKind.CONST for o in rule.retain.walk()))
    if learn.time.base == "token" and learn.time.period > 1 and closed_form and rule.precond is None \
            and rule.output_steps is None and learn.objective.op in OBJECTIVES:
        kernel, form = period_kernel(rule.kind == "dgd", rule.momentum is not None,
                                     rule.decorrelated(m.structure.depth), m.structure.depth)
        return Binding(memory=m.name, kernel=kernel,
                       reason=f"state fixed for {learn.time.period} tokens: all gradients of a chunk at its start "
                              f"state in one vector-Jacobian product, {form} in closed form")
    return Binding(memory=m.name, kernel=Kernel.GENERIC,
                   reason="generic path: torch.func gradients of the declared objective, the rule token by token")


def period_kernel(dgd: bool, momentum: bool, layers: tuple[int, ...] = (0,), depth: int = 1) -> tuple[Kernel, str]:
    """The closed form of a rule over a segment whose gradients sit at its start state (`layers`:
    those of the memory's `depth` that dgd decorrelates, by default the first)."""
    gd = "gd with momentum" if momentum else "gd"
    if layers == (0,):                         # the default, worded as it always was
        which, delta, others = "the key's layer", "dgd's first layer", f", the others by {gd}"
    else:
        which = "every layer" if len(layers) == depth else "the last layer" if layers == (depth - 1,) else \
            "layers " + ", ".join(str(j + 1) for j in layers)
        delta, others = f"dgd on {which}", f", the others by {gd}" if len(layers) < depth else ""
    if dgd and momentum:
        return Kernel.PERIOD_DGD_MOMENTUM, f"dgd with momentum: {which} by a triangular solve (UT form){others}"
    if dgd:
        return Kernel.PERIOD_DGD, f"{delta} as a delta rule{others}"
    if momentum:
        return Kernel.PERIOD_MOMENTUM, "gd with momentum (and retention)"
    return Kernel.PERIOD_GD, "gd (with retention)"


def teach_kernel(m: Memory) -> Kernel:
    """How a teach-signal memory applies its rule to Σ_t ⟨M(x_t), δ_t⟩ once its window closes."""
    assert m.learn is not None
    rule = m.learn.rule
    if rule.kind == "gd" and rule.precond is None and not rule.output_steps:
        return period_kernel(False, rule.momentum is not None)[0]
    return Kernel.GENERIC


def segment_length(model: Model) -> int | None:
    """How many tokens a compiled model processes at once: the greatest common divisor of the
    periods that cut the sequence (1 if some memory must be read token by token), or None when
    nothing does and the whole sequence goes at once."""
    periods: list[int] = []
    for block in model.blocks:
        for m in block.memories.values():
            kernel = bind(m, block).kernel
            if m.learn is None or kernel in (Kernel.STATIC, Kernel.ATTENTION, *FUSED):
                continue
            if m.learn.time.base != "token":
                continue
            periods.append(m.learn.chunk if kernel is Kernel.IN_CHUNK else max(m.learn.time.period, 1))
    return gcd(*periods) if periods else None
