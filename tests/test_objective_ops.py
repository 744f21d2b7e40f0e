"""Every op of the vocabulary inside a `learn` objective, on the memory's output and on its input:
either a positioned diagnostic, or compiled code equal to the reference interpreter (float64,
logits, states and gradients). An objective runs inside the update, away from the block: this is
the class of spec that once compiled to code raising NameError or KeyError (conv or another
memory's read on `self`'s output)."""

from __future__ import annotations

import pytest
from test_compile_exact import compare

import nldsl
from nldsl import catalog

# One call per built-in function, on `x`: the positional arguments each needs besides it.
EXTRA = {"conv": ", 2", "min": ", k", "max": ", k"}
OPTIONS = {"rope": ", groups = heads", "rmsnorm": ", groups = heads", "layernorm": ", groups = heads",
           "l2norm": ", groups = heads", "sum": ", groups = heads", "mean": ", groups = heads"}
APPLIED = {f"{name}": f"{name}({{x}}{EXTRA.get(name, '')}{OPTIONS.get(name, '')})" for name in catalog.FUNCTIONS}
APPLIED |= {"static memory": "C({x})", "learned memory": "L({x})", "attention": "A({x}, k, k)",
            # inside their domain, and not so steep that the memory's own update overflows
            "exp": "exp(0.1 * {x})", "log": "log(1 + square({x}))", "sqrt": "sqrt(1 + square({x}))",
            "parameter": "{x} * g"}

BLOCK = """model X(vocab = 13, dim = 8, heads = 2, context = 32) {{
  block {{
    memory A : attention(window = 4) per head
    memory C : mlp(expand = 2, act = tanh, residual) per head init learned
    memory L : matrix per head init zeros
    memory M : mlp(expand = 2, act = tanh, residual) per head init learned
    param g : vector(dim)
    k = l2norm(h, groups = heads)
    learn L : l2(self(k), h) by gd(lr = 0.2) every 4 tokens read before
    learn M : l2({objective}, h) by {rule}
    h = h + M(k) + L(k) + C(k) + A(k, k, h)
  }}
}}
"""


# the kernels an objective runs in: closed form per period, per-token gradients (Adam), in-chunk reads
RULES = {"period": "gd(lr = 0.3) every 4 tokens", "generic": "adam(lr = 0.01) every 4 tokens",
         "in_chunk": "gd(lr = 0.3) every token chunk 4"}


# Found by this test and not fixed yet (strict: each turns red when it starts to pass, so that its
# entry goes): (name, place, rule) → why. Every case passes now.
KNOWN: dict[tuple[str, str, str], str] = {}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("place", ["output", "input"])
@pytest.mark.parametrize("name", sorted(APPLIED))
def test_op_in_objective(name, place, rule, request):
    if (name, place, rule) in KNOWN:
        request.applymarker(pytest.mark.xfail(reason=KNOWN[name, place, rule], strict=True))
    call = APPLIED[name]
    objective = call.format(x="self(k)") if place == "output" else f"self({call.format(x='k')})"
    result = nldsl.check_text(BLOCK.format(objective=objective, rule=RULES[rule]), "objective.nl")
    errors = result.errors
    if errors:
        assert all(d.code.startswith("NL") and d.span.line > 0 for d in errors), result.render()
        return
    compare(result.spec, tok=None)
