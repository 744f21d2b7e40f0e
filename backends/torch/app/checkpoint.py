"""Checkpoints: every tensor in one safetensors file (written to a temporary name, then renamed, so
a crash leaves the previous checkpoint whole), the rest as JSON metadata inside the same file.
Nothing is ever unpickled. Under FSDP every process takes part (a sharded parameter, and the
optimizer states of its shard, are gathered whole to be written and scattered again when read), and
one process writes: a checkpoint does not depend on how many processes made it.

A checkpoint says what it is and that it is intact, and `load` verifies both before it restores
anything: a SHA-256 over the metadata and every tensor's bytes (corruption, truncation, tensors
added or removed), the parameter table (key and shape: another width or depth), and the SHA-256 of
the generated code of the model and of each optimizer (another spec, or other settings of it). A
state that is not finite is never written: the previous checkpoint stays.

The file checks (whole, unchanged, written by nldsl) need no torch: torch is imported by the
functions that move tensors, so a damaged checkpoint is reported before torch has loaded."""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nldsl.backends.torch.app.config import RunError

if TYPE_CHECKING:
    import torch

META, DIGEST = "nldsl", "nldsl.sha256"      # the safetensors metadata keys this module writes


class CheckpointError(RunError):
    """A checkpoint that cannot be restored into this model: missing, damaged, or another model's."""


class NonFiniteState(ValueError):
    """A state that is not finite: never written, so the previous checkpoint stays the last good one."""


