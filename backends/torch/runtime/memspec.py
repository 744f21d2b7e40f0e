"""The static facts of a memory and its rule, as generated code writes them (free of torch, so the
emitter can read their defaults and print only what differs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """The static part of an update rule (coefficients are tensors computed by the block)."""

    kind: str = "gd"             # gd | dgd | adam
    momentum: bool = False
    output_steps: int = 0
    decorrelate: tuple[int, ...] = (0,)   # dgd: the layers (0 first) that take −lr (W x) xᵀ, x the layer's input
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


NEVER = 1 << 40    # the period of a per-step memory: no commit falls inside a sequence


@dataclass(frozen=True)
class MemSpec:
    """The static facts of one memory the runtime needs (generated as a literal)."""

    name: str
    kind: str                    # matrix | mlp | elementwise
    heads: int
    shapes: tuple[tuple[int, ...], ...] = ()
    init: str = "param"          # param (learned or constant tensors) | zeros
    act: str = "identity"
    residual: bool = False
    norm: str = "none"
    rule: Rule = Rule()
    period: int = 1              # tokens between commits (1: every token; NEVER: only between sequences)
    steps: int = 0               # outer steps between commits of a per-step memory (0: counted in tokens)
    chunk: int = 1               # tokens between gradient reference refreshes
    read_after: bool = True
    backprop: str = "through"
    truncate: int = 0
    persistent: bool = False
    teach: Callable | None = None   # a teach-signal memory: the kernel that applies its rule to δ
    reads: tuple[int, ...] = ()     # a teach-signal memory: the widths of its reads per segment (one probe each)
