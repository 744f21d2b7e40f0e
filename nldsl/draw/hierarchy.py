"""The level hierarchy as a `graphviz.Digraph`: one cluster per level, fastest at the top, one node
per group of components, the edges that show what trains what, and a legend of the edge styles."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import graphviz

from nldsl.draw.labels import label, text
from nldsl.graph import INFINITE, Component, NestingGraph

EDGE_STYLES = {   # kind → (colour, style, legend text)
    "data": ("#7f8c8d", "solid", "data: output feeds a read"),
    "write": ("#1f5fbf", "bold", "write: what a memory is trained on"),
    "generate": ("#d35400", "dashed", "generate: sets a learning rate, gate or momentum"),
    "init": ("#27ae60", "dotted", "init: meta-learned initial state"),
    "update": ("#8e44ad", "solid", "update: a state updates its owner"),
    "grad": ("#c0392b", "dashed", "grad: outer gradient, with its policy"),
}
LEVEL_COLOURS = ["#fdebd0", "#fcf3cf", "#e8f8f5", "#eaf2f8", "#f4ecf7", "#fdedec", "#eafaf1", "#f2f3f4"]
SHAPES = {"memory": "box", "attention": "ellipse", "state": "box", "init": "note", "param": "folder", "loss": "oval"}

DRAWN = {  # which edges the drawing shows, by (source kind, target kind); parameters feed everything
    ("learn", "learn"), ("learn", "loss"), ("attention", "learn"), ("learn", "attention"), ("attention", "loss"),
    ("loss", "learn"), ("init", "learn"), ("learn", "init"), ("optstate", "param"), ("optstate", "init"),
    ("state", "learn"),
    ("loss", "param"), ("loss", "init"), ("param", "learn"), ("param", "attention"),
}
CONTEXT_ONLY = {"param"}   # from parameter groups, draw only what they write into or generate for


def hierarchy_graph(ng: NestingGraph) -> graphviz.Digraph:
    groups: dict[str, list[Component]] = {}
    for c in sorted(ng.components(), key=lambda c: c.id):
        groups.setdefault(_group_key(c), []).append(c)
    owner = {c.id: key for key, members in groups.items() for c in members}
    ids = {key: f"n{i}" for i, key in enumerate(groups)}
    level_of = {key: members[0].level for key, members in groups.items()}
    title = f"<B>{text(ng.kind)} {text(ng.name)}</B>: {len(ng.levels)} levels, fastest at the top"
    g = graphviz.Digraph(
        "hierarchy",
        graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "12", "nodesep": "0.3", "ranksep": "0.5",
                    "newrank": "true", "label": label(title), "labelloc": "t"},
        node_attr={"fontname": "Helvetica", "fontsize": "11", "style": "rounded,filled", "fillcolor": "white",
                   "penwidth": "1.2"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9", "arrowsize": "0.7"})
    anchors: list[str] = []
    for i, level in enumerate(ng.levels, start=1):
        comps = [ng.component(n) for n in level]
        keys = sorted({owner[c.id] for c in comps})
        times = "; ".join(sorted({time_text(c) for c in comps}))
        heading = f"<B>Level {i}</B> · f = {text(_freq_text(comps[0].frequency))} · {text(times)}"
        with g.subgraph(name=f"cluster_level{i}") as cluster:
            cluster.attr(label=label(heading), style="rounded,filled",
                         fillcolor=LEVEL_COLOURS[(i - 1) % len(LEVEL_COLOURS)], color="#b0b0b0", labeljust="l")
            for key in keys:
                cluster.node(ids[key], label=_label(groups[key]), shape=SHAPES[groups[key][0].kind])
            with cluster.subgraph() as same:     # a level's nodes side by side
                same.attr(rank="same")
                for key in keys:
                    same.node(ids[key])
        anchors.append(ids[keys[0]])
    for key, members in groups.items():
        if members[0].kind == "loss":
            g.node(ids[key], label=label(f'<B>outer loss</B><BR/><FONT POINT-SIZE="9">{text(members[0].name)}</FONT>'),
                   shape="oval", fillcolor="#fbfcfc")
            level_of[key] = len(ng.levels) + 1
            anchors.append(ids[key])
    for a, b in pairwise(anchors):   # keep the levels stacked, fastest on top
        g.edge(a, b, style="invis", weight="20")
    _edges(g, ng, owner, ids, level_of)
    _legend(g)
    return g


def _freq_text(f: Fraction) -> str:
    if f == INFINITE:
        return "∞ (per query)"
    if f == 0:
        return "0 (frozen)"
    return f"1/{f.denominator}" if f.numerator == 1 else str(f)


def time_text(c: Component) -> str:
    """When a component updates, as the spec says it (`every 16 tokens (grads every 4)`)."""
    if c.kind == "attention":
        return "per query"
    learn = c.memory.learn if c.memory is not None else None
    said = str(c.time)
    if learn is not None and learn.chunk > 1:
        said += f" (grads every {learn.chunk})"
    return said


def _label(members: list[Component]) -> str:
    """A node's label: the name(s) in bold, then structure, objective, rule and timing, small."""
    c = members[0]
    m = c.memory
    grouped = c.kind in ("param", "init") or (c.kind == "state" and c.block is None)
    title = _group_title(c) if grouped else ", ".join(x.name for x in members)
    rows = [f"<B>{text(title)}</B>" + (f' <FONT POINT-SIZE="9">×{c.repeat}</FONT>' if c.repeat > 1 else "")]
    small: list[str] = []
    if grouped:
        names = ", ".join(x.name.split(".")[-1] if c.kind == "state" else x.name for x in members)
        if c.kind == "state":
            names += " (one per parameter)"
        small += [names[i:i + 48] for i in range(0, len(names), 48)]
    elif m is not None and c.kind in ("memory", "attention"):
        shapes = sorted({x.memory.structure.describe() for x in members if x.memory is not None})
        small += [s + (f" · {m.heads} heads" if m.heads > 1 else "") for s in shapes]
        if m.learn is not None:
            small.append(f"{m.learn.objective_name()} · {m.learn.rule.describe()}")
            small.append(f"{time_text(c)} · read {m.learn.read}")
    elif c.note:
        small.append(c.note)
    rows += [f'<FONT POINT-SIZE="9" COLOR="#444444">{text(x)}</FONT>' for x in small]
    return label("<BR/>".join(rows))


