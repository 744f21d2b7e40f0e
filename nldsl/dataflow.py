"""What each value, memory and parameter of a block depends on, and what receives gradient.

Shared by the graph stage (edges, levels, cycles, unused components) and the cost preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nldsl.spec import Assignment, Block, Learn, Memory, Op

READ_OPS = ("read", "state")


@dataclass
class Deps:
    reads: set[str] = field(default_factory=set)     # memories read (not counting `self`)
    params: set[str] = field(default_factory=set)    # explicit and implicit parameters
    values: set[int] = field(default_factory=set)    # assignments used
    uses_input: bool = False


def op_deps(op: Op, assignments: tuple[Assignment, ...], out: Deps | None = None) -> Deps:
    """Transitive dependencies of an expression, through the block's earlier assignments. Values
    already in `out` are not walked again, so sharing one `Deps` keeps a whole pass linear; a work list
    rather than recursion lets a chain of any number of values through."""
    out = out or Deps()
    pending = [op]
    while pending:                  # every node, in no particular order (what is collected are sets)
        o = pending.pop()
        pending += o.args
        if o.op in READ_OPS and not o.attrs.get("self"):
            out.reads.add(o.attrs["memory"])
        if o.op == "param":
            out.params.add(o.attrs["name"])
        if "param" in o.attrs and o.op not in ("param",):
            out.params.add(o.attrs["param"])
        if o.op == "input":
            out.uses_input = True
        if o.op == "value" and o.attrs["index"] not in out.values:
            out.values.add(o.attrs["index"])
            pending.append(assignments[o.attrs["index"]].expr)
    return out


def learn_exprs(learn: Learn) -> dict[str, list[Op]]:
    """The expressions a memory's update reads, split by role: written data and coefficients."""
    rule = learn.rule
    coeffs = [c for c in (rule.lr, rule.retain, rule.momentum, rule.precond) if c is not None]
    return {"write": [learn.objective] if learn.objective is not None else [], "generate": coeffs}


def block_output(block: Block) -> int | None:
    """The index of the last assignment to `h`: what the block passes on."""
    idx = [i for i, a in enumerate(block.assignments) if a.target == "h"]
    return idx[-1] if idx else None


@dataclass
class Usage:
    memories: set[str] = field(default_factory=set)
    values: set[int] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    graded: set[str] = field(default_factory=set)    # parameters and learned inits the loss reaches


def usage(block: Block) -> Usage:
    """Which components of a block influence its output, and which get an outer gradient."""
    u = Usage()
    out = block_output(block)
    if out is None:
        return u
    reached = Deps()     # shared by every expression below: each value is walked once
    frontier = [block.assignments[out].expr]
    while frontier:
        op_deps(frontier.pop(), block.assignments, reached)
        for m in reached.reads - u.memories:
            u.memories.add(m)
            mem = block.memories.get(m)
            if mem is not None and mem.learn is not None:
                for exprs in learn_exprs(mem.learn).values():
                    frontier += exprs
    u.values = reached.values | {out}
    u.params = reached.params
    u.graded = _gradient_reach(block, out)
    return u


def _gradient_reach(block: Block, out: int) -> set[str]:
    """Parameters and learned initial states that the outer loss differentiates: everything the
    output reaches except through stopgrad, and through a memory's writes only when its gradient
    policy lets the outer gradient through them."""
    reached: set[str] = set()
    seen_values: set[int] = set()
    seen_memories: set[str] = set()
    pending = [block.assignments[out].expr]
    while pending:
        op = pending.pop()
        if op.op == "stopgrad":
            continue
        if op.op == "param":
            reached.add(op.attrs["name"])
        if "param" in op.attrs and op.op != "param":
            reached.add(op.attrs["param"])
        if op.op == "value":
            i = op.attrs["index"]
            if i not in seen_values:
                seen_values.add(i)
                pending.append(block.assignments[i].expr)
            continue
        if op.op in READ_OPS and not op.attrs.get("self") and op.attrs["memory"] not in seen_memories:
            seen_memories.add(op.attrs["memory"])
            pending += _memory_gradient(block.memories.get(op.attrs["memory"]), reached)
        pending.extend(op.args)
    return reached


def _memory_gradient(mem: Memory | None, reached: set[str]) -> list[Op]:
    """Record what of a memory the outer gradient reaches; returns the expressions it flows on into."""
    if mem is None or not mem.parametric:
        return []
    if mem.learn is None:
        reached.add(mem.name)                       # a static memory is an outer parameter
        return []
    if mem.init == "learned" and mem.learn.backprop != "stop":
        reached.add(mem.name)
    if mem.learn.backprop in ("through", "truncate"):
        return [e for exprs in learn_exprs(mem.learn).values() for e in exprs]
    return []
