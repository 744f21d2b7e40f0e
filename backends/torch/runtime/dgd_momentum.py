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
from torch.func import vjp

from nldsl.backends.torch.runtime.memory import Mem, Objective, _end_segment, _heads, _segment
from nldsl.backends.torch.runtime.recurrences import coefficients, cumulative_log, key_layer, momentum_end, ratios


def period_dgd_momentum(mem: Mem, objective: Objective, values: tuple, lr, momentum, key, retain=None) -> None:
    """One segment of dgd with momentum (and retention) at the committed state: one forward, and
    pullbacks for the per-token error signal at the key's layer and the weighted gradients of the
    others."""
    seg = _segment(mem, values, lr, retain, key, momentum, mem.momentum)
    key, momentum, mom = seg.extra
    assert mom is not None
    batch, length, heads = seg.lr.shape
    theta = seg.theta
    cum_b = cumulative_log(_heads(momentum, batch, length, heads, seg.tokens))
    coef, phi, gamma = coefficients(seg.lr, seg.cum_a, cum_b)
    assert phi is not None
    carry, fresh = momentum_end(seg.lr, cum_b)                            # B_S, −η_u B_S/B_u
    last = coef[:, :, -1]                                                 # c_{S,u} (B, H, u)
    probe = seg.tokens.new_zeros(batch, length, heads, theta[0].shape[-2])
    losses, pull = vjp(lambda *args: objective([theta[0], *args[:-1]], args[-1], *seg.values, at=theta),
                       *theta[1:], probe)
    grads_w = pull(last.transpose(1, 2))[:-1]
    grads_s = pull(fresh.transpose(1, 2))[:-1]
    delta = pull(torch.ones_like(losses))[-1].transpose(1, 2)             # δ (B, H, S, out)
    k = key.unflatten(-1, (heads, -1)).transpose(1, 2)                    # (B, H, S, in)
    w0, s0 = seg.cur[0], mom[0]
    rho = key_layer(k, delta, w0, s0, seg.lr, seg.cum_a, coef, phi, gamma)
    column = ratios(seg.cum_a)[:, :, -1].unsqueeze(-1) * rho + last.unsqueeze(-1) * delta   # R_{S,u}
    mem.momentum = [carry * s0 + (fresh.unsqueeze(-1) * delta).transpose(-1, -2) @ k] + \
        [carry * s + g for s, g in zip(mom[1:], grads_s, strict=True)]
    end, phi_end = gamma[:, :, -1:], phi[:, :, -1:]
    _end_segment(mem, [end * w0 + phi_end * s0 + column.transpose(-1, -2) @ k] +
                 [end * w + phi_end * s + g for w, s, g in zip(seg.cur[1:], mom[1:], grads_w, strict=True)])
