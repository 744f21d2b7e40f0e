"""The grammar is data: it builds as strict LALR, every terminal has English, every rule a handler."""

from __future__ import annotations

from lark import Lark

from nldsl import parse


def test_grammar_is_strict_lalr():
    p = parse.parser()
    assert isinstance(p, Lark)
    assert p.options.parser == "lalr" and p.options.strict


def test_every_terminal_has_an_english_name():
    names = parse.terminal_names()
    terminals = {t.name for t in parse.parser().terminals}
    assert terminals <= set(names)
    for name, text in names.items():
        assert "__ANON" not in name and "__ANON" not in text
        assert text.startswith("'") or text.startswith("a") or text.startswith("the") or text == "whitespace"


def test_every_rule_and_alias_has_an_ast_handler():
    handlers = set(dir(parse._ToAst))
    for rule in parse.parser().rules:
        name = rule.alias or rule.origin.name
        name = str(name)
        if name.startswith("_") or (rule.options.expand1 and not rule.alias):
            continue
        assert name in handlers, f"grammar rule {name!r} has no AST handler"


def test_keywords_stay_usable_as_names_where_unambiguous():
    # `step` and `grad` are keywords in clauses but ordinary names in optimizer expressions
    from nldsl.api import check_text
    r = check_text("optimizer o(lr = 0.1) {\n  param = param - lr * grad / step\n}\n")
    assert r.ok, r.render()
