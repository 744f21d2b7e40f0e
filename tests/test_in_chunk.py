"""Reads that see the writes of their own chunk (`every token chunk C`), in the dual form
(`backends/torch/runtime/in_chunk.py`): equal to the per-token reference interpreter in float64
(outputs, final states, every parameter's gradient), and bound only where it is exact.
"""

from __future__ import annotations

import pytest
import torch
from test_compile_exact import UNSHIPPED, close, compare, pair, shipped, tokens, unshipped

import nldsl
from nldsl.backends.torch.runtime import in_chunk
from nldsl.lower import Kernel, bind

HEADER = "vocab = 13, dim = 8, heads = 2, context = 32"

SPECS = {
    # Titans' memory read token by token: momentum, retention, a normalized residual MLP, per-token rates
    "titans_in_chunk": """
    param W_k : matrix(dim, dim)
    param W_r : matrix(dim, heads)
    k = l2norm(h @ W_k, groups = heads)
    theta = 0.5 * sigmoid(h @ W_r)
    memory M : mlp(depth = 2, expand = 2, act = gelu, norm = layernorm, residual) per head init learned
    learn M : l2(self(k), h) by gd(lr = theta, momentum = 0.7, retain = 1 - 0.1 * theta) every token chunk 4
    h = h + M(k)
""",
    # read before its write, a deeper MLP, a dot objective, a chunk that straddles shorter segments
    "before_depth3_dot": """
    k = l2norm(h, groups = heads)
    memory M : mlp(depth = 3, expand = 2, act = tanh) per head init learned
    memory P : mlp(expand = 2, act = silu, residual) init learned
    learn M : dot(self(k), h) by gd(lr = 0.2) every token chunk 8 read before
    learn P : l2(self(h), k) by gd(lr = 0.1) every 2 tokens
    h = h + M(k) + P(h)
""",
    # a matrix memory, Huber objective, read twice (two queries) and stopped for the outer level
    "matrix_huber_two_reads": """
    param W_q : matrix(dim, dim)
    memory M : matrix per head init zeros
    learn M : huber(self(h), h, delta = 0.5) by gd(lr = 0.3, retain = 0.9) every token chunk 3 backprop stop
    q = h @ W_q
    h = h + M(q) + M(h)
""",
    # targets the memory generates itself, held fixed, and an outer gradient cut every 2 chunks
    "fixed_targets_truncated": """
    param W_v : matrix(dim, dim)
    k = l2norm(h, groups = heads)
    v = l2norm(h @ W_v, groups = heads)
    memory M : mlp(expand = 2, act = silu, residual) per head init learned
    learn M : l2(self(k), fixed(self(v))) by gd(lr = 0.3, momentum = 0.5) every token chunk 4 backprop truncate 2
    h = h + M(k)
""",
    # Hope's self-modifying memory read token by token (the TTT reading of eq. 90): dgd with
    # data-dependent rate and retention, momentum, targets it generates itself, read before
    "hope_dgd_in_chunk": """
    param W_v : matrix(dim, dim)
    memory M : mlp(depth = 2, expand = 2, act = silu, residual) per head init learned
    memory E : mlp(depth = 2, expand = 2, act = silu, out = 1) per head init learned
    k = l2norm(h, groups = heads)
    v = l2norm(h @ W_v, groups = heads)
    eta = 0.3 * sigmoid(E(k))
    alpha = 1 - 0.1 * sigmoid(E(v))
    learn M : l2(self(k), fixed(self(v))) by dgd(lr = eta, retain = alpha, momentum = 0.6) every token chunk 4
      read before
    learn E : l2(self(k), fixed(self(v))) by dgd(lr = 0.1) every 4 tokens read before
    h = h + M(k)
""",
    # a matrix memory by dgd without momentum, read after
    "matrix_dgd_in_chunk": """
    k = l2norm(h, groups = heads)
    memory M : matrix per head init learned
    learn M : l2(self(k), h) by dgd(lr = 0.5, retain = 0.9) every token chunk 8
    h = h + M(k)
""",
}


