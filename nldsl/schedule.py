"""When each level fires: the hyperperiod and the distinct firing patterns, in tokens and in steps.

A compiled training step is specialized per distinct step pattern (one graph each), and the
token patterns are unrolled inside it, so their number bounds compile work. Periods that divide
each other keep the number of patterns at (number of periods + 1); periods that do not can give
up to 2^L patterns, which is reported.
"""

from __future__ import annotations

from itertools import pairwise
from math import lcm

from pydantic import BaseModel, ConfigDict

from nldsl.cost import size_diagnostics
from nldsl.diagnostics import Diagnostics
from nldsl.graph import NestingGraph
from nldsl.parse import gc_paused

MAX_ENUMERATED = 1 << 16   # hyperperiods longer than this are summarized, not enumerated


class Clock(BaseModel):
    """One time base: the components with a period on it, and the patterns they fire in."""

    model_config = ConfigDict(frozen=True)

    unit: str
    periods: dict[str, int]               # component id → period in `unit`s
    hyperperiod: int
    patterns: list[tuple[str, ...]]       # distinct sets of components that fire together
    nested: bool

    def fires(self, component: str, t: int) -> bool:
        """Whether `component` fires at the end of unit t (1-based)."""
        return t % self.periods[component] == 0


class Schedule(BaseModel):
    model_config = ConfigDict(frozen=True)

    tokens: Clock
    steps: Clock

    @property
    def compiled_graphs(self) -> int:
        """Distinct outer-step firing patterns: the number of graphs a compiled trainer needs."""
        return max(1, len(self.steps.patterns))


def _clock(unit: str, periods: dict[str, int]) -> Clock:
    distinct = sorted(set(periods.values()))
    nested = all(b % a == 0 for a, b in pairwise(distinct))
    hyper = lcm(*distinct) if distinct else 1
    patterns: set[tuple[str, ...]] = set()
    if hyper <= MAX_ENUMERATED:
        for t in range(1, hyper + 1):
            patterns.add(tuple(sorted(c for c, p in periods.items() if t % p == 0)))
    else:  # too long to walk: count the distinct divisibility patterns of the periods
        for mask in range(1, 1 << min(len(distinct), 16)):
            chosen = [p for i, p in enumerate(distinct) if mask >> i & 1]
            patterns.add(tuple(sorted(c for c, p in periods.items() if p in chosen)))
    return Clock(unit=unit, periods=periods, hyperperiod=hyper, patterns=sorted(patterns, key=len), nested=nested)


@gc_paused()
def analyze(ng: NestingGraph, diags: Diagnostics | None = None) -> Schedule:
    """The schedule of a nesting graph. With `diags`, also the warnings about what the graph as a whole
    implies: periods that are not nested (NL061) and parameters no machine can hold (NL043)."""
    tokens: dict[str, int] = {}
    steps: dict[str, int] = {}
    for c in ng.components():
        if c.kind == "loss":
            continue
        learn = c.memory.learn if c.memory is not None else None
        if c.time.base == "token":
            chunk = learn.chunk if learn is not None else 1
            tokens[c.id] = c.time.period * chunk
        elif c.time.base == "step":
            steps[c.id] = c.time.period
    schedule = Schedule(tokens=_clock("token", tokens), steps=_clock("step", steps))
    if diags is not None:
        for clock in (schedule.tokens, schedule.steps):
            if not clock.nested:
                _report(ng, clock, diags)
        size_diagnostics(ng, diags)
    return schedule


def _report(ng: NestingGraph, clock: Clock, diags: Diagnostics) -> None:
    distinct = sorted(set(clock.periods.values()))
    culprit = next((b for a, b in pairwise(distinct) if b % a), distinct[-1])
    node = next(c for c, p in clock.periods.items() if p == culprit)
    span = ng.component(node).span
    if span is None:
        return
    nested = [distinct[0]]
    for p in distinct[1:]:   # the nearest periods that each divide the next one
        nested.append(max(nested[-1], round(p / nested[-1]) * nested[-1]))
    diags.warn("NL061", f"periods {', '.join(map(str, distinct))} ({clock.unit}s) are not nested: "
                        f"{len(clock.patterns)} distinct firing patterns over a hyperperiod of {clock.hyperperiod}",
               span, f"periods that divide each other, e.g. {', '.join(map(str, nested))}, give at most "
                     f"{len(distinct) + 1} patterns")
