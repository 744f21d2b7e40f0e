"""Property tests: whatever text it is given, the front end answers with diagnostics, never an exception.

Three kinds of input: (a) streams of the grammar's own tokens, random and as mutations of the shipped
specs (near-misses reach the checker, not just the parser); (b) arbitrary unicode; (c) programs derived
from the grammar itself, which must parse, check without raising, and survive `nldsl fmt` unchanged.
Every run is derandomized and database-free, so CI sees the same examples each time.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from lark.lexer import PatternStr

from nldsl import ast, catalog
from nldsl.api import CheckResult, check_text
from nldsl.codes import CODES
from nldsl.fmt import collect_comments, format_source
from nldsl.parse import parse, parser
from nldsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
SPEC_TEXTS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("**/*.nl"))]
SYNTAX_CODES = {"NL001", "NL002", "NL003"}

# Keywords and punctuation: the terminals the grammar spells out literally.
LITERALS = {t.name: t.pattern.value for t in parser().terminals if isinstance(t.pattern, PatternStr)}
KEYWORDS = {v for v in LITERALS.values() if v.isalpha()}

# Names the checker knows (so generated code reaches past "unknown name"), minus keywords, plus a few
# short made-up ones.
VOCABULARY = sorted({*catalog.FUNCTIONS, *catalog.OBJECTIVES, *catalog.STRUCTURES, *catalog.RULES,
                     *catalog.RESERVED_HEADER, *catalog.MODEL_INPUTS, *catalog.OPTIMIZER_INPUTS,
                     "heads", "layers", "x", "h", "lr", "expand", "act", "silu", "residual", "head",
                     "zeros", "learned", "before", "after", "chunk_start", "all", "parallel", "through",
                     "stop", "truncate", "loss", "batch", "clip", "sgd", "adamw", "persistent"} - KEYWORDS)
names = st.one_of(st.sampled_from(VOCABULARY),
                  st.from_regex(r"[a-z_][a-z0-9_]{0,3}", fullmatch=True).filter(lambda s: s not in KEYWORDS))
ints = st.one_of(st.integers(0, 300), st.integers(0, 10**30)).map(str)
numbers = st.sampled_from(["0.5", "1.", "1e-3", ".25", "2.5E+2", "0.0", "1e999", "007.0"])
strings = st.sampled_from(['"optim/sgd.nl"', '"optim/adamw.nl"', '"missing.nl"', '""', '"specs"', '"."'])
comments = st.from_regex(r"#[^\n]*", fullmatch=True)
whitespace = st.sampled_from([" ", "\n", "  ", "\t", "\r\n", "\n\n"])

REPRODUCIBLE = settings(derandomize=True, database=None, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(n: int) -> settings:
    return settings(REPRODUCIBLE, max_examples=n)


def assert_only_diagnostics(text: str) -> CheckResult:
    result = check_text(text)
    assert isinstance(result, CheckResult)
    for d in result.diagnostics:
        assert d.code in CODES, d
        assert d.span.line >= 1 and d.span.col >= 1, d
    return result


# ---- (a) token streams --------------------------------------------------------------------------

token = st.one_of(st.sampled_from(sorted(LITERALS.values())), names, ints, numbers, strings, comments)
separator = st.sampled_from(["", " ", " ", "\n", "\t"])
token_streams = st.lists(st.tuples(token, separator), max_size=60).map(lambda ts: "".join(t + s for t, s in ts))


@examples(300)
@given(token_streams)
def test_random_token_streams_get_diagnostics(text: str) -> None:
    assert_only_diagnostics(text)


def spec_tokens(text: str) -> list[str]:
    return [str(t) for t in parser().lex(text) if t.type != "COMMENT"]


SPEC_TOKENS = [spec_tokens(t) for t in SPEC_TEXTS]


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    """A shipped spec with a few tokens deleted, duplicated or replaced: a near-miss program."""
    tokens = list(draw(st.sampled_from(SPEC_TOKENS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "replace"]))
        if action == "delete":
            del tokens[i]
        elif action == "duplicate":
            tokens.insert(i, tokens[i])
        else:
            tokens[i] = draw(token)
    return " ".join(tokens)


@examples(400)
@given(mutated_specs())
def test_mutated_specs_get_diagnostics(text: str) -> None:
    assert_only_diagnostics(text)


# ---- (b) arbitrary text -------------------------------------------------------------------------

@examples(300)
@given(st.text(max_size=200))
def test_arbitrary_text_gets_diagnostics(text: str) -> None:
    assert_only_diagnostics(text)


# ---- (c) programs derived from the grammar ------------------------------------------------------

def spaced(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Every token ends in a space, so keywords and names never run together."""
    return strategy.map(lambda s: s + " ")


