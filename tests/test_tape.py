"""The tape's hand-written pullback through an MLP memory (`runtime.tape`) against `torch.func.vjp`
through the whole objective, the path it replaces: the weighted gradients of every layer, dgd's
error signals at the layers it decorrelates, and the outer gradients through both (second order),
in float64."""

from __future__ import annotations

import pytest
import torch
from torch.func import vjp

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime import memory as rt
from nldsl.backends.torch.runtime import tape

BATCH, LENGTH, HEADS, WIDTH = 2, 7, 3, 4


def spec(act: str, residual: bool, depth: int) -> rt.MemSpec:
    hidden = 5
    shapes = [(HEADS, hidden, WIDTH)] + [(HEADS, hidden, hidden)] * (depth - 2) + [(HEADS, WIDTH, hidden)]
    return rt.MemSpec(name="M", kind="mlp" if depth > 1 else "matrix", heads=HEADS,
                      shapes=tuple(shapes[-depth:] if depth > 1 else [(HEADS, WIDTH, WIDTH)]), act=act,
                      residual=residual)


def objective_for(s: rt.MemSpec, loss: str):
    """What generated code writes for `loss(self(k), fixed(self(v)))`, one loss per head; the probe
    rides on the read of the key."""
    def objective(w, probe, a0, a1, *, at):
        return fn.objective(loss, rt.apply(s, w, a0, probe), rt.apply(s, at, a1), groups=HEADS)
    return objective


def inputs(s: rt.MemSpec, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    theta = [0.5 * torch.randn(BATCH, *shape, generator=g, dtype=torch.float64) for shape in s.shapes]
    k = torch.randn(BATCH, LENGTH, HEADS * WIDTH, generator=g, dtype=torch.float64)
    v = torch.randn(BATCH, LENGTH, HEADS * WIDTH, generator=g, dtype=torch.float64)
    weights = [torch.randn(BATCH, LENGTH, HEADS, generator=g, dtype=torch.float64) for _ in range(2)]
    return theta, (k, v), weights


def by_vjp(objective, theta, values, cotangents, first: int):
    """The naive reference: vjp of the whole objective in the layers from `first` and a probe at
    each layer's output; one pullback per weighting, and one of ones for the error signals."""
    probes = [values[0].new_zeros(BATCH, LENGTH, HEADS, w.shape[-2]) for w in theta]
    rest = len(theta) - first
    losses, pull = vjp(lambda *args: objective([*theta[:first], *args[:rest]], list(args[rest:]), *values, at=theta),
                       *theta[first:], *probes)
    return [list(pull(c)[:rest]) for c in cotangents], list(pull(torch.ones_like(losses))[rest:])


@pytest.mark.parametrize("act", ["silu", "tanh", "gelu", "relu", "sigmoid"])
@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("loss", ["l2", "dot", "huber"])
def test_tape_equals_vjp(act: str, residual: bool, depth: int, loss: str) -> None:
    s = spec(act, residual, depth)
    objective = objective_for(s, loss)
    theta, values, weights = inputs(s)
    for first in (0, 1):
        signals = range(depth)       # dgd `decorrelate = each`; the first alone, or the last, are parts of it
        got, deltas = tape.weighted_grads(s, objective, theta, values, weights, range(first, depth), signals)
        want, want_deltas = by_vjp(objective, theta, values, weights, first)
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w) == depth - first
            for a, b in zip(g, w, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert len(deltas) == depth
        for a, b in zip(deltas, want_deltas, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_outer_gradients_through_the_tape_equal_those_through_vjp() -> None:
    """Memories trained `through` their updates differentiate the update itself: the hand-written
    pullback must give the outer level the same second-order gradients as vjp's."""
    s = spec("silu", True, 2)
    objective = objective_for(s, "l2")
    runs = []
    for hand in (True, False):
        theta, values, weights = inputs(s)
        leaves = [*theta, *values, weights[0]]
        for t in leaves:
            t.requires_grad_(True)
        if hand:
            (grads,), deltas = tape.weighted_grads(s, objective, theta, values, weights[:1], [1], [0, 1])
        else:
            (grads,), deltas = by_vjp(objective, theta, values, weights[:1], first=1)
        outer = sum((g.sin() * g).sum() for g in grads) + sum((d.cos() * d).sum() for d in deltas)
        runs.append(torch.autograd.grad(outer, leaves))
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_state_used_as_a_value_leaves_the_objective_to_vjp() -> None:
    s = spec("silu", True, 2)
    theta, values, weights = inputs(s)

    def objective(w, probe, a0, a1, *, at):
        pred = rt.apply(s, w, a0, probe) * rt.state_of(w, a0).mean()
        return fn.objective("l2", pred, a1, groups=HEADS)

    assert tape.weighted_grads(s, objective, theta, values, weights) is None


def test_what_the_tape_cannot_follow() -> None:
    assert tape.follows(spec("silu", True, 2))
    assert not tape.follows(rt.MemSpec(name="M", kind="mlp", heads=1, act="silu", norm="layernorm"))
    assert not tape.follows(rt.MemSpec(name="M", kind="elementwise", heads=1))
