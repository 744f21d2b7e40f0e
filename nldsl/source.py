"""Source files and spans: every AST node, checked-spec node and diagnostic points into one."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

Model = TypeVar("Model", bound=BaseModel)


_new = object.__new__
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__pydantic_fields_set__.__set__   # the slots a pydantic model keeps beside its fields
_set_extra = BaseModel.__pydantic_extra__.__set__
_set_private = BaseModel.__pydantic_private__.__set__


def unvalidated(cls: type[Model], values: dict, fields_set: set[str]) -> Model:
    """`cls(**values)` without pydantic's validation, for the parser's and checker's hot loops, which
    build a great many nodes from values that are already of their fields' types: the object is the
    one validation makes (`values` holds every field, in the order the class declares them;
    `fields_set` names those passed, which pydantic records as set), at a third of the cost.
    `fields_set` is shared by every node built alike: a set is 700 bytes, more than the node, and
    pydantic never changes a frozen model's set in place (`model_copy` copies it first).
    `tests/test_scan.py` validates whole parsed trees and checked specs to hold the callers to this,
    and checks that every class built so is frozen."""
    obj = _new(cls)
    _set_dict(obj, "__dict__", values)
    _set_fields_set(obj, fields_set)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


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

    @staticmethod
    def of(file: str, line: int, col: int, end_line: int, end_col: int) -> Span:
        """A span from values known to be a str and four ints, built without validation."""
        return unvalidated(Span, {"file": file, "line": line, "col": col, "end_line": end_line, "end_col": end_col},
                           _SPAN_FIELDS)

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(file=self.file, line=self.line, col=self.col,
                    end_line=other.end_line, end_col=other.end_col)


_SPAN_FIELDS = set(Span.model_fields)


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
