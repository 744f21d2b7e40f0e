"""`nldsl fmt`: print a parsed `.nl` file in its one canonical layout, keeping every comment.

Formatting is two steps. `_Layout` walks the AST and produces physical `_Line`s, each tied to the
source position where its code starts. `format_module` then hands every comment to the line that
holds its neighbouring code token (the next one for a comment on its own line, the previous one for
a comment after code) and `_Emitter` decides blank lines from source line numbers. Comments never
reach the AST, so they come from the token stream (`collect_comments`). Because every printed line
starts with the token its source position names, formatting the output again attaches each comment
to the same line: the formatter is idempotent.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

from nldsl import ast
from nldsl.diagnostics import Diagnostic
from nldsl.parse import parse, parser
from nldsl.source import SourceFile, Span

WIDTH = 100          # `learn` and declaration lines wider than this continue on a second line
STEP = 2             # spaces per nesting level

Pos = tuple[int, int]                    # (line, column), 1-based, as lark counts them
Sep = Literal["none", "keep", "force"]   # blank line before: never, where the user had one, always

MODIFIER_ORDER = ("per", "scope", "init", "level", "frozen")
CLAUSE_ORDER = ("every", "chunk", "anchor", "read", "backprop")

# How tightly each expression form binds, loosest first. An operand is parenthesized exactly when
# it binds more loosely than its slot in the grammar allows (see the expression rules of nl.lark).
SUM, PRODUCT, UNARY, POWER, ATOM = range(5)
BINDING = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT, "@": PRODUCT, "^": POWER}


@dataclass(frozen=True)
class Comment:
    text: str            # `# ...` as written, without trailing whitespace
    line: int
    col: int
    own_line: bool       # nothing but whitespace before it on its line
    token: Pos | None    # the code token it belongs to: the next one for an own-line comment, the
                         # previous one otherwise; None for comments after the last token


def collect_comments(text: str) -> list[Comment]:
    """Every comment of `text`, with the code token it sits next to. `text` must lex cleanly."""
    comments: list[Comment] = []
    waiting: list[tuple[str, int, int]] = []   # own-line comments until the next code token shows up
    prev_end_line = 0
    prev: Pos | None = None
    for tok in parser().lex(text, dont_ignore=True):
        if tok.type == "WS":
            continue
        if tok.type != "COMMENT":
            comments += [Comment(t, line, col, True, (tok.line, tok.column)) for t, line, col in waiting]
            waiting = []
            prev, prev_end_line = (tok.line, tok.column), tok.end_line
        elif prev is None or prev_end_line < tok.line:
            waiting.append((tok.value.rstrip(), tok.line, tok.column))
        else:
            comments.append(Comment(tok.value.rstrip(), tok.line, tok.column, False, prev))
    comments += [Comment(t, line, col, True, None) for t, line, col in waiting]
    return sorted(comments, key=lambda c: (c.line, c.col))


def format_source(source: SourceFile) -> tuple[str | None, list[Diagnostic]]:
    """The canonical text of a file, or None and its syntax errors."""
    module, diagnostics = parse(source)
    if module is None:
        return None, diagnostics
    return format_module(module, collect_comments(source.text)), []


def format_module(module: ast.Module, comments: list[Comment]) -> str:
    """The canonical text of `module`, with `comments` (from `collect_comments`) put back."""
    lines = _Layout().module(module)
    starts = [line.start for line in lines]
    leading: list[list[Comment]] = [[] for _ in lines]
    after: list[list[Comment]] = [[] for _ in lines]
    at_end: list[Comment] = []
    for c in comments:
        if c.token is None:
            at_end.append(c)
        else:
            owner = bisect.bisect_right(starts, c.token) - 1   # the line whose code holds the token
            (leading if c.own_line else after)[owner].append(c)
    out = _Emitter()
    for i, line in enumerate(lines):
        # one comment fits behind a line; any others written inside the statement move above it
        *hoisted, trailing = after[i] or [None]
        sep = line.sep
        for c in sorted(leading[i] + hoisted, key=lambda c: (c.line, c.col)):
            at = c.line if (c.line, c.col) < line.start else line.first   # glued to its statement
            out.put(c.text, line.comment_indent, at, at, sep, comment=True)
            sep = "keep"
        # a statement that goes on over more lines keeps its comment to itself
        continued = i + 1 < len(lines) and lines[i + 1].glued and lines[i + 1].indent > line.indent
        out.put(line.text, line.indent, line.first, line.last, "none" if line.glued else sep, comment=False,
                trailing=None if trailing is None else (trailing.text, None if continued else line.indent))
    for c in at_end:
        out.put(c.text, 0, c.line, c.line, "keep", comment=True)
    return "\n".join(out.text()) + "\n" if out.lines else ""


class _Emitter:
    """Joins lines, collapsing the user's blank lines to one and adding the required ones, and lines
    up the comments behind consecutive lines of code in one column (as gofmt does), so that a
    commented run of statements reads as a table."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        # line index -> (the comment behind its code, the column of the code or None: never aligned)
        self.trailing: dict[int, tuple[str, int | None]] = {}
        self.prev_last = 0         # the last source line of what was emitted last
        self.in_header = False     # still inside the comment paragraph that opens the file

    def put(self, text: str, indent: int, first: int, last: int, sep: Sep, comment: bool,
            trailing: tuple[str, int | None] | None = None) -> None:
        if not self.lines:
            self.in_header = comment
        else:
            gap = first > self.prev_last + 1
            if self.in_header and (gap or not comment):   # the file's header paragraph ends here
                sep, self.in_header = "force", False
            if sep == "force" or (sep == "keep" and gap):
                self.lines.append("")
        if trailing is not None:
            self.trailing[len(self.lines)] = trailing
        self.lines.append(" " * indent + text)
        self.prev_last = last

    def text(self) -> list[str]:
        out = list(self.lines)
        run: list[int] = []
        for i in [*sorted(self.trailing), -2]:          # -2 closes the last run
            indent = self.trailing[i][1] if i >= 0 else None
            if run and (i != run[-1] + 1 or indent is None or indent != self.trailing[run[-1]][1]):
                column = max(len(self.lines[j]) for j in run) + 2
                for j in run:
                    out[j] = self.lines[j].ljust(column) + self.trailing[j][0]
                run = []
            if i >= 0:
                run.append(i)
        return out


