"""Checkpoints: every tensor in one safetensors file (written to a temporary name, then renamed, so
a crash leaves the previous checkpoint whole), the rest as JSON metadata inside the same file.
Nothing is ever unpickled. Under FSDP every process takes part (a sharded parameter, and the
optimizer states of its shard, are gathered whole to be written and scattered again when read), and
one process writes: a checkpoint does not depend on how many processes made it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor, distribute_tensor


def _whole(t: torch.Tensor, param: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor whole: a sharded parameter gathered, or a state of a parameter's shard (`param`)."""
    if isinstance(t, DTensor):
        return t.full_tensor()
    if isinstance(param, DTensor):
        return DTensor.from_local(t, param.device_mesh, param.placements, shape=param.shape,
                                  stride=param.stride()).full_tensor()
    return t


def _part(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This process's part of a whole tensor read back: the shard of a sharded parameter, else all."""
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
    (under FSDP every process calls this; only the one with `write` writes)."""
    tensors = {f"param.{k}": _whole(v.detach()).contiguous() for k, v in model.params.items()}
    for key, (cur, ref) in model.persistent.items():
        for j, (c, r) in enumerate(zip(cur, ref, strict=True)):
            tensors[f"persistent.{key}.cur{j}"] = c.contiguous()
            tensors[f"persistent.{key}.ref{j}"] = r.contiguous()
    meta = dict(meta)
    _optimizer_tensors(optimizers, tensors, meta)
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
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"nldsl": json.dumps(meta)})
    os.replace(tmp, path)


def metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["nldsl"])


def load(path: Path, model, optimizers: list, generators: dict[str, torch.Generator]) -> dict:
    """Restore everything `save` wrote; returns the metadata (step, data position, ...)."""
    device = str(next(iter(model.params.values())).device)
    with safe_open(str(path), framework="pt", device=device) as f:
        meta = json.loads(f.metadata()["nldsl"])
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


