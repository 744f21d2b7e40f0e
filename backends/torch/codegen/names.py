"""The one way anything from a spec reaches generated Python.

- identifiers: `Scope.name` gives each thing (a value, a memory's constant, a block's function)
  one identifier. It starts from the spec's name, made a plain ASCII identifier, and is numbered
  (`x_2`) when that is a Python keyword or builtin, or already held in the same scope or a scope
  above it: two things never share an identifier, and a user's name never shadows a generated one;
- literals (names used as dictionary keys, numbers, strings): `literal`, which is `repr`;
- text in comments and docstrings (file names, spec names): `text`, which keeps `repr`'s escapes,
  so it stays on one line and can end neither the comment nor the string it is in.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections.abc import Hashable, Iterable

FORBIDDEN = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))


def identifier(wanted: str) -> str:
    """A plain identifier close to `wanted`: ASCII letters, digits and `_`, not starting with a
    digit or with two underscores (Python mangles those inside a class body)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", wanted)
    name = re.sub(r"^_+", "_", name)
    if not name or name[0].isdigit():
        name = "v" + name
    return name


class Scope:
    """The identifiers of one Python scope. A child scope (a function) avoids its parents' names,
    so a local never hides a global that generated code refers to."""

    def __init__(self, fixed: Iterable[str] = (), parent: Scope | None = None) -> None:
        self.parent = parent
        self.taken: set[str] = set(fixed)
        self.names: dict[Hashable, str] = {}

    def child(self, fixed: Iterable[str] = ()) -> Scope:
        return Scope(fixed, self)

    def holds(self, name: str) -> bool:
        return name in FORBIDDEN or name in self.taken or (self.parent is not None and self.parent.holds(name))

    def name(self, thing: Hashable, wanted: str) -> str:
        """The identifier of `thing`, allocated on first request: `wanted` made an identifier, or
        that with the first free number after it."""
        if thing in self.names:
            return self.names[thing]
        base = identifier(wanted)
        sep = "" if base.endswith("_") else "_"
        candidate, n = base, 2
        while self.holds(candidate):
            candidate, n = f"{base}{sep}{n}", n + 1
        self.taken.add(candidate)
        self.names[thing] = candidate
        return candidate


def literal(value: object) -> str:
    """Python source for a constant: `repr`, with non-finite floats spelled so they evaluate."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise TypeError(f"no literal for {type(value).__name__}")


def text(value: object) -> str:
    """Text for a comment or a docstring: `repr`'s escapes (every line break, control character
    and backslash) with double quotes escaped too."""
    return repr(str(value))[1:-1].replace('"', '\\"')
