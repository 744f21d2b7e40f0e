"""A run folder: everything one training run made, enough to resume it, evaluate it or sample it
without the spec it came from.

    run.json                 what ran: the model class, the spec and overrides, the TrainConfig
    spec/                    the spec files as they were checked (entry file and its imports)
    levels.txt               `nldsl explain` of the spec (the levels the compiler derived)
    code/                    the generated PyTorch that trained (model.py, optim_*.py, train.py)
    metrics.jsonl            one line per step (loss, lr, tokens, tok/s) and per evaluation
    curve.png                training loss and held-out bits per byte (or task accuracy)
    checkpoint.safetensors   the last checkpoint (parameters, optimizer states, RNG, data position)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from nldsl.backends.torch.app import checkpoint
from nldsl.backends.torch.app.config import RunError, TrainConfig, add_arguments, config_from
from nldsl.backends.torch.codegen.load import import_file

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: a run folder that is missing or damaged is reported at once

CHECKPOINT = "checkpoint.safetensors"


class RunInfo(BaseModel):
    model: str                          # the model's name in its spec
    code: str                           # the generated code's folder (relative to the run, or absolute)
    spec: str | None = None             # the entry spec file, as copied under spec/
    overrides: dict[str, float] = {}
    config: TrainConfig
    created: str
    versions: dict[str, str] = {}


def versions() -> dict[str, str]:
    import torch

    from nldsl import __version__
    return {"nldsl": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def write_info(directory: Path, info: RunInfo) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "run.json.tmp"
    tmp.write_text(info.model_dump_json(indent=2) + "\n")
    tmp.replace(directory / "run.json")


def read_info(directory: Path) -> RunInfo:
    """run.json, validated: a folder without one is not a run; a damaged one says what is wrong."""
    path = directory / "run.json"
    if not path.is_file():
        raise RunError(f"{directory} is not a run folder: it has no run.json (`nldsl train SPEC --out DIR` makes one)")
    try:
        return RunInfo.model_validate_json(path.read_bytes())
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise RunError(f"{path} is damaged ({where + ': ' if where else ''}{first['msg']}): "
                       "it cannot describe a run") from None
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class Run:
    """An existing run folder, checked: its settings, its generated code and its checkpoint."""

    directory: Path
    info: RunInfo
    checkpoint: Path
    step: int               # the training step the checkpoint was written at


def open_run(path: str | Path) -> Run:
    """The one check of a run folder (or of a checkpoint file inside one) before it is evaluated,
    sampled or resumed: the folder, run.json and the generated code are there, and the checkpoint
    is whole and unchanged. Whether it is this model's is verified as it loads (checkpoint.load)."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"{p}: no such run folder or checkpoint file")
    directory = p.parent if p.is_file() else p
    info = read_info(directory)
    code = directory / info.code
    for needed in (code / "model.py", *(code / f"optim_{name}.py" for name, *_ in info.config.groups)):
        if not needed.is_file():
            raise RunError(f"{directory} is incomplete: {needed} is missing (the generated code the run trained)")
    ckpt = p if p.is_file() else directory / CHECKPOINT
    if not ckpt.is_file():
        raise RunError(f"{directory} has no checkpoint yet ({CHECKPOINT}): the run stopped before writing one; "
                       "train it again")
    return Run(directory, info, ckpt, int(checkpoint.metadata(ckpt)["step"]))


def _import(path: Path, attribute: str):
    """What a generated module exports (MODEL or OPTIMIZER). A run folder's code is data the user
    brought: if it does not import, the folder is damaged or another nldsl made it."""
    name = f"nldsl_run_{abs(hash(path.resolve()))}_{path.stem}"
    try:
        module = import_file(path, name)
    except Exception as e:
        raise RunError(f"cannot import {path} ({type(e).__name__}: {e}): the run folder is damaged, or another "
                       "version of nldsl made it") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise RunError(f"{path} defines no {attribute}: it is not code nldsl generated")
    return found


def classes(directory: Path, info: RunInfo) -> tuple[type, dict[str, type]]:
    """The model class and the optimizer classes of a run, imported from its generated code."""
    code = directory / info.code
    optimizers = {}
    for name, *_ in info.config.groups:
        optimizers[name] = _import(code / f"optim_{name}.py", "OPTIMIZER")
    return _import(code / "model.py", "MODEL"), optimizers


@dataclass(frozen=True)
class Trained:
    """A run's model with its checkpoint loaded."""

    model: torch.nn.Module
    run: Run


def load_model(path: str | Path, device: str | None = None) -> Trained:
    """The trained model of a run (or of a checkpoint file in one), ready for evaluation."""
    run = open_run(path)
    from nldsl.backends.torch.app.trainer import footprint, require_device, require_memory
    model_class, _ = classes(run.directory, run.info)
    device = device or run.info.config.device
    require_device(device)
    require_memory(footprint(model_class), device, f"{run.info.model}'s parameters")
    model = model_class(seed=run.info.config.seed).to(device)
    meta = checkpoint.load(run.checkpoint, model, [], {})
    model.steps = meta["model_steps"]
    model.eval()
    return Trained(model, run)


