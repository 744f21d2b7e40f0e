"""Checkpoints: a model and its spec-compiled optimizer survive a save/load round trip bit for bit,
shared states come back shared, the file is plain safetensors (no pickle), and writes are atomic."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from specutil import SPECS, model, one_thread  # noqa: F401 (an autouse fixture)

import nldsl
from nldsl.backends.torch.app import checkpoint
from nldsl.backends.torch.app.data import Windows, corpus

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

    monkeypatch.setattr("safetensors.torch.save_file", crash)     # checkpoint.save imports it when it runs
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


# ---- integrity and identity ------------------------------------------------------------------------
# Every refusal is a CheckpointError (a RunError: one line, exit 1 at the command line) raised before
# anything is restored.

@pytest.fixture
def saved(text: torch.Tensor, tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    """A checkpoint of tiny linear attention after one AdamW step, with the data stream's state."""
    m, opt = build(SPECS / "linear_attention.nl", "adamw", seed=0)
    data = Windows(text, 2, 64, seed=0)
    train_step(m, opt, data)
    path = tmp_path / "checkpoint.safetensors"
    checkpoint.save(path, m, [opt], {"step": 1, "model_steps": m.steps}, {"data": data.generator})
    return path, m, opt


def layout(path: Path) -> tuple[int, dict]:
    """(where the data starts, the header) of a safetensors file."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return 8 + size, json.loads(raw[8:8 + size])


def refused(path: Path, match: str, spec: str = "linear_attention", optimizer: str = "adamw",
            overrides: dict[str, float] | None = None, generators: tuple[str, ...] = ("data",)) -> None:
    """Loading `path` into a fresh model raises CheckpointError(match) and leaves the model as it was."""
    fresh, fresh_opt = build(SPECS / f"{spec}.nl", optimizer, seed=1, overrides=overrides)
    before = {k: v.detach().clone() for k, v in fresh.params.items()}
    with pytest.raises(checkpoint.CheckpointError, match=match):
        checkpoint.load(path, fresh, [fresh_opt], {name: torch.Generator() for name in generators})
    assert all(torch.equal(before[k], v) for k, v in fresh.params.items()), "a refused load changed the model"


def test_metadata_names_the_model(saved: tuple) -> None:
    path, m, _ = saved
    meta = checkpoint.metadata(path)
    assert meta["table"] == [[k, list(info.shape)] for k, info in m.table.items()]
    assert len(meta["model_code"]) == 64 and len(meta["optimizers"]) == 1
    assert meta["optimizers"][0]["params"] == [k for k, p in m.params.items() if p.requires_grad]


def test_flipped_data_byte_is_refused(saved: tuple) -> None:
    path, *_ = saved
    start, _ = layout(path)
    raw = bytearray(path.read_bytes())
    raw[start + (len(raw) - start) // 2] ^= 0x01         # one bit in the middle of the tensor data
    path.write_bytes(raw)
    refused(path, "is corrupted: its bytes no longer match the SHA-256")


def test_changed_metadata_is_refused(saved: tuple) -> None:
    path, *_ = saved
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'\\"step\\": 1', b'\\"step\\": 7'))
    assert path.read_bytes() != raw
    refused(path, "is corrupted")


@pytest.mark.parametrize("cut", [1, 1000, "header"])
def test_truncated_file_is_refused(saved: tuple, cut: int | str) -> None:
    path, *_ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:20] if cut == "header" else raw[:-cut])
    refused(path, "is truncated or padded" if cut != "header" else "is not a safetensors checkpoint")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + bytes(100)])
def test_other_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(content)
    refused(path, "is not a safetensors checkpoint")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nothing.safetensors", "no such checkpoint file")


def test_plain_safetensors_without_nldsl_metadata_is_refused(saved: tuple, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    path, *_ = saved
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(path), str(plain))
    refused(plain, "is not an nldsl checkpoint")


def rewrite(path: Path, change, digest: bool) -> None:
    """Rewrite a checkpoint with `change(tensors)` applied; with `digest`, a matching SHA-256 too
    (as a forger would), so that only the checks after the digest can catch it."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        names, meta = f.keys(), f.metadata()
        tensors = {k: f.get_tensor(k) for k in names}
    change(tensors)
    if digest:
        meta[checkpoint.DIGEST] = checkpoint._digest(meta[checkpoint.META], (
            (k, t.reshape(-1).view(torch.uint8).numpy()) for k, t in sorted(tensors.items())))
    save_file(tensors, str(path), metadata=meta)


def test_extra_tensor_is_refused(saved: tuple) -> None:
    path, *_ = saved
    rewrite(path, lambda t: t.update({"param.layer/0/W_x": torch.zeros(4)}), digest=False)
    refused(path, "is corrupted")
    rewrite(path, lambda t: t.update({"param.layer/0/W_x": torch.zeros(4)}), digest=True)
    refused(path, "holds other parameters than its own table lists")


def test_missing_tensor_is_refused(saved: tuple) -> None:
    path, *_ = saved
    rewrite(path, lambda t: t.pop("param.layer/0/W_q"), digest=False)
    refused(path, "is corrupted")
    rewrite(path, lambda t: t.pop("param.layer/0/W_k"), digest=True)
    refused(path, "holds other parameters than its own table lists")


def test_foreign_width_is_refused(saved: tuple) -> None:
    path, *_ = saved
    refused(path, r"is another model's: embed is 256×32 there and 256×16 here", overrides={"dim": 16, "layers": 1})


def test_foreign_depth_is_refused(saved: tuple) -> None:
    path, *_ = saved
    refused(path, r"is another model's: it lacks 8 of this model's \(layer/1/", overrides={"dim": 32, "layers": 2})


def test_foreign_spec_is_refused(saved: tuple) -> None:
    """DeltaNet has other parameters; Gated DeltaNet too; linear attention with another memory
    rate has the same ones, and other generated code."""
    path, *_ = saved
    refused(path, "is another model's: it", spec="deltanet")


def test_same_shapes_other_spec_is_refused(saved: tuple, tmp_path: Path) -> None:
    path, *_ = saved
    text = (SPECS / "linear_attention.nl").read_text()
    assert "by gd(lr = 1)" in text
    other = tmp_path / "linear_attention.nl"
    other.write_text(text.replace("by gd(lr = 1)", "by gd(lr = 0.5)"))
    fresh = nldsl.load(other, overrides=TINY, seed=1)
    opt = nldsl.optimizer(SPECS / "optim" / "adamw.nl")([p for p in fresh.params.values() if p.requires_grad])
    assert [list(i.shape) for i in fresh.table.values()] == [s for _, s in checkpoint.metadata(path)["table"]]
    with pytest.raises(checkpoint.CheckpointError, match="the same parameter shapes, but its generated code differs"):
        checkpoint.load(path, fresh, [opt], {})


def test_other_optimizer_is_refused(saved: tuple) -> None:
    path, *_ = saved
    refused(path, "was trained by other optimizers", optimizer="sgd")


def test_missing_random_stream_is_refused(saved: tuple) -> None:
    path, *_ = saved
    refused(path, "holds no state for the random stream other", generators=("data", "other"))


def test_non_finite_state_is_never_written(saved: tuple) -> None:
    path, m, opt = saved
    before = path.read_bytes()
    with torch.no_grad():
        m.params["layer/0/W_q"][0, 0] = float("nan")
    with pytest.raises(checkpoint.NonFiniteState, match=r"param\.layer/0/W_q holds inf or NaN"):
        checkpoint.save(path, m, [opt], {"step": 2, "model_steps": m.steps}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file left"
