"""The order of work inside one token: assignments and memory updates, from their dependencies
(a read-after read waits for the write; a write waits for every read-before read)."""

from __future__ import annotations

import heapq
from typing import Literal

from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import learn_exprs
from nldsl.ops import MEMORY_READS, OpKind
from nldsl.spec import Block, Memory, Op


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["assign", "update"]
    index: int = -1          # assignment index
    memory: str = ""         # memory updated


def _reads(ops: list[Op]) -> set[str]:
    return {o.attrs["memory"] for e in ops for o in e.walk() if o.op in MEMORY_READS and not o.attrs.get("self")}


def _values(ops: list[Op]) -> set[int]:
    return {o.attrs["index"] for e in ops for o in e.walk() if o.op == OpKind.VALUE}


def deferred(m: Memory) -> bool:
    """Teach-signal memories update after the token's loss is known, not inside the block."""
    return m.learn is not None and m.learn.objective is None


def token_order(block: Block, updates_first: frozenset[str] = frozenset()) -> list[Step]:
    """Assignments and in-block memory updates in an order that respects every dependency.
    `updates_first`: memories whose reads wait for their update whatever their read mode (a kernel
    that computes, in the update, the per-token states its reads see)."""
    learned = {n: m for n, m in block.memories.items() if m.learn is not None and not deferred(m)}
    after = {n for n, m in learned.items() if m.learn is not None and m.learn.read == "after"} | \
        (updates_first & learned.keys())
    deps: dict[str, set[str]] = {}
    position: dict[str, tuple[int, int, int]] = {}
    for i, a in enumerate(block.assignments):
        key = f"a{i}"
        deps[key] = {f"a{j}" for j in _values([a.expr])} | {f"u{n}" for n in _reads([a.expr]) & after}
        position[key] = (a.span.line, a.span.col, 0)
    for n, m in learned.items():
        assert m.learn is not None
        exprs = [e for group in learn_exprs(m.learn).values() for e in group]
        key = f"u{n}"
        deps.setdefault(key, set()).update({f"a{j}" for j in _values(exprs)} |
                                           {f"u{r}" for r in _reads(exprs) & after if r != n})
        position[key] = (m.learn.span.line, m.learn.span.col, 1)
    for n in learned.keys() - after:        # a write waits for every read that must see the old state
        for i, a in enumerate(block.assignments):
            if n in _reads([a.expr]):
                deps[f"u{n}"].add(f"a{i}")
        for r, m in learned.items():
            assert m.learn is not None
            if r != n and n in _reads([e for g in learn_exprs(m.learn).values() for e in g]):
                deps[f"u{n}"].add(f"u{r}")
    # Kahn's algorithm, taking the ready step that comes first in the source (a heap keeps it
    # O(n log n) for blocks of any length)
    waiting = {k: len(v) for k, v in deps.items()}
    users: dict[str, list[str]] = {}
    for k, v in deps.items():
        for d in v:
            users.setdefault(d, []).append(k)
    ready = [(position[k], k) for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[Step] = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(Step(kind="assign", index=int(key[1:])) if key[0] == "a" else Step(kind="update", memory=key[1:]))
        for user in users.get(key, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (position[user], user))
    if len(order) != len(deps):   # the checker reports cycles as NL070; reaching here is a compiler bug
        raise AssertionError(f"dependency cycle inside a token among {sorted(k for k, n in waiting.items() if n)}")
    return order
