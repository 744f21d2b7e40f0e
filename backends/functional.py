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


def reduce(x: torch.Tensor, groups: int, mean: bool) -> torch.Tensor:
    g = groups_of(x, groups)
    return g.mean(-1) if mean else g.sum(-1)


def conv_window(window: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A causal depthwise convolution at one time: `window` holds the last K inputs, oldest first,
    (..., K, w); `weight` is (w, K) with the current token last."""
    return (window * weight.transpose(0, 1)).sum(-2)


def causal_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution over a whole sequence (B, T, w), zero history before the first token."""
    k = weight.shape[1]
    padded = F.pad(x.transpose(1, 2), (k - 1, 0))
    return F.conv1d(padded, weight.unsqueeze(1), groups=weight.shape[0]).transpose(1, 2)


def memory_apply(kind: str, weights: list[torch.Tensor], x: torch.Tensor, heads: int, act: str = "identity",
                 residual: bool = False, norm: str = "none") -> torch.Tensor:
    """Read a parametric memory: x (..., H*in) → (..., H*out). Each weight is (..., H, out, in) with
    leading axes that broadcast against x's; an elementwise memory has one state (..., H, in)."""
    xh = x.unflatten(-1, (heads, x.shape[-1] // heads))
    if kind == "elementwise":
        return (weights[0] * xh).flatten(-2)
    a = xh
    for j, w in enumerate(weights):
        a = torch.einsum("...oi,...i->...o", w, a)
        if j < len(weights) - 1:
            a = ACTIVATIONS[act](a)
    if norm == "layernorm":
        a = (a - a.mean(-1, keepdim=True)) * torch.rsqrt(a.var(-1, unbiased=False, keepdim=True) + EPS)
    elif norm == "rmsnorm":
        a = a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + EPS)
    if residual:
        a = a + xh
    return a.flatten(-2)


def objective(name: str, pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """One loss per token, (..., 1): l2 = ½‖p − t‖², dot = −⟨p, t⟩, l1, huber."""
    pred, target = broadcast_pair(pred, target)
    if name == "dot":
        return -(pred * target).sum(-1, keepdim=True)
    diff = pred - target
    if name == "l2":
        return 0.5 * diff.pow(2).sum(-1, keepdim=True)
    if name == "l1":
        return diff.abs().sum(-1, keepdim=True)
    return F.huber_loss(pred, target, reduction="none", delta=delta).sum(-1, keepdim=True)


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
