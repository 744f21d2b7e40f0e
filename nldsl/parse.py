"""Stage 1, parse: `.nl` text → AST (`nldsl.ast`), or syntax diagnostics in plain English.

The grammar is data (`grammar/nl.lark`); this module only builds the parser, which builds typed,
positioned AST nodes as it reduces the rules (no parse tree, no recursion), and words syntax errors
for people. A file is first parsed by `nldsl.scan`, which runs Lark's tables and these same
reductions in a loop of its own, several times faster; where that loop finds anything it does not
expect, Lark parses the file again and its errors are worded here.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nldsl import ast, scan
from nldsl.diagnostics import Diagnostic
from nldsl.paths import package_dir
from nldsl.source import SourceFile, Span

MAX_SYNTAX_ERRORS = 10

# Every stage after the parser walks expressions recursively (the checker, the code generator, the
# interpreter, pydantic's serializer, and Python compiling the generated code, which refuses more than
# 200 nested parentheses), so expressions nested deeper than this are refused here, with a diagnostic.
# Parentheses that only group leave no trace in the tree and do not count.
MAX_EXPRESSION_DEPTH = 100
# The rules that add a level of nesting to an expression tree (see `_ToAst`).
NESTING_RULES = {"add", "sub", "mul", "div", "matmul", "pow", "neg", "call", "kwarg"}
# The rules that are part of an expression without adding a level: leaves and grouping parentheses.
EXPRESSION_RULES = NESTING_RULES | {"atom", "number", "name", "self_state", "callee"}
# The rules whose value is not a node of their own: a list, a pair, a token or a node passed on.
PASSED_ON = {"atom", "callee", "unit", "header", "name_list", "int_count", "name_count"}

# English for every terminal of the grammar; tests assert this covers the grammar exactly.
PUNCTUATION = {"LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
               "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQ": "'='", "PLUS": "'+'",
               "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "MATMUL": "'@'", "CARET": "'^'"}
CLASSES = {"NAME": "a name", "INT": "an integer", "NUMBER": "a number", "STRING": "a string",
           "$END": "the end of the file", "COMMENT": "a comment", "WS": "whitespace"}
NOUNS = {"NAME": "name", "INT": "integer", "NUMBER": "number", "STRING": "string"}
EXPRESSION_START = {"NAME", "INT", "NUMBER", "SELF", "LPAR", "MINUS"}
CLAUSE_KEYWORDS = {"GRAD", "READ", "CHUNK", "EVERY", "BACKPROP", "LEVEL", "SCOPE", "INIT", "PER", "FROZEN", "BY",
                   "AT", "STEP", "STEPS", "TOKEN", "TOKENS", "NEVER", "OUTER", "REPEAT"}


@cache
def parser() -> Lark:
    """The LALR parser. It builds the AST itself, rule by rule as it reduces them (`_Reducer`):
    no parse tree is made, and nothing recurses however deep the input nests."""
    grammar = (package_dir("grammar") / "nl.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", strict=True, maybe_placeholders=True, transformer=_Reducer(_ToAst()),
                cache=_grammar_cache())


def _grammar_cache() -> str | bool:
    """Where Lark keeps the analysed grammar between runs (a third of the start-up of `nldsl check`),
    beside the compiled-code cache: `$NLDSL_CACHE`, else `$XDG_CACHE_HOME/nldsl` or `~/.cache/nldsl`.
    Lark heads the file with a hash of the grammar, its options and the versions of Lark and Python,
    and builds the parser afresh when that differs or the file does not load; False (no cache)
    where no cache directory can be made."""
    try:
        root = Path(os.environ.get("NLDSL_CACHE") or
                    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nldsl")
        root.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):    # RuntimeError: no home directory
        return False
    return str(root / "grammar.lark-cache")


def terminal_names() -> dict[str, str]:
    """Every terminal's English spelling: keywords are quoted as written."""
    names = {}
    for term in parser().terminals:
        if term.name in PUNCTUATION:
            names[term.name] = PUNCTUATION[term.name]
        elif term.name in CLASSES:
            names[term.name] = CLASSES[term.name]
        else:
            names[term.name] = f"'{term.pattern.value}'"
    return names


