"""Chunkwise kernels for matrix memories: exact reformulations of per-token recurrences.

Memories are stored the way the language reads them: M (..., H, out, in), M(x) = M x. Every kernel
runs the recurrence of a whole segment in chunks: inside a chunk all tokens are handled at once
with triangular (masked) products; across chunks the state is carried. Gates (retention) enter
through log-cumulative sums, and only ratios Γ_t / Γ_s with t ≥ s are ever formed, so nothing
overflows however small the gates get.
"""

from __future__ import annotations

import torch

CHUNK = 64


def _log_gates(retain: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """log α per token and head, (B, T, H); zeros when there is no retention."""
    if retain is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return torch.log(retain.clamp_min(1e-30)).expand(shape)


def _per_head(x: torch.Tensor | float, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A coefficient (B, T, 1) or (B, T, H) or a constant → (B, T, H)."""
    if not isinstance(x, torch.Tensor):
        return torch.full(shape, float(x), dtype=like.dtype, device=like.device)
    return x.expand(shape)


def linear_attention(state: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     lr: torch.Tensor | float, retain: torch.Tensor | None, read_after: bool,
                     chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """M_t = α_t M_{t−1} + lr_t v_t k_tᵀ; y_t = M_t q_t (read after) or M_{t−1} q_t (read before).

    q, k: (B, T, H, dk); v: (B, T, H, dv); state (B, H, dv, dk). Returns y (B, T, H, dv) and the
    final state."""
    batch, length, heads = q.shape[:3]
    lr = _per_head(lr, (batch, length, heads), q)
    logs = _log_gates(retain, (batch, length, heads), q)
    outs = []
    for start in range(0, length, chunk):
        sl = slice(start, min(start + chunk, length))
        qc, kc, vc, lc, gc = q[:, sl], k[:, sl], v[:, sl], lr[:, sl], logs[:, sl]
        cum = gc.cumsum(1)                                        # G_t (B, L, H)
        read_log = cum if read_after else cum - gc                # G_t, or G_{t−1} for read before
        n = qc.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(0 if read_after else -1)
        decay = (read_log.unsqueeze(2) - cum.unsqueeze(1)).transpose(1, 3).transpose(2, 3)   # (B, H, t, s)
        scores = torch.einsum("bthd,bshd->bhts", qc, kc) * decay.masked_fill(~mask, float("-inf")).exp()
        scores = scores * lc.permute(0, 2, 1).unsqueeze(2)        # × lr_s
        inter = torch.einsum("bhod,bthd->btho", state, qc) * read_log.exp().unsqueeze(-1)
        intra = torch.einsum("bhts,bshd->bthd", scores, vc)
        outs.append(inter + intra)
        last = cum[:, -1]                                         # G_L (B, H)
        weight = (last.unsqueeze(1) - cum).exp() * lc             # Γ_L/Γ_s · lr_s (B, L, H)
        state = state * last.exp()[..., None, None] + torch.einsum("bsh,bsho,bshi->bhoi", weight, vc, kc)
    return torch.cat(outs, 1), state


def delta_rule(state: torch.Tensor, q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
               erase: torch.Tensor | float, write: torch.Tensor | float, retain: torch.Tensor | None,
               read_after: bool, chunk: int = CHUNK) -> tuple[torch.Tensor | None, torch.Tensor]:
    """M_t = α_t M_{t−1} − a_t (M_{t−1} k_t) k_tᵀ + b_t v_t k_tᵀ, the delta rule with retention
    (a = b = lr for gd on ½‖M k − v‖²; a = 2 lr, b = lr for dgd), chunked in WY form.

    With S = Mᵀ this is S_t = α_t (I − β_t k kᵀ) S_{t−1} + β_t k ṽᵀ, β = a/α, ṽ = (b α / a) v; in a chunk
    R' = T' diag(β) (Ṽ − D K S_0) with T' = (I + A')⁻¹, A'_ts = β_t (k_t·k_s) Γ_t/Γ_s (t > s), and
    S_L = Γ_L S_0 + Σ_s (Γ_L/Γ_s) k_s r'_sᵀ, y_t = Γ_t S_0ᵀq_t + Σ_{s≤t} (Γ_t/Γ_s)(q_t·k_s) r'_s.
    Shapes as in `linear_attention`; `q` may be None when only the final state is wanted."""
    batch, length, heads = k.shape[:3]
    a = _per_head(erase, (batch, length, heads), k)
    b = _per_head(write, (batch, length, heads), k)
    logs = _log_gates(retain, (batch, length, heads), k)
    alpha = logs.exp()
    beta = a / alpha
    vt = v * (b * alpha / a.clamp_min(1e-30)).unsqueeze(-1)
    s = state.transpose(-1, -2)                                   # S = Mᵀ: (B, H, dk, dv)
    outs = []
    for start in range(0, length, chunk):
        sl = slice(start, min(start + chunk, length))
        kc, vc, bc, gc = k[:, sl], vt[:, sl], beta[:, sl], logs[:, sl]
        n = kc.shape[1]
        cum = gc.cumsum(1).permute(0, 2, 1)                       # (B, H, L)
        ratio = cum.unsqueeze(-1) - cum.unsqueeze(-2)             # log Γ_t/Γ_s, (B, H, t, s)
        kk = torch.einsum("bthd,bshd->bhts", kc, kc)
        lower = torch.ones(n, n, dtype=torch.bool, device=k.device).tril(-1)
        attn = (kk * ratio.masked_fill(~lower, float("-inf")).exp()) * bc.permute(0, 2, 1).unsqueeze(-1)
        ks0 = torch.einsum("bthd,bhde->bhte", kc, s) * cum.exp().unsqueeze(-1)       # D K S_0
        rhs = (vc.permute(0, 2, 1, 3) - ks0) * bc.permute(0, 2, 1).unsqueeze(-1)
        # R' = (I + A')⁻¹ rhs by forward substitution: one batched triangular solve, stable when keys
        # repeat (a product of powers of A' is exact in theory but cancels entries ~C(n, n/2) in float)
        r = torch.linalg.solve_triangular(attn, rhs, upper=False, unitriangular=True)   # R' (B, H, L, dv)
        if q is not None:
            qc = q[:, sl]
            read_log = cum if read_after else cum - gc.permute(0, 2, 1)
            mask = torch.ones(n, n, dtype=torch.bool, device=k.device).tril(0 if read_after else -1)
            decay = (read_log.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~mask, float("-inf")).exp()
            qk = torch.einsum("bthd,bshd->bhts", qc, kc) * decay
            inter = torch.einsum("bthd,bhde->bhte", qc, s) * read_log.exp().unsqueeze(-1)
            outs.append((inter + qk @ r).permute(0, 2, 1, 3))
        last = cum[..., -1]                                       # (B, H)
        weight = (last.unsqueeze(-1) - cum).exp()                 # Γ_L/Γ_s (B, H, L)
        s = s * last.exp()[..., None, None] + torch.einsum("bhs,bshd,bhse->bhde", weight, kc, r)
    return (torch.cat(outs, 1) if q is not None else None), s.transpose(-1, -2)
