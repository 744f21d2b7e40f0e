"""Reads that see the writes of their own chunk: the dual form, for matrix and MLP memories.

A memory learned `every token chunk C` by gd or dgd (with retention and momentum) changes at every
token, every gradient of a chunk taken at the state where the chunk began. Over a segment, per layer,

    W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} c_{t,u} g_u,     g_u = δ_uᵀ a_u,

with W_0 and S_0 the state and momentum at the segment's start, δ_u token u's error signal at the
layer's output and a_u its input (both at the chunk's start state), and c, Γ, φ the rule's
coefficients (retention α, momentum β, learning rate η: see `recurrences`). A read at token t
never needs W_t itself, since

    W_t x = Γ_t (W_0 x) + φ_t (S_0 x) + Σ_u c_{t,u} (a_u · x) δ_u:

a masked product of the segment's queries with its keys, as linear attention reads a matrix
memory (the dual form of test-time training). Each layer dgd decorrelates adds Σ_u (Γ_t/Γ_u)(a_u · x) ρ_u,
ρ from `recurrences.key_layer`. `in_chunk` takes the segment's error signals in one
pass, keeps them for the reads and writes the segment's end state; `read_in_chunk` reads through
the per-token states. Equal to the per-token reference, with no per-token copy of any weight.

Shapes: states (B, H, out, in); per-token tensors (B, H, S, d); coefficients (B, H, t, u).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vjp

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime.memory import Mem, Objective, _end_segment, _heads, _segment
from nldsl.backends.torch.runtime.recurrences import (
    coefficients,
    cumulative_log,
    key_layer,
    momentum_end,
    previous,
    ratios,
)


@dataclass
class Writes:
    """A segment's writes, as its reads need them (per layer: inputs a_u, error signals δ_u)."""

    start: list[torch.Tensor]              # W_0 per layer (B, H, out, in)
    momentum: list[torch.Tensor] | None    # S_0 per layer
    inputs: list[torch.Tensor]             # a_u (B, H, S, in)
    deltas: list[torch.Tensor]             # δ_u (B, H, S, out)
    gamma: torch.Tensor                    # Γ_t (B, H, S, 1)
    phi: torch.Tensor | None               # φ_t (B, H, S, 1)
    coef: torch.Tensor                     # c_{t,u} (B, H, t, u)
    rho: list[torch.Tensor | None] | None = None   # dgd: ρ_u of each layer it decorrelates (B, H, S, out)
    decay: torch.Tensor | None = None      # dgd: Γ_t/Γ_u (B, H, t, u)


def _rows(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, H*d) → (B, H, S, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def in_chunk(mem: Mem, objective: Objective, values: tuple, lr, retain=None, momentum=None, *, key) -> None:
    """A segment of per-token gd or dgd writes whose gradients sit at the chunk's start state: the
    error signals of every layer in one vector-Jacobian product (a probe at each layer's output),
    kept for the segment's reads; the state and momentum at its end in closed form (the layers dgd
    decorrelates by `recurrences.key_layer`)."""
    spec = mem.spec
    seg = _segment(mem, values, lr, retain, key, momentum, mem.momentum)
    key, momentum, mom = seg.extra
    batch, length, heads = seg.lr.shape
    theta = seg.theta
    inputs = fn.layer_inputs(theta, key, heads, spec.act, len(theta))
    probes = [seg.tokens.new_zeros(batch, length, heads, w.shape[-2]) for w in theta]
    losses, pull = vjp(lambda *p: objective(theta, list(p), *seg.values, at=theta), *probes)
    deltas = [d.transpose(1, 2) for d in pull(torch.ones_like(losses))]
    cum_b = None if momentum is None else cumulative_log(_heads(momentum, batch, length, heads, seg.tokens))
    coef, phi, gamma = coefficients(seg.lr, seg.cum_a, cum_b)
    writes = Writes(list(seg.cur), mom, inputs, deltas, gamma, phi, coef)
    last = coef[:, :, -1].unsqueeze(-1)                      # c_{S,u} (B, H, u, 1)
    columns = [last * d for d in deltas]                     # what each token wrote into the end state
    if spec.rule.kind == "dgd":
        writes.decay = ratios(seg.cum_a)
        starts = mom or [None] * len(theta)
        writes.rho = [key_layer(inputs[j], deltas[j], seg.cur[j], starts[j], seg.lr, seg.cum_a, coef, phi, gamma)
                      if j in spec.rule.decorrelate else None for j in range(len(theta))]
        columns = [c if r is None else c + writes.decay[:, :, -1].unsqueeze(-1) * r
                   for c, r in zip(columns, writes.rho, strict=True)]
    mem.scratch.append(writes)
    written = [c.transpose(-1, -2) @ a for c, a in zip(columns, inputs, strict=True)]
    end = gamma[:, :, -1:]                                   # Γ_S (B, H, 1, 1)
    if mom is None:
        _end_segment(mem, [end * w + g for w, g in zip(seg.cur, written, strict=True)])
        return
    assert cum_b is not None and phi is not None
    carry, fresh = momentum_end(seg.lr, cum_b)
    mem.momentum = [carry * s + (fresh.unsqueeze(-1) * d).transpose(-1, -2) @ a
                    for s, d, a in zip(mom, deltas, inputs, strict=True)]
    _end_segment(mem, [end * w + phi[:, :, -1:] * s + g for w, s, g in zip(seg.cur, mom, written, strict=True)])


def read_in_chunk(mem: Mem, x: torch.Tensor) -> torch.Tensor:
    """A read of the segment's tokens x (B, S, H*in), each through the state after its own write
    (`read after`) or before it: (B, S, H*out)."""
    spec = mem.spec
    writes: Writes = mem.scratch[-1]
    coef, gamma, phi, decay = writes.coef, writes.gamma, writes.phi, writes.decay
    if not spec.read_after:                  # token t sees W_{t−1}: the rows move down by one
        coef, gamma = previous(coef, 0.0), previous(gamma, 1.0)
        phi = None if phi is None else previous(phi, 0.0)
        decay = None if decay is None else previous(decay, 0.0)
    a = _rows(x, spec.heads)
    for j, w in enumerate(writes.start):
        scores = a @ writes.inputs[j].transpose(-1, -2)      # a · a_u (B, H, t, u)
        z = gamma * (a @ w.transpose(-1, -2)) + (scores * coef) @ writes.deltas[j]
        if phi is not None:
            z = z + phi * (a @ writes.momentum[j].transpose(-1, -2))
        rho = writes.rho[j] if writes.rho is not None else None
        if rho is not None:
            z = z + (scores * decay) @ rho
        a = fn.ACTIVATIONS[spec.act](z) if j < len(writes.start) - 1 else z
    a = fn.memory_norm(a, spec.norm)
    if spec.residual:
        a = a + _rows(x, spec.heads)
    return a.transpose(1, 2).flatten(-2)
