"""The outer level: the training loop a compiled spec's `train` block describes.

Parameter groups follow `optimize NAMES by OPT(...) every N steps` (names are the spec's local
names; `all` takes the rest); the learning rate follows the `schedule`; gradients are clipped to
`clip`; a group with a period of N steps accumulates gradients and steps every N steps. The loop
writes metrics as JSON lines and checkpoints atomically; a resumed run repeats the losses of an
uninterrupted one exactly. Under `torchrun` it trains data-parallel (DDP: gloo on CPU, NCCL on
GPU): each process takes its slice of the same global batch, so the run matches one process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nldsl.backends.torch.app import checkpoint
from nldsl.backends.torch.app import data as corpora
from nldsl.backends.torch.app import tasks as synthetic
from nldsl.backends.torch.app.config import RunError, TrainConfig

IGNORE = synthetic.IGNORE
Tick = Callable[[int, int], None]     # (done, total): how far an evaluation has come, for a progress bar


def group_keys(table: dict, groups: Iterable[tuple]) -> list[list[str]]:
    """Split the trainable parameters (keys of a parameter table) over the `optimize` groups
    (targets, or () for the rest); a target names a parameter (or a memory's initial state) by its
    name in the spec, in every layer."""
    groups = list(groups)
    claimed: list[list[str]] = [[] for _ in groups]
    rest = next((i for i, g in enumerate(groups) if not g[2]), None)
    for key, info in table.items():
        if not info.trainable:
            continue
        owner = next((i for i, g in enumerate(groups) if info.local in g[2]), rest)
        if owner is not None:
            claimed[owner].append(key)
    return claimed


def param_groups(model: torch.nn.Module, groups: Iterable[tuple]) -> list[list[torch.nn.Parameter]]:
    """The parameters of each `optimize` group (see group_keys)."""
    return [[model.params[k] for k in keys] for keys in group_keys(model.table, groups)]


def schedule_factor(kind: str, warmup: int, min_ratio: float, step: int, steps: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return max(0.0, 1 - progress)
    return 1.0


def token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


def bits_per_byte(model, data: torch.Tensor, context: int, windows: int = 32, batch: int = 4,
                  precision: str = "fp32", tick: Tick | None = None) -> float:
    """Held-out bits per byte over evenly spaced windows (in-context learning stays on)."""
    starts = torch.linspace(0, len(data) - context - 1, windows).long()
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        tok = torch.stack([data[s:s + context + 1] for s in starts[i:i + batch].tolist()]).to(model.device)
        with torch.no_grad(), autocast(model.device, precision):
            logits, _ = model(tok[:, :-1], targets=tok[:, 1:], keep_state=False)
        total += token_loss(logits, tok[:, 1:], "sum").item()
        count += tok[:, 1:].numel()
        if tick is not None:
            tick(min(i + batch, len(starts)), len(starts))
    return total / count / math.log(2)


def task_accuracy(model, stream: Iterator, batches: int = 8, precision: str = "fp32") -> float:
    """Accuracy of the greedy prediction at every scored position (MQAR values, S-NIAH digits)."""
    right, total = 0, 0
    for _ in range(batches):
        x, y = (t.to(model.device) for t in next(stream))
        with torch.no_grad(), autocast(model.device, precision):
            logits, _ = model(x, targets=y, keep_state=False)
        scored = y != IGNORE
        right += (logits.argmax(-1)[scored] == y[scored]).sum().item()
        total += scored.sum().item()
    return right / max(1, total)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def stream(cfg: TrainConfig, vocab: int, train: bool = True, batch: int | None = None) -> Iterator:
    """The (inputs, targets) batches of a run; held-out streams use other seeds (or the held-out text)."""
    batch = batch or cfg.batch
    seed = cfg.seed if train else cfg.seed + 10_007
    if cfg.task == "mqar":
        return synthetic.MQAR(vocab, cfg.context, cfg.pairs, batch, seed)
    if cfg.task == "sniah":
        return synthetic.SNIAH(cfg.context, batch, seed)
    train_data, held = corpora.corpus(cfg.corpus)
    return corpora.Windows(train_data if train else held, batch, cfg.context, seed)


class NonFinite(RunError):
    """Training stopped: the loss, or a state about to be checkpointed, is not a number."""


# ---- will it fit? ----------------------------------------------------------------------------------
# Counted before anything is allocated, from the generated classes' tables alone. Activations are a
# rough bound: the residual stream kept for the backward pass (ACTIVATION_COPIES tensors of batch ×
# context × dim per layer), the logits and their gradient, and each in-context memory's state with
# its gradient, per sequence. Everything is counted in float32.

FLOAT = 4
ACTIVATION_COPIES = 16
LOGIT_COPIES = 3        # logits, their softmax, their gradient


class TooBig(RunError, MemoryError):
    """A model (or run) that would not fit in the memory of the machine or device it was asked to use."""


@dataclass(frozen=True)
class Footprint:
    """Bytes a model needs, by what needs them (a model that only runs needs its parameters)."""

    parameters: int
    gradients: int = 0
    optimizer_states: int = 0
    activations: int = 0

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_states + self.activations

    def __str__(self) -> str:
        parts = [("parameters", self.parameters), ("gradients", self.gradients),
                 ("optimizer states", self.optimizer_states), ("activations ≈", self.activations)]
        shown = " + ".join(f"{name} {size(n)}" for name, n in parts if n)
        return f"{size(self.total)} ({shown})" if self.total != self.parameters else size(self.total)


def size(n: float) -> str:
    """Bytes in decimal units: `1.2 GB`."""
    units = ("bytes", "KB", "MB", "GB", "TB", "PB", "EB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:,.0f} bytes" if i == 0 else f"{n:,.1f} {units[i]}"


def _numel(shape: Iterable[int]) -> int:
    return math.prod(shape)


def footprint(model_class: type, element_bytes: int = FLOAT) -> Footprint:
    """What a model's parameters take (what `nldsl.load` and an evaluation allocate)."""
    return Footprint(parameters=sum(_numel(info.shape) for info in model_class.PARAMS) * element_bytes)


def training_footprint(model_class: type, optimizers: dict[str, type], cfg: TrainConfig, world: int = 1) -> Footprint:
    """What training takes on one process: parameters, their gradients, every optimizer state the
    optimizer specs keep (their STATES: each elementwise state is the size of its parameter, a
    per-element MLP its weights; momentum, Adam moments and a held copy for a state that commits
    every N steps count again), and the activations (see above). Under FSDP the first three are
    sharded over the processes, and a checkpoint gathers the parameters whole on each."""
    table = {info.key: info for info in model_class.PARAMS}
    params = sum(_numel(info.shape) for info in table.values())
    trained = states = 0
    for (name, *_), keys in zip(cfg.groups, group_keys(table, cfg.groups), strict=True):
        numel = sum(_numel(table[k].shape) for k in keys)
        trained += numel
        for state in optimizers[name].STATES.values():
            copies = 1 + (state["period"] > 1) + state["momentum"] + 2 * state["adam"]
            each = numel if state["kind"] == "elementwise" else len(keys) * sum(map(_numel, state["shapes"]))
            states += copies * each
    shards = world if cfg.fsdp else 1
    dim = next(info.shape[-1] for info in model_class.PARAMS if info.key == "embed")
    tokens = cfg.batch * cfg.context
    memories = sum(_numel(shape) for block, _ in model_class.LAYERS
                   for spec in model_class.MEMORIES.get(block, {}).values() for shape in spec.shapes)
    activations = (tokens * (len(model_class.LAYERS) * dim * ACTIVATION_COPIES + model_class.VOCAB * LOGIT_COPIES)
                   + cfg.batch * memories * 2) // world
    return Footprint(parameters=params * FLOAT // shards + (params * FLOAT if shards > 1 else 0),
                     gradients=trained * FLOAT // shards, optimizer_states=states * FLOAT // shards,
                     activations=activations * FLOAT)


def available_memory(device: str) -> int | None:
    """Bytes free on a device: the GPU's free memory, or the machine's available memory (None when
    the system does not say)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def require_memory(need: Footprint, device: str, what: str) -> None:
    """Refuse (TooBig), before allocating, what would not fit in the device's free memory."""
    free = available_memory(device)
    if free is not None and need.total > free:
        raise TooBig(f"{what} needs about {need}, more than the {size(free)} available on {device}: "
                     "make the model smaller (--set dim=..., layers=...) or the batch and context shorter")


def require_device(device: str) -> None:
    """Refuse a device this machine does not have."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise RunError(f"--device {device}: this machine has no CUDA device (torch.cuda.is_available() is "
                           "False); use --device cpu")
        if index >= torch.cuda.device_count():
            raise RunError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


class Trainer:
    """One run: a model, its outer optimizers, a data stream, a folder for metrics and checkpoints."""

    def __init__(self, model, optimizers: dict[str, type], cfg: TrainConfig, out: Path | None,
                 console: Console | None = None) -> None:
        self.cfg, self.out = cfg, out
        self.console = console or Console(highlight=False)
        self.rank, self.world = distributed_start(cfg.device)
        device = torch.device(cfg.device if cfg.device != "cuda" or self.world == 1 else f"cuda:{self.rank}")
        torch.manual_seed(cfg.seed)
        self.model = model.to(device)
        self.sharded = self.world > 1 and cfg.fsdp
        if self.sharded:       # before the optimizers: they must hold the sharded parameters
            from torch.distributed.fsdp import fully_shard
            fully_shard(self.model)
        params = param_groups(self.model, cfg.groups)
        self.opts = [(optimizers[name](ps, **{k: float(v) for k, v in args.items()}), period, dict(args))
                     for (name, args, _, period), ps in zip(cfg.groups, params, strict=True) if ps]
        self.trained = [p for ps in params for p in ps]
        self.data = stream(cfg, model.VOCAB, batch=cfg.batch)
        self.step = 0
        self.phase = 0          # the step the learning-rate schedule started from (continual learning restarts it)
        self.saved: int | None = None     # the step of the last checkpoint written (or resumed from)
        if cfg.compile:
            self.model.compile()
        self.loss_of: torch.nn.Module = _LossOf(self.model)
        if self.world > 1 and not self.sharded:
            self.loss_of = torch.nn.parallel.DistributedDataParallel(
                self.loss_of, broadcast_buffers=False, find_unused_parameters=True)   # see NL074: not every
            # parameter reaches every loss (a memory read only after its period ends, in a short context)

    # ---- one step -----------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self.data)      # the global batch: every process draws it, each keeps its slice
        if self.world > 1:
            x, y = x.chunk(self.world)[self.rank], y.chunk(self.world)[self.rank]
        return x.to(self.model.device), y.to(self.model.device)

    def train_step(self) -> float:
        cfg, sched = self.cfg, self.cfg.settings.get("schedule", ("constant", 0, 0.1))
        factor = schedule_factor(*sched, self.step - self.phase, cfg.steps - self.phase)
        for opt, _, args in self.opts:
            if "lr" not in opt.defaults:
                continue        # an optimizer spec without a learning rate: the schedule has nothing to scale
            for g in opt.param_groups:
                g["lr"] = float(args.get("lr", opt.defaults["lr"])) * factor
        x, y = self._batch()
        with autocast(self.model.device, cfg.precision):
            loss = self.loss_of(x, y)
        loss.backward()
        value = loss.detach().clone()
        if self.world > 1:
            dist.all_reduce(value)      # a sum: gloo has no average
        value = value.item() / self.world
        if not math.isfinite(value):
            raise NonFinite(f"the loss is {value} at step {self.step + 1}: training stopped; {self.kept()}")
        if cfg.settings.get("clip"):
            torch.nn.utils.clip_grad_norm_(self.trained, cfg.settings["clip"])
        for opt, period, _ in self.opts:
            if (self.step + 1) % period == 0:
                opt.step()
                opt.zero_grad()
        self.step += 1
        return value

    # ---- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out / "checkpoint.safetensors" if self.out else None

    def save(self) -> None:
        """Write a checkpoint; every process takes part (sharded parameters are gathered by all, and
        all check that the state is finite), the first writes. A state that is not finite stops
        training and leaves the previous checkpoint in place."""
        if self.checkpoint_path is None:
            return
        meta = {"step": self.step, "model_steps": self.model.steps, "config": self.cfg.model_dump(mode="json")}
        try:
            checkpoint.save(self.checkpoint_path, self.model, [o for o, _, _ in self.opts], meta,
                            {"data": self.data.generator}, write=self.rank == 0)
        except checkpoint.NonFiniteState as e:
            raise NonFinite(f"the state after step {self.step} is not finite ({e}): training stopped; "
                            f"{self.kept()}") from None
        self.saved = self.step

    def kept(self) -> str:
        """Which checkpoint a stopped run leaves, in words."""
        if self.checkpoint_path is None:
            return "this run writes no checkpoints"
        if self.saved is None:
            return f"no checkpoint was written before it, so there is none in {self.out}"
        return f"the checkpoint of step {self.saved} is kept ({self.checkpoint_path})"

    def resume(self, path: Path) -> None:
        meta = checkpoint.load(path, self.model, [o for o, _, _ in self.opts], {"data": self.data.generator})
        self.step, self.model.steps = meta["step"], meta["model_steps"]
        self.saved = self.step
        if self.out and (self.out / "metrics.jsonl").exists() and self.rank == 0:
            # the interrupted run may have logged past its last checkpoint: those steps run again
            lines = (self.out / "metrics.jsonl").read_text().splitlines()
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= self.step]
            (self.out / "metrics.jsonl").write_text("".join(ln + "\n" for ln in kept))

    # ---- the loop ----------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        with self.model.held_out():
            if cfg.task:
                test = stream(cfg, self.model.VOCAB, train=False, batch=max(4, cfg.batch))
                return {f"{cfg.task}_accuracy": task_accuracy(self.model, test, precision=cfg.precision)}
            _, held = corpora.corpus(cfg.corpus)
            return {"heldout_bpb": bits_per_byte(self.model, held, cfg.context, precision=cfg.precision)}

    def log(self, record: dict) -> None:
        if self.out and self.rank == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def fit(self) -> dict[str, float]:
        """Train to `cfg.steps`; returns the final evaluation. Raises NonFinite (after keeping the
        last good checkpoint) when the loss stops being a number."""
        cfg = self.cfg
        tokens_per_step = cfg.batch * cfg.context
        start, first = time.time(), self.step
        paused = 0.0        # evaluations and checkpoints: not training, so not in the tokens/s
        live = self.console.is_terminal and self.rank == 0
        bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                       TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:,.0f} tok/s  ETA"),
                       TimeRemainingColumn(), TimeElapsedColumn(), console=self.console, disable=not live)
        with bar:
            task = bar.add_task("train", total=cfg.steps, completed=self.step, loss=float("nan"), rate=0.0)
            while self.step < cfg.steps:
                loss = self.train_step()
                elapsed = time.time() - start
                if self.step == first + 1:
                    warm = time.time()      # the first step compiles: the rate counts from its end
                rate = ((self.step - first - 1) * tokens_per_step / (time.time() - warm - paused)
                        if self.step > first + 1 else tokens_per_step / elapsed)
                bar.update(task, completed=self.step, loss=loss, rate=rate)
                lr = next(({"lr": g["lr"]} for o, _, _ in self.opts for g in o.param_groups if "lr" in g), {})
                self.log({"step": self.step, "loss": loss, **lr, "tokens": self.step * tokens_per_step,
                          "tok_s": rate, "elapsed": elapsed})
                if not live and self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    self.console.print(f"step {self.step:5d}/{cfg.steps}  loss {loss:.4f}  {rate:,.0f} tok/s",
                                       markup=False)
                pause = time.time()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    result = self.evaluate()
                    self.log({"step": self.step, **result})
                    if self.rank == 0:
                        self.console.print(f"step {self.step:5d}/{cfg.steps}  "
                                           + "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result.items()),
                                           markup=False)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
                paused += time.time() - pause
        self.save()
        result = self.evaluate()
        self.log({"step": self.step, **result})
        return result


class _LossOf(torch.nn.Module):
    """The model's loss as a module's forward, so DDP sees the call it synchronizes on."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(x, targets=y, keep_state=False)
        return token_loss(logits, y)


def distributed_start(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun, join the process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    return dist.get_rank(), world
