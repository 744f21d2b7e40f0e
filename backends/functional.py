"""The math of single operations, shared by the reference interpreter and the compiled runtime.

Everything here is a pure function of tensors whose last axis is the feature width (so the same
code serves one token, `(B, w)`, and a whole sequence, `(B, T, w)`). How states evolve over time is
not here: that is what each backend does its own way, and what the oracle tests compare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
               "identity": lambda x: x}
UNARY = {"sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh,
         "softplus": F.softplus, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs,
         "square": torch.square, "sign": torch.sign}


def groups_of(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x.unflatten(-1, (groups, x.shape[-1] // groups))


def expand_heads(small: torch.Tensor, width: int) -> torch.Tensor:
    """One value per head (..., H) → the width of a head-split vector (..., H*d)."""
    return small.repeat_interleave(width // small.shape[-1], dim=-1)


def broadcast_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align widths: equal, a scalar (width 1 or a 0-d constant), or one value per head."""
    wa, wb = (a.shape[-1] if a.dim() else 1), (b.shape[-1] if b.dim() else 1)
    if wa == wb or wa == 1 or wb == 1:
        return a, b
    return (expand_heads(a, wb), b) if wa < wb else (a, expand_heads(b, wa))


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    g = groups_of(x, groups)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + EPS)
    return g.flatten(-2) * weight


def layernorm(x: torch.Tensor, weight_bias: torch.Tensor | None, groups: int = 1) -> torch.Tensor:
    g = groups_of(x, groups)
    g = (g - g.mean(-1, keepdim=True)) * torch.rsqrt(g.var(-1, unbiased=False, keepdim=True) + EPS)
    out = g.flatten(-2)
    return out if weight_bias is None else out * weight_bias[0] + weight_bias[1]


