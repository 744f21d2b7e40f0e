"""Level derivation (paper Definition 2): frequency first; at equal frequency, dependency order."""

from __future__ import annotations

from specutil import model

import nldsl


def levels(text: str) -> list[list[str]]:
    r = nldsl.check_text(text, "<test>.nl")
    assert r.ok, r.render()
    g = r.graph()
    return [sorted(g.component(n).name for n in lv) for lv in g.levels]


PROJ = """
    param W_k : matrix(dim, dim)
    param W_v : matrix(dim, dim)
    k = h @ W_k
    v = h @ W_v
"""


def test_faster_period_is_a_faster_level():
    text = model(PROJ + """
    memory A, B : matrix per head init zeros
    learn A : l2(self(k), v) by gd(lr = 0.1) every 4 tokens
    learn B : l2(self(k), v) by gd(lr = 0.1) every 16 tokens
    h = h + A(k) + B(k)
""")
    assert levels(text)[:2] == [["A"], ["B"]]


def test_equal_frequency_read_after_dependency_orders_levels():
    # B's keys are A's output read after A's write: B's state at t needs A's state at t.
    text = model(PROJ + """
    memory A, B : matrix per head init zeros
    learn A : l2(self(k), v) by gd(lr = 0.1)
    kb = A(k)
    learn B : l2(self(kb), v) by gd(lr = 0.1)
    h = h + B(k)
""")
    assert levels(text)[:2] == [["A"], ["B"]]


def test_equal_frequency_read_before_is_independent():
    text = model(PROJ + """
    memory A, B : matrix per head init zeros
    learn A : l2(self(k), v) by gd(lr = 0.1) read before
    kb = A(k)
    learn B : l2(self(kb), v) by gd(lr = 0.1)
    h = h + B(k)
""")
    assert levels(text)[0] == ["A", "B"]


def test_cycle_at_equal_frequency_is_an_error():
    text = model(PROJ + """
    memory A, B : matrix per head init zeros
    ka = B(k)
    kb = A(k)
    learn A : l2(self(ka), v) by gd(lr = 0.1)
    learn B : l2(self(kb), v) by gd(lr = 0.1)
    h = h + A(k) + B(k)
""")
    r = nldsl.check_text(text, "<test>.nl")
    assert [d.code for d in r.errors] == ["NL070"]


def test_self_generated_key_read_after_is_a_cycle():
    text = model(PROJ + """
    memory A : matrix per head init zeros
    ka = A(k)
    learn A : l2(self(ka), v) by gd(lr = 0.1)
    h = h + A(k)
""")
    r = nldsl.check_text(text, "<test>.nl")
    assert "NL070" in {d.code for d in r.errors}


def test_momentum_is_a_faster_level_than_its_memory():
    text = model(PROJ + """
    memory A : matrix per head init zeros
    learn A : l2(self(k), v) by gd(lr = 0.1, momentum = 0.9)
    h = h + A(k)
""")
    assert levels(text)[:2] == [["A.momentum"], ["A"]]


def test_chunk_sets_the_level_frequency():
    text = model(PROJ + """
    memory A, B : matrix per head init zeros
    learn A : l2(self(k), v) by gd(lr = 0.1) every token chunk 4
    learn B : l2(self(k), v) by gd(lr = 0.1) every token chunk 16
    h = h + A(k) + B(k)
""")
    assert levels(text)[:2] == [["A"], ["B"]]


def test_attention_is_fastest_and_frozen_is_slowest():
    text = model("""
    param W : matrix(dim, dim) frozen
    memory att : attention per head
    h = h + att(h, h, h) @ W
""")
    lv = levels(text)
    assert lv[0] == ["att"] and lv[-1] == ["W"]


def test_level_assertion_checked():
    good = model(PROJ + """
    memory A : matrix per head init zeros level 1
    learn A : l2(self(k), v) by gd(lr = 0.1)
    h = h + A(k)
""")
    assert nldsl.check_text(good, "<t>.nl").ok
    bad = good.replace("level 1", "level 2")
    r = nldsl.check_text(bad, "<t>.nl")
    assert [d.code for d in r.errors] == ["NL071"]
    assert "derived level is 1" in r.errors[0].message


def test_cms_periods_in_steps_and_tokens_compare_in_tokens():
    """A step is `context` tokens of each sequence: `every 16 tokens` before `every 1 step` is fastest
    first (NL067 once compared the raw numbers, 16 > 1), and the reverse order is the one it reports."""
    def cms(levels: str) -> nldsl.CheckResult:
        return nldsl.check_text(model(f"""
    memory C : cms [ {levels} ] scope persistent init zeros
    learn C : l2(self(h), h) by gd(lr = 0.01)
    h = h + C(h)
"""), "<test>.nl")
    right = cms("mlp(expand = 2) every 16 tokens, mlp(expand = 2) every 1 step")
    assert right.ok and "NL067" not in {d.code for d in right.diagnostics}, right.render()
    wrong = cms("mlp(expand = 2) every 1 step, mlp(expand = 2) every 16 tokens")
    assert [d.message for d in wrong.diagnostics if d.code == "NL067"] == \
        ["the levels of cms 'C' are not listed fastest first (1 step = 64 tokens, 16 tokens)"]