def _group_title(c: Component) -> str:
    where = f"{c.block}: " if c.block else ""
    if c.kind == "state":
        return "outer optimizer " + c.name.split(".")[0]
    return where + ("initial states" if c.kind == "init" else "parameters")


def _group_key(c: Component) -> str:
    """Which drawn node a component belongs to. Memories learned by one statement share a node;
    a block's parameters (static memories included) share one, as do its initial states and the
    buffers of one outer optimizer."""
    m = c.memory
    if c.kind == "memory" and m is not None and m.learn is None:
        return f"param:{c.block}:{c.level}"
    if c.kind == "memory" and m is not None and m.learn is not None:
        return f"learn:{c.block}:{c.level}:{m.learn.span}:{m.structure.kind}"
    if c.kind in ("param", "init"):
        return f"{c.kind}:{c.block}:{c.level}"
    if c.kind == "state" and c.block is None:
        return f"optstate:{c.name.split('.')[0]}:{c.level}"
    return f"{c.kind}:{c.id}"


def _edges(g: graphviz.Digraph, ng: NestingGraph, owner: dict[str, str], ids: dict[str, str],
           level_of: dict[str, int]) -> None:
    merged: dict[tuple[str, str, str], set[str]] = {}
    for src, dst, data in ng.g.edges(data=True):
        a, b = owner[src], owner[dst]
        if a == b or (a.split(":")[0], b.split(":")[0]) not in DRAWN:
            continue
        kind = data["kind"]
        if a.split(":")[0] in CONTEXT_ONLY and kind not in ("write", "generate"):
            continue
        if (a.startswith("init") and kind == "init") or (a.startswith("learn") and b.startswith("init")):
            kind = "init"
        merged.setdefault((a, b, kind), set()).add(data["policy"])
    for (src, dst, data_kind) in list(merged):   # an init edge carries the gradient policy back
        if src.startswith("learn") and dst.startswith("init"):
            merged.setdefault((dst, src, "init"), set()).update(merged.pop((src, dst, data_kind)))
    for (a, b, kind), policies in sorted(merged.items()):
        colour, style, _ = EDGE_STYLES[kind]
        attrs = {"color": colour, "style": style}
        said = ", ".join(sorted(p for p in policies if p and p != "gradient"))
        if kind == "init" and said:
            said = f"backprop {said}"
        if said:
            attrs |= {"label": label(text(said)), "fontcolor": colour}
        if level_of[a] > level_of[b]:   # slow → fast edges must not pull the levels out of order
            attrs["constraint"] = "false"
        g.edge(ids[a], ids[b], **attrs)


def _legend(g: graphviz.Digraph) -> None:
    rows = "".join(f'<TR><TD><FONT COLOR="{colour}">━━</FONT></TD><TD ALIGN="LEFT">{text(said)} ({style})</TD></TR>'
                   for colour, style, said in EDGE_STYLES.values())
    with g.subgraph(name="cluster_legend") as legend:
        legend.attr(label="edges", fontsize="10", style="dashed", color="#cccccc")
        legend.node("legend", shape="plaintext", style="",
                    label=label(f'<TABLE BORDER="0" CELLSPACING="1">{rows}</TABLE>'))
