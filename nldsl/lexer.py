"""A Pygments lexer for `.nl` specs, registered as the `nl` plugin (see pyproject.toml).

Nothing here is hand-listed that the language already defines elsewhere: the keywords are the
grammar's keyword terminals (`grammar/nl.lark`, read through the parser), the literal patterns
(names, numbers, strings, comments) are the grammar's own regular expressions, and the built-in
names come from `nldsl.catalog`. Adding a keyword or a built-in there updates the highlighter.

    pygmentize -l nl specs/hope.nl
    pygments.highlight(text, NlLexer(), formatter)
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

from nldsl import catalog
from nldsl.parse import parser

__all__ = ["NlLexer", "builtin_names", "constant_names", "input_names", "keywords"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Keywords that open a declaration or a unit, and the one that names a file; the rest are Keyword.
_DECLARATION = {"model", "optimizer", "block", "param", "memory", "learn", "train", "optimize"}
_NAMESPACE = {"import"}
_PSEUDO = {"self", "outer"}

# `cms chain [...]` / `cms parallel [...]`: the CMS modes (checked in nldsl/check_decl.py), and
# `optimize all`: the catch-all group (nldsl/check.py). Neither table lives in the catalog.
_EXTRA_CONSTANTS = ("chain", "parallel", "all")


def _terminal_patterns() -> dict[str, tuple[str, str]]:
    """name → (kind, pattern) of every terminal of the grammar."""
    return {t.name: (t.pattern.type, t.pattern.value) for t in parser().terminals}


def keywords() -> tuple[str, ...]:
    """The grammar's keyword terminals: string patterns that are words."""
    return tuple(sorted(value for kind, value in _terminal_patterns().values()
                        if kind == "str" and _WORD.fullmatch(value)))


def builtin_names() -> tuple[str, ...]:
    """Functions, objectives, structures, parameter types, update rules, output maps, schedules,
    losses and train settings: every callable or reserved built-in of the catalog."""
    names: set[str] = set()
    for table in (catalog.FUNCTIONS, catalog.OBJECTIVES, catalog.STRUCTURES, catalog.PARAM_TYPES,
                  catalog.RULES, catalog.OUTPUT_MAPS, catalog.SCHEDULES, catalog.LOSSES, catalog.TRAIN_SETTINGS):
        names |= set(table)
    return tuple(sorted(names - set(keywords())))


def constant_names() -> tuple[str, ...]:
    """Option values: activations, norms, scopes, inits, `per`, gradient anchors, read orders,
    backprop policies, and every other `choices` list of the catalog."""
    names: set[str] = set(catalog.ACTIVATIONS) | set(_EXTRA_CONSTANTS)
    for table in (catalog.SCOPES, catalog.MEMORY_INITS, catalog.PARAM_INITS, catalog.PER, catalog.ANCHORS,
                  catalog.READS, catalog.BACKPROPS):
        names |= set(table)
    for sigs in (catalog.FUNCTIONS, catalog.OBJECTIVES, catalog.STRUCTURES, catalog.RULES, catalog.SCHEDULES):
        for sig in sigs.values():
            for opt in sig.options.values():
                if opt.type == "name":
                    names |= set(opt.choices)
    return tuple(sorted(names - set(keywords()) - set(builtin_names())))


def input_names() -> tuple[str, ...]:
    """Names a spec reads without defining them: `h`, `grad`, `param`, `step`, and the reserved
    header parameters (`vocab`, `dim`, `context`, `heads`)."""
    names = set(catalog.MODEL_INPUTS) | set(catalog.OPTIMIZER_INPUTS) | set(catalog.RESERVED_HEADER)
    return tuple(sorted(names - set(keywords())))


def _flag_options() -> tuple[str, ...]:
    return tuple(sorted({k for sigs in (catalog.FUNCTIONS, catalog.STRUCTURES, catalog.RULES)
                         for sig in sigs.values() for k, o in sig.options.items() if o.type == "flag"}))


def _keyword_token(word: str):
    if word in _DECLARATION:
        return Keyword.Declaration
    if word in _NAMESPACE:
        return Keyword.Namespace
    if word in _PSEUDO:
        return Keyword.Pseudo
    return Keyword


def _tokens() -> dict[str, list]:
    terms = _terminal_patterns()
    name_re = terms["NAME"][1]
    kw = keywords()
    by_type: dict[object, list[str]] = {}
    for w in kw:
        by_type.setdefault(_keyword_token(w), []).append(w)
    keyword_rules = [(words(ws, prefix=r"\b", suffix=r"\b"), tok) for tok, ws in by_type.items()]
    common = [
        (r"[ \t\r\n\f]+", Whitespace),
        (r"#[^\n]*\ballow\s+NL[0-9]{3}\b[^\n]*", Comment.Special),   # `# allow NL083`: silences a warning
        (terms["COMMENT"][1], Comment.Single),
        (terms["STRING"][1], String.Double),
        (terms["NUMBER"][1], Number.Float),
        (terms["INT"][1], Number.Integer),
        *keyword_rules,
        (words(builtin_names(), prefix=r"\b", suffix=r"\b"), Name.Builtin),
        (words(constant_names(), prefix=r"\b", suffix=r"\b"), Name.Constant),
        (words(input_names(), prefix=r"\b", suffix=r"\b"), Name.Builtin.Pseudo),
        (name_re, Name),
        (r"[+\-*/@^=]", Operator),
        (r"[{}\[\],:]", Punctuation),
    ]
    return {
        "root": [
            (r"\(", Punctuation, "call"),
            (r"\)", Error),
            *common,
            (r".", Error),
        ],
        # Inside parentheses `name =` is an option (or a header parameter) and a bare flag such as
        # `residual` is an option too.
        "call": [
            (r"(" + name_re + r")([ \t\r\n\f]*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (words(_flag_options(), prefix=r"\b", suffix=r"\b"), Name.Attribute),
            (r"\(", Punctuation, "#push"),
            (r"\)", Punctuation, "#pop"),
            *common,
            (r".", Error),
        ],
    }


class NlLexer(RegexLexer):
    """Highlights `.nl` specs: keywords, built-ins, option names and values, numbers, comments."""

    name = "nl"
    aliases = ["nl", "nldsl"]
    filenames = ["*.nl"]
    mimetypes = ["text/x-nldsl"]
    url = "https://arxiv.org/abs/2512.24695"
    flags = re.MULTILINE
    priority = 0.1   # `*.nl` is also claimed by newLISP; prefer this lexer when nothing else decides
    tokens = _tokens()

    def analyse_text(text: str) -> float:  # Pygments wraps this into a static method
        """How likely `text` is a spec: a unit header decides, a `learn ... by` hints."""
        if re.search(r"^\s*(model|optimizer)\s+[A-Za-z_]\w*\s*\(", text, re.MULTILINE):
            return 0.9
        if re.search(r"^\s*learn\s+[A-Za-z_][\w, ]*:", text, re.MULTILINE):
            return 0.5
        return 0.0
