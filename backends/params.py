"""Outer-level parameters as a module: built from the lowered parameter table, named canonically.

Both backends hold their parameters this way, so `load_state_dict` moves weights between the
reference interpreter and the compiled model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from nldsl.lower import ParamInfo, init_tensor


def key(name: str) -> str:
    """ParameterDict keys cannot contain dots; canonical names use them."""
    return name.replace(".", "__")


def make_parameters(table: dict[str, ParamInfo], seed: int, dtype: torch.dtype) -> nn.ParameterDict:
    generator = torch.Generator().manual_seed(seed)
    return nn.ParameterDict({key(name): nn.Parameter(init_tensor(info, generator, dtype), requires_grad=info.trainable)
                             for name, info in table.items()})


def get(params: nn.ParameterDict, name: str) -> torch.Tensor:
    return params[key(name)]
