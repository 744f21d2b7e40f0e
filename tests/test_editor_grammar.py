"""The VS Code grammar (editors/vscode/syntaxes/nl.tmLanguage.json) cannot drift from the Pygments lexer.

It is generated from `NlLexer` by editors/vscode/generate.py, so the committed file must equal the
generator's output; and a small TextMate matcher below tokenizes every shipped spec with it and
compares the scopes, character by character, with the token types Pygments gives the same text.
The matcher follows the TextMate rules the grammar uses: a line at a time (with its "\\n"), the
earliest match among the current context's patterns wins and ties go to the first listed, a
begin/end context tries its `end` first, and `captures` scope a match's groups.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from nldsl.lexer import NlLexer

ROOT = Path(__file__).resolve().parent.parent
EDITOR = ROOT / "editors" / "vscode"
GRAMMAR_FILE = EDITOR / "syntaxes" / "nl.tmLanguage.json"
SPECS = sorted((ROOT / "specs").rglob("*.nl"))

# Every kind of token, the error tokens, nested calls and a call's options across lines: text the
# shipped specs might not all hold.
SAMPLE = '''import "optim/adamw.nl"
# a comment
model M(vocab = 256, dim = 64, heads = 4, context = 64) {
  block {
    memory S : mlp(expand = 4, residual) per head scope persistent init zeros   # allow NL083: deliberate
    learn S : l2(self(h), stopgrad(outer(h))) by gd(lr = 1e-3, retain = .9, momentum = 2E5) every 16 tokens
    h = h + S(h) @ W ^ 2 - 1.5 * x / y
    y = f(a,
          b = [1, 2],
          c = g(d = 3))
  }
}) ; $ x = 1;
'''


def load_generator():
    spec = importlib.util.spec_from_file_location("nl_grammar_generator", EDITOR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()
GRAMMAR = json.loads(GRAMMAR_FILE.read_text(encoding="utf-8"))


class TextMate:
    """Tokenizes text with a TextMate grammar that uses `match`, `begin`/`end`, `captures` and
    `include` of repository entries: the subset the generator writes."""

    def __init__(self, grammar: dict[str, Any]):
        self.grammar = grammar
        self.compiled: dict[str, re.Pattern] = {}

    def regex(self, source: str) -> re.Pattern:
        if source not in self.compiled:
            self.compiled[source] = re.compile(source)
        return self.compiled[source]

    def patterns(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rules with `include`s replaced by the repository entry they name."""
        out = []
        for rule in rules:
            if "include" in rule:
                out.append(self.grammar["repository"][rule["include"].removeprefix("#")])
            else:
                out.append(rule)
        return out

    def scopes(self, text: str) -> list[str | None]:
        """The innermost scope of each character of `text` (None: unscoped)."""
        result: list[str | None] = []
        stack: list[dict[str, Any]] = []   # the open begin/end contexts; the top level has no `end`
        for line in text.splitlines(keepends=True):
            line_scopes: list[str | None] = [None] * len(line)
            pos = 0
            while pos < len(line):
                top = stack[-1] if stack else None
                candidates: list[tuple[str, dict[str, Any]]] = []
                if top is not None:
                    candidates.append(("end", top))
                rules = self.patterns(top["patterns"] if top is not None else self.grammar["patterns"])
                candidates += [("begin" if "begin" in rule else "match", rule) for rule in rules]
                best = None
                for kind, rule in candidates:
                    m = self.regex(rule[kind]).search(line, pos)
                    if m and (best is None or m.start() < best[0].start()):
                        best = (m, kind, rule)
                if best is None:
                    break
                m, kind, rule = best
                assert m.end() > m.start(), f"empty match of {rule[kind]!r} in {line!r}"
                captures = {"match": "captures", "begin": "beginCaptures", "end": "endCaptures"}[kind]
                if kind == "match" and "name" in rule:
                    line_scopes[m.start():m.end()] = [rule["name"]] * (m.end() - m.start())
                for group, capture in rule.get(captures, {}).items():
                    start, end = m.span(int(group))
                    if start >= 0 and "name" in capture:
                        line_scopes[start:end] = [capture["name"]] * (end - start)
                if kind == "begin":
                    stack.append(rule)
                elif kind == "end":
                    stack.pop()
                pos = m.end()
            result += line_scopes
        return result


