"""Source files and spans: every AST node, checked-spec node and diagnostic points into one."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Span(BaseModel):
    """A region of a source file. Lines and columns are 1-based; `end_col` is exclusive."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(file=self.file, line=self.line, col=self.col,
                    end_line=other.end_line, end_col=other.end_col)


class SourceFile(BaseModel):
    """The text of one `.nl` file, kept so diagnostics can quote the offending line."""

    model_config = ConfigDict(frozen=True)

    path: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> SourceFile:
        return cls(path=str(path), text=Path(path).read_text(encoding="utf-8"))

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines, split once however many diagnostics or table rows quote them."""
        return self.text.splitlines()

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def span_at(self, line: int, col: int, length: int = 1) -> Span:
        return Span(file=self.path, line=line, col=col, end_line=line, end_col=col + max(length, 1))

    def end_span(self) -> Span:
        lines = self.lines or [""]
        return self.span_at(len(lines), len(lines[-1]) + 1)
