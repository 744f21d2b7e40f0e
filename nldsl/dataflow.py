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
    """Transitive dependencies of an expression, through the block's earlier assignments."""
    out = out or Deps()
    for o in op.walk():
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
            op_deps(assignments[o.attrs["index"]].expr, assignments, out)
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


def usage(block: Block, outer_objective_reads_all: bool = True) -> Usage:
    """Which components of a block influence its output, and which get an outer gradient."""
    u = Usage()
    out = block_output(block)
    if out is None:
        return u
    frontier = [block.assignments[out].expr]
    learned_ctx: set[str] = set()
    while frontier:
        op = frontier.pop()
        d = op_deps(op, block.assignments)
        if out is not None:
            u.values |= d.values
        u.params |= d.params
        for m in d.reads - u.memories:
            u.memories.add(m)
            mem = block.memories.get(m)
            if mem is not None and mem.learn is not None:
                for exprs in learn_exprs(mem.learn).values():
                    frontier += exprs
                learned_ctx.add(m)
    u.values.add(out)
    u.graded = _gradient_reach(block, out)
    return u


def _gradient_reach(block: Block, out: int) -> set[str]:
    """Parameters and learned initial states that the outer loss differentiates."""
    reached: set[str] = set()
    seen: set[int] = set()
    seen_mem: set[str] = set()

    def visit(op: Op, stopped: bool) -> None:
        if stopped:
            return
        if op.op == "stopgrad":
            return
        if op.op == "param":
            reached.add(op.attrs["name"])
        if "param" in op.attrs and op.op != "param":
            reached.add(op.attrs["param"])
        if op.op == "value":
            i = op.attrs["index"]
            if i not in seen:
                seen.add(i)
                visit(block.assignments[i].expr, False)
            return
        if op.op in READ_OPS and not op.attrs.get("self"):
            visit_memory(op.attrs["memory"])
        for a in op.args:
            visit(a, False)

    def visit_memory(name: str) -> None:
        if name in seen_mem:
            return
        seen_mem.add(name)
        mem: Memory | None = block.memories.get(name)
        if mem is None or not mem.parametric:
            return
        if mem.learn is None:
            reached.add(name)                       # a static memory is an outer parameter
            return
        if mem.init == "learned" and mem.learn.backprop != "stop":
            reached.add(name)
        if mem.learn.backprop in ("through", "truncate"):
            for exprs in learn_exprs(mem.learn).values():
                for e in exprs:
                    visit(e, False)

    visit(block.assignments[out].expr, False)
    return reached