def l2norm(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    g = groups_of(x, groups)
    return (g / (g.norm(dim=-1, keepdim=True) + EPS)).flatten(-2)


def rope(x: torch.Tensor, positions: torch.Tensor, groups: int = 1, base: float = 10000.0) -> torch.Tensor:
    """Rotary positions (RoFormer, Su et al. 2021, eq. 34), in the halves layout of GPT-NeoX and
    Llama: in each group of width d, element i and element i + d/2 turn by the angle p·base^(−2i/d),
    p the token's position. x (B, T, w) with positions (T,), or one token (B, w) with a 0-d
    position. Angles are computed in float64, so that positions far into a stream keep their
    precision whatever x's dtype."""
    g = groups_of(x, groups)
    half = g.shape[-1] // 2
    inverse = base ** -(torch.arange(half, dtype=torch.float64, device=x.device) / half)
    angle = (positions.to(torch.float64).unsqueeze(-1) * inverse).unsqueeze(-2)     # (T, 1, d/2) or (1, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    first, second = g[..., :half], g[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], -1).flatten(-2)


def reduce(x: torch.Tensor, groups: int, mean: bool) -> torch.Tensor:
    g = groups_of(x, groups)
    return g.mean(-1) if mean else g.sum(-1)


def conv_window(window: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A causal depthwise convolution at one time: `window` holds the last K inputs, oldest first,
    (..., K, w); `weight` is (w, K) with the current token last."""
    return (window * weight.transpose(0, 1)).sum(-2)


def memory_apply(kind: str, weights: list[torch.Tensor], x: torch.Tensor, heads: int, act: str = "identity",
                 residual: bool = False, norm: str = "none",
                 probe: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
    """Read a parametric memory: x (..., H*in) → (..., H*out).

    Weights are (H, out, in) parameters shared by every sequence, or (B, H, out, in) states, one
    per sequence (x's first axis). An elementwise memory has one state (H, in) or (B, H, in). The
    tokens of a sequence become the rows of one matrix product per head, never one product per
    token. `probe` (..., H, out of layer 1) is added to the first layer's output: its gradient is the
    per-token error signal at that layer, which the delta-rule form of dgd needs. A list holds one
    probe per layer, each added to its layer's output (before the activation), for the per-token
    error signals of every layer."""
    xh = x.unflatten(-1, (heads, x.shape[-1] // heads))              # (*lead, H, in)
    lead = xh.shape[:-2]
    per_sequence = weights[0].dim() == (3 if kind == "elementwise" else 4)
    if kind == "elementwise":
        w = weights[0]
        if per_sequence:
            w = w.reshape(w.shape[0], *([1] * (len(lead) - 1)), *w.shape[1:])
        return (w * xh).flatten(-2)

    def rows(t: torch.Tensor) -> torch.Tensor:   # (*lead, H, d) → (H, N, d) or (B, H, N, d)
        if per_sequence:
            return t.reshape(t.shape[0], -1, heads, t.shape[-1]).transpose(1, 2)
        return t.reshape(-1, heads, t.shape[-1]).transpose(0, 1)

    probes = probe if isinstance(probe, list) else [probe]
    a = rows(xh)
    for j, w in enumerate(weights):
        a = a @ w.transpose(-1, -2)
        if j < len(probes) and probes[j] is not None:
            a = a + rows(probes[j])
        if j < len(weights) - 1:
            a = ACTIVATIONS[act](a)
    a = memory_norm(a, norm)
    if residual:
        a = a + rows(xh)
    a = a.transpose(1, 2) if per_sequence else a.transpose(0, 1)
    return a.reshape(*lead, heads * a.shape[-1])


def layer_inputs(weights: list[torch.Tensor], x: torch.Tensor, heads: int, act: str, depth: int) -> list[torch.Tensor]:
    """The inputs of a matrix or MLP memory's first `depth` layers in a read of x (B, ..., H*in) at the
    states `weights` (B, H, out, in): (B, H, N, in_j) per layer, N the read's tokens, as `memory_apply`
    computes them (the norm and the residual come after the last layer)."""
    a = x.unflatten(-1, (heads, -1))
    inputs = [a.reshape(a.shape[0], -1, heads, a.shape[-1]).transpose(1, 2)]
    for w in weights[:depth - 1]:
        inputs.append(ACTIVATIONS[act](inputs[-1] @ w.transpose(-1, -2)))
    return inputs


def decorrelated_inputs(layers: tuple[int, ...], weights: list[torch.Tensor], x: torch.Tensor, heads: int,
                        act: str) -> list[torch.Tensor | None]:
    """dgd's input of each of the `layers` (0 first), (B, H, N, in_j), in the read at x (the key) of
    the states `weights` (where the gradient is taken); None for the other layers."""
    if not layers:
        return [None] * len(weights)
    xs = layer_inputs(weights, x, heads, act, max(layers) + 1)
    return [xs[j] if j in layers else None for j in range(len(weights))]


def memory_norm(a: torch.Tensor, norm: str) -> torch.Tensor:
    """An MLP memory's normalization of its branch (no learned scale: the memory is the weights)."""
    if norm == "layernorm":
        return (a - a.mean(-1, keepdim=True)) * torch.rsqrt(a.var(-1, unbiased=False, keepdim=True) + EPS)
    if norm == "rmsnorm":
        return a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + EPS)
    return a


def objective(name: str, pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0,
              groups: int = 1) -> torch.Tensor:
    """One loss per token, (..., 1), or one per head with `groups` = heads, (..., H):
    l2 = ½‖p − t‖², dot = −⟨p, t⟩, l1, huber."""
    pred, target = broadcast_pair(pred, target)
    if name == "dot":
        terms = -(pred * target)
    elif name == "l2":
        terms = 0.5 * (pred - target).pow(2)
    elif name == "l1":
        terms = (pred - target).abs()
    else:
        terms = F.huber_loss(pred, target.expand_as(pred), reduction="none", delta=delta)
    return groups_of(terms, groups).sum(-1) if groups > 1 else terms.sum(-1, keepdim=True)


def newton_schulz(x: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Orthogonalize the last two axes (Muon's quintic iteration); a vector is scaled to unit RMS."""
    if x.dim() == 0:
        return x / (x.abs() + EPS)
    if x.dim() < 2 or x.shape[-1] == 1 or x.shape[-2] == 1:
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + EPS)
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.shape[-2] > x.shape[-1]
    y = x.transpose(-2, -1) if tall else x
    y = y / (y.norm(dim=(-2, -1), keepdim=True) + EPS)
    for _ in range(steps):
        s = y @ y.transpose(-2, -1)
        y = a * y + (b * s + c * s @ s) @ y
    return y.transpose(-2, -1) if tall else y


def coefficient(value: torch.Tensor | None, like: torch.Tensor, heads: int) -> torch.Tensor | None:
    """A coefficient (B, 1) or (B, H) or a constant, shaped to scale a state (B, H, ...)."""
    if value is None or value.dim() == 0:
        return value
    per_head = value.shape[-1] == heads and heads > 1
    return value.reshape((value.shape[0], heads if per_head else 1) + (1,) * (like.dim() - 2))


def adam_direction(first: torch.Tensor, second: torch.Tensor, updates: int, rule) -> torch.Tensor:
    """Adam's step before the learning rate, m̂ / (√v̂ + ε), from the moments after `updates` updates.

    v̂ is 0 exactly where every gradient so far was 0 (relu, sign, min and max make such gradients).
    There √ has an infinite derivative, and differentiating the step (the outer level trains through
    it) would give ∞ · 0 = nan. √v̂ is a norm of the past gradients: its derivative at 0 is taken as
    0, the subgradient `torch.linalg.norm` takes, which leaves the step's finite derivative, through m̂.
    Where v̂ > 0 this is m̂ / (√v̂ + ε) exactly."""
    mhat = first / (1 - rule.beta1 ** updates)
    vhat = second / (1 - rule.beta2 ** updates)
    positive = vhat > 0
    root = torch.where(positive, torch.where(positive, vhat, 1.0).sqrt(), 0.0)
    return mhat / (root + rule.eps)


def rule_step(rule, heads: int, cur: list[torch.Tensor], grads: list[torch.Tensor], coeffs: dict,
              buffers, inputs: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """One token's application of an update rule (`spec.Rule`) to a memory's state.

    gd:  m ← β m − lr·P·g (with momentum) then W ← α W + output(m), or W ← α W + output(−lr·P·g);
    dgd: the same plus −lr (W x) xᵀ on each layer given an input x (B, H, in) in `inputs` (the
    layers its `decorrelate` picks, x their input where the gradient is taken; None elsewhere);
    adam: W ← W − lr m̂ / (√v̂ + ε). `buffers` holds `momentum`, `adam` and `updates`, updated in place."""
    lr = coefficient(coeffs["lr"], cur[0], heads)
    retain = coefficient(coeffs.get("retain"), cur[0], heads)
    beta = coefficient(coeffs.get("momentum"), cur[0], heads)
    precond = coefficient(coeffs.get("precond"), cur[0], heads)
    new = []
    if rule.kind == "adam":
        buffers.updates += 1
        first, second = buffers.adam
        for j, (w, g) in enumerate(zip(cur, grads, strict=True)):
            first[j] = rule.beta1 * first[j] + (1 - rule.beta1) * g
            second[j] = rule.beta2 * second[j] + (1 - rule.beta2) * g * g
            new.append(w - lr * adam_direction(first[j], second[j], buffers.updates, rule))
        return new
    for j, (w, g) in enumerate(zip(cur, grads, strict=True)):
        if precond is not None:
            g = precond * g
        if beta is not None:
            buffers.momentum[j] = beta * buffers.momentum[j] - lr * g
            d = buffers.momentum[j]
        else:
            d = -lr * g
        if rule.output_steps:
            d = newton_schulz(d, rule.output_steps)
        base = w if retain is None else retain * w
        x = inputs[j] if inputs is not None else None
        if x is not None:                          # dgd: decorrelate the inputs this layer reads
            x = x.unsqueeze(-1)                    # (B, H, in, 1)
            base = base - lr * (w @ x) @ x.transpose(-2, -1)
        new.append(base + d)
    return new
