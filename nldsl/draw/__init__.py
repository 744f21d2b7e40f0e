"""Drawings of a nesting graph, built with the `graphviz` package: the level hierarchy
(`hierarchy.py`) and the firing timeline (`timeline.py`), every text from the spec escaped in one
place (`labels.py`), shown or saved through `output.py`'s `Diagram`."""

from __future__ import annotations

from nldsl.draw.hierarchy import hierarchy_graph
from nldsl.draw.output import Diagram, GraphvizMissing
from nldsl.draw.timeline import timeline_graph
from nldsl.graph import NestingGraph

__all__ = ["Diagram", "GraphvizMissing", "diagram"]


def diagram(ng: NestingGraph, timeline: bool = False) -> Diagram:
    """The level hierarchy of `ng`, or with `timeline` which levels fire over one hyperperiod."""
    return Diagram(timeline_graph(ng) if timeline else hierarchy_graph(ng))
