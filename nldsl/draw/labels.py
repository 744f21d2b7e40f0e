"""The one way a spec's text reaches a diagram.

Every name, note and title goes into Graphviz as text inside an HTML-like label (`<...>`), through
`text()`, and never as DOT syntax (node and graph ids are nldsl's own: `n0`, `hierarchy`). Inside such
a label `<`, `>` and `&` are markup, and Graphviz then reads the text's backslashes as its escapes
(`\\N` becomes the node's id, `\\\\` one backslash); quotes are plain characters.
"""

from __future__ import annotations

import html
import unicodedata


def text(s: str) -> str:
    """`s` as text inside an HTML-like label, shown exactly as written: `<`, `>`, `&` and quotes become
    entities, backslashes are doubled, and characters XML cannot carry (control characters such as a
    newline, lone surrogates, U+FFFE/U+FFFF: Graphviz parses labels as XML and would reject them) are
    shown as their Python escape, e.g. a newline as `\\n`."""
    visible = "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff" else c
                      for c in s)
    return html.escape(visible, quote=True).replace("\\", "\\\\")


def label(markup: str) -> str:
    """An HTML-like label around markup whose text came through `text()`."""
    return f"<{markup}>"
