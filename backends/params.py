"""Outer-level parameters as a module: built from the lowered parameter table, keyed by `ParamInfo.key`.

Both backends hold their parameters this way, so `load_state_dict` moves weights between the
reference interpreter and the compiled model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from nldsl.lower import ParamInfo, layer_view


def init_tensor(info: ParamInfo, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A freshly initialized tensor for one parameter."""
    shape = info.shape
    if info.init == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype) * info.std
    if info.init == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if info.init == "ones":
        return torch.ones(shape, dtype=dtype)
    if info.init == "eye":
        return torch.eye(shape[-1], dtype=dtype).expand(shape).clone()
    if info.init == "layernorm":
        return torch.stack([torch.ones(shape[1], dtype=dtype), torch.zeros(shape[1], dtype=dtype)])
    t = torch.zeros(shape, dtype=dtype)   # conv: the identity on the current token
    t[:, -1] = 1.0
    return t


def make_parameters(table: dict[str, ParamInfo], seed: int, dtype: torch.dtype) -> nn.ParameterDict:
    generator = torch.Generator().manual_seed(seed)
    return nn.ParameterDict({key: nn.Parameter(init_tensor(info, generator, dtype), requires_grad=info.trainable)
                             for key, info in table.items()})


def views(table: dict[str, ParamInfo], layers: list[tuple[str, int]]) -> list[dict[str, str]]:
    """For each (block, layer): the names its code uses → parameter keys."""
    return [layer_view(table, block, layer) for block, layer in layers]


def resolve(params: nn.ParameterDict, view: dict[str, str]) -> dict[str, torch.Tensor]:
    """A layer's tensors under the names its code uses."""
    return {name: params[key] for name, key in view.items()}
