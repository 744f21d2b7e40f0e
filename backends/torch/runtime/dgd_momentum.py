"""dgd with momentum over a segment whose gradients all sit at the committed state, in closed form.

Each layer dgd decorrelates (`Rule.decorrelate`; by default the first, which reads the key) follows,
token by token (`fn.rule_step`), with x_t the layer's input,

    S_t = β_t S_{t−1} − η_t δ_t x_tᵀ,     W_t = α_t W_{t−1} − η_t (W_{t−1} x_t) x_tᵀ + S_t,

with δ_t the token's error signal at that layer's output (x and δ at the committed state, so fixed
over the segment). Every term but the first two is a vector times some x_uᵀ, so
W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} R_{t,u} x_uᵀ (Γ, φ and the momentum coefficients c as in
`in_chunk.coefficients`). Only the diagonal r_t = R_{t,t} needs solving:

    r_t + η_t Σ_{u<t} (Γ_{t−1}/Γ_u)(x_u·x_t) r_u
        = −η_t [Γ_{t−1} W_0 x_t + φ_{t−1} S_0 x_t + Σ_{u<t} c'_{t−1,u} (x_u·x_t) δ_u] − η_t δ_t,

a unit lower-triangular system over the segment's tokens (the UT form of the delta rule, with
c'_{t,u} = c_{t,u} + η_u Γ_t/Γ_u the momentum's share of R beyond token u's own write). Then

    W_S = Γ_S W_0 + φ_S S_0 + Σ_u [(Γ_S/Γ_u)(r_u + η_u δ_u) + c_{S,u} δ_u] x_uᵀ,
    S_S = B_S S_0 − Σ_u η_u (B_S/B_u) δ_u x_uᵀ.

The other layers follow gd with momentum in closed form, as `period_momentum`. Without the
decorrelating term r_u = −η_u δ_u and this is gd with momentum exactly.

Shapes: states (B, H, out, in); per-token tensors (B, H, S, d); coefficients (B, H, t, u).
"""

from __future__ import annotations

from nldsl.backends.torch.runtime.memory import Mem, Objective, _end_segment, _heads, _segment, decorrelated, dgd_grads
from nldsl.backends.torch.runtime.recurrences import coefficients, cumulative_log, key_layer, momentum_end, ratios


def period_dgd_momentum(mem: Mem, objective: Objective, values: tuple, lr, momentum, key, retain=None) -> None:
    """One segment of dgd with momentum (and retention) at the committed state: one forward, and
    pullbacks for the per-token error signals at the layers dgd decorrelates and the weighted
    gradients of the others."""
    seg = _segment(mem, values, lr, retain, key, momentum, mem.momentum)
    key, momentum, mom = seg.extra
    assert mom is not None
    batch, length, heads = seg.lr.shape
    cum_b = cumulative_log(_heads(momentum, batch, length, heads, seg.tokens))
    coef, phi, gamma = coefficients(seg.lr, seg.cum_a, cum_b)
    assert phi is not None
    carry, fresh = momentum_end(seg.lr, cum_b)                            # B_S, −η_u B_S/B_u
    last = coef[:, :, -1]                                                 # c_{S,u} (B, H, u)
    (grads_w, grads_s), deltas = dgd_grads(mem.spec, objective, seg.theta, seg.values,
                                           [last.transpose(1, 2), fresh.transpose(1, 2)])
    end, phi_end = gamma[:, :, -1:], phi[:, :, -1:]
    decay = ratios(seg.cum_a)[:, :, -1].unsqueeze(-1)                     # Γ_S/Γ_u (B, H, u, 1)
    others_w, others_s, signals = iter(grads_w), iter(grads_s), iter(deltas)
    new, new_mom = [], []
    for w0, s0, x in zip(seg.cur, mom, decorrelated(mem.spec, seg.theta, key), strict=True):
        if x is None:
            new_mom.append(carry * s0 + next(others_s))
            new.append(end * w0 + phi_end * s0 + next(others_w))
            continue
        delta = next(signals).transpose(1, 2)                             # δ (B, H, S, out)
        rho = key_layer(x, delta, w0, s0, seg.lr, seg.cum_a, coef, phi, gamma)
        column = decay * rho + last.unsqueeze(-1) * delta                 # R_{S,u}
        new_mom.append(carry * s0 + (fresh.unsqueeze(-1) * delta).transpose(-1, -2) @ x)
        new.append(end * w0 + phi_end * s0 + column.transpose(-1, -2) @ x)
    mem.momentum = new_mom
    _end_segment(mem, new)
