"""`rope`: rotary positions. The function against complex rotation and its defining property
(scores depend on distance only), then specs that use it compiled against the reference, as a
stream, and under torch.compile without a graph per position."""

from __future__ import annotations

import math

import pytest
import torch
from test_compile_exact import close, compare, pair, tokens

import nldsl
from nldsl.backends import functional as fn

GEN = torch.Generator().manual_seed(0)


def test_rope_is_complex_rotation():
    """Element i and i + d/2 of each group, read as one complex number, turn by p·base^(−2i/d)."""
    x = torch.randn(2, 5, 12, dtype=torch.float64, generator=GEN)
    positions = torch.tensor([0, 1, 7, 100, 4096])
    out = fn.rope(x, positions, groups=2, base=500.0)
    g = x.unflatten(-1, (2, 6))
    z = torch.complex(g[..., :3], g[..., 3:])
    turn = torch.exp(1j * positions[:, None, None].double() * 500.0 ** (-torch.arange(3).double() / 3))
    want = z * turn
    close(out.unflatten(-1, (2, 6)), torch.cat([want.real, want.imag], -1), 1e-12)


def test_rope_one_token_equals_sequence():
    """The reference turns one token (B, w) at a 0-d position; the runtime a segment at (T,)."""
    x = torch.randn(3, 4, 8, dtype=torch.float64, generator=GEN)
    whole = fn.rope(x, torch.arange(10, 14), groups=2)
    for t in range(4):
        close(fn.rope(x[:, t], torch.tensor(10 + t), groups=2), whole[:, t], 1e-15)


@pytest.mark.parametrize("shift", [1, 37, 10_000])
def test_scores_depend_on_distance_only(shift):
    q, k = torch.randn(2, 16, dtype=torch.float64, generator=GEN)
    p = torch.tensor([3, 9])

    def score(at: torch.Tensor) -> torch.Tensor:
        return (fn.rope(q, at[0], groups=2) * fn.rope(k, at[1], groups=2)).unflatten(-1, (2, 8)).sum(-1)

    close(score(p + shift), score(p), 1e-10)
    assert not torch.allclose(score(p), score(torch.tensor([3, 10])))
    assert math.isclose(fn.rope(q, p[0]).norm().item(), q.norm().item(), rel_tol=1e-12)


ROPE_SPEC = """model R(vocab = 13, dim = 8, heads = 2, context = 32) {
  block layer repeat 2 {
    x = rmsnorm(h)
    param W_q : matrix(dim, dim)
    param W_k : matrix(dim, dim)
    memory A : attention(window = 5) per head
    memory L : matrix per head init zeros
    q = rope(x @ W_q, groups = heads)
    k = rope(x @ W_k, groups = heads, base = 100)
    learn L : dot(self(l2norm(k, groups = heads)), x) by gd(lr = 0.5, retain = 0.9) read before
    h = h + A(q, k, x) + L(q)
  }
}
"""


def rope_spec() -> nldsl.Spec:
    r = nldsl.check_text(ROPE_SPEC, "rope.nl")
    assert r.ok, r.render()
    return r.spec


def test_rope_spec_matches_reference():
    """Attention (windowed, cached) and a fused linear-attention memory on rotated queries and keys:
    logits, states and gradients against the reference interpreter, float64."""
    compare(rope_spec(), tok=tokens(length=23))


def test_rope_positions_continue_across_calls():
    """A stream continued from its state turns its tokens at their positions in the stream."""
    _, model = pair(rope_spec())
    tok = tokens(length=24)
    whole, _ = model(tok)
    targets = torch.nn.functional.pad(tok[:, 1:], (0, 1), value=-100)
    first, state = model(tok[:, :10], targets=targets[:, :10], final=False)
    second, _ = model(tok[:, 10:], state=state, targets=targets[:, 10:])
    close(torch.cat([first, second], 1), whole, 1e-10)


def _graphs(text: str) -> int:
    """How many graphs torch.compile makes for a 32-token call, 8 segments of 4 tokens at new
    positions each (compiled equal to eager)."""
    torch._dynamo.reset()
    r = nldsl.check_text(text, "segments.nl")
    assert r.ok, r.render()
    _, eager = pair(r.spec)
    _, compiled = pair(r.spec)
    compiled.compile(backend="aot_eager")
    assert compiled.SEGMENT == 4
    counters = torch._dynamo.utils.counters
    counters.clear()
    tok = tokens(length=32)
    close(eager(tok)[0], compiled(tok)[0], 1e-10)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    return graphs


def test_rope_compiles_no_graph_per_position():
    """The positions are a tensor the block reads, not constants of its graph: the same spec
    without rope makes as many graphs."""
    text = ROPE_SPEC.replace("read before", "every 4 tokens read before")
    plain = text.replace("q = rope(x @ W_q, groups = heads)", "q = x @ W_q").replace(
        "k = rope(x @ W_k, groups = heads, base = 100)", "k = x @ W_k")
    assert "rope" not in plain
    assert _graphs(text) == _graphs(plain)
