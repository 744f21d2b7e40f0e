"""Source files and spans: every AST node, checked-spec node and diagnostic points into one."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic_core import core_schema

Model = TypeVar("Model", bound=BaseModel)


_new = object.__new__
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__pydantic_fields_set__.__set__   # the slots a pydantic model keeps beside its fields
_set_extra = BaseModel.__pydantic_extra__.__set__
_set_private = BaseModel.__pydantic_private__.__set__


def unvalidated(cls: type[Model], values: dict, fields_set: set[str]) -> Model:
    """`cls(**values)` without pydantic's validation, for the checker's hot loop, which builds a
    great many nodes from values that are already of their fields' types: the object is the
    one validation makes (`values` holds every field, in the order the class declares them;
    `fields_set` names those passed, which pydantic records as set), at a third of the cost.
    `fields_set` is shared by every node built alike: a set is 700 bytes, more than the node, and
    pydantic never changes a frozen model's set in place (`model_copy` copies it first).
    `tests/test_scan.py` validates whole checked specs to hold the callers to this, and checks that
    every class built so is frozen."""
    obj = _new(cls)
    _set_dict(obj, "__dict__", values)
    _set_fields_set(obj, fields_set)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


class Span:
    """A region of a source file. Lines and columns are 1-based; `end_col` is exclusive.

    A plain slotted class rather than a pydantic model: the parser makes one per node, a million for
    a 100,000-line spec. Models that hold one (diagnostics, the checked spec) take it as it is (see
    `__get_pydantic_core_schema__`). Nothing changes a span once made."""

    __slots__ = ("col", "end_col", "end_line", "file", "line")

    def __init__(self, file: str, line: int, col: int, end_line: int, end_col: int) -> None:
        self.file, self.line, self.col, self.end_line, self.end_col = file, line, col, end_line, end_col

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"Span({self.file!r}, {self.line}, {self.col}, {self.end_line}, {self.end_col})"

    def _key(self) -> tuple[str, int, int, int, int]:
        return self.file, self.line, self.col, self.end_line, self.end_col

    def __eq__(self, other: object) -> bool:
        return type(other) is Span and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def as_dict(self) -> dict[str, str | int]:
        return {"file": self.file, "line": self.line, "col": self.col, "end_line": self.end_line,
                "end_col": self.end_col}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: object, handler: object) -> core_schema.CoreSchema:
        """In a pydantic model: a `Span` as it is (or from its dict), dumped as its dict."""
        from_dict = core_schema.no_info_after_validator_function(
            lambda d: cls(**d), core_schema.typed_dict_schema(
                {k: core_schema.typed_dict_field(core_schema.str_schema() if k == "file" else core_schema.int_schema())
                 for k in ("file", "line", "col", "end_line", "end_col")}))
        return core_schema.union_schema(
            [core_schema.is_instance_schema(cls), from_dict],
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.as_dict()))

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(self.file, self.line, self.col, other.end_line, other.end_col)


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