def _whole(t: torch.Tensor, param: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor whole: a sharded parameter gathered, or a state of a parameter's shard (`param`)."""
    from torch.distributed.tensor import DTensor
    if isinstance(t, DTensor):
        return t.full_tensor()
    if isinstance(param, DTensor):
        return DTensor.from_local(t, param.device_mesh, param.placements, shape=param.shape,
                                  stride=param.stride()).full_tensor()
    return t


def _part(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This process's part of a whole tensor read back: the shard of a sharded parameter, else all."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(param, DTensor):
        return distribute_tensor(t.to(param.device), param.device_mesh, param.placements).to_local()
    return t


def _optimizer_tensors(optimizers: list, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    for gi, opt in enumerate(optimizers):
        params = [p for g in opt.param_groups for p in g["params"]]
        for pi, p in enumerate(params):
            st = opt.state.get(p)
            if not st:
                continue
            meta[f"opt{gi}.p{pi}.step"] = st["step"]
            shard = p if getattr(opt, "ELEMENTWISE", False) else None   # its states are shards of it
            for name, s in st["memories"].items():
                base = f"opt{gi}.p{pi}.{name}"
                meta[f"{base}.updates"] = s.updates
                for kind, ws in (("cur", s.cur), ("ref", s.ref), ("momentum", s.momentum or []),
                                 ("adam_m", s.adam[0] if s.adam else []), ("adam_v", s.adam[1] if s.adam else [])):
                    for j, w in enumerate(ws):
                        tensors[f"{base}.{kind}{j}"] = _whole(w.detach(), shard).contiguous()


def save(path: Path, model, optimizers: list, meta: dict, generators: dict[str, torch.Generator],
         write: bool = True) -> None:
    """Atomically write model parameters, persistent memories, optimizer states and RNG states
    (under FSDP every process calls this; only the one with `write` writes). Raises NonFiniteState,
    writing nothing, if any of them holds inf or NaN (every process sees the same whole tensors, so
    every process raises)."""
    import torch
    from safetensors.torch import save_file
    tensors = {f"param.{k}": _whole(v.detach()).contiguous() for k, v in model.params.items()}
    for key, (cur, ref) in model.persistent.items():
        for j, (c, r) in enumerate(zip(cur, ref, strict=True)):
            tensors[f"persistent.{key}.cur{j}"] = c.contiguous()
            tensors[f"persistent.{key}.ref{j}"] = r.contiguous()
    meta = {**meta, **identity(model, optimizers)}
    _optimizer_tensors(optimizers, tensors, meta)
    _require_finite(tensors)
    if not write:
        return
    tensors["rng.torch"] = torch.get_rng_state()
    for name, g in generators.items():
        tensors[f"rng.{name}"] = g.get_state()
    # a state read at its committed value is the same tensor twice (cur is ref): store it once
    first: dict[tuple, str] = {}
    meta["aliases"] = {}
    for key in list(tensors):
        t = tensors[key]
        ident = (t.data_ptr(), t.dtype, tuple(t.shape), t.device.type)
        if t.numel() and ident in first:
            meta["aliases"][key] = first[ident]
            del tensors[key]
        else:
            first[ident] = key
    tensors = {k: t.cpu() for k, t in tensors.items()}
    text = json.dumps(meta)
    digest = _digest(text, ((k, t.reshape(-1).view(torch.uint8).numpy()) for k, t in sorted(tensors.items())))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={META: text, DIGEST: digest})
    os.replace(tmp, path)


def _require_finite(tensors: dict[str, torch.Tensor]) -> None:
    import torch
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteState(f"{key} holds inf or NaN")


def identity(model, optimizers: list) -> dict:
    """What a checkpoint must match to be restored: the parameter table, the generated code of the
    model and of each optimizer, and which parameters each optimizer holds."""
    keys = {id(p): k for k, p in model.params.items()}
    return {"table": [[k, list(info.shape)] for k, info in model.table.items()],
            "model_code": _code_digest(type(model)),
            "optimizers": [{"code": _code_digest(type(opt)),
                            "params": [keys[id(p)] for g in opt.param_groups for p in g["params"]]}
                           for opt in optimizers]}


@functools.cache
def _code_digest(cls: type) -> str:
    """SHA-256 of the generated module a model or optimizer class was compiled to: the spec, its
    settings and the compiler, in one text (under FSDP the class is a subclass of that one)."""
    for c in cls.__mro__:
        module = sys.modules.get(c.__module__)
        if module is not None and c in (getattr(module, "MODEL", None), getattr(module, "OPTIMIZER", None)):
            return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    raise TypeError(f"{cls.__name__} does not come from a module nldsl generated")


def _digest(meta: str, tensors) -> str:
    """SHA-256 of the metadata and of every tensor's name and bytes, in name order."""
    h = hashlib.sha256(meta.encode())
    for key, data in tensors:
        h.update(key.encode())
        h.update(data)
    return h.hexdigest()


# ---- reading -------------------------------------------------------------------------------------

def _layout(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, where the data starts) of a safetensors file, checked to be whole:
    the header parses and every tensor lies inside the file, which ends where the last one does."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise ValueError(f"its header claims {length:,} bytes of a {size:,}-byte file")
            header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", {})
        ends = [int(e["data_offsets"][1]) for e in header.values()]
        if any(int(e["data_offsets"][0]) > int(e["data_offsets"][1]) for e in header.values()):
            raise ValueError("a tensor ends before it starts")
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({e or 'too short'}): "
                              "give the checkpoint.safetensors of a run") from None
    if 8 + length + max(ends, default=0) != size:
        raise CheckpointError(f"{path} is truncated or padded: {size:,} bytes where its header describes "
                              f"{8 + length + max(ends, default=0):,}; use an intact copy")
    return header, metadata, 8 + length


def metadata(path: Path) -> dict:
    """What a checkpoint says about itself (step, settings, ...), once it is verified intact."""
    return _verified(path)[0]


def _verified(path: Path) -> tuple[dict, set[str]]:
    """The metadata and the tensor names of a checkpoint that is whole and unchanged since it was written."""
    entries, metadata, start = _layout(path)
    if META not in metadata or DIGEST not in metadata:
        raise CheckpointError(f"{path} is not an nldsl checkpoint (it has no nldsl metadata, or an older nldsl "
                              "wrote it without an integrity record): train the run again")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            found = _digest(metadata[META], ((k, view[start + e["data_offsets"][0]:start + e["data_offsets"][1]])
                                             for k, e in sorted(entries.items())))
        finally:
            view.release()
    if found != metadata[DIGEST]:
        raise CheckpointError(f"{path} is corrupted: its bytes no longer match the SHA-256 written with them "
                              "(changed on disk since); use an intact copy")
    try:
        meta = json.loads(metadata[META])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} has unreadable metadata ({e})") from None
    params = {k.removeprefix("param.") for k in entries if k.startswith("param.")}
    params |= {k.removeprefix("param.") for k in meta.get("aliases", {}) if k.startswith("param.")}
    if params != {k for k, _ in meta.get("table", [])}:
        raise CheckpointError(f"{path} holds other parameters than its own table lists: use an intact copy")
    return meta, set(entries) | set(meta.get("aliases", {}))


def _require_match(path: Path, meta: dict, keys: set[str], model, optimizers: list, generators: dict) -> None:
    """Refuse a checkpoint of another model: another shape (width, depth, vocabulary), other
    generated code (another spec or settings), other optimizers, or without the states asked for."""
    mine = identity(model, optimizers)
    theirs = {k: tuple(shape) for k, shape in meta["table"]}
    here = {k: tuple(shape) for k, shape in mine["table"]}
    if theirs != here:
        raise CheckpointError(f"{path} is another model's: {_table_difference(theirs, here)}; load it into the model "
                              "it was trained as (the run folder it came from)")
    if meta.get("model_code") != mine["model_code"]:
        raise CheckpointError(f"{path} is another model's: the same parameter shapes, but its generated code "
                              "differs (another spec, or other settings of it); use the run folder it came from")
    if optimizers and meta.get("optimizers") != mine["optimizers"]:
        raise CheckpointError(f"{path} was trained by other optimizers (or other `optimize` groups) than this run's: "
                              "resume it from the run folder it came from")
    missing = [name for name in generators if f"rng.{name}" not in keys]
    if missing:
        raise CheckpointError(f"{path} holds no state for the random stream {', '.join(missing)}: "
                              "it cannot resume a run")


