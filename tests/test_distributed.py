"""Data-parallel training under torchrun (gloo on CPU): two processes, each with half of the global
batch, train the same model as one process with the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from specutil import ROOT, SPECS

from nldsl.backends.torch.app.checkpoint import metadata

BIN = Path(sys.executable).parent
TORCHRUN = str(BIN / "torchrun") if (BIN / "torchrun").exists() else shutil.which("torchrun")
NLDSL = str(BIN / "nldsl") if (BIN / "nldsl").exists() else shutil.which("nldsl")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available() or TORCHRUN is None,
                                reason="needs torch.distributed with gloo, and torchrun")

# linear attention trains with sgd(lr = 0.1): the loss moves within a few steps
ARGS = [str(SPECS / "linear_attention.nl"), "--set", "dim=32", "--set", "layers=1", "--context", "64",
        "--batch", "4", "--steps", "8", "--seed", "3", "--checkpoint-every", "4", "--sample", "0"]


def launch(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    launch([NLDSL, "train", *ARGS, "--out", str(one)])
    done = launch([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "nldsl.cli", "train", *ARGS,
                   "--out", str(two)])
    return one, two, done.stdout


def test_two_processes_match_one(runs: tuple[Path, Path, str]) -> None:
    one, two, _ = runs
    a = [(r["step"], r["loss"]) for r in records(one) if "loss" in r]
    b = [(r["step"], r["loss"]) for r in records(two) if "loss" in r]
    assert [s for s, _ in b] == list(range(1, 9)), "one line per step: only the first process logs"
    assert a[0][1] - a[-1][1] > 0.05, "the losses should move"
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=1e-4), f"step {step}"
    assert records(two)[-1]["heldout_bpb"] == pytest.approx(records(one)[-1]["heldout_bpb"], rel=1e-4)
    assert [r["tokens"] for r in records(two) if "loss" in r] == [r["tokens"] for r in records(one) if "loss" in r]


def test_first_process_writes_the_run_folder(runs: tuple[Path, Path, str]) -> None:
    _, two, stdout = runs
    assert metadata(two / "checkpoint.safetensors")["step"] == 8
    assert not list(two.glob("*.tmp")) and (two / "curve.png").is_file()
    assert stdout.count("heldout bpb") == 1, "only the first process reports"
    info = json.loads((two / "run.json").read_text())
    assert info["config"]["batch"] == 4, "the batch is the global batch"


# Hope with AdamW: self-modifying memories, teach signals and per-shard optimizer states
FSDP_ARGS = [str(SPECS / "hope.nl"), "--set", "dim=32", "--set", "layers=1", "--context", "64", "--batch", "4",
             "--steps", "6", "--seed", "1", "--checkpoint-every", "3", "--sample", "0"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    one, two = root / "one", root / "two"
    launch([NLDSL, "train", *FSDP_ARGS, "--out", str(one)])
    launch([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "nldsl.cli", "train", *FSDP_ARGS, "--fsdp",
            "--out", str(two)])
    return one, two


def test_fsdp_matches_one_process(sharded: tuple[Path, Path]) -> None:
    one, two = sharded
    a = [r["loss"] for r in records(one) if "loss" in r]
    b = [r["loss"] for r in records(two) if "loss" in r]
    assert len(a) == len(b) == 6
    assert b == pytest.approx(a, rel=1e-4)


def test_fsdp_checkpoint_is_whole(sharded: tuple[Path, Path]) -> None:
    """The sharded run's checkpoint holds whole tensors: the same as the one-process checkpoint."""
    from safetensors.torch import load_file
    one, two = sharded
    a, b = load_file(str(one / "checkpoint.safetensors")), load_file(str(two / "checkpoint.safetensors"))
    params = [k for k in a if k.startswith(("param.", "opt"))]
    assert params and set(params) <= set(b)
    for k in params:
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-6), k
