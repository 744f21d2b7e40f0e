"""The nesting graph: node and edge kinds with their policies, the schedule, and the cost preview."""

from __future__ import annotations

from math import prod

import networkx as nx
from specutil import SPECS, model

import nldsl
from nldsl import report
from nldsl.cost import component_costs, totals
from nldsl.schedule import analyze


def graph(text: str):
    r = nldsl.check_text(text, "<test>.nl")
    assert r.ok, r.render()
    return r, r.graph()


def edges(g, kind):
    return {(g.component(a).name, g.component(b).name, d["policy"]) for a, b, d in g.g.edges(data=True)
            if d["kind"] == kind}


def test_hope_graph_edges():
    g = nldsl.nesting_graph(SPECS / "hope.nl")
    assert isinstance(g.g, nx.MultiDiGraph)
    writes = edges(g, "write")
    assert ("M_k", "M_memory", "") in writes           # M_k generates the keys M_memory is trained on
    generates = edges(g, "generate")
    assert ("M_eta", "M_memory", "") in generates and ("M_alpha", "M_k", "") in generates
    grads = edges(g, "grad")
    assert ("M_memory", "M_memory₀", "through") in grads
    assert ("cms_1", "cms_1₀", "first_order") in grads
    assert ("next_token", "cms_2", "teach signal") in edges(g, "write")
    updates = edges(g, "update")
    assert ("adamw.m", "W_q", "") in updates


def test_stop_gradient_policies_are_recorded():
    text = model("""
    param W_k : matrix(dim, dim)
    k = h @ W_k
    memory A : matrix per head init zeros
    learn A : l2(self(k), k) by gd(lr = 0.1) backprop first_order
    h = h + A(k)
""")
    r, g = graph(text)
    assert ("A", "W_k", "first_order") not in edges(g, "grad")
    assert not r.warnings  # W_k still reaches the loss through the read A(k)


def test_parameter_without_outer_gradient_warns():
    text = model("""
    param W_k : matrix(dim, dim)
    param W_q : matrix(dim, dim)
    k = h @ W_k
    memory A : matrix per head init zeros
    learn A : l2(self(k), k) by gd(lr = 0.1) backprop first_order
    h = h + A(h @ W_q)
""")
    r = nldsl.check_text(text, "<test>.nl")
    assert [d.code for d in r.warnings] == ["NL074"]
    assert "W_k" in r.warnings[0].message


def test_schedule_nested_and_not_nested():
    nested = model("""
    memory A, B : matrix per head init zeros
    learn A : l2(self(h), h) by gd(lr = 0.1) every 4 tokens
    learn B : l2(self(h), h) by gd(lr = 0.1) every 16 tokens
    h = h + A(h) + B(h)
""")
    _, g = graph(nested)
    s = analyze(g)
    assert s.tokens.hyperperiod == 16 and s.tokens.nested
    assert len(s.tokens.patterns) == 3              # nothing, A, A and B
    assert s.compiled_graphs == 1
    r = nldsl.check_text(nested.replace("every 16 tokens", "every 6 tokens"), "<t>.nl")
    assert {d.code for d in r.warnings} == {"NL061", "NL060"}


def test_step_patterns_count_compiled_graphs():
    g = nldsl.nesting_graph(SPECS / "optim" / "m3.nl")
    assert g.levels
    text = model("h = h + rmsnorm(h)", train="optimize all by m3(lr = 0.01)", imports='import "optim/m3.nl"')
    _, g = graph(text)
    s = analyze(g)
    assert s.steps.hyperperiod == 8
    assert s.compiled_graphs == 2                   # with and without the slow momentum


def test_costs_count_parameters_exactly():
    text = model("""
    param W : matrix(dim, dim)
    memory M : mlp(depth = 2, expand = 2, act = silu, residual) per head init learned
    learn M : l2(self(h), h) by gd(lr = 0.1)
    h = h + M(h @ W)
""")
    _, g = graph(text)
    costs = component_costs(g)
    dim, heads, vocab = 32, 4, 64
    per_head = 2 * (dim // heads) * (2 * dim // heads)
    assert costs["block0.M"].fast_state == per_head * heads
    assert costs["block0.M.init"].slow_params == per_head * heads
    assert costs["block0.W"].slow_params == dim * dim
    expected_slow = dim * dim + per_head * heads + 2 * vocab * dim + dim
    assert totals(g, costs).slow_params == expected_slow
    assert costs["sgd.param"].optimizer_state == 0 if "sgd.param" in costs else True
    assert all(c.flops_per_token >= 0 for c in costs.values())
    assert costs["block0.M"].activation_bytes == 64 * per_head * heads * 4   # one state per token, backprop through


def test_every_shipped_model_has_a_cost_preview():
    for path in sorted(SPECS.glob("*.nl")):
        g = nldsl.nesting_graph(path)
        t = totals(g, component_costs(g))
        assert t.slow_params > 0 and t.flops_per_token > 0, path.name
        params = sum(prod(p.shape) for p in g.model.params.values())
        assert t.slow_params >= params


def test_a_model_beyond_any_machine_is_warned_about_with_its_largest_part():
    """NL043 once the parameters pass 1 TiB in float32 (2^38 numbers), and not below."""
    def check(dim: int) -> nldsl.CheckResult:
        return nldsl.check_text(model("""
    param W : matrix(dim, dim)
    h = h + rmsnorm(h) @ W
""", header=f"vocab = 64, dim = {dim}, context = 64"), "<test>.nl")
    below, above = check(2**18), check(2**20)     # W: 2^36 and 2^40 numbers
    assert below.ok and not below.warnings, below.render()
    (warning,) = above.warnings
    assert warning.code == "NL043" and "the largest part is 'W'" in warning.message, above.render()
    assert warning.span.line == 5                  # the declaration of W


def test_huge_sizes_neither_overflow_nor_take_long_in_check_and_explain():
    """Sizes up to 2^53 multiply into numbers no float holds if nothing bounds them; the NL060 hint
    once searched every number up to the context for a divisor."""
    big = 2**53 - 1                                # odd, so a period of 16 does not divide it
    text = model("""
    x = rmsnorm(h)
    memory M : mlp(expand = 4, depth = 1000) per head
    learn M : l2(self(x), x) by gd(lr = 0.1) every 16 tokens
    h = h + M(x)
""", header=f"vocab = {big}, dim = {2**40}, heads = 4, context = {big}")
    r = nldsl.check_text(text, "<test>.nl")
    assert r.ok and {d.code for d in r.warnings} == {"NL043", "NL060"}, r.render()
    assert "parameters (outer level)" in report.render(r.graph(), r.sources)
