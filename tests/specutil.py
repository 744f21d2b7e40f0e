"""Shared test helpers (pytest puts tests/ on sys.path):
the repository's paths and a tiny model template for writing specs in tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ALL_SPECS = sorted(SPECS.glob("*.nl")) + sorted((SPECS / "optim").glob("*.nl"))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Import into a test module to run it on one thread: tiny models gain nothing from a second,
    and on a busy machine OpenMP's waiting threads slow them down tenfold (subprocesses get
    OMP_NUM_THREADS=1 for the same reason)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model(body: str, header: str = "vocab = 64, dim = 32, heads = 4, context = 64",
          train: str = "optimize all by sgd(lr = 0.1)", imports: str = 'import "optim/sgd.nl"') -> str:
    """A complete model spec around a block body."""
    return f"{imports}\nmodel T({header}) {{\n  block {{\n{body}\n  }}\n  train {{ {train} }}\n}}\n"
