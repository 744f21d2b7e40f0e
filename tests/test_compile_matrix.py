"""The compiled training path across shapes and schedules (slow: every cell compiles with inductor).

Every shipped model spec × batch {1, 8, 32} × (for specs with periods) periods that divide each other
and periods that are equal: two training steps through the trainer, as `nldsl train --compile` runs
them (outer optimizer, gradient clipping, teach-signal windows), with losses that are finite and
equal to the eager trainer's. Shapes are small; what varies is what changes the compiled graphs: the
batch, and which memories commit at the end of each segment.

    NLDSL_COMPILE_MATRIX=1 pytest tests/test_compile_matrix.py

It takes about an hour on 2 cores (dozens of inductor compiles), so the README's test command skips it
unless NLDSL_COMPILE_MATRIX=1.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from specutil import ROOT, SPECS

import nldsl
from nldsl.backends.torch.app.config import TrainConfig
from nldsl.backends.torch.app.trainer import Trainer

SMALL = {"vocab": 32, "dim": 16, "heads": 2, "layers": 2, "context": 64, "window": 16, "cms_expand": 2}
# Period settings of the specs that have them: (name, settings) pairs.
SCHEDULES: dict[str, list[tuple[str, dict[str, int]]]] = {
    "hope": [("divide", {"period": 8, "memory_period": 32}), ("equal", {"period": 16, "memory_period": 16})],
}
MODELS = sorted(p.stem for p in SPECS.glob("*.nl"))
CELLS = [(spec, batch, schedule, settings) for spec in MODELS for batch in (1, 8, 32)
         for schedule, settings in SCHEDULES.get(spec, [("default", {})])]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def two_steps(spec: str, batch: int, settings: dict[str, int], compiled: bool) -> list[float]:
    path = SPECS / f"{spec}.nl"
    header = {k for m in nldsl.load_spec(path).models.values() for k in m.config}
    overrides = {k: v for k, v in (SMALL | settings).items() if k in header}
    config = TrainConfig(steps=2, batch=batch, context=SMALL["context"], task="mqar", pairs=4, seed=0,
                         log_every=10**9, checkpoint_every=0, compile=compiled,
                         groups=[("adamw", {"lr": 1e-3}, (), 1)], settings={"clip": 1.0})
    trainer = Trainer(nldsl.load(path, overrides=overrides), {"adamw": nldsl.optimizer(ROOT / "specs/optim/adamw.nl")},
                      config, None)
    trainer.console.quiet = True
    return [trainer.train_step() for _ in range(2)]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NLDSL_COMPILE_MATRIX") != "1",
                    reason="an hour of inductor compiles on 2 cores: run with NLDSL_COMPILE_MATRIX=1")
@pytest.mark.parametrize(("spec", "batch", "schedule", "settings"), CELLS,
                         ids=[f"{s}-b{b}-{sched}" for s, b, sched, _ in CELLS])
def test_compiled_training_steps_equal_eager(spec, batch, schedule, settings):
    eager = two_steps(spec, batch, settings, compiled=False)
    compiled = two_steps(spec, batch, settings, compiled=True)
    assert all(math.isfinite(v) for v in compiled), compiled
    # float32 under inductor's reordered sums agrees to ~1e-6; a CMS that stops learning in context
    # under compile (a bug this matrix missed at 1e-4) moves the second step's loss by ~1e-4
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)
