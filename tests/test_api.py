"""The public Python API is explicit and never leaks a traceback for a bad spec."""

from __future__ import annotations

import pytest
from specutil import SPECS, model

import nldsl


def test_public_names():
    public = {n for n in dir(nldsl) if not n.startswith("_")}
    expected = {"CheckResult", "check_file", "check_text", "load_spec", "nesting_graph", "render", "explain",
                "Diagnostic", "SpecError", "Spec", "CODES"}
    assert expected <= public


def test_load_spec_returns_checked_spec():
    spec = nldsl.load_spec(SPECS / "hope.nl")
    hope = spec.models["Hope"]
    assert hope.config["dim"] == 256 and hope.blocks[0].repeat == 4
    assert hope.blocks[0].memories["M_memory"].learn.time.period == 64
    assert "adamw" in spec.optimizers


def test_load_spec_raises_spec_error_with_every_diagnostic(tmp_path):
    bad = tmp_path / "bad.nl"
    bad.write_text(model("h = h + foo(h)\n    h = h + bar"))
    with pytest.raises(nldsl.SpecError) as info:
        nldsl.load_spec(bad)
    codes = [d.code for d in info.value.diagnostics]
    assert codes == ["NL022", "NL020"]
    assert "bad.nl:5:13" in str(info.value)


def test_render_and_explain_from_python(tmp_path):
    d = nldsl.render(SPECS / "linear_attention.nl")
    assert "cluster_level2" in d.dot
    assert "model LinearAttention: 2 levels" in nldsl.explain(SPECS / "linear_attention.nl")
