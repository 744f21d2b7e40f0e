"""Reads that see the writes of their own chunk: the dual form, for matrix and MLP memories.

A memory learned `every token chunk C` by gd (with retention and momentum) changes at every token,
every gradient of a chunk taken at the state where the chunk began. Over a segment, per layer,

    W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} c_{t,u} g_u,     g_u = δ_uᵀ a_u,

with W_0 and S_0 the state and momentum at the segment's start, δ_u token u's error signal at the
layer's output and a_u its input (both at the chunk's start state), and c, Γ, φ the rule's
coefficients (retention α, momentum β, learning rate η: see `coefficients`). A read at token t
never needs W_t itself, since

    W_t x = Γ_t (W_0 x) + φ_t (S_0 x) + Σ_u c_{t,u} (a_u · x) δ_u:

a masked product of the segment's queries with its keys, as linear attention reads a matrix
memory (the dual form of test-time training). `in_chunk` takes the segment's error signals in one
pass, keeps them for the reads and writes the segment's end state; `read_in_chunk` reads through
the per-token states. Equal to the per-token reference, with no per-token copy of any weight.

Shapes: states (B, H, out, in); per-token tensors (B, H, S, d); coefficients (B, H, t, u).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vjp

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime.memory import Mem, Objective, _end_segment, _heads, _segment


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


def coefficients(lr: torch.Tensor, cum_a: torch.Tensor, cum_b: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The rule over a segment, from per-token η and the cumulative log Γ_t = Σ log α, log B_t = Σ log β
    (B, S, H):
    S_t = β_t S_{t−1} − η_t g_t,  W_t = α_t W_{t−1} + S_t (without momentum: W_t = α_t W_{t−1} − η_t g_t).
    Returns c (B, H, t, u), φ and Γ (B, H, S, 1): c_{t,u} = −η_u Σ_{u≤s≤t} (Γ_t/Γ_s)(B_s/B_u), or
    −η_u Γ_t/Γ_u without momentum; φ_t = Σ_{s≤t} (Γ_t/Γ_s) B_s (None without momentum). Only ratios
    of later to earlier products are formed, so nothing overflows."""
    length = lr.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=lr.device).tril()

    def ratios(cum: torch.Tensor) -> torch.Tensor:      # [t, s] = C_t / C_s for s ≤ t, (B, H, t, s)
        cum = cum.transpose(1, 2)
        return (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()

    decay = ratios(cum_a)
    eta = lr.transpose(1, 2).unsqueeze(-2)                   # (B, H, 1, u)
    gamma = cum_a.exp().transpose(1, 2).unsqueeze(-1)
    if cum_b is None:
        return -eta * decay, None, gamma
    phi = decay @ cum_b.exp().transpose(1, 2).unsqueeze(-1)
    return -eta * (decay @ ratios(cum_b)), phi, gamma


def _rows(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, H*d) → (B, H, S, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def in_chunk(mem: Mem, objective: Objective, values: tuple, lr, retain=None, momentum=None, *, key) -> None:
    """A segment of per-token gd writes whose gradients sit at the chunk's start state: the error
    signals of every layer in one vector-Jacobian product (a probe at each layer's output), kept for
    the segment's reads; the state and momentum at its end in closed form."""
    spec = mem.spec
    seg = _segment(mem, values, lr, retain, key, momentum, mem.momentum)
    key, momentum, mom = seg.extra
    batch, length, heads = seg.lr.shape
    theta = seg.theta
    inputs = [_rows(key, heads)]
    for w in theta[:-1]:
        inputs.append(fn.ACTIVATIONS[spec.act](inputs[-1] @ w.transpose(-1, -2)))
    probes = [seg.values[0].new_zeros(batch, length, heads, w.shape[-2]) for w in theta]
    losses, pull = vjp(lambda *p: objective(theta, list(p), *seg.values, at=theta), *probes)
    deltas = [d.transpose(1, 2) for d in pull(torch.ones_like(losses))]
    cum_b = None if momentum is None else \
        torch.log(_heads(momentum, batch, length, heads, seg.values[0]).clamp_min(1e-30)).cumsum(1)
    coef, phi, gamma = coefficients(seg.lr, seg.cum_a, cum_b)
    mem.scratch.append(Writes(list(seg.cur), mom, inputs, deltas, gamma, phi, coef))
    last = coef[:, :, -1].unsqueeze(-1)                      # c_{S,u} (B, H, u, 1)
    written = [(last * d).transpose(-1, -2) @ a for d, a in zip(deltas, inputs, strict=True)]
    end = gamma[:, :, -1:]                                   # Γ_S (B, H, 1, 1)
    if mom is None:
        _end_segment(mem, [end * w + g for w, g in zip(seg.cur, written, strict=True)])
        return
    assert cum_b is not None
    log_b = cum_b.transpose(1, 2)                            # log B_t (B, H, S)
    fresh = (-seg.lr.transpose(1, 2) * (log_b[..., -1:] - log_b).exp()).unsqueeze(-1)   # −η_u B_S/B_u
    mem.momentum = [log_b[..., -1:, None].exp() * s + (fresh * d).transpose(-1, -2) @ a
                    for s, d, a in zip(mom, deltas, inputs, strict=True)]
    _end_segment(mem, [end * w + phi[:, :, -1:] * s + g for w, s, g in zip(seg.cur, mom, written, strict=True)])


def read_in_chunk(mem: Mem, x: torch.Tensor) -> torch.Tensor:
    """A read of the segment's tokens x (B, S, H*in), each through the state after its own write
    (`read after`) or before it: (B, S, H*out)."""
    spec = mem.spec
    writes: Writes = mem.scratch[-1]
    coef, gamma, phi = writes.coef, writes.gamma, writes.phi
    if not spec.read_after:                  # token t sees W_{t−1}: the rows move down by one
        coef = F.pad(coef[:, :, :-1], (0, 0, 1, 0))
        gamma = F.pad(gamma[:, :, :-1], (0, 0, 1, 0), value=1.0)
        phi = None if phi is None else F.pad(phi[:, :, :-1], (0, 0, 1, 0))
    a = _rows(x, spec.heads)
    for j, w in enumerate(writes.start):
        z = gamma * (a @ w.transpose(-1, -2)) + ((a @ writes.inputs[j].transpose(-1, -2)) * coef) @ writes.deltas[j]
        if phi is not None:
            z = z + phi * (a @ writes.momentum[j].transpose(-1, -2))
        a = fn.ACTIVATIONS[spec.act](z) if j < len(writes.start) - 1 else z
    a = fn.memory_norm(a, spec.norm)
    if spec.residual:
        a = a + _rows(x, spec.heads)
    return a.transpose(1, 2).flatten(-2)
