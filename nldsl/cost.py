"""A cost preview per component and per level, before anything runs.

Counts are exact (parameters, fast-state numbers); FLOPs and activation memory are estimates that
follow the chosen algorithm's dominant terms, so configurations can be compared and a spec that
would not fit in memory is visible before it is compiled.
"""

from __future__ import annotations

from collections import Counter
from math import ceil, prod

from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import learn_exprs
from nldsl.diagnostics import Diagnostics
from nldsl.graph import Component, NestingGraph
from nldsl.ops import OpKind
from nldsl.spec import Block, Memory, Model, Op

BYTES = 4  # float32 states and activations
MACHINE_BYTES = 2**40   # 1 TiB: parameters beyond this fit in no single machine's memory


class Cost(BaseModel):
    model_config = ConfigDict(frozen=True)

    slow_params: int = 0          # trained by the outer optimizer (all layers of a repeated block)
    fast_state: int = 0           # in-context state per sequence (all layers, all heads)
    optimizer_state: int = 0      # buffers of the outer optimizer
    flops_per_token: float = 0.0  # forward reads + in-context updates, all layers
    activation_bytes: int = 0     # kept for the outer backward, per sequence


def _read_flops(m: Memory, context: int) -> float:
    s = m.structure
    if s.kind == "attention":
        span = min(s.window, context) if s.window else context / 2
        return 4.0 * span * s.in_dim * m.heads
    if s.kind == "elementwise":
        return float(s.in_dim * m.heads)
    return 2.0 * s.state_size() * m.heads


def _count_reads(block: Block) -> Counter[str]:
    """How many times the block reads each memory (one walk of the block, whatever its size)."""
    return Counter(o.attrs["memory"] for a in block.assignments for o in a.expr.walk() if o.op == OpKind.READ)


def _self_calls(ops: list[Op]) -> int:
    return sum(1 for e in ops for o in e.walk() if o.op == OpKind.SELF)


def _memory_cost(m: Memory, reads: int, context: int) -> Cost:
    """One layer's cost of a memory, but its parameters (`slow_params`)."""
    read = _read_flops(m, context)
    if not m.parametric:
        return Cost(flops_per_token=read * reads, activation_bytes=3 * context * m.structure.in_dim * m.heads * BYTES)
    state = m.structure.state_size() * m.heads
    if m.learn is None:
        return Cost(flops_per_token=read * reads)
    learn = m.learn
    selves = max(1, _self_calls(learn_exprs(learn)["write"]))
    # the update: forward of each self(...) call, its backward (≈2× forward), the state write, and
    # dgd's W x xᵀ term on each layer it decorrelates
    shapes = m.structure.layer_shapes()
    decorrelated = sum(o * i for j, (o, i) in enumerate(shapes) if j in learn.rule.decorrelated(len(shapes)))
    update = 3.0 * read * selves + 2.0 * state + 2.0 * decorrelated * m.heads
    if learn.rule.momentum is not None or learn.rule.kind == "adam":
        update += 2.0 * state
    if learn.objective is None:       # teach signal: a backward through the level per token
        update = 2.0 * read + 2.0 * state
    anchors = ceil(context / (learn.time.period * learn.chunk)) if learn.time.base == "token" else 1
    kept = {"through": anchors, "truncate": min(anchors, learn.truncate), "first_order": 1, "stop": 1}
    return Cost(fast_state=state, flops_per_token=read * reads + update,
                activation_bytes=kept[learn.backprop] * state * BYTES)


def _block_static_flops(block: Block) -> float:
    flops = 0.0
    for a in block.assignments:
        for o in a.expr.walk():
            if o.op == OpKind.MATMUL:
                flops += 2.0 * o.args[0].width * o.width
            elif o.op == OpKind.CONV:
                flops += 2.0 * o.width * o.attrs["kernel"]
    return flops