def _table_difference(theirs: dict[str, tuple], here: dict[str, tuple]) -> str:
    """The first difference between two parameter tables, in words."""
    def shape(s: tuple) -> str:
        return "×".join(map(str, s)) or "scalar"
    changed = [k for k in theirs if k in here and theirs[k] != here[k]]
    if changed:
        k = changed[0]
        return f"{k} is {shape(theirs[k])} there and {shape(here[k])} here ({len(changed)} shapes differ)"
    extra, missing = sorted(set(theirs) - set(here)), sorted(set(here) - set(theirs))
    return "; ".join(([f"it has {len(extra)} parameters this model lacks ({', '.join(extra[:3])})"] if extra else [])
                     + ([f"it lacks {len(missing)} of this model's ({', '.join(missing[:3])})"] if missing else []))


def load(path: Path, model, optimizers: list, generators: dict[str, torch.Generator]) -> dict:
    """Restore everything `save` wrote; returns the metadata (step, data position, ...). Raises
    CheckpointError, having changed nothing, for a checkpoint that is damaged or another model's."""
    from safetensors import SafetensorError
    meta, keys = _verified(path)
    _require_match(path, meta, keys, model, optimizers, generators)
    try:
        return _restore(path, meta, model, optimizers, generators)
    except SafetensorError as e:     # the file changed between the check and the reading
        raise CheckpointError(f"{path} could not be read: {e}") from None


def _restore(path: Path, meta: dict, model, optimizers: list, generators: dict[str, torch.Generator]) -> dict:
    import torch
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor
    device = str(next(iter(model.params.values())).device)
    with safe_open(str(path), framework="pt", device=device) as f:
        f = _Aliased(f, meta.get("aliases", {}))
        keys = f.keys()
        with torch.no_grad():
            for k, v in model.params.items():
                (v.to_local() if isinstance(v, DTensor) else v).copy_(_part(f.get_tensor(f"param.{k}"), v))
        model.persistent = {}
        for key in {k.split(".", 1)[1].rsplit(".", 1)[0] for k in keys if k.startswith("persistent.")}:
            n = sum(1 for k in keys if k.startswith(f"persistent.{key}.cur"))
            model.persistent[key] = ([f.get_tensor(f"persistent.{key}.cur{j}") for j in range(n)],
                                     [f.get_tensor(f"persistent.{key}.ref{j}") for j in range(n)])
        for gi, opt in enumerate(optimizers):
            params = [p for g in opt.param_groups for p in g["params"]]
            for pi, p in enumerate(params):
                if f"opt{gi}.p{pi}.step" not in meta:
                    continue
                sharded = isinstance(p, DTensor) and getattr(opt, "ELEMENTWISE", False)
                st = opt._states(p, p.to_local() if sharded else None)
                st["step"] = meta[f"opt{gi}.p{pi}.step"]

                def read(prefix: str, p=p, sharded=sharded) -> list[torch.Tensor]:
                    return [_part(t, p) if sharded else t for t in _list(f, keys, prefix)]

                for name, s in st["memories"].items():
                    base = f"opt{gi}.p{pi}.{name}"
                    s.updates = meta[f"{base}.updates"]
                    s.cur, s.ref = read(f"{base}.cur"), read(f"{base}.ref")
                    if s.momentum is not None:
                        s.momentum = read(f"{base}.momentum")
                    if s.adam is not None:
                        s.adam = (read(f"{base}.adam_m"), read(f"{base}.adam_v"))
    with safe_open(str(path), framework="pt") as f:    # generator states live on the CPU
        torch.set_rng_state(f.get_tensor("rng.torch"))
        for name, g in generators.items():
            g.set_state(f.get_tensor(f"rng.{name}"))
    return meta


class _Aliased:
    """A safetensors file in which some keys name another key's tensor (loaded once, shared again)."""

    def __init__(self, f, aliases: dict[str, str]) -> None:
        self.f, self.aliases, self.loaded = f, aliases, {}

    def keys(self) -> set[str]:
        return set(self.f.keys()) | set(self.aliases)

    def get_tensor(self, key: str) -> torch.Tensor:
        key = self.aliases.get(key, key)
        if key not in self.loaded:
            self.loaded[key] = self.f.get_tensor(key)
        return self.loaded[key]


def _list(f, keys: set[str], prefix: str) -> list[torch.Tensor]:
    n = sum(1 for k in keys if k.startswith(prefix) and k[len(prefix):].isdigit())
    return [f.get_tensor(f"{prefix}{j}") for j in range(n)]