def validate(cfg: TrainConfig, model_class: type, optimizers: dict[str, type], corpora: list | None = None) -> None:
    """Refuse (RunError), before a run folder is made or anything is allocated, a run that cannot
    work: data the model cannot take (require_data) or a machine it cannot run on (require_resources)."""
    require_data(cfg, model_class.VOCAB, corpora)
    require_resources(cfg, model_class, optimizers)


def require_data(cfg: TrainConfig, vocab: int, corpora: list | None = None) -> None:
    """Text needs every byte as a token, a task its tokens and length; a corpus must be there, be
    text, and hold more than one window in each part. Needs no torch (a spec's vocab will do)."""
    from nldsl.backends.torch.app import data
    if cfg.task:
        from nldsl.backends.torch.app import tasks
        tasks.require(cfg.task, vocab, cfg.context, cfg.pairs)
    else:
        for name in corpora or [cfg.corpus]:
            data.require_text(name, cfg.context, vocab)


def require_resources(cfg: TrainConfig, model_class: type, optimizers: dict[str, type]) -> None:
    """The device is there, the batch splits over the processes, every optimizer has the
    hyperparameters it is given (--lr), and the run fits in the device's memory."""
    from nldsl.backends.torch.app.trainer import require_device, require_memory, training_footprint
    require_device(cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch % world:
        raise RunError(f"--batch {cfg.batch} does not split evenly over the {world} processes")
    for name, args, _, _ in cfg.groups:
        unknown = sorted(set(args) - set(optimizers[name].DEFAULTS))
        if unknown:
            raise RunError(f"optimizer {name} has no hyperparameter {', '.join(unknown)} "
                           "(--lr sets `lr` of every `optimize` group)")
    require_memory(training_footprint(model_class, optimizers, cfg, world), cfg.device,
                   f"training {model_class.__name__} (batch {cfg.batch} × context {cfg.context})")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def curve(directory: Path) -> Path | None:
    """Plot metrics.jsonl as curve.png: training loss in bits per byte (a byte-level model's loss
    in nats / ln 2) and the held-out evaluations."""
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = directory / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"] / math.log(2)) for r in rows if "loss" in r]
    evals = {k: [(r["step"], r[k]) for r in rows if k in r]
             for k in {k for r in rows for k in r if k.endswith(("_bpb", "_accuracy"))}}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, color="tab:blue", label="train (bits per byte)")
    for name, points in sorted(evals.items()):
        axis = ax.twinx() if name.endswith("_accuracy") else ax
        axis.plot(*zip(*points, strict=True), "o-", color="tab:orange", label=name.replace("_", " "))
        if axis is not ax:
            axis.set_ylabel("accuracy")
            axis.set_ylim(0, 1)
            axis.legend(loc="upper right")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left" if any(k.endswith("_accuracy") for k in evals) else "upper right")
    ax.set_title(read_info(directory).model if (directory / "run.json").is_file() else directory.name)
    fig.tight_layout()
    out = directory / "curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out


# ---- making and training a run ----------------------------------------------------------------------

def require_new(directory: Path) -> None:
    """A new run goes into a folder that does not exist yet, or is empty: never over another run."""
    if directory.is_file():
        raise RunError(f"--out {directory} is a file: name a folder for the run")
    if (directory / "run.json").exists():
        raise RunError(f"{directory} already holds a run: continue it with --resume, or choose another --out")
    if directory.is_dir() and any(directory.iterdir()):
        raise RunError(f"{directory} is not empty: a run folder starts empty; choose another --out")


def create(directory: Path, result, unit: str, overrides: dict[str, float] | None, config: TrainConfig) -> RunInfo:
    """A new run folder for a checked spec (an `nldsl.CheckResult`): its files, its levels, its
    generated code, run.json. Written under a temporary name and renamed: a failure leaves nothing."""
    require_new(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        info = _write_run(staging, result, unit, overrides, config)
        staging.replace(directory)      # onto a missing or empty folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _write_run(directory: Path, result, unit: str, overrides: dict[str, float] | None,
               config: TrainConfig) -> RunInfo:
    from nldsl.backends.torch.codegen.emit import write_package
    from nldsl.report import render

    spec, sources = result.spec, result.sources
    directory.mkdir()
    entry = None
    for shown, source in sources.items():
        # library files show as <specs>/optim/adamw.nl: keep them under spec/specs/
        relative = shown.replace("<specs>", "specs") if shown.startswith("<") else Path(shown).name
        target = directory / "spec" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.text, encoding="utf-8")
        if entry is None and Path(shown).resolve() == Path(spec.file).resolve():
            entry = str(Path("spec") / relative)
    (directory / "levels.txt").write_text(render(result.graph(unit), sources, width=160) + "\n", encoding="utf-8")
    write_package(spec, unit, directory / "code")
    info = RunInfo(model=unit, code="code", spec=entry, overrides=overrides or {}, config=config,
                   created=now(), versions=versions())
    write_info(directory, info)
    return info


