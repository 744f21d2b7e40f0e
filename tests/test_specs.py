"""The spec library (specs/ and the benchmarks' variants in bench/specs/): every spec checks clean, the
shipped ones cite the paper and have the paper's levels."""

from __future__ import annotations

import re

import pytest
from specutil import ALL_SPECS, SPECS

import nldsl


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_spec_checks_clean(path):
    result = nldsl.check_file(path)
    assert result.ok, result.render()
    assert not result.warnings, result.render()
    assert result.graphs, "a clean spec has a nesting graph"


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_spec_header_cites_an_equation(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name} has no header comment"
    assert re.search(r"eq\.|eqs\.|Eq\.|Algorithm", " ".join(header)), f"{path.name} cites no equation"


def test_library_is_complete():
    names = {p.relative_to(SPECS).as_posix() for p in ALL_SPECS}
    required = {"hope.nl", "self_modifying_titans.nl", "titans.nl", "cms.nl", "linear_attention.nl", "deltanet.nl",
                "gated_deltanet.nl", "transformer.nl", "mlp_gd.nl", "optim/sgd_momentum.nl", "optim/adam.nl",
                "optim/adamw.nl", "optim/dmgd.nl", "optim/muon.nl", "optim/m3.nl"}
    assert required <= names


def _levels(path_or_text, text=False):
    r = nldsl.check_text(path_or_text, "<test>.nl") if text else nldsl.check_file(path_or_text)
    assert r.ok, r.render()
    g = r.graph()
    return [sorted(g.component(n).name for n in level) for level in g.levels]


def test_linear_attention_has_two_levels():
    levels = _levels(SPECS / "linear_attention.nl")
    assert len(levels) == 2
    assert levels[0] == ["M"]


def test_linear_attention_with_momentum_has_three_levels():
    text = (SPECS / "linear_attention.nl").read_text()
    text = text.replace('import "optim/sgd.nl"', 'import "optim/sgd_momentum.nl"')
    text = text.replace("by sgd(lr = 0.1)", "by sgd_momentum(lr = 0.1, momentum = 0.9)")
    levels = _levels(text, text=True)
    assert len(levels) == 3
    assert levels[0] == ["M"] and levels[1] == ["sgd_momentum.buf"]


def test_adam_moments_share_a_level():
    assert _levels(SPECS / "optim" / "adam.nl") == [["m", "v"], ["param"]]


def test_m3_slow_momentum_is_a_slower_level():
    assert _levels(SPECS / "optim" / "m3.nl") == [["m1", "v"], ["param"], ["m2"]]


def test_mlp_trained_by_gd_is_one_level():
    assert len(_levels(SPECS / "mlp_gd.nl")) == 1


def test_transformer_attention_is_fastest():
    levels = _levels(SPECS / "transformer.nl")
    assert levels[0] == ["attn"]
    assert levels[1] == ["adamw.m", "adamw.v"]
    assert len(levels) == 3


def test_hope_levels():
    levels = _levels(SPECS / "hope.nl")
    assert levels[0] == ["M_alpha", "M_eta", "M_k", "M_v", "cms_1"]
    assert levels[1] == ["M_memory"]
    assert levels[2] == ["cms_2"] and levels[3] == ["cms_3"]
    assert levels[4] == ["adamw.m", "adamw.v"]
    assert "M_k₀" in levels[5] and "W_q" in levels[5]


def test_titans_momentum_is_one_level_faster_than_its_memory():
    levels = _levels(SPECS / "titans.nl")
    assert levels[:3] == [["swa"], ["M.momentum"], ["M"]]


def test_cms_levels_are_ordered_by_period():
    levels = _levels(SPECS / "cms.nl")
    assert levels[:4] == [["attn"], ["mlp_1"], ["mlp_2"], ["mlp_3"]]
    assert "mlp_4" in levels[-1], "the frozen CMS level is a plain outer parameter"


@pytest.mark.parametrize("dim", [64, 128])
def test_hope_at_cms_expand_half_has_deltanets_size(dim):
    """bench/quality_bench.py compares models at equal size through this setting (EQUAL_SIZE)."""
    def size(name, **extra):
        net = nldsl.load(SPECS / f"{name}.nl", overrides={"dim": dim, "layers": 2, "heads": 4, "vocab": 256,
                                                          "context": 64, **extra})
        return sum(p.numel() for p in net.parameters())
    deltanet = size("deltanet")
    assert abs(size("hope", cms_expand=0.5) - deltanet) < 0.005 * deltanet
    assert size("hope") > 2 * deltanet


BENCH = SPECS.parent / "bench" / "specs"


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.nl")), ids=lambda p: p.name)
def test_bench_spec_checks_clean(path):
    result = nldsl.check_file(path)
    assert result.ok and not result.warnings, result.render()


def _statements(path):
    """The spec's lines that are not comments, with the model's name taken out."""
    lines = [line.split("#")[0].rstrip() for line in path.read_text().splitlines()]
    return [re.sub(r"^model \w+", "model", line) for line in lines if line]


@pytest.mark.parametrize("variant", ["dgd", "self", "l2v"])
def test_each_ablation_variant_changes_one_line_of_its_base(variant):
    """bench/results/quality_ablation.md reads each titans_lmm_* row as the cost of one change."""
    base = _statements(BENCH / "titans_lmm.nl")
    changed = _statements(BENCH / f"titans_lmm_{variant}.nl")
    assert len(base) == len(changed)
    assert sum(a != b for a, b in zip(base, changed, strict=True)) == 1


def test_hope_gd_is_the_shipped_hope_with_gd_in_place_of_dgd():
    """A copy of specs/hope.nl that drifted from it would no longer measure what its row says."""
    shipped = [line.replace("by dgd(", "by gd(") for line in _statements(SPECS / "hope.nl")]
    assert _statements(BENCH / "hope_gd.nl") == shipped
