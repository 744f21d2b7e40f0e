"""The chunkwise kernels against their per-token recurrences, on the inputs that break naive
chunked forms: repeated keys (what a filler token gives after a short convolution), strong writes,
long sequences, gates near 0 and 1."""

from __future__ import annotations

import pytest
import torch

from nldsl.backends.torch.runtime import chunkwise as kernels


def delta_rule_by_token(state, q, k, v, erase, write, retain, read_after):
    """M_t = α_t M_{t−1} − a_t (M_{t−1} k_t) k_tᵀ + b_t v_t k_tᵀ, one token at a time."""
    ys = []
    for t in range(k.shape[1]):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]
        a, b = erase[:, t, :, None, None], write[:, t, :, None, None]
        alpha = 1.0 if retain is None else retain[:, t, :, None, None]
        before = state
        state = alpha * state - a * (state @ kt.unsqueeze(-1)) * kt.unsqueeze(-2) \
            + b * vt.unsqueeze(-1) * kt.unsqueeze(-2)
        ys.append(((state if read_after else before) @ qt.unsqueeze(-1)).squeeze(-1))
    return torch.stack(ys, 1), state


def inputs(repeated: bool, length: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch, heads, dk, dv = 2, 3, 16, 8
    k = torch.randn(batch, length, heads, dk, generator=g, dtype=dtype)
    if repeated:    # nearly one key throughout, as a run of filler tokens gives
        k = k[:, :1] + 1e-3 * k
    k = torch.nn.functional.normalize(k, dim=-1)
    q = torch.nn.functional.normalize(torch.randn(batch, length, heads, dk, generator=g, dtype=dtype), dim=-1)
    v = torch.randn(batch, length, heads, dv, generator=g, dtype=dtype)
    lr = 0.5 + 0.5 * torch.rand(batch, length, heads, generator=g, dtype=dtype)     # up to 1: strong writes
    state = torch.randn(batch, heads, dv, dk, generator=g, dtype=dtype)
    return state, q, k, v, lr


@pytest.mark.parametrize("repeated", [False, True], ids=["random keys", "repeated keys"])
@pytest.mark.parametrize("gated", [False, True], ids=["no retention", "retention"])
@pytest.mark.parametrize("read_after", [True, False], ids=["read after", "read before"])
def test_delta_rule_matches_the_recurrence_in_float32(repeated: bool, gated: bool, read_after: bool) -> None:
    state, q, k, v, lr = inputs(repeated, length=200)      # four chunks of 64, the last partial
    gates = torch.rand(lr.shape, generator=torch.Generator().manual_seed(1), dtype=lr.dtype)   # (the suite may
    retain = gates * 0.2 + 0.8 if gated else None               # run with float64 as the default dtype)
    y, final = kernels.delta_rule(state, q, k, v, lr, lr, retain, read_after)
    y_ref, final_ref = delta_rule_by_token(state.double(), q.double(), k.double(), v.double(), lr.double(),
                                           lr.double(), None if retain is None else retain.double(), read_after)
    assert torch.isfinite(y).all() and torch.isfinite(final).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-4, atol=1e-4)


def test_delta_rule_gradients_stay_finite_on_repeated_keys() -> None:
    state, q, k, v, lr = inputs(repeated=True, length=128)
    k.requires_grad_(True)
    v.requires_grad_(True)
    y, final = kernels.delta_rule(state, q, k, v, lr, lr, None, read_after=True)
    (y.square().sum() + final.square().sum()).backward()
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("read_after", [True, False], ids=["read after", "read before"])
def test_linear_attention_matches_the_recurrence(read_after: bool) -> None:
    state, q, k, v, lr = inputs(repeated=False, length=150, dtype=torch.float64)
    retain = torch.rand(lr.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5 + 0.5
    y, final = kernels.linear_attention(state, q, k, v, lr, retain, read_after)
    ys, s = [], state
    for t in range(k.shape[1]):
        before = s
        s = retain[:, t, :, None, None] * s + lr[:, t, :, None, None] * v[:, t].unsqueeze(-1) * k[:, t].unsqueeze(-2)
        ys.append(((s if read_after else before) @ q[:, t].unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, s, rtol=1e-10, atol=1e-10)
