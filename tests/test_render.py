"""Diagrams: DOT always, SVG/PNG through Graphviz; every level is a cluster, in order."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from specutil import SPECS

import nldsl
from nldsl import draw as render

SVG = "{http://www.w3.org/2000/svg}"


def _graph(name: str):
    return nldsl.nesting_graph(SPECS / name)


@pytest.mark.parametrize("name", ["hope.nl", "titans.nl", "linear_attention.nl", "cms.nl", "optim/m3.nl"])
def test_dot_has_one_cluster_per_level(name):
    g = _graph(name)
    dot = render.to_dot(g)
    clusters = re.findall(r"subgraph cluster_level(\d+)", dot)
    assert [int(c) for c in clusters] == list(range(1, len(g.levels) + 1))
    assert dot.count("{rank=same;") == len(g.levels)


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


def test_notebook_display_is_svg():
    d = render.diagram(_graph("linear_attention.nl"))
    assert d._repr_svg_().lstrip().startswith("<?xml") or "<svg" in d._repr_svg_()


def test_missing_graphviz_is_reported_not_raised_blindly(monkeypatch, tmp_path):
    monkeypatch.setattr(render.shutil, "which", lambda _: None)
    d = render.diagram(_graph("linear_attention.nl"))
    with pytest.raises(render.GraphvizMissing, match="install"):
        d.save(tmp_path / "x.svg")
    assert d.save(tmp_path / "x.dot").read_text().startswith("digraph")