def pygments_scopes(text: str) -> list[str | None]:
    """The scope each character would have if Pygments' token types were mapped by the generator's table."""
    result: list[str | None] = []
    for _, token, value in NlLexer().get_tokens_unprocessed(text):
        result += [GENERATOR.SCOPES[token]] * len(value)
    return result


def first_difference(text: str) -> str | None:
    text = text if text.endswith("\n") else text + "\n"
    expected, got = pygments_scopes(text), TextMate(GRAMMAR).scopes(text)
    assert len(expected) == len(got) == len(text)
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e != g:
            line = text.count("\n", 0, i) + 1
            column = i - (text.rfind("\n", 0, i) + 1) + 1
            return f"{line}:{column} {text[i:i + 20]!r}: Pygments gives {e}, the grammar {g}"
    return None


def test_committed_grammar_is_the_generators_output():
    assert GRAMMAR_FILE.read_text(encoding="utf-8") == GENERATOR.render(), \
        "editors/vscode/syntaxes/nl.tmLanguage.json is stale: run `PYTHONPATH=. python editors/vscode/generate.py`"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(ROOT / "specs").as_posix())
def test_grammar_tokenizes_shipped_specs_like_pygments(path):
    assert first_difference(path.read_text(encoding="utf-8")) is None, path.name


def test_grammar_tokenizes_every_kind_of_token_like_pygments():
    assert first_difference(SAMPLE) is None


def test_the_compared_texts_exercise_every_scope():
    texts = [SAMPLE, *(p.read_text(encoding="utf-8") for p in SPECS)]
    seen = {s for text in texts for s in TextMate(GRAMMAR).scopes(text)}
    assert seen == set(GENERATOR.SCOPES.values())


def all_regexes(rules: list[dict[str, Any]]) -> list[str]:
    found = []
    for rule in rules:
        found += [rule[k] for k in ("match", "begin", "end") if k in rule]
        found += all_regexes(rule.get("patterns", []))
    return found


def test_regexes_mean_the_same_to_oniguruma():
    """VS Code matches with Oniguruma; these Python-only spellings would fail there or mean another thing."""
    regexes = all_regexes(GRAMMAR["patterns"]) + all_regexes(list(GRAMMAR["repository"].values()))
    assert len(regexes) > 20
    python_only = re.compile(r"\(\?P[<=>]|\\Z|\(\?[aLu]")
    for source in regexes:
        assert not python_only.search(source), source


def test_the_matcher_sees_what_a_bad_grammar_gets_wrong():
    """The comparison can fail: a grammar without the call context misses option names."""
    crippled = {**GRAMMAR, "patterns": [r for r in GRAMMAR["patterns"] if r != {"include": "#call"}]}
    text = "model M(vocab = 256, dim = 64) {\n}\n"
    expected = pygments_scopes(text)
    assert TextMate(crippled).scopes(text) != expected
    assert TextMate(GRAMMAR).scopes(text) == expected


def test_generator_refuses_a_token_type_without_a_scope(monkeypatch):
    monkeypatch.delitem(GENERATOR.SCOPES, NlLexer.tokens["root"][-1][1])   # the Error token
    with pytest.raises(GENERATOR.Untranslatable, match="no TextMate scope"):
        GENERATOR.render()


def test_editors_doc_lists_every_scope():
    text = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")
    missing = [s for s in GENERATOR.SCOPES.values() if s is not None and f"`{s}`" not in text]
    assert not missing, f"docs/editors.md does not show these scopes: {missing}"


def test_extension_manifest_wires_the_grammar_and_the_server():
    manifest = json.loads((EDITOR / "package.json").read_text(encoding="utf-8"))
    contributes = manifest["contributes"]
    assert contributes["languages"][0]["id"] == "nl"
    assert contributes["languages"][0]["extensions"] == [".nl"]
    grammar = contributes["grammars"][0]
    assert (grammar["language"], grammar["scopeName"]) == ("nl", GRAMMAR["scopeName"])
    assert (EDITOR / grammar["path"]).resolve() == GRAMMAR_FILE
    assert (EDITOR / contributes["languages"][0]["configuration"]).is_file()
    assert "nldsl.serverPath" in contributes["configuration"]["properties"]
    assert (EDITOR / manifest["main"]).is_file()
    assert "vscode-languageclient" in manifest["dependencies"]
    config = json.loads((EDITOR / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
