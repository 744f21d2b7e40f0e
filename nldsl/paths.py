"""Where the grammar and the spec library live: inside the installed package, or in a checkout.

The wheel maps the repository's top-level `grammar/` and `specs/` under `nldsl/`; a clone used
without installing (PYTHONPATH=.) finds them one directory up.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def package_dir(name: str) -> Path:
    installed = _HERE / name
    return installed if installed.is_dir() else _HERE.parent / name
