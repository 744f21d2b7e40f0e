"""Optimizer specs compile to torch.optim.Optimizers: SGD-momentum and Adam reproduce torch.optim's
trajectories; DMGD, Muon and M3 train a toy model to a lower loss than plain SGD."""

from __future__ import annotations

import pytest
import torch
from specutil import SPECS

import nldsl
from nldsl.backends.torch.codegen.load import optimizer_class


def compiled(name: str) -> type:
    return optimizer_class(nldsl.load_spec(SPECS / "optim" / f"{name}.nl"), name)


def toy(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    x = torch.randn(64, 6, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :3] * 2) + x[:, 3:] ** 2
    return net, x, y


def trajectory(make_optimizer, steps: int = 100, seed: int = 0) -> tuple[list[torch.Tensor], list[float]]:
    net, x, y = toy(seed)
    optim = make_optimizer(net.parameters())
    losses = []
    for _ in range(steps):
        optim.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        optim.step()
        losses.append(loss.item())
    return [p.detach().clone() for p in net.parameters()], losses


@pytest.mark.parametrize("kwargs", [dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, weight_decay=0.01),
                                    dict(lr=0.02, momentum=0.8, nesterov=1)])
def test_sgd_momentum_matches_torch(kwargs):
    ours, _ = trajectory(lambda p: compiled("sgd_momentum")(p, **{k: float(v) for k, v in kwargs.items()}))
    torch_kwargs = {**kwargs, "nesterov": bool(kwargs.get("nesterov", 0))}
    theirs, _ = trajectory(lambda p: torch.optim.SGD(p, **torch_kwargs))
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) <= 1e-6


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.005, beta1=0.8, beta2=0.99, weight_decay=0.01)])
def test_adam_matches_torch(kwargs):
    ours, _ = trajectory(lambda p: compiled("adam")(p, **kwargs))
    betas = (kwargs.get("beta1", 0.9), kwargs.get("beta2", 0.999))
    theirs, _ = trajectory(lambda p: torch.optim.Adam(p, lr=kwargs["lr"], betas=betas,
                                                      weight_decay=kwargs.get("weight_decay", 0)))
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) <= 1e-6


def test_adamw_matches_torch():
    ours, _ = trajectory(lambda p: compiled("adamw")(p, lr=0.01, weight_decay=0.1))
    theirs, _ = trajectory(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) <= 1e-6


@pytest.mark.parametrize("name, lr", [("dmgd", 0.05), ("muon", 0.05), ("m3", 0.05)])
def test_learned_optimizers_beat_plain_sgd(name, lr):
    _, sgd = trajectory(lambda p: compiled("sgd")(p, lr=lr), steps=60)
    _, ours = trajectory(lambda p: compiled(name)(p, lr=lr), steps=60)
    assert ours[-1] < sgd[-1], f"{name}: final loss {ours[-1]:.4f} vs SGD {sgd[-1]:.4f}"


def test_unknown_hyperparameter_is_refused():
    net, _, _ = toy()
    with pytest.raises(TypeError, match="no hyperparameter"):
        compiled("adam")(net.parameters(), learning_rate=0.1)


@pytest.mark.parametrize("name", ["adamw", "m3"])
def test_compiled_update_matches_eager(name):
    torch._dynamo.reset()
    eager, _ = trajectory(lambda p: compiled(name)(p, lr=0.01), steps=12)
    graphs, _ = trajectory(lambda p: compiled(name)(p, lr=0.01).compile("aot_eager"), steps=12)
    assert max((a - b).abs().max().item() for a, b in zip(eager, graphs, strict=True)) <= 1e-10


def test_fixed_target_in_an_optimizer_is_a_stopgrad():
    """Nothing differentiates an optimizer's step from outside, so `fixed(x)` and `stopgrad(x)`
    take the same trajectory (a self-generated target on an MLP momentum memory)."""
    def spec(target: str) -> type:
        text = f"""optimizer selfmod(lr = 0.05) {{
  memory mom : mlp(in = 1, hidden = 8, depth = 2, act = tanh, residual) per element init identity
  learn mom : l2(self(grad), {target}(self(grad * 0.5))) by gd(lr = 0.01, retain = 0.99) every step
  param = param - lr * mom(grad)
}}
"""
        r = nldsl.check_text(text, "selfmod.nl")
        assert r.ok, r.render()
        return optimizer_class(r.spec, "selfmod")
    ours, losses = trajectory(lambda p: spec("fixed")(p), steps=30)
    theirs, _ = trajectory(lambda p: spec("stopgrad")(p), steps=30)
    assert losses[-1] < losses[0]
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) == 0
