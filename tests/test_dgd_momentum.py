"""dgd with momentum over a period (`backends/torch/runtime/dgd_momentum.py`, the UT form of the key's
layer): equal to the per-token reference in float64, for matrix and MLP memories, data-dependent
rates, momentum and retention, self-generated targets, and memories learned stacked.
"""

from __future__ import annotations

import pytest
from test_compile_exact import compare, tokens

import nldsl
from nldsl.lower import Kernel, bind

HEADER = "vocab = 13, dim = 8, heads = 2, context = 32"

SPECS = {
    # Hope's self-modifying memory with the momentum the paper's Table 6 ablates
    "hope_memory_with_momentum": """
    param W_v : matrix(dim, dim)
    memory M : mlp(depth = 2, expand = 2, act = silu, residual) per head init learned
    memory E : mlp(depth = 2, expand = 2, act = silu, out = 1) per head init learned
    k = l2norm(h, groups = heads)
    v = l2norm(h @ W_v, groups = heads)
    eta = 0.3 * sigmoid(E(k))
    learn M : l2(self(k), fixed(self(v))) by dgd(lr = eta, retain = 0.95, momentum = 0.8) every 4 tokens
      read before
    learn E : l2(self(k), fixed(self(v))) by dgd(lr = 0.1, momentum = 0.5) every 4 tokens read before
    h = h + M(k)
""",
    # a matrix memory with data-dependent momentum and retention, read after, every 8 tokens
    "matrix_gated_momentum": """
    param W_g : matrix(dim, heads)
    k = l2norm(h, groups = heads)
    g = sigmoid(h @ W_g)
    memory A : matrix per head init learned
    learn A : l2(self(k), h) by dgd(lr = 0.4 * g, momentum = g, retain = 1 - 0.1 * g) every 8 tokens
    h = h + A(k)
""",
    # two identical memories learned by one statement: updated stacked, heads side by side
    "stacked_pair": """
    k = l2norm(h, groups = heads)
    memory P, Q : mlp(depth = 3, expand = 2, act = tanh) per head init learned
    learn P, Q : l2(self(k), h) by dgd(lr = 0.2, momentum = 0.6) every 2 tokens
    h = h + P(k) + Q(h)
""",
}


def spec(name: str) -> nldsl.Spec:
    text = f"model X({HEADER}) {{\n  block {{\n{SPECS[name]}\n  }}\n}}\n"
    r = nldsl.check_text(text, f"{name}.nl")
    assert r.ok, r.render()
    return r.spec


@pytest.mark.parametrize("name", list(SPECS))
def test_dgd_with_momentum_equals_the_per_token_reference(name):
    s = spec(name)
    (block,) = s.models["X"].blocks
    learned = [m for m in block.memories.values() if m.learn is not None]
    assert all(bind(m, block).kernel is Kernel.PERIOD_DGD_MOMENTUM for m in learned)
    compare(s, tok=tokens(length=23))
