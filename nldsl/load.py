"""Read a spec and everything it imports, in dependency order, collecting file-level diagnostics.

An import path is looked up next to the importing file first, then in the spec library shipped
with nldsl (`specs/`), so `import "optim/adamw.nl"` works from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from nldsl import ast
from nldsl.diagnostics import Diagnostic, did_you_mean
from nldsl.parse import parse
from nldsl.paths import package_dir
from nldsl.source import SourceFile, Span

LIBRARY_PREFIX = "<specs>/"
SPEC_SUFFIX = ".nl"


def library_dir() -> Path:
    return package_dir("specs")


def library_specs() -> list[str]:
    """Every spec in the library, as an import path (`optim/adamw.nl`)."""
    root = library_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.nl"))


def display_path(path: Path) -> str:
    """How a file is named in diagnostics: relative to the working directory, or to the library."""
    path = path.resolve()
    try:   # library specs read the same wherever nldsl is installed
        return LIBRARY_PREFIX + path.relative_to(library_dir().resolve()).as_posix()
    except ValueError:
        pass
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


class Loaded:
    def __init__(self) -> None:
        self.modules: list[ast.Module] = []        # imports before their importers
        self.sources: dict[str, SourceFile] = {}
        self.diagnostics: list[Diagnostic] = []
        self.entry: str = ""


def load(entry: str | Path, text: str | None = None) -> Loaded:
    """Load `entry` (or `text`, named `entry`) and its imports."""
    out = Loaded()
    entry_path = Path(entry)
    out.entry = display_path(entry_path) if text is None else str(entry)
    _visit(entry_path, text, out, stack=[], done=set(), at=None)
    return out


def _visit(path: Path, text: str | None, out: Loaded, stack: list[Path], done: set[Path],
           at: Span | None) -> None:
    key = path.resolve() if text is None else Path(str(path))
    name = display_path(path) if text is None else str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raw = path.read_bytes()[:e.start]
            line, col = raw.count(b"\n") + 1, e.start - (raw.rfind(b"\n") + 1) + 1
            span = at or Span(file=name, line=line, col=col, end_line=line, end_col=col + 1)
            out.diagnostics.append(Diagnostic(code="NL012", span=span, hint="save the file as UTF-8",
                                              message=f"{name} is not UTF-8 text (line {line}, column {col})"))
            return
        except OSError as e:
            span = at or Span(file=name, line=1, col=1, end_line=1, end_col=1)
            out.diagnostics.append(Diagnostic(code="NL012", message=f"cannot read {name}: {e.strerror or e}",
                                              span=span, hint="check the path"))
            return
    source = SourceFile(path=name, text=text)
    out.sources[name] = source
    module, errors = parse(source)
    out.diagnostics += errors
    if module is None:
        done.add(key)
        return
    stack.append(key)
    for imp in module.imports:
        if not imp.path.endswith(SPEC_SUFFIX):
            out.diagnostics.append(Diagnostic(code="NL014", span=imp.span,
                                              message=f"\"{imp.path}\" is not a spec file: imports name `.nl` files",
                                              hint='import a spec, e.g. `import "optim/adamw.nl"`'))
            continue
        target = _resolve(path, imp.path)
        if target is None:
            hint = did_you_mean(imp.path, library_specs()) or "paths are relative to the importing file"
            out.diagnostics.append(Diagnostic(code="NL010", span=imp.span, hint=hint,
                                              message=f"cannot find import \"{imp.path}\""))
            continue
        tkey = target.resolve()
        if tkey in stack:
            chain = " → ".join(display_path(p) for p in [*stack[stack.index(tkey):], tkey])
            out.diagnostics.append(Diagnostic(code="NL011", span=imp.span, message=f"import cycle: {chain}",
                                              hint="a file cannot import, directly or not, its importer"))
            continue
        if tkey not in done:
            _visit(target, None, out, stack, done, imp.span)
    stack.pop()
    done.add(key)
    out.modules.append(module)


def _resolve(importer: Path, rel: str) -> Path | None:
    """The spec file an import names. A link that leads to anything but a `.nl` file is not one:
    nothing else is ever read (and echoed in a syntax error)."""
    for base in (importer.parent, library_dir()):
        candidate = base / rel
        if candidate.is_file() and candidate.resolve().suffix == SPEC_SUFFIX:
            return candidate
    return None
