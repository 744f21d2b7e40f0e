"""The weighted gradients an update takes of its objective, by hand for MLP and matrix memories.

The period kernels need Σ_t c_t ∇_W loss_t for a few weightings c (and, for dgd, the per-token
error signal at the output of each layer it decorrelates). `torch.func.vjp` through the whole objective gets them,
but it differentiates the memory's products twice over (once per weighting, every layer each time)
and its pullback is a second graph that the outer backward must differentiate again. Here the
objective runs once with a `Tape` standing for the weights: each read of the memory records its
layers' inputs and pre-activations, and the objective is differentiated only with respect to the
reads' outputs (cheap, elementwise). The layers are then pulled back by hand as batched matrix
products (the TTT form): G_j = Σ_t (c_t g_{j,t}) a_{j,t}ᵀ, g_{j−1} = act'(z_{j−1}) ⊙ (W_jᵀ g_j),
which the outer backward differentiates like any other code. Exact: the same chain rule, written
out. Reads the tape cannot follow (an elementwise memory, a normalized branch, the state used as a
value) leave the caller on the `torch.func` path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
from torch.func import vjp

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime.memspec import MemSpec

PROBE = object()   # passed as the objective's `probe`: marks the read whose layers' signals dgd needs


def _silu_grad(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return g * s * (1 + z * (1 - s))


def _gelu_grad(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return g * (0.5 * (1 + torch.erf(z * (1 / math.sqrt(2)))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))


def _sigmoid_grad(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return g * s * (1 - s)


# act'(z) ⊙ g for each activation `functional.ACTIVATIONS` knows (relu's is 0 at 0, as autograd's)
ACT_GRADS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda z, g: g,
    "relu": lambda z, g: g * (z > 0),
    "tanh": lambda z, g: g * (1 - torch.tanh(z).square()),
    "sigmoid": _sigmoid_grad,
    "silu": _silu_grad,
    "gelu": _gelu_grad,
}


def follows(spec: MemSpec) -> bool:
    """Whether a tape can stand for this memory's weights: products and an activation, no norm."""
    return spec.kind in ("mlp", "matrix") and spec.norm == "none" and spec.act in ACT_GRADS


@dataclass
class _Read:
    """One read of the memory inside the objective: per layer its input a_j (B, H, S, in_j) and,
    below the last, its pre-activation z_j (B, H, S, out_j)."""

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    probed: bool


@dataclass
class Tape:
    """Stands for weights (B, H, out, in) per layer inside an objective (`memory.apply` hands it
    the reads). Recording, it computes each read and keeps what the pullback needs; replaying, it
    returns the given outputs in call order, so that the objective is a function of them alone.
    `differentiable`: the weights being learned (recorded); else a state the gradient is taken at
    (`at`), whose outputs are only cached for the replay."""

    weights: list[torch.Tensor]
    differentiable: bool = True
    reads: list[_Read] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    replaying: bool = False
    cursor: int = 0
    opaque: bool = False      # the objective used the weights other than by reading: the tape cannot follow

    def read(self, spec: MemSpec, x: torch.Tensor, probe) -> torch.Tensor:
        if self.replaying:
            self.cursor += 1
            return self.outputs[self.cursor - 1]
        if not self.differentiable:
            out = fn.memory_apply(spec.kind, self.weights, x, spec.heads, spec.act, spec.residual, spec.norm)
            self.outputs.append(out)
            return out
        batch, length = x.shape[:2]
        a = x.unflatten(-1, (spec.heads, -1)).transpose(1, 2)          # (B, H, S, in), as memory_apply's rows
        inputs, pre = [], []
        last = len(self.weights) - 1
        for j, w in enumerate(self.weights):
            inputs.append(a)
            a = a @ w.transpose(-1, -2)
            if j < last:
                pre.append(a)
                a = fn.ACTIVATIONS[spec.act](a)
        if spec.residual:
            a = a + inputs[0]
        out = a.transpose(1, 2).reshape(batch, length, -1)
        self.reads.append(_Read(inputs, pre, probe is PROBE))
        self.outputs.append(out)
        return out

    def replay(self, outputs: list[torch.Tensor] | None = None) -> Tape:
        self.replaying, self.cursor = True, 0
        if outputs is not None:
            self.outputs = outputs
        return self


def _pull_layers(read: _Read, weights: list[torch.Tensor], act: str, g: torch.Tensor, heads: int,
                 layers: Collection[int], signals: Collection[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A read's output gradient g (B, S, H*out) → Σ_t g a_jᵀ for the `layers` j, and the gradient
    at the output z_j (B, S, H, out_j) of each of the `signals` layers, both first layer first."""
    g = g.unflatten(-1, (heads, -1)).transpose(1, 2)                     # (B, H, S, out)
    grads: list[torch.Tensor] = []
    found: list[torch.Tensor] = []
    bottom = min([*layers, *signals], default=len(weights))
    for j in range(len(weights) - 1, bottom - 1, -1):
        if j in layers:
            grads.insert(0, g.transpose(-1, -2) @ read.inputs[j])
        if j in signals:
            found.insert(0, g.transpose(1, 2))
        if j > bottom:
            g = ACT_GRADS[act](read.pre[j - 1], g @ weights[j])
    return grads, found


def weighted_grads(spec: MemSpec, objective: Callable, theta: list[torch.Tensor], values: tuple,
                   cotangents: list[torch.Tensor], layers: Collection[int] | None = None,
                   signals: Collection[int] = ()) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]] | None:
    """For each cotangent c (B, S, losses), Σ_t c_t ∇ loss_t for the `layers` (default: all), at
    `theta`; and for each of the `signals` layers the unweighted gradient at its output in the read
    that takes dgd's probe (B, S, H, out_j). None when the objective uses the weights other than by
    reading them (the caller then differentiates it whole)."""
    layers = range(len(theta)) if layers is None else layers
    tape, at = Tape(theta), Tape(theta, differentiable=False)
    objective(tape, PROBE, *values, at=at)
    if tape.opaque or at.opaque or not tape.reads or (signals and not any(r.probed for r in tape.reads)):
        return None

    def of_outputs(*outputs):
        return objective(tape.replay(list(outputs)), PROBE, *values, at=at.replay())

    losses, pull = vjp(of_outputs, *tape.outputs)
    out = []
    for c in cotangents:
        total: list[torch.Tensor] | None = None
        for read, g in zip(tape.reads, pull(c), strict=True):
            grads, _ = _pull_layers(read, theta, spec.act, g, spec.heads, layers, ())
            total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
        assert total is not None
        out.append(total)
    deltas: list[torch.Tensor] = []
    if signals:
        read, g = next((r, g) for r, g in zip(tape.reads, pull(torch.ones_like(losses)), strict=True) if r.probed)
        _, deltas = _pull_layers(read, theta, spec.act, g, spec.heads, (), signals)
    return out, deltas
