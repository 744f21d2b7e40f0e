"""The parser's fast path: our own lexer and LALR loop over Lark's tables, for files that parse.

Lark's contextual lexer and `ParserState` spend most of the time of parsing a large spec on
bookkeeping (a `Token` per lexeme, a lexer object per parser state, a method call per token), so a
100,000-line spec took ten seconds to lex and parse. This module runs the same machine with less:

* one compiled regular expression with a named group per terminal, built from the grammar's own
  terminal definitions and in Lark's order of preference (priority, then width, then name); the
  keyword terminals that the NAME pattern also matches are looked up in a table after NAME matches,
  as Lark's `UnlessCallback` does;
* a keyword is a keyword only where the parser state accepts it, otherwise a NAME: this is what
  Lark's contextual lexer does (each state lexes with the terminals it accepts);
* the LALR loop drives Lark's own parse table and calls Lark's own reduction callbacks (which shape
  the children as the grammar says and then call `nldsl.parse._Reducer`), so the AST built is the
  one Lark builds. Reductions of `?rule: one_symbol` pass their child through without a call.

It only has to be right for input that parses: at the first thing it does not expect (a character
no terminal matches, a terminal the state does not accept) it gives up and `nldsl.parse` parses the
file again through Lark, whose errors the diagnostics are worded from. `tests/test_scan.py` checks
on generated and shipped specs that both paths give the same tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lark import Lark
from lark.lexer import PatternRE, PatternStr, TerminalDef


class Tok:
    """A lexeme as the reduction callbacks read it: the attributes of Lark's `Token` that
    `nldsl.parse` uses, without Lark's `str` subclass and its bookkeeping."""

    __slots__ = ("column", "end_column", "end_line", "line", "type", "value")

    def __init__(self, type_: str, value: str, line: int, column: int, end_line: int, end_column: int) -> None:
        self.type, self.value, self.line, self.column = type_, value, line, column
        self.end_line, self.end_column = end_line, end_column

    def __repr__(self) -> str:
        return f"Tok({self.type}, {self.value!r}, {self.line}:{self.column})"


@dataclass(frozen=True)
class Machine:
    """Lark's parser, flattened for a tight loop. An action is an int: a state to shift to (>= 0),
    or `~i` to reduce by `rules[i]`."""

    pattern: re.Pattern[str]               # whitespace and comments, then one terminal (a named group)
    rest: re.Pattern[str]                  # whitespace and comments only
    keywords: dict[str, tuple[str, str]]   # word -> (keyword terminal, the terminal that matched it)
    multiline: frozenset[str]              # terminals whose text may hold a newline
    actions: list[dict[str, int]]          # per state: terminal or rule name -> action
    rules: list[tuple[str, int, Callable[[list], object] | None]]   # origin, length, callback (None: pass through)
    start: int
    end: int
    # (state below, pass-through reduction, lookahead) -> the state after it and the pass-through
    # reductions that follow it: filled in as met, shared by every parse
    passes: dict[tuple[int, int, str], int] = field(default_factory=dict)


def machine(parser: Lark) -> Machine | None:
    """The flattened parser, or None when Lark's internals are not as this module expects (another
    Lark version): parsing then always goes through Lark."""
    try:
        frontend = parser.parser.parser.parser
        table, callbacks = frontend.parse_table, frontend.callbacks
        terminals: list[TerminalDef] = list(parser.terminals)
        ignore = frozenset(parser.lexer_conf.ignore)
        start, end = table.start_states["start"], table.end_states["start"]
    except AttributeError:
        return None
    if parser.lexer_conf.g_regex_flags or parser.lexer_conf.postlex is not None or parser.lexer_conf.callbacks:
        return None
    scanner = _scanner(terminals, ignore)
    if scanner is None:
        return None
    state_ids = sorted(table.states)
    if state_ids != list(range(len(state_ids))):
        return None
    rule_index: dict[object, int] = {}
    rules: list[tuple[str, int, Callable[[list], object] | None]] = []
    actions: list[dict[str, int]] = []
    for state in state_ids:
        row = {}
        for symbol, (action, arg) in table.states[state].items():
            symbol = str(symbol)     # Lark's keys are `Token`s, whose __eq__ is Python code: slow to look up
            if action.name == "Shift":
                row[symbol] = arg
                continue
            if arg not in rule_index:
                rule_index[arg] = len(rules)
                callback = None if _passes_through(arg) else callbacks[arg]
                rules.append((str(arg.origin.name), len(arg.expansion), callback))
            row[symbol] = ~rule_index[arg]
        actions.append(row)
    multiline = frozenset(t.name for t in terminals if _may_hold_newline(t.pattern.to_regexp()))
    return Machine(*scanner, multiline, actions, rules, start, end)


