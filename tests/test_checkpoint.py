"""Checkpoints: a model and its spec-compiled optimizer survive a save/load round trip bit for bit,
shared states come back shared, the file is plain safetensors (no pickle), and writes are atomic."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from nldsl.backends.torch import checkpoint
from nldsl.backends.torch.data import Windows, corpus
from specutil import SPECS, model, one_thread  # noqa: F401 (an autouse fixture)

import nldsl

TINY = {"dim": 32, "layers": 1}


def build(spec: str | Path, optimizer: str, seed: int, lr: float = 1e-3,
          overrides: dict[str, float] | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    m = nldsl.load(spec, overrides=TINY if overrides is None else overrides, seed=seed)
    opt_class = nldsl.optimizer(SPECS / "optim" / f"{optimizer}.nl")
    return m, opt_class([p for p in m.params.values() if p.requires_grad], lr=lr)


def train_step(m: torch.nn.Module, opt: torch.optim.Optimizer, data: Iterator) -> None:
    x, y = next(data)
    m.loss(x, y).backward()
    opt.step()
    opt.zero_grad()


def states(opt: torch.optim.Optimizer) -> Iterator[tuple[str, list[torch.Tensor], list[torch.Tensor]]]:
    """(name, cur, ref) of every optimizer state of every parameter that has stepped."""
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for name, s in opt.state[p].get("memories", {}).items():
            yield f"p{i}.{name}", s.cur, s.ref


def shared(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr()


@pytest.fixture(scope="module")
def text() -> torch.Tensor:
    return corpus()[0]


@pytest.mark.parametrize(("spec", "optimizer", "before", "after", "context"), [
    ("hope", "adamw", 2, 1, 32),
    ("linear_attention", "muon", 2, 2, 64),
    ("linear_attention", "m3", 3, 6, 64),      # m3's slow momentum commits every 8 steps: save mid-period
])
def test_round_trip_continues_bit_identically(spec: str, optimizer: str, before: int, after: int, context: int,
                                              text: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m, opt = build(SPECS / f"{spec}.nl", optimizer, seed=0)
    data = Windows(text, 2, context, seed=0)
    for _ in range(before):
        train_step(m, opt, data)
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, m, [opt], {"step": before, "model_steps": m.steps}, {"data": data.generator})

    fresh, fresh_opt = build(SPECS / f"{spec}.nl", optimizer, seed=1)      # other initial values
    fresh_data = Windows(text, 2, context, seed=99)                               # and another data position
    meta = checkpoint.load(path, fresh, [fresh_opt], {"data": fresh_data.generator})
    fresh.steps = meta["model_steps"]
    assert meta["step"] == before

    for _ in range(after):
        train_step(m, opt, data)
        train_step(fresh, fresh_opt, fresh_data)
    for (key, a), b in zip(m.params.items(), fresh.params.values(), strict=True):
        assert torch.equal(a, b), key
    for (name, cur, ref), (_, fresh_cur, fresh_ref) in zip(states(opt), states(fresh_opt), strict=True):
        for a, b in zip(cur + ref, fresh_cur + fresh_ref, strict=True):
            assert torch.equal(a, b), name


def test_shared_states_are_shared_again(text: torch.Tensor, tmp_path: Path) -> None:
    """A state read at its committed value is one tensor twice (cur is ref): stored once, loaded once.
    m3's slow momentum mid-period has a shadow (cur) apart from its committed value (ref)."""
    m, opt = build(SPECS / "linear_attention.nl", "m3", seed=0)
    data = Windows(text, 2, 64, seed=0)
    for _ in range(3):
        train_step(m, opt, data)
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, m, [opt], {"model_steps": m.steps}, {})
    assert checkpoint.metadata(path)["aliases"], "shared states should be stored once"

    fresh, fresh_opt = build(SPECS / "linear_attention.nl", "m3", seed=1)
    checkpoint.load(path, fresh, [fresh_opt], {})
    kinds = set()
    for (name, cur, ref), (_, fresh_cur, fresh_ref) in zip(states(opt), states(fresh_opt), strict=True):
        for j, (a, b) in enumerate(zip(cur, ref, strict=True)):
            kinds.add(shared(a, b))
            assert shared(fresh_cur[j], fresh_ref[j]) == shared(a, b), name
            assert torch.equal(fresh_cur[j], a) and torch.equal(fresh_ref[j], b), name
    assert kinds == {True, False}, "the case needs both shared states and shadowed ones"


