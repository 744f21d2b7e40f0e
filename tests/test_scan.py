"""Oracles for the parser's and checker's fast paths: each must give exactly what the slow path gives.

`nldsl.scan` lexes and runs the LALR loop itself; Lark's own lexer and parser are the oracle, on the
shipped specs, on the generated huge specs, on programs drawn from the grammar and on token streams
that run keywords, names and numbers together (where a keyword is a keyword only in some parser
states). Where the fast path gives up, `parse` must still answer as Lark does. The parser's nodes
must hold values of their fields' declared types, and the `Op`s that the checker
(`check_expr.new_op`) builds without validation must be the objects validation builds: same
values, same types, same fields in the same order, same fields set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from test_huge_specs import huge
from test_parse_property import LITERALS, SPEC_TEXTS, examples, ints, names, numbers, programs, strings

from nldsl import ast, scan
from nldsl import parse as parse_module
from nldsl.api import check_text
from nldsl.parse import _ParseRun, parse
from nldsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def lark_only() -> Iterator[None]:
    """Parse through Lark alone, as before the fast path existed."""
    saved = parse_module._machine
    parse_module._machine = lambda: None
    try:
        yield
    finally:
        parse_module._machine = saved


def both(text: str) -> tuple[object, object]:
    source = SourceFile(path="t.nl", text=text)
    fast = parse(source)
    with lark_only():
        slow = parse(source)
    return fast, slow


def fast_only(text: str) -> object | None:
    """What `scan.parse` alone makes of `text`: the AST, or None where it gives up."""
    machine = parse_module._machine()
    assert machine is not None, "the fast path is unavailable with this Lark"
    token = parse_module._RUN.set(_ParseRun("t.nl"))
    try:
        built = scan.parse(machine, text)
    finally:
        parse_module._RUN.reset(token)
    return built


def test_fast_path_is_available() -> None:
    assert isinstance(parse_module._machine(), scan.Machine)


def test_shipped_specs_parse_the_same_and_take_the_fast_path() -> None:
    for text in SPEC_TEXTS:
        fast, slow = both(text)
        assert fast == slow
        assert fast_only(text) == slow[0]


def test_huge_specs_parse_the_same() -> None:
    for make in huge.LONG.values():
        text = make(300)
        fast, slow = both(text)
        assert fast == slow and fast[0] is not None
        assert fast_only(text) == slow[0]


@examples(150)
@given(programs)
def test_grammar_programs_parse_the_same(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow
    assert fast_only(text) == slow[0]


# Tokens with no space or any space between them: keywords run into names (`stepsx`), numbers into
# names (`16tokens`), and keywords stand where only a name is accepted.
words = st.sampled_from(sorted(v for v in LITERALS.values() if v.isalpha()))
glued = st.lists(st.tuples(st.one_of(st.sampled_from(sorted(LITERALS.values())), words, names, ints, numbers,
                                     strings, st.just("#c\n"), st.just("@"), st.just(";")),
                           st.sampled_from(["", "", " ", "\n", "\t", "\r\n"])),
                 max_size=40).map(lambda ts: "".join(t + s for t, s in ts))


@examples(400)
@given(glued)
def test_token_streams_parse_the_same(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow
    quick = fast_only(text)
    assert quick is None or quick == slow[0]


@examples(300)
@given(st.text(alphabet="model optimizer block{}()=+x1.e\n\t#\"", max_size=80))
def test_near_grammar_text_parses_the_same(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow


def test_deep_expressions_give_the_same_diagnostic() -> None:
    text = "model M(dim = 4) {\n  block {\n    h = " + "sigmoid(" * 150 + "h" + ")" * 150 + "\n  }\n}\n"
    fast, slow = both(text)
    assert fast == slow and fast[0] is None and [d.code for d in fast[1]] == ["NL004"]


def _assert_validated(node: object) -> None:
    """`node`, and every node in it, is the object its class validates from the fields it has set."""
    if isinstance(node, BaseModel):
        again = type(node)(**{k: getattr(node, k) for k in node.model_fields_set})
        assert again == node, node
        assert list(again.__dict__) == list(node.__dict__), node
        assert again.model_fields_set == node.model_fields_set, node
        for key, value in node.__dict__.items():
            assert type(value) is type(again.__dict__[key]), (type(node).__name__, key, value)
            _assert_validated(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _assert_validated(item)
    elif isinstance(node, dict):
        for item in node.values():
            _assert_validated(item)


def _conforms(value: object, annotation: object) -> bool:
    """Whether `value` is of the type `annotation` (as the AST's dataclasses spell them)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return value in args
    if origin in (Union, UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is list:
        return type(value) is list and all(_conforms(v, args[0]) for v in value)
    if annotation is type(None):
        return value is None
    return type(value) is annotation or (annotation is not float and isinstance(value, annotation))


def _assert_typed(node: ast.Node) -> None:
    """`node`, and every node in it, holds values of its fields' declared types."""
    hints = get_type_hints(type(node), vars(ast))
    for f in fields(node):
        value = getattr(node, f.name)
        assert _conforms(value, hints[f.name]), (type(node).__name__, f.name, value)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.Node):
                _assert_typed(child)


def test_parsed_trees_have_their_declared_types() -> None:
    for text in [*SPEC_TEXTS, huge.LONG["blocks"](100)]:
        for reach in (fast_only, lambda t: both(t)[1][0]):
            module = reach(text)
            assert module is not None
            _assert_typed(module)


def test_checked_specs_are_what_validation_builds() -> None:
    for path in sorted((ROOT / "specs").glob("**/*.nl")):
        result = check_text(path.read_text(encoding="utf-8"), file=str(path))
        assert result.spec is not None
        _assert_validated(result.spec)
        for graph in result.graphs.values():     # components at their derived levels (`with_level`)
            _assert_validated(graph.components())


def test_keywords_follow_the_parser_state() -> None:
    # `every` and `step` are keywords in a learn clause; names in an optimizer's expressions
    text = "optimizer o(lr = 0.1) {\n  every = grad\n  step = every * 2\n  param = param - lr * step\n}\n"
    fast, slow = both(text)
    assert fast == slow
    assert fast_only(text) == slow[0] is not None


def test_classes_built_without_validation_are_frozen() -> None:
    # `unvalidated` shares one set of fields set between nodes: only frozen models never change it
    from nldsl.spec import Op
    assert Op.model_config.get("frozen")