def _scanner(terminals: list[TerminalDef], ignore: frozenset[str]) \
        -> tuple[re.Pattern[str], re.Pattern[str], dict[str, tuple[str, str]]] | None:
    """The regular expressions of `Machine`, and its keyword table: one named group per terminal, in
    the order Lark's lexer prefers them, less the string terminals that a pattern terminal matches
    whole (keywords, matched by NAME), which are looked up after. The ignored terminals (whitespace,
    comments) are skipped in front of each terminal, in an atomic group so that a failed match does
    not backtrack through them. None if the grammar has terminals this cannot handle."""
    keywords: dict[str, tuple[str, str]] = {}
    strings = [t for t in terminals if isinstance(t.pattern, PatternStr)]
    patterns = [t for t in terminals if isinstance(t.pattern, PatternRE)]
    if len(strings) + len(patterns) != len(terminals) or any(t.pattern.flags for t in terminals):
        return None
    for word_terminal in patterns:
        word = re.compile(word_terminal.pattern.to_regexp())
        for t in strings:
            if t.priority == word_terminal.priority and word.fullmatch(t.pattern.value):
                if t.pattern.value in keywords:
                    return None
                keywords[t.pattern.value] = (t.name, word_terminal.name)
    embedded = {name for name, _ in keywords.values()}
    kept = sorted((t for t in terminals if t.name not in embedded and t.name not in ignore),
                  key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
    skip = "(?>(?:" + "|".join(t.pattern.to_regexp() for t in terminals if t.name in ignore) + ")*)"
    try:
        return (re.compile(skip + "(?:" + "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in kept) + ")"),
                re.compile(skip), keywords)
    except (re.error, AssertionError):   # Python's re refuses more than 100 groups with AssertionError
        return None


def _passes_through(rule) -> bool:
    """`?rule: symbol`: Lark hands the one child on unchanged, so the loop need not call anything."""
    if not rule.options.expand1 or rule.alias or len(rule.expansion) != 1 or rule.options.empty_indices:
        return False
    sym = rule.expansion[0]
    return not (sym.is_term and sym.filter_out) and not (not sym.is_term and sym.name.startswith("_"))


def _pass_through(m: Machine, below: int, action: int, kind: str) -> int:
    """The state after reducing by the pass-through rule `~action` with `below` under the top of the
    stack, and after every pass-through reduction that then follows on the same lookahead: each
    replaces the top state and leaves `below` where it is."""
    while True:
        top = m.actions[below][m.rules[~action][0]]
        next_action = m.actions[top].get(kind)
        if next_action is None or next_action >= 0 or m.rules[~next_action][2] is not None or top == m.end:
            return top
        action = next_action


def _may_hold_newline(regexp: str) -> bool:
    """Lark's own test (`lexer._regexp_has_newline`), so that lines are counted where Lark counts them."""
    return "\n" in regexp or "\\n" in regexp or "\\s" in regexp or "[^" in regexp or ("(?s" in regexp and "." in regexp)


def parse(m: Machine, text: str) -> object | None:
    """What Lark's parser returns for `text` (the start rule's callback result), or None where the
    text does not parse as far as this loop can tell."""
    match, rest = m.pattern.match, m.rest.fullmatch
    actions, rules, keywords, multiline, end_state = m.actions, m.rules, m.keywords, m.multiline, m.end
    passes = m.passes
    states: list[int] = [m.start]
    values: list[object] = []
    pos, line, line_start = 0, 1, 0
    while True:
        found = match(text, pos)
        if found is not None:
            kind = found.lastgroup
            start, end = found.span(kind)
            if start != pos and (breaks := text.count("\n", pos, start)):     # skipped whitespace, comments
                line += breaks
                line_start = text.rindex("\n", pos, start) + 1
            value = text[start:end]
            row = actions[states[-1]]
            word = keywords.get(value)
            if word is not None and word[1] == kind and word[0] in row:
                kind = word[0]
            column = start - line_start + 1
            if kind in multiline and (breaks := text.count("\n", start, end)):
                line += breaks
                line_start = text.rindex("\n", start, end) + 1
                token: Tok | None = Tok(kind, value, line - breaks, column, line, end - line_start + 1)
            else:
                token = Tok(kind, value, line, column, line, column + end - start)
            pos = end
        elif rest(text, pos) is not None:       # only whitespace and comments are left
            kind, token, row = "$END", None, actions[states[-1]]
        else:
            return None
        while True:
            action = row.get(kind)
            if action is None:
                return None
            if action >= 0:
                if token is None:       # $END is never shifted: the start rule's reduction ends the parse
                    return None
                states.append(action)
                values.append(token)
                break
            origin, length, callback = rules[~action]
            if callback is None:        # `?rule: symbol`, perhaps several in a row: the child stays, the state moves on
                key = (states[-2], action, kind)
                goto = passes.get(key)
                if goto is None:
                    goto = passes[key] = _pass_through(m, states[-2], action, kind)
                states[-1] = goto
            else:
                if length:
                    children = values[-length:]
                    del values[-length:]
                    del states[-length:]
                else:
                    children = []
                values.append(callback(children))
                goto = actions[states[-1]][origin]
                states.append(goto)
            if token is None and goto == end_state:
                return values[-1]
            row = actions[goto]