def test_file_is_safetensors_without_pickle(text: torch.Tensor, tmp_path: Path) -> None:
    m, opt = build(SPECS / "linear_attention.nl", "adamw", seed=0)
    data = Windows(text, 2, 64, seed=0)
    train_step(m, opt, data)
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, m, [opt], {"step": 1, "model_steps": m.steps}, {"data": data.generator})
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    assert not raw.startswith(b"PK") and b"\x80\x04\x95" not in raw[:8 + size]   # no torch.save zip, no pickle
    assert json.loads(header["__metadata__"]["nldsl"])["step"] == 1
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert {f"param.{k}" for k in m.params} <= set(tensors)
    assert {"rng.torch", "rng.data"} <= set(tensors)
    assert any(k.startswith("opt0.") for k in tensors)
    end = max(v["data_offsets"][1] for v in tensors.values())
    assert len(raw) == 8 + size + end, "the file is exactly header and tensor data"


def test_save_replaces_an_existing_checkpoint_whole(text: torch.Tensor, tmp_path: Path) -> None:
    m, opt = build(SPECS / "linear_attention.nl", "adamw", seed=0)
    data = Windows(text, 2, 64, seed=0)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(b"an older, longer file " * 10_000)
    train_step(m, opt, data)
    checkpoint.save(path, m, [opt], {"step": 1, "model_steps": m.steps}, {})
    assert checkpoint.metadata(path)["step"] == 1
    train_step(m, opt, data)
    checkpoint.save(path, m, [opt], {"step": 2, "model_steps": m.steps}, {})
    assert checkpoint.metadata(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"], "no temporary file left"
    fresh, fresh_opt = build(SPECS / "linear_attention.nl", "adamw", seed=1)
    checkpoint.load(path, fresh, [fresh_opt], {})
    for a, b in zip(m.params.values(), fresh.params.values(), strict=True):
        assert torch.equal(a, b)


def test_failed_write_keeps_the_previous_checkpoint(text: torch.Tensor, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    m, opt = build(SPECS / "linear_attention.nl", "adamw", seed=0)
    data = Windows(text, 2, 64, seed=0)
    path = tmp_path / "checkpoint.safetensors"
    train_step(m, opt, data)
    checkpoint.save(path, m, [opt], {"step": 1, "model_steps": m.steps}, {})
    before = path.read_bytes()

    def crash(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    train_step(m, opt, data)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, m, [opt], {"step": 2, "model_steps": m.steps}, {})
    assert path.read_bytes() == before
    assert checkpoint.metadata(path)["step"] == 1


PERSISTENT = model("""    memory P : mlp(expand = 2, act = silu, residual) scope persistent init learned
    # allow NL083
    learn P : outer by gd(lr = 0.05) every 4 steps read before
    h = h + P(rmsnorm(h))""")


def test_round_trip_of_persistent_memories(tmp_path: Path) -> None:
    spec = tmp_path / "persistent.nl"
    spec.write_text(PERSISTENT)
    torch.manual_seed(0)
    m, opt = build(spec, "sgd", seed=0, lr=0.1, overrides={})
    tokens = torch.randint(0, 64, (3, 2, 64), generator=torch.Generator().manual_seed(0))
    m.loss(tokens[0]).backward()
    opt.step()
    opt.zero_grad()
    assert m.persistent, "the spec should keep a persistent memory"
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, m, [opt], {"model_steps": m.steps}, {})
    fresh, fresh_opt = build(spec, "sgd", seed=1, lr=0.1, overrides={})
    fresh.steps = checkpoint.load(path, fresh, [fresh_opt], {})["model_steps"]
    for x in tokens[1:]:
        for mm, oo in ((m, opt), (fresh, fresh_opt)):
            mm.loss(x).backward()
            oo.step()
            oo.zero_grad()
    for (key, a), b in zip(m.params.items(), fresh.params.values(), strict=True):
        assert torch.equal(a, b), key
    for key, (cur, ref) in m.persistent.items():
        fresh_cur, fresh_ref = fresh.persistent[key]
        assert all(torch.equal(a, b) for a, b in zip(cur + ref, fresh_cur + fresh_ref, strict=True)), key
