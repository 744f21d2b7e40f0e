"""The Pygments lexer: every shipped spec highlights without errors, and each kind of word gets its type."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pygments.lexers
import pytest
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String

from nldsl import catalog
from nldsl.lexer import NlLexer, builtin_names, constant_names, keywords
from nldsl.parse import parser

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").rglob("*.nl"))


def lex(text: str) -> list[tuple[object, str]]:
    return [(t, v) for t, v in NlLexer().get_tokens(text) if v.strip()]


def token_of(text: str, word: str) -> object:
    """The token type of the first token spelled `word` in `text`."""
    return next(t for t, v in lex(text) if v == word)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(ROOT / "specs").as_posix())
def test_shipped_specs_highlight_without_errors(path):
    text = path.read_text(encoding="utf-8")
    tokens = list(NlLexer().get_tokens(text))
    errors = [(t, v) for t, v in tokens if t in Error]
    assert not errors, f"{path.name}: error tokens {errors[:5]}"
    assert "".join(v for _, v in tokens) == (text if text.endswith("\n") else text + "\n")   # lossless


def test_keywords_are_the_grammar_keyword_terminals():
    expected = {t.pattern.value for t in parser().terminals
                if t.pattern.type == "str" and re.fullmatch(r"[A-Za-z_]\w*", t.pattern.value)}
    assert set(keywords()) == expected
    assert {"model", "learn", "every", "backprop", "outer", "self"} <= expected


@pytest.mark.parametrize("word", keywords())
def test_every_keyword_is_a_keyword(word):
    assert token_of(f"{word} x", word) in Keyword


def test_builtins_come_from_the_catalog():
    for table in (catalog.FUNCTIONS, catalog.OBJECTIVES, catalog.STRUCTURES, catalog.PARAM_TYPES, catalog.RULES,
                  catalog.SCHEDULES):
        for name in table:
            assert name in builtin_names() or name in keywords(), name
            assert token_of(f"y = {name}(x)", name) in Name.Builtin, name


def test_option_values_are_constants():
    values = [*catalog.SCOPES, *catalog.MEMORY_INITS, *catalog.ANCHORS, *catalog.READS, *catalog.BACKPROPS, "head",
              "element", "layernorm", "none"]
    for value in values:
        expected = Keyword if value in keywords() else Name.Builtin if value in builtin_names() else Name.Constant
        assert token_of(f"memory M : matrix {value}", value) in expected, value
    assert "persistent" in constant_names() and "chunk_start" in constant_names()


def test_token_types_in_a_spec():
    text = '''import "optim/adamw.nl"
# a comment
model M(vocab = 256, dim = 64, heads = 4, context = 64) {
  block {
    memory S : mlp(expand = 4, residual) per head scope persistent init zeros
    # allow NL083: deliberate
    learn S : l2(self(h), stopgrad(h)) by gd(lr = 1e-3, retain = 0.9) every 16 tokens read before
    h = h + S(h) @ W
  }
}
'''
    assert token_of(text, '"optim/adamw.nl"') in String
    assert token_of(text, "# a comment") in Comment.Single
    assert token_of(text, "# allow NL083: deliberate") in Comment.Special
    assert token_of(text, "import") in Keyword.Namespace
    for word in ("model", "block", "memory", "learn"):
        assert token_of(text, word) in Keyword.Declaration, word
    for word in ("per", "scope", "init", "by", "every", "tokens", "read"):
        assert token_of(text, word) in Keyword, word
    assert token_of(text, "self") in Keyword
    for word in ("mlp", "l2", "stopgrad", "gd"):
        assert token_of(text, word) in Name.Builtin, word
    for word in ("persistent", "zeros", "before", "head"):
        assert token_of(text, word) in Name.Constant, word
    for word in ("vocab", "expand", "residual", "lr", "retain"):
        assert token_of(text, word) in Name.Attribute, word     # options and header parameters
    assert token_of(text, "h") in Name.Builtin.Pseudo
    assert token_of(text, "S") in Name
    assert token_of(text, "W") in Name
    assert token_of(text, "1e-3") in Number.Float
    assert token_of(text, "16") in Number.Integer
    assert token_of(text, "@") in Operator
    assert token_of(text, "{") in Punctuation


def test_unknown_characters_are_errors():
    assert any(t in Error for t, _ in NlLexer().get_tokens("x = 1;\n"))


def test_lexer_metadata():
    assert NlLexer.name == "nl"
    assert NlLexer.aliases == ["nl", "nldsl"]
    assert NlLexer.filenames == ["*.nl"]
    assert NlLexer.analyse_text((ROOT / "specs" / "hope.nl").read_text(encoding="utf-8")) > 0.5


def test_registered_as_a_pygments_plugin():
    # The entry point (`[project.entry-points."pygments.lexers"]` in pyproject.toml) exists only when
    # the package is installed; running from a checkout via PYTHONPATH it may be absent, and only then
    # is this test skipped.
    installed = [ep for ep in importlib.metadata.entry_points(group="pygments.lexers") if ep.name == "nl"]
    if not installed:
        pytest.skip("nldsl is not installed: no pygments.lexers entry point named 'nl'")
    assert installed[0].value == "nldsl.lexer:NlLexer"
    lexer = pygments.lexers.get_lexer_by_name("nl")
    assert type(lexer).__name__ == "NlLexer" and type(lexer).__module__ == "nldsl.lexer"
    assert type(pygments.lexers.get_lexer_by_name("nldsl")).__name__ == "NlLexer"
    spec = (ROOT / "specs" / "hope.nl").read_text(encoding="utf-8")
    assert type(pygments.lexers.get_lexer_for_filename("hope.nl", spec)).__name__ == "NlLexer"
