"""Writes syntaxes/nl.tmLanguage.json, the TextMate grammar of `.nl` specs, from the Pygments lexer.

The grammar is a translation of `nldsl.lexer.NlLexer`'s rule table, not a second list of words: the
keywords, built-ins and literal patterns stay defined once (the Lark grammar and `nldsl.catalog`,
read by the lexer). Rules keep their order and each state becomes a TextMate context, so matching a
line rule by rule gives the Pygments tokens; tests/test_editor_grammar.py checks that on every
shipped spec, and that the committed file is this script's output. Run it after changing the
language's keywords or built-ins:

    PYTHONPATH=. python editors/vscode/generate.py    # from the repository root: the checkout's lexer
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from pygments.lexer import words
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

from nldsl.lexer import NlLexer

OUTPUT = Path(__file__).resolve().parent / "syntaxes" / "nl.tmLanguage.json"

# One standard TextMate scope per Pygments token type, so that themes colour the two alike and a
# scope names its token type back. `None`: matched but left unscoped (whitespace).
SCOPES: dict[Any, str | None] = {
    Whitespace: None,
    Comment.Single: "comment.line.number-sign.nl",
    Comment.Special: "comment.line.number-sign.allow.nl",   # `# allow NL083`
    String.Double: "string.quoted.double.nl",
    Number.Float: "constant.numeric.float.nl",
    Number.Integer: "constant.numeric.integer.nl",
    Keyword: "keyword.control.nl",
    Keyword.Declaration: "storage.type.nl",
    Keyword.Namespace: "keyword.control.import.nl",
    Keyword.Pseudo: "variable.language.nl",                 # self, outer
    Name.Builtin: "support.function.nl",
    Name.Constant: "support.constant.nl",
    Name.Builtin.Pseudo: "support.variable.nl",             # h, grad, vocab, ...: read, never defined
    Name.Attribute: "variable.parameter.nl",                # options inside a call
    Name: "variable.other.nl",
    Operator: "keyword.operator.nl",
    Punctuation: "punctuation.nl",
    Error: "invalid.illegal.nl",
}


class Untranslatable(Exception):
    """The lexer uses a Pygments construct this translation does not know."""


def scope(token: Any) -> str | None:
    if token not in SCOPES:
        raise Untranslatable(f"no TextMate scope for {token}: add it to SCOPES in {Path(__file__).name}")
    return SCOPES[token]


def named(scope_name: str | None) -> dict[str, str]:
    return {} if scope_name is None else {"name": scope_name}


def pattern(regex: str | words) -> str:
    return regex.get() if isinstance(regex, words) else regex


def action(token: Any) -> dict[str, Any]:
    """`name` for a plain token type; `captures` for `bygroups(...)`, whose group types Pygments
    keeps in the callback's closure."""
    if inspect.isfunction(token):
        groups = inspect.getclosurevars(token).nonlocals.get("args")
        if groups is None:
            raise Untranslatable(f"a rule's action is a callback other than bygroups: {token}")
        return {"captures": {str(i): named(scope(t)) for i, t in enumerate(groups, start=1) if scope(t)}}
    return named(scope(token))


def translate_state(state: str, entries: dict[str, tuple[str, Any]]) -> list[dict[str, Any]]:
    """The TextMate patterns of one lexer state, except its `#pop` rule (that becomes the context's
    `end`). A rule that enters a state, or `#push`es the current one, includes that state's context."""
    patterns: list[dict[str, Any]] = []
    for regex, token, *new_state in NlLexer.tokens[state]:
        target = new_state[0] if new_state else None
        if target is None:
            patterns.append({"match": pattern(regex), **action(token)})
        elif target == "#pop":
            continue
        else:
            entered = state if target == "#push" else target
            if not isinstance(entered, str) or entered not in NlLexer.tokens:
                raise Untranslatable(f"state {state!r}: unsupported transition {target!r}")
            if entries.setdefault(entered, (pattern(regex), token)) != (pattern(regex), token):
                raise Untranslatable(f"state {entered!r} is entered by two different patterns")
            patterns.append({"include": f"#{entered}"})
    return patterns


def context(state: str, entry: tuple[str, Any], patterns: list[dict[str, Any]]) -> dict[str, Any]:
    """A begin/end context for a nested state: it opens on the rule that enters it and closes on its
    one `#pop` rule, both scoped like the tokens Pygments gives them."""
    begin, enter = entry
    pops = [(regex, token) for regex, token, *target in NlLexer.tokens[state] if target == ["#pop"]]
    if len(pops) != 1:
        raise Untranslatable(f"state {state!r} needs exactly one #pop rule, has {len(pops)}")
    end, leave = pops[0]
    return {
        "begin": begin, "beginCaptures": {"0": named(scope(enter))},
        "end": pattern(end), "endCaptures": {"0": named(scope(leave))},
        "patterns": patterns,
    }


def grammar() -> dict[str, Any]:
    entries: dict[str, tuple[str, Any]] = {}
    top = translate_state("root", entries)
    nested = {state: translate_state(state, entries) for state in NlLexer.tokens
              if state != "root"}
    unreachable = set(nested) - set(entries)
    if unreachable:
        raise Untranslatable(f"states never entered: {sorted(unreachable)}")
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "nl",
        "scopeName": "source.nl",
        "fileTypes": ["nl"],
        "comment": "Generated by editors/vscode/generate.py from nldsl.lexer.NlLexer; do not edit.",
        "patterns": top,
        "repository": {state: context(state, entries[state], nested[state]) for state in sorted(nested)},
    }


def render() -> str:
    return json.dumps(grammar(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
