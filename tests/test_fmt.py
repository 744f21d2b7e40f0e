"""`nldsl fmt`: one canonical layout, idempotent, the same AST, every comment kept.

Set NLDSL_UPDATE_GOLDEN=1 to rewrite the golden files from the current formatter.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nldsl import ast
from nldsl.api import check_text
from nldsl.fmt import collect_comments, format_source
from nldsl.parse import parse, parser
from nldsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("**/*.nl"))
GOLDEN = Path(__file__).resolve().parent / "golden" / "fmt"


def fmt(text: str) -> str:
    out, diagnostics = format_source(SourceFile(path="t.nl", text=text))
    assert out is not None, [d.render() for d in diagnostics]
    return out


def tree(text: str) -> object:
    """The parsed file with every position removed."""
    module, diagnostics = parse(SourceFile(path="t.nl", text=text))
    assert module is not None, [d.render() for d in diagnostics]
    return ast.dump(module, spans=False)


def comments(text: str) -> Counter[str]:
    return Counter(c.text for c in collect_comments(text))


def canonical(text: str) -> str:
    """Check the formatter's three properties on `text` and return its output."""
    once = fmt(text)
    assert fmt(once) == once, "not idempotent"
    assert tree(once) == tree(text), "the AST changed"
    assert comments(once) == comments(text), "a comment was lost or changed"
    return once


def optimizer(body: str) -> str:
    return f"optimizer o(lr = 0.1) {{\n{body}\n  param = param - lr * grad\n}}\n"