def component_costs(ng: NestingGraph) -> dict[str, Cost]:
    """Cost of every component of a model's nesting graph (optimizer graphs cost nothing here)."""
    model = ng.model
    if model is None:
        return {}
    blocks = {b.name: b for b in model.blocks}
    reads = {b.name: _count_reads(b) for b in model.blocks if b.memories}   # only memories are read
    out = {c.id: _component(c, model, blocks, reads) for c in ng.components()}
    updated: dict[str, list[str]] = {}          # a component -> what it updates
    for src, dst, kind, _ in ng.edges():
        if kind == "update":
            updated.setdefault(src, []).append(dst)
    for c in ng.components():
        if c.kind == "state" and c.block is None:   # an outer optimizer buffer: one number per parameter
            out[c.id] = Cost(optimizer_state=sum(out[dst].slow_params for dst in updated.get(c.id, ())))
    return out


def _component(c: Component, model: Model, blocks: dict[str, Block], reads: dict[str, Counter[str]]) -> Cost:
    slow = slow_params(c, blocks)
    if c.kind == "param":
        flops = 2.0 * model.dim * int(model.config["vocab"]) if c.name == "unembed" else 0.0
        return Cost(slow_params=slow, flops_per_token=flops)
    if c.kind in ("memory", "attention") and c.memory is not None and c.block in blocks:
        cost = _memory_cost(c.memory, reads[c.block][c.memory.name], model.context)
        return Cost(slow_params=slow, **{k: v * c.repeat for k, v in cost.model_dump(exclude={"slow_params"}).items()})
    return Cost(slow_params=slow)


def slow_params(c: Component, blocks: dict[str, Block]) -> int:
    """The parameters of a component that the outer optimizer trains, all layers of its block: a
    parameter, a static memory, a learned initial state (a learned memory's own state is fast)."""
    if c.kind == "param":
        return prod(c.shape) * c.repeat
    if c.kind == "memory" and c.memory is not None and c.memory.parametric and c.memory.learn is None:
        return c.memory.structure.state_size() * c.memory.heads * c.repeat
    if c.kind == "init" and c.block in blocks:
        mem = blocks[c.block].memories[c.name.rstrip("₀")]
        return mem.structure.state_size() * mem.heads * c.repeat
    return 0


def block_flops(model: Model) -> float:
    """FLOPs per token of the static projections and convolutions (all blocks and layers)."""
    return sum(_block_static_flops(b) * b.repeat for b in model.blocks)


def totals(ng: NestingGraph, costs: dict[str, Cost]) -> Cost:
    model = ng.model
    flops = sum(c.flops_per_token for c in costs.values()) + (block_flops(model) if model else 0.0)
    return Cost(slow_params=sum(c.slow_params for c in costs.values()),
                fast_state=sum(c.fast_state for c in costs.values()),
                optimizer_state=sum(c.optimizer_state for c in costs.values()), flops_per_token=flops,
                activation_bytes=sum(c.activation_bytes for c in costs.values()))


def outer_params(ng: NestingGraph) -> int:
    """How many numbers the outer optimizer trains: every layer's parameters, static memories and
    learned initial states (the count `nldsl explain` prints)."""
    if ng.model is None:
        return 0
    blocks = {b.name: b for b in ng.model.blocks}
    return sum(slow_params(c, blocks) for c in ng.components())


def size_diagnostics(ng: NestingGraph, diags: Diagnostics) -> None:
    """NL043 when a model's parameters alone, in float32, are beyond any one machine: a mistyped size,
    caught at `check`. Whether a model fits a given machine is for the command that allocates it."""
    if ng.model is None:
        return
    blocks = {b.name: b for b in ng.model.blocks}
    counts = {c.id: slow_params(c, blocks) for c in ng.components()}     # not the whole preview: large specs
    params = sum(counts.values())
    if params * BYTES <= MACHINE_BYTES:
        return
    largest = max((n for n in counts if ng.component(n).span is not None), key=counts.__getitem__)
    part = ng.component(largest)
    assert part.span is not None
    diags.warn("NL043", f"model '{ng.model.name}' has {params:.3g} parameters, {binary_bytes(params * BYTES)} in "
                        f"float32: more than any one machine holds; the largest part is '{part.name}' "
                        f"({counts[largest]:.3g})", part.span,
               "check the sizes in the header and here; `nldsl explain` lists the parameters of every part")


def binary_bytes(n: int) -> str:
    """`4.0 TiB`: a byte count in the largest binary unit it reaches."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    i = min(len(units) - 1, max(0, (n.bit_length() - 1) // 10))
    return f"{n / 2 ** (10 * i):.3g} {units[i]}"
