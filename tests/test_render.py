"""Diagrams: DOT always, SVG/PNG through Graphviz; every level is a cluster, in order; inline in
notebooks; without Graphviz, the DOT text and a message that says how to get the picture.

The DOT of two shipped specs is kept in tests/golden/draw/ so a change of look shows in review; set
NLDSL_UPDATE_GOLDEN=1 to rewrite them from the current drawing."""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from specutil import SPECS

import nldsl
from nldsl import draw as render

SVG = "{http://www.w3.org/2000/svg}"
GOLDEN = Path(__file__).resolve().parent / "golden" / "draw"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz `dot` is not installed (scripts/install.sh installs it with apt)")


def _graph(name: str):
    return nldsl.nesting_graph(SPECS / name)


@pytest.mark.parametrize("name", ["hope.nl", "titans.nl", "linear_attention.nl", "cms.nl", "optim/m3.nl"])
def test_dot_has_one_cluster_per_level(name):
    g = _graph(name)
    dot = render.diagram(g).dot
    clusters = re.findall(r"subgraph cluster_level(\d+)", dot)
    assert [int(c) for c in clusters] == list(range(1, len(g.levels) + 1))
    assert dot.count("rank=same") == len(g.levels)


@pytest.mark.parametrize("name, timeline", [("linear_attention", False), ("hope", False), ("hope", True)],
                         ids=["linear_attention.dot", "hope.dot", "hope.timeline.dot"])
def test_golden(name, timeline):
    dot = render.diagram(_graph(f"{name}.nl"), timeline=timeline).dot
    golden = GOLDEN / f"{name}{'.timeline' if timeline else ''}.dot"
    if os.environ.get("NLDSL_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(dot, encoding="utf-8")
    assert dot == golden.read_text(encoding="utf-8")


@needs_dot
def test_svg_finds_every_level_cluster(tmp_path):
    g = _graph("hope.nl")
    out = render.diagram(g).save(tmp_path / "hope.svg")
    root = ET.parse(out).getroot()
    titles = [t.text for t in root.iter(f"{SVG}title")]
    levels = [t for t in titles if t and t.startswith("cluster_level")]
    assert levels == [f"cluster_level{i}" for i in range(1, len(g.levels) + 1)]
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for name in ("M_memory", "cms_1", "cms_3", "outer loss", "Level 6"):
        assert name in text
    # levels are stacked fastest first: each cluster sits below the previous one
    tops = []
    for gr in root.iter(f"{SVG}g"):
        title = gr.find(f"{SVG}title")
        if title is not None and title.text and title.text.startswith("cluster_level"):
            poly = gr.find(f"{SVG}path") if gr.find(f"{SVG}path") is not None else gr.find(f"{SVG}polygon")
            ys = [float(y) for y in re.findall(r"[ ,]?-?\d+\.?\d*,(-?\d+\.?\d*)", poly.get("d") or
                                               poly.get("points"))]
            tops.append(min(ys))
    assert tops == sorted(tops)


@needs_dot
def test_png_and_timeline(tmp_path):
    g = _graph("hope.nl")
    png = render.diagram(g).save(tmp_path / "hope.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timeline = render.diagram(g, timeline=True)
    assert "hyperperiod of 512 tokens" in timeline.dot
    for level in ("Level 1", "Level 2", "Level 3", "Level 4"):
        assert level in timeline.dot
    svg = timeline.save(tmp_path / "t.svg").read_text()
    assert "cms_3" in svg


@needs_dot
def test_notebook_display_is_svg():
    d = render.diagram(_graph("linear_attention.nl"))
    assert "<svg" in d._repr_svg_()
    bundle = d._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"] and "cluster_level2" in bundle["image/svg+xml"]
    assert "<svg" in d.graph._repr_mimebundle_()["image/svg+xml"]    # the graphviz object displays too
    from nldsl.api import render as api_render
    assert "<svg" in api_render(SPECS / "linear_attention.nl", timeline=True)._repr_mimebundle_()["image/svg+xml"]


def test_missing_graphviz_is_reported_not_raised_blindly(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))        # no `dot` to find
    d = render.diagram(_graph("linear_attention.nl"))
    with pytest.raises(render.GraphvizMissing, match="not installed: install it"):
        d.save(tmp_path / "x.svg")
    assert d.save(tmp_path / "x.dot").read_text().startswith("digraph hierarchy {")
    assert d._repr_svg_() is None       # a notebook shows the text form instead
    shown = d._repr_mimebundle_()
    assert set(shown) == {"text/plain"} and "apt-get install graphviz" in shown["text/plain"]
    assert "cluster_level2" in shown["text/plain"]


def test_dot_that_fails_is_reported_with_its_first_line(monkeypatch, tmp_path):
    broken = tmp_path / "dot"
    broken.write_text("#!/bin/sh\necho 'Error: out of memory' >&2\necho 'more detail' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    d = render.diagram(_graph("linear_attention.nl"))
    with pytest.raises(render.GraphvizMissing, match=r"could not draw it \(Error: out of memory\); reinstall"):
        d.pipe("png")
    assert d._repr_mimebundle_()["text/plain"].startswith("Graphviz `dot` could not draw it (Error: out of memory)")