@dataclass(frozen=True)
class _Line:
    text: str
    indent: int
    start: Pos                 # where the line's first token is in the source; comments attach by it
    first: int                 # source lines it came from, to find the user's blank lines
    last: int
    sep: Sep = "keep"
    glued: bool = False        # continuation lines and closing braces: never a blank line before
    comment_indent: int = 0    # where comments above it go


def _start(span: Span) -> Pos:
    return span.line, span.col


def _end(span: Span) -> Pos:
    return span.end_line, span.end_col


class _Layout:
    """The AST as physical lines, in source order (so their `start`s are sorted)."""

    def __init__(self) -> None:
        self.lines: list[_Line] = []

    def add(self, text: str, indent: int, start: Pos, first: int, last: int, sep: Sep = "keep",
            glued: bool = False, comment_indent: int | None = None) -> None:
        ci = indent if comment_indent is None else comment_indent
        self.lines.append(_Line(text, indent, start, first, last, sep, glued, ci))

    def module(self, module: ast.Module) -> list[_Line]:
        for imp in module.imports:
            self.add(f'import "{imp.path}"', 0, _start(imp.span), imp.span.line, imp.span.end_line)
        for unit in module.units:
            self.unit(unit)
        return self.lines

    def unit(self, unit: ast.Model | ast.Optimizer) -> None:
        keyword, items = ("model", unit.items) if isinstance(unit, ast.Model) else ("optimizer", unit.body)
        self.header(f"{keyword} {unit.name.name}(", unit.params, unit.span)
        for i, item in enumerate(items):
            spaced = i > 0 and any(isinstance(x, ast.Block | ast.Train) for x in (items[i - 1], item))
            sep: Sep = "none" if i == 0 else "force" if spaced else "keep"
            if isinstance(item, ast.Block):
                self.block(item, STEP, sep)
            elif isinstance(item, ast.Train):
                self.train(item, STEP, sep)
            else:
                self.statement(item, STEP, sep)
        self.close(unit.span, 0, empty=not items)

    def header(self, opening: str, params: list[ast.HeaderParam], span: Span) -> None:
        """`model M(a = 1, ...) {`; a header wider than the page wraps, aligned after `(`."""
        rows: list[list[tuple[ast.HeaderParam, str]]] = [[]]
        for p in params:
            text = f"{p.name.name} = {_expr(p.value)}"
            row = ", ".join([*(t for _, t in rows[-1]), text])
            if rows[-1] and len(opening) + len(row) + len(") {") > WIDTH:
                rows.append([])
            rows[-1].append((p, text))
        for i, row in enumerate(rows):
            text = ", ".join(t for _, t in row) + (") {" if i == len(rows) - 1 else ",")
            if i == 0:
                self.add(opening + text, 0, _start(span), span.line, span.line, "force")
            else:
                first = row[0][0].span
                self.add(text, len(opening), _start(first), first.line, first.line, "none", glued=True)

    def block(self, block: ast.Block, indent: int, sep: Sep) -> None:
        words = ["block"]
        if block.name is not None:
            words.append(block.name.name)
        if block.repeat is not None:
            words.append(f"repeat {_expr(block.repeat)}")
        self.add(" ".join(words) + " {", indent, _start(block.span), block.span.line, block.span.line, sep)
        for i, statement in enumerate(block.body):
            self.statement(statement, indent + STEP, "none" if i == 0 else "keep")
        self.close(block.span, indent, empty=not block.body)

    def train(self, train: ast.Train, indent: int, sep: Sep) -> None:
        self.add("train {", indent, _start(train.span), train.span.line, train.span.line, sep)
        for i, item in enumerate(train.items):
            if isinstance(item, ast.Optimize):
                text = f"optimize {_names(item.targets)} by {_call(item.rule)}"
                text += f" every {_period(item.period)}" if item.period is not None else ""
            else:
                text = f"{item.key.name} {_expr(item.value)}"
            self.add(text, indent + STEP, _start(item.span), item.span.line, item.span.end_line,
                     "none" if i == 0 else "keep")
        self.close(train.span, indent, empty=not train.items)

    def close(self, span: Span, indent: int, empty: bool) -> None:
        # Comments above a closing brace belong to the body, so they take the body's indentation.
        self.add("}", indent, (span.end_line, span.end_col - 1), span.end_line, span.end_line,
                 "none" if empty else "keep", glued=True, comment_indent=indent + STEP)

    def statement(self, st: ast.Statement, indent: int, sep: Sep) -> None:
        head: list[tuple[str, int, Pos]]   # physical lines: text, indent, source position
        tail, tail_start = "", _end(st.span)
        if isinstance(st, ast.Learn):
            head = [(f"learn {_names(st.memories)} : {_expr(st.objective)}", indent, _start(st.span))]
            clauses = sorted(st.clauses, key=lambda c: CLAUSE_ORDER.index(c.key))
            tail = " ".join([f"by {_call(st.rule)}", *map(_clause, clauses)])
            tail_start = _end(st.objective.span)   # the `by` lies between the objective and the rule
        elif isinstance(st, ast.MemoryDecl | ast.ParamDecl):
            if isinstance(st, ast.MemoryDecl):
                prefix, structure = f"memory {_names(st.names)} : ", st.structure
            else:
                prefix, structure = f"param {st.name.name} : ", st.type
            head = _structure(prefix, structure, indent, _start(st.span))
            modifiers = sorted(st.modifiers, key=lambda m: MODIFIER_ORDER.index(m.key))
            tail = " ".join(m.key if m.value is None else f"{m.key} {m.value}" for m in modifiers)
            tail_start = _end(structure.span)
        elif isinstance(st, ast.Assign):
            head = [(f"{st.target.name} = {_expr(st.value)}", indent, _start(st.span))]
        else:
            head = [(f"param = {_expr(st.value)}", indent, _start(st.span))]
        if tail:
            text, last_indent, start = head[-1]
            if last_indent + len(text) + 1 + len(tail) <= WIDTH:
                head[-1] = (f"{text} {tail}", last_indent, start)
            else:
                head.append((tail, indent + STEP, tail_start))
        for i, (text, line_indent, start) in enumerate(head):
            last = st.span.end_line if i == len(head) - 1 else start[0]
            self.add(text, line_indent, start, start[0], last, sep if i == 0 else "none", glued=i > 0)


