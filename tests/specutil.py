"""Shared test helpers (pytest puts tests/ on sys.path):
the repository's paths and a tiny model template for writing specs in tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ALL_SPECS = sorted(SPECS.glob("*.nl")) + sorted((SPECS / "optim").glob("*.nl"))


def model(body: str, header: str = "vocab = 64, dim = 32, heads = 4, context = 64",
          train: str = "optimize all by sgd(lr = 0.1)", imports: str = 'import "optim/sgd.nl"') -> str:
    """A complete model spec around a block body."""
    return f"{imports}\nmodel T({header}) {{\n  block {{\n{body}\n  }}\n  train {{ {train} }}\n}}\n"
