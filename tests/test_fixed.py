"""`fixed(x)` in an objective: the memory writes what it would write with `stopgrad(x)`, but the
outer level differentiates through x. Oracle: central finite differences of the loss are the full
derivative of what the forward pass computes, so with `fixed` the reference interpreter's
gradients equal them, and with `stopgrad` they do not. (The compiled model equals the
reference on these objectives in test_compile_exact.py.)"""

from __future__ import annotations

import pytest
import torch
from specutil import model, one_thread  # noqa: F401

import nldsl
from nldsl.backends.reference import Reference

# self-generated targets v̂ = M(v) with v = h W_v, on each path an objective with `fixed` can take
BODIES = {
    "matrix_every_token": """
    memory M : matrix per head init learned
    learn M : l2(self(k), TARGET(self(v))) by gd(lr = 0.3, retain = 0.9)""",
    "mlp_every_4_tokens_momentum": """
    memory M : mlp(expand = 2, act = tanh, residual) per head init learned
    learn M : l2(self(k), TARGET(self(v))) by gd(lr = 0.3, momentum = 0.5, retain = 0.9) every 4 tokens""",
    "mlp_dgd_every_4_tokens": """
    memory M : mlp(expand = 2, act = silu, residual) per head init learned
    learn M : l2(self(k), TARGET(self(v))) by dgd(lr = 0.1, retain = 0.95) every 4 tokens read before""",
}


def spec(name: str, target: str) -> nldsl.Spec:
    body = f"""
    param W_k : matrix(dim, dim)
    param W_v : matrix(dim, dim)
    k = l2norm(h @ W_k, groups = heads)
    v = l2norm(h @ W_v, groups = heads){BODIES[name].replace("TARGET", target)}
    h = h + M(k)
"""
    r = nldsl.check_text(model(body, header="vocab = 13, dim = 8, heads = 2, context = 32"), f"{name}.nl")
    assert r.ok, r.render()
    return r.spec


TOKENS = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(3))


def shifted(ref: Reference, p: torch.Tensor, i: int, eps: float) -> float:
    """The loss with one entry of p moved by eps (the interpreter's inner gradients need grad mode on)."""
    with torch.no_grad():
        p.view(-1)[i] += eps
    loss = ref.loss(TOKENS).item()
    with torch.no_grad():
        p.view(-1)[i] -= eps
    return loss


def gradient_errors(name: str, target: str, probes: int = 3) -> dict[str, float]:
    """Largest |autograd − central difference| per parameter, over a few entries of each."""
    ref = Reference(spec(name, target), dtype=torch.float64, seed=0)
    names = [n for n in ref.params if n.endswith(("W_v", "W_k")) or "/M/" in n]
    assert any("/M/" in n for n in names), names
    grads = torch.autograd.grad(ref.loss(TOKENS), [ref.params[n] for n in names], allow_unused=True)
    pick = torch.Generator().manual_seed(0)
    errors: dict[str, float] = {}
    for n, g in zip(names, grads, strict=True):
        p = ref.params[n]
        worst = 0.0
        for _ in range(probes):
            i = int(torch.randint(p.numel(), (1,), generator=pick))
            up, down = shifted(ref, p, i, 1e-6), shifted(ref, p, i, -1e-6)
            exact = 0.0 if g is None else g.reshape(-1)[i].item()
            worst = max(worst, abs(exact - (up - down) / 2e-6))
        errors[n] = worst
    return errors


@pytest.mark.parametrize("name", list(BODIES))
def test_fixed_gradients_are_the_full_derivative(name):
    errors = gradient_errors(name, "fixed")
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name", list(BODIES))
def test_stopgrad_drops_the_path_through_the_target(name):
    errors = gradient_errors(name, "stopgrad")
    assert errors[next(n for n in errors if n.endswith("W_v"))] > 1e-4, errors


@pytest.mark.parametrize("name", list(BODIES))
def test_fixed_writes_what_stopgrad_writes(name):
    a = Reference(spec(name, "fixed"), dtype=torch.float64, seed=0)
    b = Reference(spec(name, "stopgrad"), dtype=torch.float64, seed=0)
    torch.testing.assert_close(a.loss(TOKENS), b.loss(TOKENS), rtol=1e-12, atol=0)