def _structure(prefix: str, structure: ast.Call | ast.Cms, indent: int, start: Pos) -> list[tuple[str, int, Pos]]:
    """A declaration up to its modifiers: one line, or one line per level of a multi-level `cms`."""
    if isinstance(structure, ast.Call):
        return [(prefix + _call(structure), indent, start)]
    opening = prefix + "cms " + (f"{structure.mode.name} " if structure.mode is not None else "") + "[ "
    rows = []
    for i, level in enumerate(structure.levels):
        text = f"{_call(level.structure)} every {_period(level.period)}"
        text += " ]" if i == len(structure.levels) - 1 else ","
        rows.append((opening + text, indent, start) if i == 0 else (text, indent + len(opening), _start(level.span)))
    return rows


def _names(idents: list[ast.Ident]) -> str:
    return ", ".join(i.name for i in idents)


def _period(period: ast.Period) -> str:
    if period.unit == "never" or period.count is None:
        return period.unit
    return f"{period.count} {period.unit}" + ("" if period.count == 1 else "s")


def _clause(clause: ast.Clause) -> str:
    if clause.key == "every":
        assert clause.period is not None
        return f"every {_period(clause.period)}"
    if clause.key == "anchor":
        return f"grad at {clause.value}"
    if clause.key == "backprop" and clause.arg is not None:
        return f"backprop {clause.value} {clause.arg}"
    return f"{clause.key} {clause.value}"