def spec(name: str) -> nldsl.Spec:
    text = f"model X({HEADER}) {{\n  block {{\n{SPECS[name]}\n  }}\n}}\n"
    r = nldsl.check_text(text, f"{name}.nl")
    assert r.ok, r.render()
    return r.spec


def kernels(s: nldsl.Spec) -> dict[str, Kernel]:
    (block,) = s.models["X"].blocks
    return {n: bind(m, block).kernel for n, m in block.memories.items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_in_chunk_memories_equal_the_per_token_reference(name):
    s = spec(name)
    assert kernels(s)["M"] is Kernel.IN_CHUNK
    compare(s, tok=tokens(length=23))        # 23: the last chunk is cut short


@pytest.mark.parametrize("split", [12, 10, 1])
@pytest.mark.parametrize("name", ["titans_in_chunk", "huber_mlp3_momentum", "hope"])
def test_a_stream_cut_anywhere_equals_one_pass(name, split):
    """A stream continued mid-chunk or mid-period (10, 1) commits and refreshes its gradients at the
    same tokens as one pass: the segments of each call end where the stream's segments end."""
    s = spec(name) if name in SPECS else unshipped(name) if name in UNSHIPPED else shipped(name)
    _, comp = pair(s)
    tok = tokens(length=24)
    whole, _ = comp(tok)
    targets = torch.nn.functional.pad(tok[:, 1:], (0, 1), value=-100)
    first, state = comp(tok[:, :split], targets=targets[:, :split], final=False)
    second, _ = comp(tok[:, split:], state=state, targets=targets[:, split:])
    close(torch.cat([first, second], 1), whole, 1e-10)


@pytest.mark.parametrize(("learn", "why"), [
    ("learn M : l2(self(k), h) by gd(lr = 0.1) every token chunk 4 backprop first_order", "first_order"),
    ("learn M : l2(self(k), h) by adam(lr = 0.1) every token chunk 4", "adam"),
    ("learn M : l2(self(k), h) by gd(lr = 0.1, precond = 0.5, momentum = 0.5) every token chunk 4", "precond"),
    ("learn M : l2(self(k), h) by gd(lr = 0.1) every token", "no chunk"),
    ("learn M : l2(self(k), self(h)) by gd(lr = 0.1) every token chunk 4", "two live self calls"),
])
def test_not_bound_where_the_dual_form_is_not_exact(learn, why):
    text = f"""model X({HEADER}) {{
  block {{
    k = l2norm(h, groups = heads)
    memory M : mlp(expand = 2, act = silu) per head init learned
    {learn}
    h = h + M(k)
  }}
}}
"""
    r = nldsl.check_text(text, "x.nl")
    assert r.ok, r.render()
    assert kernels(r.spec)["M"] is not Kernel.IN_CHUNK, why


def test_coefficients_match_the_recurrence():
    """c, φ, Γ against the rule run token by token on scalars."""
    g = torch.Generator().manual_seed(0)
    b, s, h = 2, 6, 3
    lr = torch.rand(b, s, h, generator=g, dtype=torch.float64)
    alpha = 0.5 + 0.5 * torch.rand(b, s, h, generator=g, dtype=torch.float64)
    beta = torch.rand(b, s, h, generator=g, dtype=torch.float64)
    grads = torch.randn(b, s, h, generator=g, dtype=torch.float64)
    w0, s0 = torch.randn(b, h, dtype=torch.float64, generator=g), torch.randn(b, h, dtype=torch.float64, generator=g)
    coef, phi, gamma = in_chunk.coefficients(lr, alpha.log().cumsum(1), beta.log().cumsum(1))
    w, m = w0, s0
    for t in range(s):
        m = beta[:, t] * m - lr[:, t] * grads[:, t]
        w = alpha[:, t] * w + m
        closed = gamma[:, :, t, 0] * w0 + phi[:, :, t, 0] * s0 + (coef[:, :, t] * grads.transpose(1, 2)).sum(-1)
        assert torch.allclose(closed, w, atol=1e-12)
