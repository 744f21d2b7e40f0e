"""Diagnostics: positioned, coded, hinted, collected all at once, rendered like a compiler."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from nldsl.codes import CODES
from nldsl.source import SourceFile, Span

Severity = Literal["error", "warning"]


class Diagnostic(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    span: Span
    hint: str = ""
    severity: Severity = "error"

    def render(self, sources: dict[str, SourceFile] | None = None) -> str:
        """`error[NL020]: message`, the location, the source line with a caret, the hint."""
        s = self.span
        out = [f"{self.severity}[{self.code}]: {self.message}", f"  --> {s.file}:{s.line}:{s.col}"]
        src = (sources or {}).get(s.file)
        if src is not None:
            lines = src.lines
            text = lines[s.line - 1] if 0 < s.line <= len(lines) else ""
            gutter = " " * len(str(s.line))
            end = s.end_col if s.end_line == s.line else len(text) + 1
            width = max(1, end - s.col)
            out += [f"{gutter} |", f"{s.line} | {text}", f"{gutter} | {' ' * (s.col - 1)}{'^' * width}"]
        if self.hint:
            out.append(f"  = hint: {self.hint}")
        return "\n".join(out)



class Diagnostics:
    """The collector every stage writes into. Stages keep going after an error where they can."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()    # the same items, to drop repeats in constant time

    def error(self, code: str, message: str, span: Span, hint: str = "") -> None:
        self._add(code, message, span, hint, "error")

    def warn(self, code: str, message: str, span: Span, hint: str = "") -> None:
        self._add(code, message, span, hint, "warning")

    def _add(self, code: str, message: str, span: Span, hint: str, severity: Severity) -> None:
        assert code in CODES and CODES[code].severity == severity, f"code {code} is not a registered {severity}"
        self.add(Diagnostic(code=code, message=message, span=span, hint=hint, severity=severity))

    def add(self, d: Diagnostic) -> None:
        """Keep `d` unless the same diagnostic was already reported."""
        if d not in self._seen:
            self._seen.add(d)
            self.items.append(d)

    def extend(self, items: Iterable[Diagnostic]) -> None:
        for d in items:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.span.file, d.span.line, d.span.col, d.code))


class SpecError(Exception):
    """Raised by the public API when a spec has errors; carries every diagnostic, never a traceback."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, SourceFile]) -> None:
        self.diagnostics = diagnostics
        self.sources = sources
        super().__init__(self.render())

    def render(self) -> str:
        return render_all(self.diagnostics, self.sources)


def render_all(diagnostics: list[Diagnostic], sources: dict[str, SourceFile]) -> str:
    parts = [d.render(sources) for d in diagnostics]
    n_err = sum(d.severity == "error" for d in diagnostics)
    n_warn = len(diagnostics) - n_err
    if diagnostics:
        parts.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
    return "\n\n".join(parts)


# Finding the closest of n names costs n string comparisons, once per unknown name: in a scope of
# more names than this, no suggestion is made, so that a huge spec full of typos still checks in time
# linear in its size.
MAX_SUGGESTION_POOL = 1_000


def did_you_mean(name: str, candidates: Collection[str]) -> str:
    """A hint naming the closest candidate, or listing the valid ones when there are few."""
    if len(candidates) > MAX_SUGGESTION_POOL:
        return ""
    pool = sorted(set(candidates))
    exact_case = [c for c in pool if c.lower() == name.lower()]
    if exact_case:
        return f"did you mean '{exact_case[0]}'?"
    lowered = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{lowered[close[0]]}'?"
    if 0 < len(pool) <= 8:
        return "expected one of: " + ", ".join(f"'{c}'" for c in pool)
    return ""
