"""`nldsl compare`: variants on the command line, parameter counts and their matching, the table,
and a whole comparison of two tiny models trained alike."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from specutil import ROOT, SPECS

import nldsl
from nldsl.backends.torch.app import compare
from nldsl.backends.torch.app.config import UsageError

NLDSL = shutil.which("nldsl", path=os.path.dirname(sys.executable))
SMALL = {"dim": 16.0, "layers": 1.0, "heads": 2.0}


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    assert NLDSL, "the nldsl console script is not installed"
    return subprocess.run([NLDSL, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


# ---- variants ----------------------------------------------------------------------------------

def test_a_variant_is_a_spec_and_settings_of_its_own():
    v = compare.parse_variant("specs/hope.nl:cms_expand=0.5,memory_period=16")
    assert v.spec == Path("specs/hope.nl") and v.settings == {"cms_expand": 0.5, "memory_period": 16.0}
    assert v.label == "hope[cms_expand=0.5,memory_period=16]"
    assert compare.parse_variant("specs/hope.nl").settings == {}
    assert compare.parse_variant("runs/a:b/hope.nl").spec == Path("runs/a:b/hope.nl")    # a ':' in a folder


@pytest.mark.parametrize("text", ["hope.nl:dim=1,=2", "hope.nl:dim=1,lr", "hope.nl:dim=nan", "hope.nl:dim=inf",
                                  "hope.nl:dim=x", "hope.nl:dim=1,dim=2", "hope.nl:2dim=1"])
def test_a_malformed_variant_is_a_usage_error(text):
    with pytest.raises(UsageError, match="variant"):
        compare.parse_variant(text)


def test_a_variant_compared_twice_is_refused():
    twice = [compare.parse_variant("specs/hope.nl:dim=8"), compare.parse_variant("other/hope.nl:dim=8")]
    with pytest.raises(UsageError, match="compared twice"):
        compare.labels_unique(twice)


# ---- parameter counts ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["transformer", "deltanet", "titans", "hope"])
def test_the_front_ends_parameter_count_is_the_models(name):
    """The count matching relies on, from the checked spec alone, equals the built model's."""
    built = nldsl.load(SPECS / f"{name}.nl", overrides=SMALL)
    trained = sum(p.numel() for p in built.parameters() if p.requires_grad)
    assert nldsl.parameter_count(SPECS / f"{name}.nl", SMALL) == trained


def test_a_spec_with_errors_has_no_count(tmp_path):
    bad = tmp_path / "bad.nl"
    bad.write_text("model M(vocab = 8, dim = 8, context = 8) {\n  block {\n    h = h + q\n  }\n}\n")
    assert nldsl.parameter_count(bad) is None


def test_matching_changes_a_part_before_the_width():
    target = nldsl.parameter_count(SPECS / "transformer.nl", SMALL)
    assert target is not None
    before = nldsl.parameter_count(SPECS / "hope.nl", SMALL)
    own = nldsl.match_parameters(SPECS / "hope.nl", target, SMALL)
    assert "dim" not in own and len(own) == 1                   # one of Hope's own settings (its CMS width)
    after = nldsl.parameter_count(SPECS / "hope.nl", {**SMALL, **own})
    assert after is not None and before is not None and abs(after - target) < abs(before - target)


def test_matching_falls_back_to_the_width_in_whole_heads():
    target = nldsl.parameter_count(SPECS / "transformer.nl", {**SMALL, "dim": 32.0})
    assert target is not None
    own = nldsl.match_parameters(SPECS / "deltanet.nl", target, SMALL)
    assert set(own) == {"dim"} and own["dim"] % SMALL["heads"] == 0
    assert own["dim"] == 32.0       # the same layers at the same width hold about as many parameters


def test_matching_leaves_the_variants_own_settings_alone():
    target = nldsl.parameter_count(SPECS / "transformer.nl", {**SMALL, "dim": 32.0})
    assert target is not None
    with pytest.raises(ValueError, match="changes its parameter count"):
        nldsl.match_parameters(SPECS / "deltanet.nl", target, SMALL, own={"dim": 16.0})
    with pytest.raises(ValueError, match="no header setting 'width'"):
        nldsl.match_parameters(SPECS / "deltanet.nl", target, SMALL, by="width")


# ---- the table ------------------------------------------------------------------------------------

def test_the_table_shows_every_metric_and_why_a_run_stopped():
    common = {"spec": "s.nl", "settings": {}, "run": "r", "steps": 5, "seconds": 1.0}
    outcomes = [compare.Outcome(label="a", parameters=1200, loss=2.5, tokens_per_second=1500.0,
                                metrics={"mqar_accuracy": 0.5}, **common),
                compare.Outcome(label="b[dim=8]", parameters=900, loss=math.nan, tokens_per_second=None,
                                metrics={}, failed="the loss is nan at step 3", **common)]
    lines = compare.table(outcomes).splitlines()
    assert lines[0] == "| variant | parameters | steps | final loss | tokens/s | seconds | mqar accuracy |"
    assert lines[2] == "| a | 1,200 | 5 | 2.5000 | 1,500 | 1 | 0.5000 |"
    assert lines[3] == "| b[dim=8] (stopped: the loss is nan at step 3) | 900 | 5 | — | — | 1 | — |"


# ---- the command --------------------------------------------------------------------------------

def test_compare_trains_each_variant_alike_and_writes_the_table(tmp_path):
    from nldsl.cli import main
    out = tmp_path / "cmp"
    code = main(["compare", str(SPECS / "transformer.nl"), f"{SPECS / 'deltanet.nl'}:dim=8",
                 "--task", "mqar", "--steps", "2", "--batch", "2", "--context", "32", "--pairs", "2",
                 "--set", "dim=16", "--set", "layers=1", "--set", "heads=2", "--out", str(out)])
    assert code == 0
    table = (out / "compare.md").read_text()
    assert table.count("\n") == 4 and "| transformer |" in table and "| deltanet[dim=8] |" in table
    records = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in records] == ["transformer", "deltanet[dim=8]"]
    for r in records:
        assert r["steps"] == 2 and 0 <= r["metrics"]["mqar_accuracy"] <= 1 and not r["failed"]
        info = json.loads((Path(r["run"]) / "run.json").read_text())
        assert info["config"]["context"] == 32 and info["config"]["batch"] == 2 and info["config"]["task"] == "mqar"
    assert records[1]["settings"]["dim"] == 8 and records[0]["settings"]["dim"] == 16
    assert records[0]["parameters"] == nldsl.parameter_count(SPECS / "transformer.nl", SMALL | {"context": 32.0})


def test_compare_checks_every_spec_before_training_any(tmp_path):
    bad = tmp_path / "bad.nl"
    bad.write_text("model M(vocab = 8, dim = 8, context = 8) {\n  block {\n    h = h + q\n  }\n}\n")
    done = run("compare", str(SPECS / "transformer.nl"), str(bad), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 1 and "NL020" in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--match-params", "gpt"], "--match-params gpt: name one of the variants"),
    (["--match-params", "2", "--match-by", "width"], "no header setting 'width'"),
])
def test_compare_refuses_what_cannot_mean_anything(tmp_path, args, message):
    done = run("compare", str(SPECS / "transformer.nl"), str(SPECS / "deltanet.nl"), *args,
               "--out", str(tmp_path / "cmp"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_compare_starts_in_an_empty_folder(tmp_path):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "notes.txt").write_text("mine")
    done = run("compare", str(SPECS / "transformer.nl"), "--steps", "1", "--out", str(tmp_path / "cmp"))
    assert done.returncode == 1 and "is not empty" in done.stderr
