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

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from nldsl.backends.torch.config import TrainConfig, add_arguments, config_from
from pydantic import BaseModel

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
    from nldsl import __version__
    return {"nldsl": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def write_info(directory: Path, info: RunInfo) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "run.json.tmp"
    tmp.write_text(info.model_dump_json(indent=2) + "\n")
    tmp.replace(directory / "run.json")


def read_info(directory: Path) -> RunInfo:
    path = directory / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a run folder (it has no run.json)")
    return RunInfo.model_validate_json(path.read_text())


def run_folder(path: str | Path) -> Path:
    """A run folder, from the folder itself or from a checkpoint file inside it."""
    p = Path(path)
    return p.parent if p.is_file() else p


def _import(path: Path, attribute: str):
    """What a generated module exports (MODEL or OPTIMIZER)."""
    name = f"nldsl_run_{abs(hash(path.resolve()))}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return getattr(sys.modules[name], attribute)


def classes(directory: Path, info: RunInfo) -> tuple[type, dict[str, type]]:
    """The model class and the optimizer classes of a run, imported from its generated code."""
    code = directory / info.code
    optimizers = {}
    for name, *_ in info.config.groups:
        optimizers[name] = _import(code / f"optim_{name}.py", "OPTIMIZER")
    return _import(code / "model.py", "MODEL"), optimizers


def load_model(path: str | Path, device: str | None = None):
    """The trained model of a run (or of a checkpoint file), ready for evaluation."""
    from nldsl.backends.torch import checkpoint
    directory = run_folder(path)
    info = read_info(directory)
    model_class, _ = classes(directory, info)
    model = model_class(seed=info.config.seed).to(device or info.config.device)
    ckpt = Path(path) if Path(path).is_file() else directory / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"{directory} has no checkpoint yet ({CHECKPOINT})")
    meta = checkpoint.load(ckpt, model, [], {})
    model.steps = meta["model_steps"]
    model.eval()
    return model, info


def checkpoint_step(path: str | Path) -> int:
    """The training step a run's checkpoint (or a checkpoint file) was written at."""
    from nldsl.backends.torch import checkpoint
    ckpt = Path(path) if Path(path).is_file() else Path(path) / CHECKPOINT
    return int(checkpoint.metadata(ckpt).get("step", 0))


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

def create(directory: Path, result, unit: str, overrides: dict[str, float] | None, config: TrainConfig) -> RunInfo:
    """A new run folder for a checked spec (an `nldsl.CheckResult`): its files, its levels, its
    generated code, run.json."""
    from nldsl.backends.torch.emit import write_package

    from nldsl.report import render

    spec, sources = result.spec, result.sources

    directory.mkdir(parents=True, exist_ok=True)
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


def train(directory: Path, resume: bool = False, console=None) -> dict[str, float]:
    """Train (or go on training) the run in `directory`; the curve is redrawn however it ends."""
    from nldsl.backends.torch.trainer import Trainer
    info = read_info(directory)
    model_class, optimizers = classes(directory, info)
    trainer = Trainer(model_class(seed=info.config.seed), optimizers, info.config, directory, console)
    if resume:
        ckpt = directory / CHECKPOINT
        if not ckpt.is_file():
            raise FileNotFoundError(f"{directory} has no checkpoint to resume from")
        trainer.resume(ckpt)
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
    from nldsl.backends.torch import data
    from nldsl.backends.torch.trainer import Trainer, bits_per_byte
    info = read_info(directory)
    model_class, optimizers = classes(directory, info)
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
    """Under torchrun only the first process writes the run folder; the others wait for it."""
    from nldsl.backends.torch.trainer import distributed_start
    rank, world = distributed_start(device)
    if rank == 0:
        write()
    if world > 1:
        torch.distributed.barrier()


def main(code: Path, model: str, groups: list, settings: dict) -> None:
    """The command line of a generated train.py: a run folder around the code next to it."""
    import argparse
    p = argparse.ArgumentParser(description=f"Train {model} (compiled by nldsl).")
    add_arguments(p, {**settings, "steps": None})    # a resumed run keeps its own step count unless told
    p.add_argument("--out", default=f"runs/{model.lower()}", help="the run folder (metrics, checkpoint, curve)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    args = p.parse_args()
    directory = Path(args.out)

    def write() -> None:
        if args.resume:
            info = read_info(directory)
            info.config.steps = args.steps or info.config.steps
        else:
            args.steps = args.steps or settings.get("steps", 100)
            info = RunInfo(model=model, code=str(code.resolve()), config=config_from(args, groups, settings),
                           created=now(), versions=versions())
        write_info(directory, info)

    leader_writes(args.device, write)
    result = train(directory, resume=args.resume)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    print("  ".join(f"{k.replace('_', ' ')}: {v:.4f}" for k, v in result.items()))