def _call(call: ast.Call) -> str:
    if call.bare:
        return call.func.name
    # The AST keeps positional and keyword arguments apart; print them in the order they were
    # written, so flags stay after the options they qualify (`mlp(expand = 4, residual)`).
    args = sorted([*call.args, *call.kwargs], key=lambda a: _start(a.span))
    text = [f"{a.name} = {_expr(a.value)}" if isinstance(a, ast.Kwarg) else _expr(a) for a in args]
    return f"{call.func.name}({', '.join(text)})"


def _mixes_products(op: str, operand: ast.Expr | ast.Outer) -> bool:
    """A matrix product and an elementwise one side by side: equal binding, different meaning."""
    return isinstance(operand, ast.BinOp) and BINDING[operand.op] == PRODUCT == BINDING[op] \
        and (operand.op == "@") != (op == "@")


def _expr(e: ast.Expr | ast.Outer, slot: int = SUM) -> str:
    """`e` printed where the grammar expects binding `slot` or tighter; parentheses only if needed."""
    if isinstance(e, ast.BinOp):
        binding = BINDING[e.op]
        # `atom ^ unary` is right-associative; the other operators are left-associative
        left, right = (ATOM, UNARY) if e.op == "^" else (binding, binding + 1)
        if _mixes_products(e.op, e.left):   # `(a * b) @ W` keeps its parentheses: easy to misread without
            left = PRODUCT + 1
        text = f"{_expr(e.left, left)} {e.op} {_expr(e.right, right)}"
    elif isinstance(e, ast.Neg):
        binding, text = UNARY, "-" + _expr(e.operand, UNARY)
    else:
        binding, text = ATOM, _atom(e)
    return f"({text})" if binding < slot else text


def _atom(e: ast.Num | ast.Name | ast.SelfRef | ast.Call | ast.Outer) -> str:
    if isinstance(e, ast.Num):
        return e.text
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Call):
        return _call(e)
    return "self" if isinstance(e, ast.SelfRef) else "outer"
