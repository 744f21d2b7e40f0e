"""dgd with momentum over a segment whose gradients all sit at the committed state, in closed form.

The layer that reads the key k follows, token by token (`fn.rule_step`),

    S_t = β_t S_{t−1} − η_t δ_t k_tᵀ,     W_t = α_t W_{t−1} − η_t (W_{t−1} k_t) k_tᵀ + S_t,

with δ_t the token's error signal at that layer's output. Every term but the first two is a vector
times some k_uᵀ, so W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} R_{t,u} k_uᵀ (Γ, φ and the momentum
coefficients c as in `in_chunk.coefficients`). Only the diagonal r_t = R_{t,t} needs solving:

    r_t + η_t Σ_{u<t} (Γ_{t−1}/Γ_u)(k_u·k_t) r_u
        = −η_t [Γ_{t−1} W_0 k_t + φ_{t−1} S_0 k_t + Σ_{u<t} c'_{t−1,u} (k_u·k_t) δ_u] − η_t δ_t,

a unit lower-triangular system over the segment's tokens (the UT form of the delta rule, with
c'_{t,u} = c_{t,u} + η_u Γ_t/Γ_u the momentum's share of R beyond token u's own write). Then

    W_S = Γ_S W_0 + φ_S S_0 + Σ_u [(Γ_S/Γ_u)(r_u + η_u δ_u) + c_{S,u} δ_u] k_uᵀ,
    S_S = B_S S_0 − Σ_u η_u (B_S/B_u) δ_u k_uᵀ.

The other layers follow gd with momentum in closed form, as `period_momentum`. Without the
decorrelating term r_u = −η_u δ_u and this is gd with momentum exactly.

Shapes: states (B, H, out, in); per-token tensors (B, H, S, d); coefficients (B, H, t, u).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import vjp

from nldsl.backends.torch.runtime.in_chunk import coefficients
from nldsl.backends.torch.runtime.memory import Mem, Objective, _end_segment, _heads, _segment


def period_dgd_momentum(mem: Mem, objective: Objective, values: tuple, lr, momentum, key, retain=None) -> None:
    """One segment of dgd with momentum (and retention) at the committed state: one forward, and
    pullbacks for the per-token error signal at the key's layer and the weighted gradients of the
    others."""
    seg = _segment(mem, values, lr, retain, key, momentum, mem.momentum)
    key, momentum, mom = seg.extra
    assert mom is not None
    batch, length, heads = seg.lr.shape
    theta = seg.theta
    cum_b = torch.log(_heads(momentum, batch, length, heads, seg.values[0]).clamp_min(1e-30)).cumsum(1)
    coef, phi, gamma = coefficients(seg.lr, seg.cum_a, cum_b)
    assert phi is not None
    eta = seg.lr.transpose(1, 2)                                          # (B, H, S)
    log_b = cum_b.transpose(1, 2)
    fresh = -eta * (log_b[..., -1:] - log_b).exp()                        # −η_u B_S/B_u
    probe = seg.values[0].new_zeros(batch, length, heads, theta[0].shape[-2])
    losses, pull = vjp(lambda *args: objective([theta[0], *args[:-1]], args[-1], *seg.values, at=theta),
                       *theta[1:], probe)
    last = coef[:, :, -1].transpose(1, 2)                                 # c_{S,u} as a weight (B, S, H)
    grads_w = pull(last)[:-1]
    grads_s = pull(fresh.transpose(1, 2))[:-1]
    delta = pull(torch.ones_like(losses))[-1].transpose(1, 2)             # δ (B, H, S, out)
    k = key.unflatten(-1, (heads, -1)).transpose(1, 2)                    # (B, H, S, in)
    w0, s0 = seg.cur[0], mom[0]

    # the triangular system for r, with the previous token's coefficients on each row
    def previous(x: torch.Tensor, first: float) -> torch.Tensor:          # row t ← row t−1, along dim 2
        return F.pad(x[:, :, :-1], (0, 0) * (x.dim() - 3) + (1, 0), value=first)

    gram = k @ k.transpose(-1, -2)                                        # k_t·k_u (B, H, t, u)
    strict = torch.ones(length, length, dtype=torch.bool, device=k.device).tril(-1)
    cum_a = seg.cum_a.transpose(1, 2)
    decay = (previous(cum_a, 0.0).unsqueeze(-1) - cum_a.unsqueeze(-2)).masked_fill(~strict, float("-inf")).exp()
    system = torch.eye(length, dtype=k.dtype, device=k.device) + eta.unsqueeze(-1) * decay * gram
    carried = previous(coef + eta.unsqueeze(-2) * decay_full(cum_a), 0.0) * strict   # c'_{t−1,u}, u < t
    rhs = -eta.unsqueeze(-1) * (previous(gamma, 1.0) * (k @ w0.transpose(-1, -2))
                                + previous(phi, 0.0) * (k @ s0.transpose(-1, -2))
                                + (carried * gram) @ delta + delta)
    r = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    total = (gamma[:, :, -1:] / cum_a.exp().unsqueeze(-1)) * (r + eta.unsqueeze(-1) * delta) \
        + last.transpose(1, 2).unsqueeze(-1) * delta                      # R_{S,u} (B, H, S, out)
    first = gamma[:, :, -1:] * w0 + phi[:, :, -1:] * s0 + total.transpose(-1, -2) @ k
    mem.momentum = [log_b[..., -1:, None].exp() * s0 + (fresh.unsqueeze(-1) * delta).transpose(-1, -2) @ k] + \
        [log_b[..., -1:, None].exp() * s + g for s, g in zip(mom[1:], grads_s, strict=True)]
    _end_segment(mem, [first] + [gamma[:, :, -1:] * w + phi[:, :, -1:] * s + g
                                 for w, s, g in zip(seg.cur[1:], mom[1:], grads_w, strict=True)])


def decay_full(cum_a: torch.Tensor) -> torch.Tensor:
    """Γ_t/Γ_u for u ≤ t, else 0: (B, H, t, u) from log Γ (B, H, S)."""
    length = cum_a.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=cum_a.device).tril()
    return (cum_a.unsqueeze(-1) - cum_a.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()
