"""Stage 4, lower: a checked model → what every backend executes the same way.

- `params`: the parameter table (keys, shapes, initializations), shared by the reference
  interpreter, the compiled model, the trainer and checkpoints;
- `order`: the order of work inside one token;
- `kernels`: the kernel each memory is bound to, chosen from its pattern;
- `ir`: each block as typed statements, with every decision about how it runs made.
"""

from nldsl.lower.ir import (
    Assign,
    Commit,
    FusedRead,
    LoweredBlock,
    Statement,
    TeachCoefficients,
    Update,
    lower_block,
    lower_objective,
)
from nldsl.lower.kernels import (
    FUSED,
    PERIOD,
    Binding,
    Kernel,
    Read,
    bind,
    read_sites,
    segment_length,
    teach_kernel,
)
from nldsl.lower.order import Step, deferred, token_order
from nldsl.lower.params import (
    SHARED,
    ParamInfo,
    layer_view,
    memory_key,
    memory_parts,
    memory_shapes,
    parameter_table,
    state_parts,
)

__all__ = [
    "FUSED", "PERIOD", "SHARED", "Assign", "Binding", "Commit", "FusedRead", "Kernel", "LoweredBlock", "ParamInfo",
    "Read", "Statement", "Step", "TeachCoefficients", "Update", "bind", "deferred", "layer_view", "lower_block",
    "lower_objective", "memory_key", "memory_parts", "memory_shapes", "parameter_table", "read_sites",
    "segment_length", "state_parts", "teach_kernel", "token_order",
]
