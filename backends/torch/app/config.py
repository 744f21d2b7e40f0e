"""A training run's settings: the options `nldsl train` and a generated train.py share, the
pydantic model they become (saved in run.json), and the one place numbers on the command line are
validated. Kept free of torch so the CLI starts fast."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, field_validator


class RunError(Exception):
    """A mistake in what a command was given (a setting that does not fit the model, data, a run
    folder, a checkpoint, the machine): the command line prints it as one `error:` line and exits 1.
    Anything else that escapes a command is a bug in nldsl."""


class UsageError(Exception):
    """A command line that cannot mean anything (flags that contradict each other): exit 2."""


class TrainConfig(BaseModel):
    """Everything a run needs besides the model: saved as run.json, read back by --resume."""

    steps: int = 100
    batch: int = 8
    context: int = 256
    corpus: str | None = None           # a corpus name (shakespeare, sotu, moby-dick) or a path
    task: Literal["mqar", "sniah"] | None = None
    pairs: int = 8                      # MQAR key–value pairs
    device: str = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    fsdp: bool = False                  # under torchrun: shard the parameters (FSDP2) instead of replicating them
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0                 # 0: evaluate at the end only
    checkpoint_every: int = 100
    groups: list[tuple[str, dict[str, float], tuple[str, ...], int]] = []
    settings: dict = {}

    @field_validator("groups")
    @classmethod
    def _optimizer_names(cls, groups: list) -> list:
        """An optimizer's name picks its generated file (optim_NAME.py): it must stay a plain name."""
        for name, *_ in groups:
            if not name.isidentifier():
                raise ValueError(f"optimizer name {name!r} is not an identifier")
        return groups


# ---- numbers on the command line -----------------------------------------------------------------
# Every numeric flag of every command is parsed by one of these, so a bad number is a usage error
# (exit 2) that names the flag, never a crash later on.

SEED_LIMIT = 2**32       # torch generators take 64-bit seeds; runs add small offsets to theirs


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            limits = f"from {low} to {high}" if high is not None else f"≥ {low}"
            raise argparse.ArgumentTypeError(f"expects a whole number {limits}, got {text!r}")
        return value
    return parse


def real(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number ≥ low (> low when `strict`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expects a finite number {'>' if strict else '≥'} {low:g}, "
                                             f"got {text!r}")
        return value
    return parse


def override(text: str) -> tuple[str, float]:
    """`--set NAME=NUMBER`: a header parameter's name and a finite value (nan, inf and numbers too
    large for a float, like 1e400, are refused here; whether the value suits the spec is for the
    checker to say)."""
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()) or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expects NAME=NUMBER with a finite number, got {text!r}")
    return name.strip(), number


def device_name(text: str) -> str:
    """`--device`: cpu, cuda or cuda:N (whether this machine has it is checked when a run starts)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expects cpu, cuda or cuda:N, got {text!r}")
    return text


def add_arguments(p, settings: dict) -> None:
    """The training options `nldsl train` and a generated train.py share."""
    p.add_argument("--steps", type=whole(1), default=settings.get("steps", 100), help="optimizer steps")
    p.add_argument("--batch", type=whole(1), default=settings.get("batch", 8), help="sequences per step (global)")
    p.add_argument("--context", type=whole(1), default=settings.get("context", 256), help="tokens per sequence")
    p.add_argument("--corpus", help="shakespeare (default), sotu, moby-dick, or a text file or folder")
    p.add_argument("--task", choices=["mqar", "sniah"], help="train on a synthetic memory task instead of text")
    p.add_argument("--pairs", type=whole(1), default=8, help="MQAR key-value pairs per sequence")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast matmuls to bfloat16, memories and parameters stay float32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile every block (fullgraph)")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun, shard parameters and optimizer states over the processes (FSDP2)")
    p.add_argument("--lr", type=real(0, strict=True),
                   help="learning rate of every `optimize` group (default: the train block's)")
    p.add_argument("--warmup", type=whole(0), help="warm-up steps of the schedule (default: the train block's)")
    p.add_argument("--seed", type=whole(0, SEED_LIMIT - 1), default=settings.get("seed", 0))
    p.add_argument("--log-every", type=whole(1), default=10, help="print a line every N steps (off a terminal)")
    p.add_argument("--eval-every", type=whole(0), default=0, help="held-out evaluation every N steps (0: at the end)")
    p.add_argument("--checkpoint-every", type=whole(1), default=100, help="write a checkpoint every N steps")


def config_from(args, groups: list, settings: dict) -> TrainConfig:
    if getattr(args, "lr", None) is not None:
        groups = [(name, {**opts, "lr": args.lr}, targets, period) for name, opts, targets, period in groups]
    if getattr(args, "warmup", None) is not None and settings.get("schedule"):
        kind, _, floor = settings["schedule"]
        settings = {**settings, "schedule": (kind, args.warmup, floor)}
    return TrainConfig(steps=args.steps, batch=args.batch, context=args.context, corpus=args.corpus, task=args.task,
                       pairs=args.pairs, device=args.device, precision=args.precision, compile=args.compile,
                       fsdp=args.fsdp, seed=args.seed, log_every=args.log_every, eval_every=args.eval_every,
                       checkpoint_every=args.checkpoint_every, groups=groups, settings=settings)
