"""Optimizer specs as `torch.optim.Optimizer`s: the generated `update` function is the whole rule
for one parameter; this base class keeps the per-parameter states and calls it.

An optimizer state is a memory with the parameter's shape (`elementwise`), or a small MLP applied
to every element (`mlp(in = 1, ...) per element`). Its `learn` statement is executed literally:
the gradient of its objective (autograd of the declared objective, `torch.func.grad`), then its
rule. A state learned `every N steps` accumulates on a shadow copy and commits every N steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.func import grad

from nldsl.backends import functional as fn


@dataclass
class OptState:
    """One memory of one parameter's optimizer state."""

    cur: list[torch.Tensor]
    ref: list[torch.Tensor]
    period: int = 1
    read_after: bool = True
    momentum: list[torch.Tensor] | None = None
    adam: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    updates: int = 0
    before: list[torch.Tensor] = field(default_factory=list)   # the visible state when the step began
    commits: bool = True                                        # whether this step ends a period

    def visible(self) -> list[torch.Tensor]:
        shown = self.ref if self.period > 1 else self.cur
        return shown if self.read_after else self.before


def value(s: OptState) -> torch.Tensor:
    """An elementwise state read bare: its tensor."""
    return s.visible()[0]


def apply(kind: str, weights: list[torch.Tensor], x: torch.Tensor, act: str = "identity", residual: bool = False,
          norm: str = "none") -> torch.Tensor:
    """A per-element memory read: the same small map applied to every element of x."""
    if kind == "elementwise":
        return weights[0] * x
    flat = x.reshape(-1, 1)
    return fn.memory_apply("mlp", weights, flat, 1, act, residual, norm).reshape(x.shape)


def learn(s: OptState, objective: Callable, values: tuple, step: int, rule, lr, retain=None, momentum=None,
          precond=None) -> None:
    """One step of a state's update rule, with the gradient of its objective at the committed state."""
    g = grad(lambda ws: objective(ws, *values))(list(s.ref))
    lr = torch.as_tensor(lr)
    new = []
    if rule.kind == "adam":
        assert s.adam is not None
        s.updates += 1
        first, second = s.adam
        for j, (w, gj) in enumerate(zip(s.cur, g, strict=True)):
            first[j] = rule.beta1 * first[j] + (1 - rule.beta1) * gj
            second[j] = rule.beta2 * second[j] + (1 - rule.beta2) * gj * gj
            new.append(w - lr * fn.adam_direction(first[j], second[j], s.updates, rule))
    else:
        for j, (w, gj) in enumerate(zip(s.cur, g, strict=True)):
            if precond is not None:
                gj = precond * gj
            if momentum is not None:
                assert s.momentum is not None
                s.momentum[j] = momentum * s.momentum[j] - lr * gj
                d = s.momentum[j]
            else:
                d = -lr * gj
            if rule.output_steps:
                d = fn.newton_schulz(d, rule.output_steps)
            new.append((w if retain is None else retain * w) + d)
    s.cur = new
    if s.commits:
        s.ref = [w.view_as(w) for w in new]   # never the shadow's own objects: stable compiled guards


class SpecOptimizer(torch.optim.Optimizer):
    """Generated optimizers set DEFAULTS and STATES, and define the static method
    `update(param, grad, states, hp, step) -> new param`."""

    DEFAULTS: dict[str, float] = {}
    ELEMENTWISE = False              # True: the update of a parameter's shard needs no other shard (FSDP)
    STATES: dict[str, dict] = {}     # name → {"shapes": callable(param) → shapes, "init": ..., ...}

    def __init__(self, params, /, **hyper: float):
        """`params` as for any `torch.optim.Optimizer`; keyword arguments are the spec's
        hyperparameters, whatever their names."""
        unknown = set(hyper) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no hyperparameter {', '.join(sorted(unknown))}")
        super().__init__(params, {**self.DEFAULTS, **hyper})
        self._update = type(self).update

    def compile(self, backend: str = "inductor") -> SpecOptimizer:
        """Run each parameter's update under torch.compile (fullgraph, dynamic shapes);
        hyperparameters and the step count enter it as tensors, so a learning-rate schedule never
        recompiles it."""
        # one graph per parameter rank and per pattern of which states commit this step
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        self._update = torch.compile(type(self).update, fullgraph=True, dynamic=True, backend=backend)
        return self

    def _states(self, p: torch.Tensor, like: torch.Tensor | None = None) -> dict[str, OptState]:
        """A parameter's states, made at first use in the shape of `like` (its shard under FSDP)."""
        st = self.state[p]
        if not st:
            st["step"] = 0
            st["memories"] = {name: _start(p if like is None else like, info) for name, info in self.STATES.items()}
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                hp = {k: torch.as_tensor(group[k], dtype=p.dtype, device=p.device) for k in self.DEFAULTS}
                param, grad = _whole_or_shard(p.detach(), self.ELEMENTWISE), _whole_or_shard(p.grad, self.ELEMENTWISE)
                st = self._states(p, param)
                st["step"] += 1
                for s in st["memories"].values():
                    s.before = list(s.ref if s.period > 1 else s.cur)
                    s.commits = st["step"] % s.period == 0
                step = torch.as_tensor(st["step"], dtype=p.dtype, device=p.device)
                with torch.enable_grad():
                    new = self._update(param, grad, st["memories"], hp, step).detach()
                if isinstance(p, DTensor):      # a parameter sharded by FSDP: write back this process's shard
                    if not self.ELEMENTWISE:
                        new = distribute_tensor(new, p.device_mesh, p.placements).to_local()
                    p.to_local().copy_(new)
                else:
                    p.copy_(new)
        return loss


def _whole_or_shard(t: torch.Tensor, elementwise: bool) -> torch.Tensor:
    """Under FSDP: an elementwise rule updates the local shard (its states are shards too); a rule
    that needs whole matrices (Muon's Newton-Schulz) gathers the parameter and its gradient."""
    if not isinstance(t, DTensor):
        return t.detach()
    return (t.to_local() if elementwise else t.full_tensor()).detach()


def _start(p: torch.Tensor, info: dict) -> OptState:
    if info["kind"] == "elementwise":
        init = [torch.zeros_like(p)]
    else:
        generator = torch.Generator().manual_seed(info.get("seed", 0))
        init = []
        shapes = info["shapes"]
        for j, shape in enumerate(shapes):
            last = j == len(shapes) - 1
            if info["init"] == "zeros" or (info["init"] == "identity" and last):
                init.append(torch.zeros(shape, dtype=p.dtype, device=p.device))
            else:
                init.append((torch.randn(shape, generator=generator, dtype=p.dtype) * shape[-1] ** -0.5).to(p.device))
    s = OptState(cur=init, ref=list(init), period=info.get("period", 1), read_after=info.get("read_after", True))
    if info.get("momentum"):
        s.momentum = [torch.zeros_like(w) for w in init]
    if info.get("adam"):
        s.adam = ([torch.zeros_like(w) for w in init], [torch.zeros_like(w) for w in init])
    return s
