"""The layout shows the architecture: the installed package has exactly the checkout's modules, and data
flows one way (parse → check → graph → lower → emit → run), so no stage imports a later one.

The checkout keeps the card's top-level folders (nldsl/, backends/, cli.py); the wheel maps them under
the one `nldsl` package (pyproject's `force-include`). Tests run against the installed package, so a
module that the mapping forgets, or one left behind by a move, would pass in a checkout and break an
install: the first test compares the two maps.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import nldsl

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(nldsl.__file__).resolve().parent


def checkout_modules() -> set[str]:
    """Module names the wheel should hold, from the checkout and pyproject's mapping."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    sources = {package: package for package in wheel["packages"]} | wheel["force-include"]
    names = set()
    for source, target in sources.items():
        path = ROOT / source
        files = [path] if path.is_file() else path.rglob("*.py")
        for file in files:
            if file.suffix == ".py":
                inside = Path(target) / file.relative_to(path) if path.is_dir() else Path(target)
                names.add(_module(inside))
    return names


def installed_modules() -> set[str]:
    return {_module(Path("nldsl") / f.relative_to(INSTALLED)) for f in INSTALLED.rglob("*.py")}


def _module(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.skipif((INSTALLED.parent / "backends").is_dir() and INSTALLED.parent == ROOT,
                    reason="running from the checkout itself, not an install")
def test_the_installed_package_has_exactly_the_checkouts_modules():
    expected, installed = checkout_modules(), installed_modules()
    assert not expected - installed, f"in the checkout, missing from the install: {sorted(expected - installed)}"
    assert not installed - expected, f"installed, gone from the checkout: {sorted(installed - expected)}"


# Ranks, from the first stage to the last: a module may import modules of a lower rank, and of its
# own rank only inside its own part (the reference interpreter and the torch runtime are siblings
# that never import each other). The longest matching prefix decides a module's part.
RANKS: dict[str, int] = {
    "nldsl": 0,                              # the front end: parse, check, graph, schedule, cost
    "nldsl.lower": 1, "nldsl.backends.functional": 1,
    "nldsl.report": 2, "nldsl.draw": 2,      # explain and diagrams show what lowering chose
    "nldsl.backends.params": 2,
    "nldsl.backends.reference": 3, "nldsl.backends.torch.runtime": 3,
    "nldsl.backends.torch.codegen": 4,
    "nldsl.backends.torch.app": 5,
    "nldsl.api": 6, "nldsl.__init__": 7, "nldsl.cli": 7,
}
# Code generation writes down each memory's facts as runtime data; it never imports torch code.
EXCEPTIONS = {("nldsl.backends.torch.codegen", "nldsl.backends.torch.runtime.memspec")}


def part_of(module: str) -> str:
    return max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)


def imports(file: Path, module: str) -> set[str]:
    """Every nldsl module a file imports, at the top or inside a function."""
    known = installed_modules()
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nldsl"):
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                found.add(inner if inner in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nldsl")}
    return found - {module}


def allowed(importer: str, imported: str) -> bool:
    mine, theirs = part_of(importer), part_of(imported)
    if (mine, imported) in EXCEPTIONS:
        return True
    return RANKS[theirs] < RANKS[mine] or mine == theirs


@pytest.mark.parametrize("module", sorted(installed_modules()))
def test_no_stage_imports_a_later_one(module):
    if module == "nldsl":
        file, module = INSTALLED / "__init__.py", "nldsl.__init__"
    else:
        relative = Path(*module.split(".")[1:])
        file = INSTALLED / relative.with_suffix(".py")
        if not file.is_file():
            file = INSTALLED / relative / "__init__.py"
    wrong = sorted(i for i in imports(file, module) if not allowed(module, i))
    assert not wrong, f"{module} ({part_of(module)}) imports {wrong}"
