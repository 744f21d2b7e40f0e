"""A training run's settings: the options `nldsl train` and a generated train.py share, and the
pydantic model they become (saved in run.json). Kept free of torch so the CLI starts fast."""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import BaseModel


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


def add_arguments(p, settings: dict) -> None:
    """The training options `nldsl train` and a generated train.py share."""
    p.add_argument("--steps", type=int, default=settings.get("steps", 100), help="optimizer steps")
    p.add_argument("--batch", type=int, default=settings.get("batch", 8), help="sequences per step (global)")
    p.add_argument("--context", type=int, default=settings.get("context", 256), help="tokens per sequence")
    p.add_argument("--corpus", help="shakespeare (default), sotu, moby-dick, or a text file or folder")
    p.add_argument("--task", choices=["mqar", "sniah"], help="train on a synthetic memory task instead of text")
    p.add_argument("--pairs", type=int, default=8, help="MQAR key-value pairs per sequence")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast matmuls to bfloat16, memories and parameters stay float32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile every block (fullgraph)")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun, shard parameters and optimizer states over the processes (FSDP2)")
    p.add_argument("--lr", type=float, help="learning rate of every `optimize` group (default: the train block's)")
    p.add_argument("--warmup", type=int, help="warm-up steps of the schedule (default: the train block's)")
    p.add_argument("--seed", type=int, default=settings.get("seed", 0))
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0, help="held-out evaluation every N steps (0: at the end)")
    p.add_argument("--checkpoint-every", type=int, default=100)


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


