"""Deep and huge specs: no traceback, and the right diagnostics, however deep or long the input.

Expressions nested more than `MAX_EXPRESSION_DEPTH` levels are refused with one NL004 where they
are written (every later stage walks expressions recursively); chains of values, blocks, header
parameters and optimizer values of any length check, in time linear in their length. The specs
come from the benchmark's generators (bench/huge_spec.py, which times them at 100,000 lines);
here they are sized for CI, and nothing is timed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import nldsl
from nldsl.fmt import format_source
from nldsl.parse import MAX_EXPRESSION_DEPTH
from nldsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("huge_spec", ROOT / "bench" / "huge_spec.py")
assert _spec is not None and _spec.loader is not None
huge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(huge)

DEEP = 10_000
LINES = 20_000


def check(text: str) -> nldsl.CheckResult:
    return nldsl.check_text(text, "<huge>.nl")


def codes(result: nldsl.CheckResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def model(body: str, header: str = "vocab = 64, dim = 16, heads = 2, context = 64") -> str:
    return f'import "optim/sgd.nl"\nmodel T({header}) {{\n  block {{\n{body}\n  }}\n' \
           "  train { optimize all by sgd(lr = 0.1) }\n}\n"


# ---- deep expressions ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [huge.deep_sum, huge.deep_calls], ids=["sum", "calls"])
def test_a_10000_deep_expression_is_one_positioned_error(make):
    result = check(make(DEEP))
    (error,) = result.diagnostics
    assert error.code == "NL004" and f"{DEEP:,} levels deep" in error.message, result.render()
    assert "split it into named values" in error.hint
    assert (error.span.line, error.span.col) == ((5, 9) if make is huge.deep_sum else (4, 9))


def test_parentheses_that_only_group_do_not_nest():
    result = check(huge.deep_parentheses(DEEP))
    assert result.ok and not result.diagnostics, result.render()


@pytest.mark.parametrize(("where", "text"), [
    ("negation", model("    h = h + " + "-" * DEEP + "h")),
    ("header", model("    h = h + rmsnorm(h)", "vocab = 64, dim = 16, context = 64, c = " + "1 + " * DEEP + "1")),
    ("rule option", model("    memory M : matrix init zeros\n    learn M : l2(self(h), h) by gd(lr = "
                          + "sigmoid(" * DEEP + "0.1" + ")" * DEEP + ")\n    h = h + M(h)")),
    ("structure option", model("    memory M : mlp(hidden = " + "2 * " * DEEP + "2)\n    h = h + M(h)")),
    ("repeat count", model("    h = h + rmsnorm(h)").replace("block {", "block b repeat " + "1 * " * DEEP + "1 {")),
])
def test_deep_expressions_anywhere_are_refused_once(where: str, text: str):
    assert codes(check(text)) == ["NL004"], where


def test_the_limit_is_exact():
    fits = huge.deep_sum(MAX_EXPRESSION_DEPTH)
    assert check(fits).ok, check(fits).render()
    assert codes(check(huge.deep_sum(MAX_EXPRESSION_DEPTH + 1))) == ["NL004"]


def test_a_cms_read_counts_its_levels():
    """Reading a chained CMS applies its levels in turn: a CMS of many levels nests as deeply."""
    levels = ", ".join(["mlp(expand = 1) every 16 tokens"] * (MAX_EXPRESSION_DEPTH + 1))
    result = check(model(f"    memory C : cms [ {levels} ] init zeros\n"
                         "    learn C : l2(self(h), h) by gd(lr = 0.1)\n    h = h + C(h)"))
    assert codes(result) == ["NL004"] and "cms" in result.diagnostics[0].message, result.render()


def test_formatting_a_deep_spec_reports_instead_of_crashing():
    text, diagnostics = format_source(SourceFile(path="<huge>.nl", text=huge.deep_sum(DEEP)))
    assert text is None and [d.code for d in diagnostics] == ["NL004"]
    text, diagnostics = format_source(SourceFile(path="<huge>.nl", text=huge.deep_parentheses(DEEP)))
    assert not diagnostics and text is not None and "    h = h + h\n" in text


# ---- long specs ---------------------------------------------------------------------------------

def test_a_chain_of_20000_values_checks_and_reaches_the_output():
    result = check(huge.chain(LINES))
    assert result.ok and not result.diagnostics, result.render()
    block = result.spec.models["Huge"].blocks[0]
    assert len(block.assignments) == LINES - 8
    assert result.graph().levels


def test_every_one_of_thousands_of_unused_values_is_reported():
    result = check(huge.unused(LINES))
    assert result.ok and codes(result) == ["NL073"] * (LINES - 10)
    assert result.render().count("warning[NL073]") == LINES - 10     # rendering is linear in the warnings


def test_thousands_of_blocks_check():
    result = check(huge.blocks(LINES))
    assert result.ok and not result.diagnostics, result.render()
    assert len(result.spec.models["Huge"].blocks) == (LINES - 5) // 10


def test_a_long_optimizer_chain_checks_with_no_value_unused():
    result = check(huge.optimizer_chain(LINES))
    assert result.ok and not result.diagnostics, result.render()


def test_a_header_of_thousands_of_parameters_checks():
    result = check(huge.header(LINES))
    assert result.ok and not result.diagnostics, result.render()
    assert result.spec.models["Huge"].config[f"c{LINES - 11}"] == LINES - 10


def test_reassigning_a_value_thousands_of_times_names_each_implicit_parameter_once():
    """`h = rmsnorm(h)` again and again: h_rmsnorm, h_rmsnorm_2, ... (the search for a free name
    resumes where it stopped, instead of starting over each time)."""
    n = 5_000
    result = check(model("\n".join(["    h = rmsnorm(h)"] * n)))
    params = result.spec.models["T"].blocks[0].params
    assert result.ok and len(params) == n and f"h_rmsnorm_{n}" in params and "h_rmsnorm" in params


def test_thousands_of_misspelled_names_in_a_huge_scope_are_each_reported():
    """Each unknown name once searched the whole scope for a suggestion (quadratic in a huge block);
    past `MAX_SUGGESTION_POOL` names there is no suggestion, and every error is still reported."""
    lines = huge.chain(LINES // 2).splitlines()
    body = [line.replace(" + x0", " + y0") if i % 10 == 0 and " + x0" in line else line
            for i, line in enumerate(lines)]
    result = check("\n".join(body) + "\n")
    errors = [d for d in result.diagnostics if d.code == "NL020"]
    assert len(errors) == sum(" + y0" in line for line in body) > 900
    assert all(d.message == "unknown name 'y0'" and d.hint == "" for d in errors)
    small = check(model("    value = h\n    h = h + valeu"))
    assert [d.hint for d in small.diagnostics] == ["did you mean 'value'?"], small.render()
