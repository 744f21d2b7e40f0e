"""Generated lines kept within a width: a long line is broken inside its widest bracket, its items
packed four spaces deeper (and broken again where one item alone is too long)."""

from __future__ import annotations

import io
import tokenize

WIDTH = 120
OPEN, CLOSE = "([{", ")]}"


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """`line` as one or more lines of at most `width` characters, where its brackets allow."""
    if len(line) <= width:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()))
    code, comment = _split_comment(line.strip())
    spans = _top_brackets(code)
    if not spans:
        return [line]
    start, end = max(spans, key=lambda span: span[1] - span[0])
    items = _split_items(code[start + 1:end])
    trailing = code[start + 1:end].rstrip().endswith(",")    # a one-item tuple keeps its comma
    inner = indent + "    "
    lines = [indent + code[:start + 1]]
    current = ""
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 or trailing else "")
        if current and len(inner) + len(current) + 1 + len(piece) <= width:
            current += " " + piece
        else:
            if current:
                lines += wrap(inner + current, width)
            current = piece
    tail = code[end:] + (f"   {comment}" if comment else "")
    if current and len(inner) + len(current) + len(tail) <= width:
        lines += wrap(inner + current + tail, width)
    else:
        if current:
            lines += wrap(inner + current, width)
        lines += wrap(indent + tail, width)
    return lines


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    """The tokens of a piece of a line (which may close a bracket it does not open)."""
    out = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(code).readline):
            if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
                out.append(t)
    except tokenize.TokenError:     # the brackets do not balance: every token was already read
        pass
    return out


def _split_comment(code: str) -> tuple[str, str]:
    for t in _tokens(code):
        if t.type == tokenize.COMMENT:
            return code[:t.start[1]].rstrip(), t.string
    return code, ""


def _top_brackets(code: str) -> list[tuple[int, int]]:
    """(open, close) offsets of the outermost bracket pairs, in order."""
    spans, depth, start = [], 0, 0
    for t in _tokens(code):
        if t.type != tokenize.OP:
            continue
        if t.string in OPEN:
            if depth == 0:
                start = t.start[1]
            depth += 1
        elif t.string in CLOSE:
            depth -= 1
            if depth == 0:
                spans.append((start, t.start[1]))
    return spans


def _split_items(inner: str) -> list[str]:
    """The comma-separated items of a bracket's contents (commas inside nested brackets stay)."""
    items, depth, last = [], 0, 0
    for t in _tokens(inner):
        if t.type != tokenize.OP:
            continue
        if t.string in OPEN:
            depth += 1
        elif t.string in CLOSE:
            depth -= 1
        elif t.string == "," and depth == 0:
            items.append(inner[last:t.start[1]].strip())
            last = t.end[1]
    rest = inner[last:].strip()
    return [*items, rest] if rest else items
