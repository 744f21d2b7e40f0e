"""The compiled segment step runs under torch.compile(fullgraph=True): one graph per distinct
pattern of which memories commit at a segment's end (plus one while attention caches warm up)."""

from __future__ import annotations

import pytest
import torch
from specutil import SPECS

import nldsl
from nldsl.backends.torch.codegen.load import model_class

SMALL = {"dim": 16, "heads": 2, "layers": 1, "context": 128, "vocab": 17, "window": 8}


def small(name: str, dtype=torch.float32):
    r = nldsl.check_file(SPECS / f"{name}.nl")
    header = {k for m in r.spec.models.values() for k in m.config}
    return model_class(nldsl.load_spec(SPECS / f"{name}.nl",
                                       overrides={k: v for k, v in SMALL.items() if k in header}))(seed=0, dtype=dtype)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def patterns(model, length: int) -> int:
    """Distinct commit patterns of the memories whose commits happen inside the segment step."""
    step = model.SEGMENT or length
    periods = [m.period for mems in model.MEMORIES.values() for m in mems.values() if m.teach is None]
    return len({tuple((end % p == 0) for p in periods) for end in range(step, length + 1, step)})


@pytest.mark.parametrize("name", ["hope", "titans", "self_modifying_titans", "cms", "deltanet", "transformer"])
def test_one_graph_per_firing_pattern(name):
    model = small(name)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager, _ = model(torch.randint(0, 17, (2, 128), generator=torch.Generator().manual_seed(0)))
    model.compile(backend=counting)
    for seed in range(3):   # three training steps: nothing recompiles once every pattern was seen
        tok = torch.randint(0, 17, (2, 128), generator=torch.Generator().manual_seed(seed))
        out, _ = model(tok)
        out.float().sum().backward()
        if seed == 0:
            torch.testing.assert_close(out, eager)
    attention = any(not m.parametric for b in nldsl.load_spec(SPECS / f"{name}.nl").models[model.__class__.__name__]
                    .blocks for m in b.memories.values())
    assert len(graphs) <= patterns(model, 128) + attention, f"{len(graphs)} graphs"


@pytest.mark.slow
def test_inductor_compiles_and_matches_eager():
    model = small("deltanet", torch.float64)      # float64: inductor's reordered sums stay within 1e-10
    tok = torch.randint(0, 17, (2, 64), generator=torch.Generator().manual_seed(0))
    eager, _ = model(tok)
    model.compile()
    compiled, _ = model(tok)
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-10)
