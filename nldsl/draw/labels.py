"""The one way a spec's text reaches a diagram.

Every name, note and title goes into Graphviz as the text of an HTML-like label (`<...>`), through
`text()`, never as DOT syntax: inside such a label only `<`, `>` and `&` are markup (backslashes and
quotes are plain characters), so escaping those, and the characters XML cannot carry, is all it takes.
"""

from __future__ import annotations

import html
import unicodedata

import graphviz


def _visible(s: str) -> str:
    """Characters XML cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF: Graphviz
    parses labels as XML and rejects them) shown as their Python escape, e.g. a newline as `\\n`."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff" else c
                   for c in s)


def text(s: str) -> str:
    """`s` as text inside an HTML-like label: markup characters become entities."""
    return html.escape(_visible(s), quote=True)


def label(markup: str) -> str:
    """An HTML-like label around markup whose text came through `text()`."""
    return f"<{markup}>"


def graph_name(s: str) -> str:
    """A graph's own name (its SVG title) as a DOT quoted string: backslashes doubled so none escapes
    the closing quote, and never read as an HTML-like label even if it looks like one."""
    return graphviz.escape(_visible(s))
