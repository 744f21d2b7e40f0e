"""Everything generated code calls, under the one name it imports (`rt`): the memory facts it writes
down, the reads, the named kernels (`nldsl.lower.Kernel`: one function per value) and the per-segment
bookkeeping. Generated code reaches the runtime through this list only; `tests/test_emit.py` checks
that every kernel lowering can choose, and every name generated code uses, is here.
"""

from nldsl.backends.torch.runtime.dgd_momentum import period_dgd_momentum
from nldsl.backends.torch.runtime.in_chunk import in_chunk, read_in_chunk
from nldsl.backends.torch.runtime.memory import (
    NEVER,
    MemSpec,
    Rule,
    apply,
    attention,
    chunk_delta_rule,
    chunk_linear_attention,
    commit,
    conv,
    generic_update,
    merged,
    period_dgd,
    period_gd,
    period_momentum,
    read_committed,
    read_current,
    read_static,
    remember,
    stacked,
    state_of,
    teach,
    teach_coefficients,
)

__all__ = [
    "NEVER", "MemSpec", "Rule", "apply", "attention", "chunk_delta_rule", "chunk_linear_attention", "commit", "conv",
    "generic_update", "in_chunk", "merged", "period_dgd", "period_dgd_momentum", "period_gd", "period_momentum",
    "read_committed", "read_current", "read_in_chunk", "read_static", "remember", "stacked", "state_of", "teach",
    "teach_coefficients",
]