# ---- the shipped specs --------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(ROOT / "specs").as_posix())
def test_spec_formats_idempotently_with_the_same_ast_and_comments(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert comments(text), "every shipped spec opens with a comment block"
    canonical(text)


@pytest.mark.parametrize("path", [*SPECS, *sorted((ROOT / "bench" / "specs").glob("*.nl"))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_specs_are_in_canonical_form(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert fmt(text) == text, f"run `nldsl fmt -w {path.relative_to(ROOT)}`"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(ROOT / "specs").as_posix())
def test_formatting_a_spec_does_not_change_its_diagnostics(path: Path) -> None:
    # `# allow NL0xx` comments silence warnings by line, so moving them would change the result
    text = path.read_text(encoding="utf-8")
    before = check_text(text, file=str(path))
    after = check_text(fmt(text), file=str(path))
    assert [(d.code, d.severity) for d in after.diagnostics] == [(d.code, d.severity) for d in before.diagnostics]


@st.composite
def relaid_specs(draw: st.DrawFn) -> str:
    """A shipped spec with its tokens re-spaced at random and comments added between them."""
    text = draw(st.sampled_from([p.read_text(encoding="utf-8") for p in SPECS]))
    out = []
    for token in parser().lex(text, dont_ignore=True):
        if token.type == "WS":
            continue
        out += [token, "\n" if token.type == "COMMENT" else
                draw(st.sampled_from([" ", " ", "\n", "\n\n\n", "  # after\n", "\n# own line\n\n"]))]
    return "".join(out)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(relaid_specs())
def test_any_layout_of_a_spec_formats_canonically(text: str) -> None:
    canonical(text)


def test_golden_hope() -> None:
    golden = GOLDEN / "hope.nl"
    out = fmt((ROOT / "specs" / "hope.nl").read_text(encoding="utf-8"))
    if os.environ.get("NLDSL_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


# ---- expressions --------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "printed"), [
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("-(a + b)", "-(a + b)"),
    ("-(a * b)", "-(a * b)"),
    ("a ^ b ^ c", "a ^ b ^ c"),
    ("a ^ (b ^ c)", "a ^ b ^ c"),
    ("(a ^ b) ^ c", "(a ^ b) ^ c"),
    ("2 * (x + 1)", "2 * (x + 1)"),
    ("(2 * x) + 1", "2 * x + 1"),
    ("a / (b * c)", "a / (b * c)"),
    ("(a * b) @ c", "(a * b) @ c"),     # elementwise next to matrix products: parentheses stay
    ("a * b @ c", "(a * b) @ c"),
    ("(a @ b) * c", "(a @ b) * c"),
    ("a @ b / c", "(a @ b) / c"),
    ("a * (b @ c)", "a * (b @ c)"),
    ("(a @ b) @ c", "a @ b @ c"),
    ("(a * b) / c", "a * b / c"),
    ("(-a) ^ 2", "(-a) ^ 2"),
    ("-a ^ 2", "-a ^ 2"),
    ("a ^ -b", "a ^ -b"),
    ("a ^ (b * c)", "a ^ (b * c)"),
    ("a - -b", "a - -b"),
    ("((f(x, (y))))", "f(x, y)"),
    ("1.50+2e3*.5", "1.50 + 2e3 * .5"),
    ("0.0010 - 007", "0.0010 - 007"),
])
def test_parentheses_only_where_precedence_needs_them(written: str, printed: str) -> None:
    out = canonical(optimizer(f"  v = {written}"))
    assert f"\n  v = {printed}\n" in out


def test_calls_keep_flags_bare_and_options_spaced() -> None:
    out = canonical(optimizer("  memory m : mlp(expand=4,act=silu,residual) per element init zeros\n"
                              "  learn m : dot(self(grad),grad) by gd(lr=1) every step"))
    assert "  memory m : mlp(expand = 4, act = silu, residual) per element init zeros\n" in out
    assert "  learn m : dot(self(grad), grad) by gd(lr = 1) every step\n" in out


def test_bare_structures_stay_bare() -> None:
    out = canonical(optimizer("  memory m, v : elementwise init zeros\n  memory n : elementwise() init zeros"))
    assert "  memory m, v : elementwise init zeros\n" in out
    assert "  memory n : elementwise() init zeros\n" in out


# ---- statements ---------------------------------------------------------------------------------

def test_modifiers_and_clauses_print_in_canonical_order() -> None:
    out = fmt(optimizer("  memory m : elementwise frozen level 2 init zeros scope persistent per element\n"
                        "  learn m : dot(self, g) by gd() backprop truncate 4 read before grad at token\n"
                        "    chunk 16 every step"))
    assert "  memory m : elementwise per element scope persistent init zeros level 2 frozen\n" in out
    assert "  learn m : dot(self, g) by gd() every step chunk 16 grad at token read before backprop truncate 4\n" in out
    assert fmt(out) == out


def test_periods() -> None:
    out = canonical(optimizer("  learn m : dot(self, grad) by gd(lr = 1) every 1 steps\n"
                              "  learn n : dot(self, grad) by gd(lr = 1) every period step\n"
                              "  learn k : dot(self, grad) by gd(lr = 1) every never"))
    assert "every 1 step\n" in out and "every period steps\n" in out and "every never\n" in out


def test_cms_levels_one_per_line_aligned() -> None:
    text = ("model M(vocab = 256, dim = 64, context = 256) { block {\n"
            "memory c : cms parallel [ mlp(expand = 4) every 8 tokens, mlp(expand = 4) every 64 tokens, ]\n"
            "  init learned\n"
            "memory d : cms [ mlp() every 16 tokens ]\n"
            "} }\n")
    assert canonical(text) == textwrap.dedent("""\
        model M(vocab = 256, dim = 64, context = 256) {
          block {
            memory c : cms parallel [ mlp(expand = 4) every 8 tokens,
                                      mlp(expand = 4) every 64 tokens ] init learned
            memory d : cms [ mlp() every 16 tokens ]
          }
        }
        """)


def test_long_learn_breaks_before_by() -> None:
    objective = "l2(self(k), stopgrad(self(some_rather_long_value_name)))"
    out = canonical(optimizer(f"  learn m : {objective} by dgd(lr = eta, retain = alpha) every step chunk 64 "
                              "read before"))
    assert f"\n  learn m : {objective}\n    by dgd(lr = eta, retain = alpha) every step chunk 64 read before\n" in out
    assert all(len(line) <= 100 for line in out.splitlines())
    short = canonical(optimizer("  learn m : dot(self, grad)\n     by gd(lr = 1)\n  every step"))
    assert "\n  learn m : dot(self, grad) by gd(lr = 1) every step\n" in short


def test_long_memory_declaration_breaks_before_modifiers() -> None:
    structure = "mlp(depth = 2, expand = 4, act = silu, norm = layernorm, residual, hidden = 512)"
    out = canonical(optimizer(f"  memory m : {structure} per element scope persistent init identity"))
    assert f"\n  memory m : {structure}\n    per element scope persistent init identity\n" in out


def test_long_header_wraps_aligned_after_the_parenthesis() -> None:
    params = ", ".join(f"p{i} = {i}.5" for i in range(14))
    out = canonical(f"optimizer o({params}) {{ param = param }}")
    first, second = out.splitlines()[:2]
    assert first.startswith("optimizer o(p0 = 0.5, ") and first.endswith(",") and len(first) <= 100
    assert second.startswith(" " * len("optimizer o(") + "p") and second.endswith(") {")


# ---- layout -------------------------------------------------------------------------------------

def test_messy_optimizer_only_file() -> None:
    text = "optimizer   sgd( lr=0.01,weight_decay = 0, ){\nparam=param-lr*(grad+weight_decay*param)}"
    assert canonical(text) == textwrap.dedent("""\
        optimizer sgd(lr = 0.01, weight_decay = 0) {
          param = param - lr * (grad + weight_decay * param)
        }
        """)


def test_blank_lines_are_kept_collapsed_and_required_ones_added() -> None:
    text = ('import "optim/sgd.nl"\nmodel M(vocab = 256, dim = 64, context = 256) {\n\n\n  block {\n\n'
            "    x = h\n\n\n\n    h = x\n\n  }\n  train { optimize all by sgd(lr = 0.1) }\n\n}\n"
            "optimizer o() { param = param }\n")
    assert canonical(text) == textwrap.dedent("""\
        import "optim/sgd.nl"

        model M(vocab = 256, dim = 64, context = 256) {
          block {
            x = h

            h = x
          }

          train {
            optimize all by sgd(lr = 0.1)
          }
        }

        optimizer o() {
          param = param
        }
        """)


def test_comments_leading_trailing_and_before_closing_braces() -> None:
    text = textwrap.dedent("""\
        # header line one
        # header line two
        import "optim/sgd.nl"   # why sgd

        # the model
        model M(vocab = 256, dim = 64, context = 256) {  # opens
          block {
            # leading, two lines
            # of it
              x = h       # trailing
            memory c : cms [ mlp() every 8 tokens,   # fast
                             # slow comes next
                             mlp() every 64 tokens ]

            # a closing remark
          }
          train { optimize all by sgd(lr = 0.1) }
        }  # closes
        # the end
        """)
    assert canonical(text) == textwrap.dedent("""\
        # header line one
        # header line two

        import "optim/sgd.nl"  # why sgd

        # the model
        model M(vocab = 256, dim = 64, context = 256) {  # opens
          block {
            # leading, two lines
            # of it
            x = h  # trailing
            memory c : cms [ mlp() every 8 tokens,  # fast
                             # slow comes next
                             mlp() every 64 tokens ]

            # a closing remark
          }

          train {
            optimize all by sgd(lr = 0.1)
          }
        }  # closes
        # the end
        """)


def test_comments_behind_consecutive_lines_share_a_column() -> None:
    text = optimizer("  v = a   # one\n  longer = b * c # two\n\n  w = a  # three\n  u = v\n  z = u       # four")
    out = canonical(text)
    assert "  v = a           # one\n  longer = b * c  # two\n" in out
    assert "  w = a  # three\n  u = v\n  z = u  # four\n" in out      # runs end at blank lines and bare lines


def test_comments_inside_a_statement_move_above_it() -> None:
    text = optimizer("  v = f(a,  # first\n        # second\n        b)  # third")
    out = canonical(text)
    assert "\n  # first\n  # second\n  v = f(a, b)  # third\n" in out


def test_a_file_of_comments_only() -> None:
    assert canonical("# one\n# two\n\n\n# three\n") == "# one\n# two\n\n# three\n"
    assert canonical("") == ""


def test_crlf_input_gives_lf_output_and_the_same_comments() -> None:
    assert canonical("optimizer o() {\r\n  param = param  # c\r\n}\r\n") == "optimizer o() {\n  param = param  # c\n}\n"


def test_syntax_errors_give_no_text_and_the_diagnostics() -> None:
    out, diagnostics = format_source(SourceFile(path="t.nl", text="model M( {"))
    assert out is None
    assert diagnostics and all(d.code in {"NL001", "NL002", "NL003"} for d in diagnostics)