def train(directory: Path, resume: bool = False, console=None, steps: int | None = None) -> dict[str, float]:
    """Train (or go on training, to `steps` when given) the run in `directory`; the curve is redrawn
    however it ends. A resumed run's run.json takes the new step count once its checkpoint loads."""
    from nldsl.backends.torch.app.trainer import Trainer
    existing = open_run(directory) if resume else None
    info = existing.info if existing else read_info(directory)
    info.config.steps = steps or info.config.steps
    if existing and existing.step > info.config.steps:
        raise RunError(f"--steps {info.config.steps}: the run's checkpoint is already at step {existing.step}")
    model_class, optimizers = classes(directory, info)
    validate(info.config, model_class, optimizers)
    trainer = Trainer(model_class(seed=info.config.seed), optimizers, info.config, directory, console)
    if existing:
        trainer.resume(existing.checkpoint)
        if trainer.rank == 0:
            write_info(directory, info)
    elif (directory / "metrics.jsonl").exists() and trainer.rank == 0:
        (directory / "metrics.jsonl").unlink()
    try:
        return trainer.fit()
    finally:
        if trainer.rank == 0:
            curve(directory)


def continual(directory: Path, corpora: list[str], console=None) -> list[dict[str, float]]:
    """Train on each corpus in turn for `config.steps` steps (the schedule restarts with each), and
    after each phase measure held-out bits per byte on every corpus: forgetting is how much the bpb
    on an earlier corpus rises while later ones are learned. Writes continual.json."""
    from nldsl.backends.torch.app import data
    from nldsl.backends.torch.app.trainer import Trainer, bits_per_byte
    info = read_info(directory)
    model_class, optimizers = classes(directory, info)
    validate(info.config, model_class, optimizers, corpora)
    steps = info.config.steps
    held = {name: data.corpus(name)[1] for name in corpora}
    trainer = Trainer(model_class(seed=info.config.seed), optimizers, info.config, directory, console)
    rows = []
    for i, name in enumerate(corpora):
        trainer.cfg.corpus, trainer.cfg.steps, trainer.phase = name, steps * (i + 1), steps * i
        trainer.data = data.Windows(data.corpus(name)[0], info.config.batch, info.config.context, info.config.seed + i)
        trainer.fit()
        row = {"after": name, "step": trainer.step}
        row.update({f"{other}_bpb": bits_per_byte(trainer.model, held[other], info.config.context,
                                                  precision=info.config.precision) for other in corpora})
        rows.append(row)
    (directory / "continual.json").write_text(json.dumps(rows, indent=2) + "\n")
    curve(directory)
    return rows


def leader_writes(device: str, write) -> None:
    """Under torchrun only the first process writes the run folder; the others wait for it, and
    fail with it if it refuses (RunError), rather than wait forever."""
    import torch

    from nldsl.backends.torch.app.trainer import distributed_start
    rank, world = distributed_start(device)
    refused = None
    if rank == 0:
        try:
            write()
        except RunError as e:
            refused = str(e)
    if world > 1:
        box = [refused]
        torch.distributed.broadcast_object_list(box, src=0)
        refused = box[0]
    if refused is not None:
        raise RunError(refused)


def main(code: Path, model: str, groups: list, settings: dict) -> None:
    """The command line of a generated train.py: a run folder around the code next to it."""
    try:
        _main(code, model, groups, settings)
    except RunError as e:
        sys.exit(f"error: {e}")


def _main(code: Path, model: str, groups: list, settings: dict) -> None:
    import argparse

    import torch
    p = argparse.ArgumentParser(description=f"Train {model} (compiled by nldsl).")
    add_arguments(p, {**settings, "steps": None})    # a resumed run keeps its own step count unless told
    p.add_argument("--out", default=f"runs/{model.lower()}", help="the run folder (metrics, checkpoint, curve)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    args = p.parse_args()
    directory = Path(args.out)
    if not args.resume:
        args.steps = args.steps or settings.get("steps", 100)
        config = config_from(args, groups, settings)
        model_class = _import(code / "model.py", "MODEL")
        validate(config, model_class, {name: _import(code / f"optim_{name}.py", "OPTIMIZER") for name, *_ in groups})

        def write() -> None:
            require_new(directory)
            write_info(directory, RunInfo(model=model, code=str(code.resolve()), config=config, created=now(),
                                          versions=versions()))

        leader_writes(args.device, write)
    result = train(directory, resume=args.resume, steps=args.steps if args.resume else None)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    print("  ".join(f"{k.replace('_', ' ')}: {v:.4f}" for k, v in result.items()))