def parse(source: SourceFile) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse one file. On syntax errors, returns no tree and every error found (up to a cap).

    After an error the offending statement is blanked out and the file parsed again, so each
    further error is a real one rather than an echo of the first."""
    run = _ParseRun(source.path)
    reset = _RUN.set(run)
    try:
        with gc_paused():
            return _parse_all(source, run)
    finally:
        _RUN.reset(reset)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cycle collector while a front-end stage (parse, check, graph, schedule; also a
    decorator) allocates a great many objects that all stay alive: trees hold no cycles, reference
    counting frees them, and on a large spec the collector would rescan them again and again,
    doubling the time taken.

    On the way out the survivors go straight to the oldest generation (`gc.freeze()` then
    `gc.unfreeze()`, which moves without scanning): otherwise the first allocation after
    `gc.enable()` scans every one of them in a young collection, half a second per 20,000 lines.
    They are still collected, by the next full collection. Skipped where the program has frozen
    objects of its own, which unfreezing would release."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


@cache
def _machine() -> scan.Machine | None:
    return scan.machine(parser())


def _parse_all(source: SourceFile, run: _ParseRun) -> tuple[ast.Module | None, list[Diagnostic]]:
    text = source.text
    fast = _machine()
    built = scan.parse(fast, text) if fast is not None else None
    if built is not None:
        return (None, run.too_deep) if run.too_deep else (built, [])
    run.too_deep.clear()          # the fast path gave up part way: Lark parses the file again from scratch
    errors: list[Diagnostic] = []
    while True:
        try:
            built = parser().parse(text)
        except UnexpectedInput as e:
            d = _syntax_diagnostic(e, source)
            if any(x.span.line == d.span.line for x in errors):   # no progress: stop rather than echo
                break
            errors.append(d)
            at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
            if at_end or len(errors) >= MAX_SYNTAX_ERRORS:
                break
            blanked = _blank_statement(text, d.span.line)
            if blanked is None:
                break
            text = blanked
            continue
        if errors:
            return None, errors
        return (None, run.too_deep) if run.too_deep else (built, [])
    return None, errors


def _blank_statement(text: str, line: int) -> str | None:
    """Blank line `line` and the more-indented lines continuing it. None when that would unbalance
    braces: later errors would then only be echoes of this one."""
    lines = text.split("\n")
    first = lines[line - 1]
    if first.count("{") != first.count("}"):
        return None
    indent = len(first) - len(first.lstrip())
    end = line
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > indent \
            and "{" not in lines[end] and "}" not in lines[end]:
        end += 1
    for i in range(line - 1, end):
        lines[i] = " " * len(lines[i])
    return "\n".join(lines)


# ---- syntax errors ------------------------------------------------------------------------------

def _describe_expected(expected: set[str]) -> str:
    names = terminal_names()
    shown = set(expected)
    parts = []
    if shown >= EXPRESSION_START:
        shown -= EXPRESSION_START
        parts.append("an expression")
    parts += sorted(names.get(t, t) for t in shown)
    if len(parts) > 8:
        parts = [*parts[:8], "..."]
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1] if parts else "nothing"


def _hint_for(prev: str | None, token_type: str, expected: set[str], prev_text: str = "") -> str:
    if token_type == "EQ" and prev in CLAUSE_KEYWORDS:
        return f"'{prev_text}' is a keyword here (it would continue the statement above); rename the value"
    if token_type in ("MODEL", "OPTIMIZER", "$END") and "RBRACE" in expected:
        return "a '{' above is never closed: check the '}' of the block or model before this line"
    if token_type in ("TRAIN", "BLOCK") and "RBRACE" in expected:
        return "a `train` or `block` cannot appear inside a block: is the '}' closing the block above missing?"
    if expected & {"TOKEN", "TOKENS", "STEP", "STEPS"} and token_type != "NAME":
        return "a period reads `token`, `16 tokens`, `step`, `4 steps` or `never`"
    if expected & {"TOKEN", "TOKENS"}:
        return "a period needs a unit: `tokens` or `steps` (e.g. `every 16 tokens`)"
    if token_type == "COLON" and prev == "NAME":
        return "options are written `name = value`"
    if token_type == "STRING":
        return "strings only appear in `import \"file.nl\"`, at the top of a file"
    if token_type == "EQ" and prev == "PARAM":
        return "`param = ...` is the parameter update of an optimizer body; in a model write `param W : matrix(...)`"
    if expected == {"COLON"} or (prev == "NAME" and "COLON" in expected):
        return "declarations read `memory M : mlp(...)` and `learn M : objective by rule`"
    if "RBRACE" in expected and token_type in {"$END"}:
        return "a '{' is never closed"
    return ""


def _syntax_diagnostic(e: UnexpectedInput, source: SourceFile) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        ch = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else ""
        hint = "statements are separated by newlines; there is no ';'" if ch == ";" else \
            "strings use double quotes" if ch == "'" else ""
        return Diagnostic(code="NL002", message=f"unexpected character {ch!r}",
                          span=source.span_at(e.line, e.column), hint=hint)
    if isinstance(e, UnexpectedToken):
        expected = set(e.accepts or e.expected)
        last = _previous_token(source.text, e.token.start_pos if e.token.type != "$END" else len(source.text))
        prev, prev_text = (last.type, str(last)) if last is not None else (None, "")
        hint = _hint_for(prev, e.token.type, expected, prev_text)
        if e.token.type == "$END":
            return Diagnostic(code="NL003", span=source.end_span(), hint=hint or "a block is not closed",
                              message=f"unexpected end of file; expected {_describe_expected(expected)}")
        names = terminal_names()
        if last is not None and last.end_line is not None and e.token.line > last.end_line and len(expected) <= 4:
            # the statement stopped short at the end of a line: point there, not at the next line
            span = Span(file=source.path, line=last.end_line, col=last.end_column, end_line=last.end_line,
                        end_col=last.end_column + 1)
            return Diagnostic(code="NL001", span=span, hint=hint,
                              message=f"expected {_describe_expected(expected)} after {_describe(last)}")
        what = names.get(e.token.type, e.token.type)
        if e.token.type in NOUNS:
            what = f"{NOUNS[e.token.type]} {e.token.value!r}" if e.token.type != "STRING" else \
                f"{NOUNS[e.token.type]} {e.token.value}"
        elif e.token.type not in PUNCTUATION:
            what = f"keyword {what}"
        span = Span(file=source.path, line=e.token.line, col=e.token.column,
                    end_line=e.token.end_line or e.token.line,
                    end_col=e.token.end_column or e.token.column + len(str(e.token.value)))
        return Diagnostic(code="NL001", span=span, hint=hint,
                          message=f"unexpected {what}; expected {_describe_expected(expected)}")
    return Diagnostic(code="NL003", message="unexpected end of file", span=source.end_span())


def _previous_token(text: str, pos: int) -> Token | None:
    """The last token before `pos` (Lark's LALR errors do not carry it)."""
    try:
        tokens = [t for t in parser().lex(text[:pos]) if t.type not in ("WS", "COMMENT")]
    except UnexpectedInput:
        return None
    return tokens[-1] if tokens else None


def _describe(t: Token) -> str:
    if t.type in NOUNS:
        return f"{NOUNS[t.type]} {t.value!r}" if t.type != "STRING" else f"{NOUNS[t.type]} {t.value}"
    return terminal_names().get(t.type, t.type)


# ---- the AST, built as Lark reduces each rule ----------------------------------------------------

@dataclass
class _ParseRun:
    """What one parse of one file needs while Lark reduces its rules: the file its spans name, and
    the expressions found nested too deeply."""

    file: str
    too_deep: list[Diagnostic] = field(default_factory=list)


_RUN: ContextVar[_ParseRun] = ContextVar("nldsl_parse_run")


class _Built:
    """A reduced rule whose value is not a node of its own (a list, a pair, a token passed on, or an
    expression in parentheses): the value, the extent of the text it covers (for parentheses, wider
    than the node they hold; named as a token names its own, so that a rule's extent is read alike
    from its first and last children) and how deep it nests as an expression."""

    __slots__ = ("column", "depth", "end_column", "end_line", "line", "value")

    def __init__(self, value: object, line: int, column: int, end_line: int, end_column: int, depth: int) -> None:
        self.value, self.line, self.column, self.end_line, self.end_column, self.depth = \
            value, line, column, end_line, end_column, depth


class _Reducer:
    """What Lark calls when it reduces a rule (its "internal transformer"): one attribute per rule
    that `_ToAst` handles. Each turns the children into the rule's AST node and measures how deep
    expressions nest; the outermost expression nested deeper than `MAX_EXPRESSION_DEPTH` is reported
    once, where a statement or declaration holds it. This runs for every rule of every spec, so it is
    written as one pass over the children, and a rule that makes a node leaves it on the parse stack
    as it is (its span is its extent); only the other values are wrapped (`_Built`)."""

    def __init__(self, builder: _ToAst) -> None:
        for rule in _ToAst.rules():
            setattr(self, rule, partial(self._reduce, rule in EXPRESSION_RULES, rule in NESTING_RULES,
                                        rule not in PASSED_ON, getattr(builder, rule)))

    @staticmethod
    def _reduce(in_expression: bool, nests: bool, makes_node: bool, handler: Callable[[Span | None, list], object],
                children: list) -> object:
        first = last = None           # the first and last children that cover text
        deepest = 0
        wrapped = False
        for c in children:
            if c is not None:
                last = c
                if first is None:
                    first = c
                if type(c) is _Built:
                    wrapped = True
                    if c.depth > deepest:
                        deepest = c.depth
                elif isinstance(c, ast.ExprNode) and c.depth > deepest:
                    deepest = c.depth
        run = _RUN.get()
        if deepest > MAX_EXPRESSION_DEPTH and not in_expression:
            run.too_deep += [_too_deep(c, run.file) for c in children
                             if isinstance(c, _Built | ast.ExprNode) and c.depth > MAX_EXPRESSION_DEPTH]
        if wrapped:
            children = [c.value if type(c) is _Built else c for c in children]
        if first is None:             # an empty file
            return handler(None, children)
        if isinstance(first, ast.Node):
            line, column = first.span.line, first.span.col
        else:                         # a token (ours or Lark's) or a _Built: named alike
            line, column = first.line, first.column
        if isinstance(last, ast.Node):
            end_line, end_column = last.span.end_line, last.span.end_col
        else:
            end_line, end_column = last.end_line, last.end_column
        node = handler(Span(run.file, line, column, end_line, end_column), children)
        depth = deepest + nests if in_expression else 0
        if not makes_node:
            return _Built(node, line, column, end_line, end_column, depth)
        if depth:
            node.depth = depth
        return node


def _too_deep(expr: _Built | ast.Node, file: str) -> Diagnostic:
    """NL004 at the expression's extent (with any parentheses around it)."""
    span = Span(file, expr.line, expr.column, expr.end_line, expr.end_column) if type(expr) is _Built else expr.span
    return Diagnostic(code="NL004", span=span,
                      message=f"this expression nests {expr.depth:,} levels deep (operators and calls); "
                              f"at most {MAX_EXPRESSION_DEPTH} are supported",
                      hint="split it into named values: compute a part as `a = ...` on its own line, then use `a`")


class _ToAst:
    """One method per grammar rule or alias, called with the rule's span (None for an empty file)
    and its children: `Token`s for terminals, AST nodes for rules, None for an absent optional part."""

    @classmethod
    def rules(cls) -> list[str]:
        """The rules handled: every public method."""
        return [name for name, value in vars(cls).items() if not name.startswith("_") and inspect.isfunction(value)]

    @property
    def file(self) -> str:
        return _RUN.get().file

    def _tspan(self, t: Token) -> Span:
        return Span(self.file, t.line, t.column, t.end_line, t.end_column)

    def _ident(self, t: Token) -> ast.Ident:
        return ast.Ident(name=t.value, span=self._tspan(t))

    @staticmethod
    def _nodes(children, cls):
        return [c for c in children if isinstance(c, cls)]

    # -- files
    def start(self, span, children):
        imports = self._nodes(children, ast.Import)
        units = self._nodes(children, (ast.Model, ast.Optimizer))
        span = span or Span(self.file, 1, 1, 1, 1)   # an empty file
        return ast.Module(file=self.file, imports=imports, units=units, span=span)

    def import_stmt(self, span, children):
        return ast.Import(path=children[1].value[1:-1], span=span)

    def model(self, span, children):
        items = self._nodes(children[3:], (ast.Block, ast.ParamDecl, ast.Train))
        return ast.Model(name=self._ident(children[1]), params=children[2], items=items, span=span)

    def optimizer(self, span, children):
        body = self._nodes(children[3:], (ast.Assign, ast.Update, ast.MemoryDecl, ast.Learn))
        return ast.Optimizer(name=self._ident(children[1]), params=children[2], body=body, span=span)

    def header(self, span, children):
        return self._nodes(children, ast.HeaderParam)

    def header_param(self, span, children):
        return ast.HeaderParam(name=self._ident(children[0]), value=children[2], span=span)

    def block(self, span, children):
        _, name, _, repeat, _, *rest = children
        body = [c for c in rest if isinstance(c, ast.Node)]
        return ast.Block(name=self._ident(name) if name is not None else None, repeat=repeat,
                         body=body, span=span)

    # -- declarations
    def assign(self, span, children):
        return ast.Assign(target=self._ident(children[0]), value=children[2], span=span)

    def update(self, span, children):
        return ast.Update(value=children[2], span=span)

    def param_decl(self, span, children):
        return ast.ParamDecl(name=self._ident(children[1]), type=children[3],
                             modifiers=self._nodes(children[4:], ast.Modifier), span=span)

    def memory_decl(self, span, children):
        return ast.MemoryDecl(names=children[1], structure=children[3],
                              modifiers=self._nodes(children[4:], ast.Modifier), span=span)

    def name_list(self, span, children):
        return [self._ident(t) for t in children if t.type == "NAME"]

    def bare_structure(self, span, children):
        return ast.Call(func=self._ident(children[0]), bare=True, span=span)

    def cms(self, span, children):
        mode = self._ident(children[1]) if children[1] is not None else None
        return ast.Cms(mode=mode, levels=self._nodes(children, ast.CmsLevel), span=span)

    def cms_level(self, span, children):
        return ast.CmsLevel(structure=children[0], period=children[2], span=span)

    def _modifier(self, span, key, value_tok):
        value = None if value_tok is None else (int(value_tok.value) if value_tok.type == "INT" else value_tok.value)
        vspan = None if value_tok is None else self._tspan(value_tok)
        return ast.Modifier(key=key, value=value, value_span=vspan, span=span)

    def per(self, span, children):
        return self._modifier(span, "per", children[1])

    def scope(self, span, children):
        return self._modifier(span, "scope", children[1])

    def init(self, span, children):
        return self._modifier(span, "init", children[1])

    def level(self, span, children):
        return self._modifier(span, "level", children[1])

    def frozen(self, span, children):
        return self._modifier(span, "frozen", None)

    # -- learning
    def learn(self, span, children):
        return ast.Learn(memories=children[1], objective=children[3], rule=children[5],
                         clauses=self._nodes(children[6:], ast.Clause), span=span)

    def outer(self, span, children):
        return ast.Outer(span=span)

    def every(self, span, children):
        return ast.Clause(key="every", period=children[1], span=span)

    def chunk(self, span, children):
        value, vspan = children[1]
        return ast.Clause(key="chunk", value=value, value_span=vspan, span=span)

    def anchor(self, span, children):
        return ast.Clause(key="anchor", value=children[2].value, value_span=self._tspan(children[2]),
                          span=span)

    def read(self, span, children):
        return ast.Clause(key="read", value=children[1].value, value_span=self._tspan(children[1]),
                          span=span)

    def backprop(self, span, children):
        arg = int(children[2].value) if children[2] is not None else None
        return ast.Clause(key="backprop", value=children[1].value, arg=arg,
                          value_span=self._tspan(children[1]), span=span)

    def unit(self, span, children):
        return children[0]

    def period_unit(self, span, children):
        return ast.Period(unit=children[0].value.rstrip("s"), span=span)

    def period_count(self, span, children):
        (value, vspan), unit = children
        return ast.Period(unit=unit.value.rstrip("s"), count=value, count_span=vspan, span=span)

    def period_never(self, span, children):
        return ast.Period(unit="never", span=span)

    def int_count(self, span, children):
        return int(children[0].value), self._tspan(children[0])

    def name_count(self, span, children):
        return children[0].value, self._tspan(children[0])

    # -- the outer level
    def train(self, span, children):
        return ast.Train(items=self._nodes(children, (ast.Optimize, ast.Setting)), span=span)

    def optimize(self, span, children):
        return ast.Optimize(targets=children[1], rule=children[3], period=children[5], span=span)

    def setting(self, span, children):
        return ast.Setting(key=self._ident(children[0]), value=children[1], span=span)

    # -- expressions
    def _binop(self, span, children, op):
        return ast.BinOp(op=op, left=children[0], right=children[2], span=span)

    def add(self, span, children):
        return self._binop(span, children, "+")

    def sub(self, span, children):
        return self._binop(span, children, "-")

    def mul(self, span, children):
        return self._binop(span, children, "*")

    def div(self, span, children):
        return self._binop(span, children, "/")

    def matmul(self, span, children):
        return self._binop(span, children, "@")

    def pow(self, span, children):
        return self._binop(span, children, "^")

    def neg(self, span, children):
        return ast.Neg(operand=children[1], span=span)

    def number(self, span, children):
        return ast.Num(value=float(children[0].value), text=children[0].value, span=span)

    def name(self, span, children):
        return ast.Name(id=children[0].value, span=span)

    def self_state(self, span, children):
        return ast.SelfRef(span=span)

    def atom(self, span, children):  # `( expr )`: the parentheses leave no trace in the AST
        return children[1]

    def callee(self, span, children):
        return self._ident(children[0])

    def call(self, span, children):
        func, _, *rest = children
        args = [c for c in rest if isinstance(c, ast.Node) and not isinstance(c, ast.Kwarg)]
        kwargs = self._nodes(rest, ast.Kwarg)
        return ast.Call(func=func, args=args, kwargs=kwargs, span=span)

    def kwarg(self, span, children):
        return ast.Kwarg(name=children[0].value, value=children[2], span=span)


