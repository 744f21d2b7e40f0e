"""What each value, memory and parameter of a block depends on, and what receives gradient.

Shared by the graph stage (edges, levels, cycles, unused components) and the cost preview.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from nldsl.spec import Assignment, Block, Learn, Memory, Op

READ_OPS = ("read", "state")


@dataclass
class Deps:
    reads: set[str] = field(default_factory=set)     # memories read (not counting `self`)
    params: set[str] = field(default_factory=set)    # explicit and implicit parameters
    values: set[int] = field(default_factory=set)    # assignments used
    uses_input: bool = False


@dataclass(slots=True)
class Uses:
    """What one expression uses itself, not counting what the values it names use: each value is
    summarised once (`Flow`), so questions about whole chains of values walk values, not operators."""

    reads: AbstractSet[str]
    params: AbstractSet[str]
    values: AbstractSet[int]
    uses_input: bool
    # the same, less whatever sits under `stopgrad`: where the outer gradient flows on
    graded_reads: AbstractSet[str]
    graded_params: AbstractSet[str]
    graded_values: AbstractSet[int]
    read_inputs: list[tuple[str, Uses]]     # per read: its memory, its arguments' uses


def uses(ops: list[Op]) -> Uses:
    """One walk of the expressions `ops` (work lists: a chain of any depth goes through)."""
    everything = _Walk()
    if not everything.collect(list(ops), through_stopgrad=True):
        graded = everything   # most expressions: the gradient reaches everything they use
    else:                     # walk again, stopping at stopgrad, for what the gradient reaches
        graded = _Walk()
        graded.collect(list(ops), through_stopgrad=False)
    # A block keeps one summary per value and most of its sets are empty, or the same with and
    # without what sits under stopgrad: those share one object (a summary is never changed).
    reads, params, values = everything.reads or _EMPTY, everything.params or _EMPTY, everything.values or _EMPTY
    return Uses(reads=reads, params=params, values=values, uses_input=everything.uses_input,
                graded_reads=reads if graded.reads == everything.reads else graded.reads or _EMPTY,
                graded_params=params if graded.params == everything.params else graded.params or _EMPTY,
                graded_values=values if graded.values == everything.values else graded.values or _EMPTY,
                read_inputs=everything.read_inputs)


_EMPTY: frozenset = frozenset()


@dataclass(slots=True)
class _Walk:
    """What one walk of an expression finds: memories read, parameters and values used, and each
    read's arguments (summarised on their own)."""

    reads: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    values: set[int] = field(default_factory=set)
    uses_input: bool = False
    read_inputs: list[tuple[str, Uses]] = field(default_factory=list)

    def collect(self, pending: list[Op], through_stopgrad: bool) -> bool:
        """Walk `pending`, into stopgrad's operands or not (then it finds what the gradient
        reaches, and skips the reads' arguments); whether it met a stopgrad."""
        stopped = False
        while pending:
            o = pending.pop()
            kind, attrs = o.op, o.attrs
            if kind == "stopgrad":
                stopped = True
                if not through_stopgrad:
                    continue
            elif kind == "value":
                self.values.add(attrs["index"])
            elif kind == "input":
                self.uses_input = True
            elif kind in READ_OPS and not attrs.get("self"):
                self.reads.add(attrs["memory"])
                if kind == "read" and through_stopgrad:
                    self.read_inputs.append((attrs["memory"], uses(list(o.args))))
            param = attrs.get("name") if kind == "param" else attrs.get("param")
            if param is not None:
                self.params.add(param)
            pending += o.args
        return stopped


class Flow:
    """The assignments of a block (or optimizer), each summarised by `uses` once, when first asked."""

    def __init__(self, assignments: tuple[Assignment, ...]) -> None:
        self.assignments = assignments
        self._uses: list[Uses | None] = [None] * len(assignments)
        self._exprs: dict[int, tuple[Op, Uses]] = {}     # other expressions (a memory's objective, ...)

    def of(self, index: int) -> Uses:
        u = self._uses[index]
        if u is None:
            u = self._uses[index] = uses([self.assignments[index].expr])
        return u

    def expr(self, op: Op) -> Uses:
        """`uses` of an expression outside the assignments, walked once however often it is asked."""
        known = self._exprs.get(id(op))
        if known is None:
            known = self._exprs[id(op)] = (op, uses([op]))    # the op is kept: its id stays its own
        return known[1]

    def deps(self, op: Op | Uses, out: Deps | None = None) -> Deps:
        """Transitive dependencies of an expression through the assignments. Values already in
        `out` are not followed again, so sharing one `Deps` keeps a whole pass linear."""
        out = out or Deps()
        pending = [op if isinstance(op, Uses) else self.expr(op)]
        while pending:
            u = pending.pop()
            out.reads |= u.reads
            out.params |= u.params
            out.uses_input = out.uses_input or u.uses_input
            for i in u.values - out.values:
                out.values.add(i)
                pending.append(self.of(i))
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


def usage(block: Block, flow: Flow | None = None) -> Usage:
    """Which components of a block influence its output, and which get an outer gradient."""
    flow = flow or Flow(block.assignments)
    u = Usage()
    out = block_output(block)
    if out is None:
        return u
    reached = Deps()     # shared by every expression below: each value is followed once
    frontier = [block.assignments[out].expr]
    while frontier:
        flow.deps(frontier.pop(), reached)
        for m in reached.reads - u.memories:
            u.memories.add(m)
            mem = block.memories.get(m)
            if mem is not None and mem.learn is not None:
                for exprs in learn_exprs(mem.learn).values():
                    frontier += exprs
    u.values = reached.values | {out}
    u.params = reached.params
    u.graded = _gradient_reach(block, out, flow)
    return u


def _gradient_reach(block: Block, out: int, flow: Flow) -> set[str]:
    """Parameters and learned initial states that the outer loss differentiates: everything the
    output reaches except through stopgrad, and through a memory's writes only when its gradient
    policy lets the outer gradient through them."""
    reached: set[str] = set()
    seen_values: set[int] = set()
    seen_memories: set[str] = set()
    pending = [flow.of(out)]
    while pending:
        u = pending.pop()
        reached |= u.graded_params
        for i in u.graded_values - seen_values:
            seen_values.add(i)
            pending.append(flow.of(i))
        for m in u.graded_reads - seen_memories:
            seen_memories.add(m)
            pending += [flow.expr(e) for e in _memory_gradient(block.memories.get(m), reached)]
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