GRAMMAR = Lark((ROOT / "grammar" / "nl.lark").read_text(encoding="utf-8"), parser="lalr")
EXPLICIT = {name: st.just(value + " ") for name, value in LITERALS.items()} | {
    "NAME": spaced(names),
    "INT": spaced(ints),
    "NUMBER": spaced(numbers),
    "STRING": spaced(strings),
    "COMMENT": comments.map(lambda s: s + "\n"),   # a comment runs to the end of its line
    "WS": st.sampled_from([" ", "\n"]),
}


def rule(start: str) -> st.SearchStrategy[str]:
    """Sentences of one grammar rule (from_lark refuses strategies for terminals the rule never uses)."""
    terminals, _, ignored = GRAMMAR.grammar.compile([start], ())
    used = {t.name for t in terminals} | set(ignored)
    return from_lark(GRAMMAR, start=start, explicit={k: v for k, v in EXPLICIT.items() if k in used})


def listed(items: st.SearchStrategy[str], min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(items, min_size=min_size, max_size=8).map("".join)


def unit(keyword: str, body: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(spaced(names), rule("header"), body).map(lambda p: f"{keyword}{p[0]}{p[1]}{{ {p[2]}}} ")


# from_lark ends repetitions early, so whole files drawn from `start` are mostly a few imports and an
# empty unit. Files assembled from the grammar's own statements reach the checker's deeper paths.
blocks = st.tuples(st.sampled_from(["block ", "block b ", "block b repeat 2 "]),
                   listed(rule("block_item"), min_size=1)).map(lambda p: f"{p[0]}{{ {p[1]}}} ")
models = unit("model ", st.tuples(listed(blocks, min_size=1), listed(rule("model_item"))).map("".join))
optimizers = unit("optimizer ", listed(rule("opt_item"), min_size=1))
assembled = st.tuples(listed(rule("import_stmt")), listed(st.one_of(models, optimizers), min_size=1)).map("".join)
programs = st.one_of(rule("start"), assembled)


def shape(text: str) -> object:
    """The file's AST without positions, modifiers and clauses in canonical order (the formatter
    reorders them; their order carries no meaning)."""
    module, diagnostics = parse(SourceFile(path="t.nl", text=text))
    assert module is not None, [d.render() for d in diagnostics]
    return _canonical(ast.dump(module, spans=False))


def _canonical(tree: object) -> object:
    if isinstance(tree, dict):
        out = {k: _canonical(v) for k, v in tree.items()}
        for key in ("modifiers", "clauses"):
            if key in out:
                out[key] = sorted(out[key], key=lambda item: str(item["key"]))
        return out
    if isinstance(tree, list):
        return [_canonical(v) for v in tree]
    return tree


@examples(150)
@given(programs)
def test_grammar_programs_parse_check_and_format(text: str) -> None:
    module, diagnostics = parse(SourceFile(path="t.nl", text=text))
    assert module is not None and not diagnostics, [d.render() for d in diagnostics]
    result = assert_only_diagnostics(text)
    assert not {d.code for d in result.diagnostics if d.span.file == result.file} & SYNTAX_CODES

    formatted, diagnostics = format_source(SourceFile(path="t.nl", text=text))
    assert formatted is not None, diagnostics
    assert shape(formatted) == shape(text)
    assert sorted(c.text for c in collect_comments(formatted)) == sorted(c.text for c in collect_comments(text))
    again, _ = format_source(SourceFile(path="t.nl", text=formatted))
    assert again == formatted
