"""The algebra of an update rule over a segment whose gradients all sit at one state, shared by the
closed-form kernels (`in_chunk`, `dgd_momentum`). Pure functions of tensors; no memory objects.

Per token t of a segment, with g_t = δ_tᵀ a_t a layer's gradient (δ its output's error signal, a
its input), learning rate η, retention α and momentum β (Γ_t = α_1⋯α_t, B_t = β_1⋯β_t):

    gd:    S_t = β_t S_{t−1} − η_t g_t,   W_t = α_t W_{t−1} + S_t      (no momentum: S_t = −η_t g_t)
    dgd:   the same, with −η_t (W_{t−1} k_t) k_tᵀ added on each layer it decorrelates, k_t that
           layer's input (the key, for the first layer).

gd unrolls to W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} c_{t,u} g_u (`coefficients`). A layer dgd decorrelates is
W_t = Γ_t W_0 + φ_t S_0 + Σ_{u≤t} [(Γ_t/Γ_u) ρ_u + c_{t,u} δ_u] k_uᵀ, where ρ solves a unit
lower-triangular system over the segment's tokens (`key_layer`; the UT form of the delta rule).
Only ratios of later to earlier products are formed, so nothing overflows however small the gates.

Shapes: states (B, H, out, in); per-token tensors (B, H, S, d); coefficients (B, H, t, u); the
per-token rates come in as (B, S, H).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ratios(cum: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """[t, u] = C_t / C_u for u ≤ t (u < t if `strict`), else 0, from log C (B, S, H): (B, H, t, u)."""
    length = cum.shape[1]
    keep = torch.ones(length, length, dtype=torch.bool, device=cum.device).tril(-1 if strict else 0)
    cum = cum.transpose(1, 2)
    return (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~keep, float("-inf")).exp()


def coefficients(lr: torch.Tensor, cum_a: torch.Tensor, cum_b: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """gd over a segment, from η and the cumulative logs log Γ_t, log B_t (B, S, H). Returns
    c (B, H, t, u), φ and Γ (B, H, S, 1): c_{t,u} = −η_u Σ_{u≤s≤t} (Γ_t/Γ_s)(B_s/B_u), or −η_u Γ_t/Γ_u
    without momentum; φ_t = Σ_{s≤t} (Γ_t/Γ_s) B_s (None without momentum)."""
    decay = ratios(cum_a)
    eta = lr.transpose(1, 2).unsqueeze(-2)                   # (B, H, 1, u)
    gamma = cum_a.exp().transpose(1, 2).unsqueeze(-1)
    if cum_b is None:
        return -eta * decay, None, gamma
    phi = decay @ cum_b.exp().transpose(1, 2).unsqueeze(-1)
    return -eta * (decay @ ratios(cum_b)), phi, gamma


def cumulative_log(gates: torch.Tensor) -> torch.Tensor:
    """log of the running products of per-token gates (B, S, H) along the segment."""
    return torch.log(gates.clamp_min(1e-30)).cumsum(1)


def momentum_end(lr: torch.Tensor, cum_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How a segment leaves the momentum, S_S = B_S S_0 + Σ_u f_u g_u: B_S (B, H, 1, 1) and
    f_u = −η_u B_S/B_u (B, H, S)."""
    log_b = cum_b.transpose(1, 2)
    return log_b[..., -1:, None].exp(), -lr.transpose(1, 2) * (log_b[..., -1:] - log_b).exp()


def previous(x: torch.Tensor, first: float) -> torch.Tensor:
    """Row t ← row t−1 along the token axis (dim 2), row 0 ← `first`: what token t sees before its
    own write."""
    return F.pad(x[:, :, :-1], (0, 0) * (x.dim() - 3) + (1, 0), value=first)


def key_layer(k: torch.Tensor, delta: torch.Tensor, w0: torch.Tensor, s0: torch.Tensor | None, lr: torch.Tensor,
              cum_a: torch.Tensor, coef: torch.Tensor, phi: torch.Tensor | None, gamma: torch.Tensor) -> torch.Tensor:
    """ρ (B, H, S, out) of a layer dgd decorrelates, k (B, H, S, in) its inputs (the keys, for the
    first layer): with r_t the part of W_t's k_t-column written at t,

        r_t + η_t Σ_{u<t} (Γ_{t−1}/Γ_u)(k_u·k_t) r_u
            = −η_t [Γ_{t−1} W_0 k_t + φ_{t−1} S_0 k_t + Σ_{u<t} c'_{t−1,u} (k_u·k_t) δ_u] − η_t δ_t,

    c'_{t,u} = c_{t,u} + η_u Γ_t/Γ_u the momentum's share beyond token u's own write, and ρ = r + η δ."""
    eta = lr.transpose(1, 2).unsqueeze(-1)                   # (B, H, S, 1)
    length = k.shape[2]
    gram = k @ k.transpose(-1, -2)                           # k_t·k_u (B, H, t, u)
    log_gamma = cum_a.transpose(1, 2)                        # (B, H, S)
    strict = torch.ones(length, length, dtype=torch.bool, device=k.device).tril(-1)
    before = (previous(log_gamma, 0.0).unsqueeze(-1) - log_gamma.unsqueeze(-2)).masked_fill(~strict, float("-inf"))
    system = torch.eye(length, dtype=k.dtype, device=k.device) + eta * before.exp() * gram
    carried = previous(coef + eta.transpose(-1, -2) * ratios(cum_a), 0.0) * strict       # c'_{t−1,u}, u < t
    rhs = previous(gamma, 1.0) * (k @ w0.transpose(-1, -2)) + (carried * gram) @ delta + delta
    if s0 is not None and phi is not None:
        rhs = rhs + previous(phi, 0.0) * (k @ s0.transpose(-1, -2))
    r = torch.linalg.solve_triangular(system, -eta * rhs, upper=False, unitriangular=True)
    return r + eta * delta
