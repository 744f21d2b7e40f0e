"""Drawings of a nesting graph: the level hierarchy and the firing timeline, as Graphviz DOT.

DOT is produced here as text; `dot` (Graphviz) turns it into SVG or PNG when it is installed,
otherwise the `.dot` file is written and the user is told how to get the picture.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

from nldsl.graph import INFINITE, Component, NestingGraph
from nldsl.schedule import analyze

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


class GraphvizMissing(RuntimeError):
    """Graphviz is not installed, or could not draw: the caller can fall back to the .dot text."""


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _freq_text(f: Fraction) -> str:
    if f == INFINITE:
        return "∞ (per query)"
    if f == 0:
        return "0 (frozen)"
    return f"1/{f.denominator}" if f.numerator == 1 else str(f)


def _label(members: list[Component]) -> str:
    """An HTML-like label: the name(s) in bold, then structure, objective, rule and timing, small."""
    c = members[0]
    m = c.memory
    grouped = c.kind in ("param", "init") or (c.kind == "state" and c.block is None)
    title = _group_title(c) if grouped else ", ".join(x.name for x in members)
    rows = [f"<B>{_esc(title)}</B>" + (f' <FONT POINT-SIZE="9">×{c.repeat}</FONT>' if c.repeat > 1 else "")]
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
            small.append(f"{_time_text(c)} · read {m.learn.read}")
    elif c.note:
        small.append(c.note)
    rows += [f'<FONT POINT-SIZE="9" COLOR="#444444">{_esc(x)}</FONT>' for x in small]
    return "<" + "<BR/>".join(rows) + ">"


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


DRAWN = {  # which edges the drawing shows, by (source kind, target kind); parameters feed everything
    ("learn", "learn"), ("learn", "loss"), ("attention", "learn"), ("learn", "attention"), ("attention", "loss"),
    ("loss", "learn"), ("init", "learn"), ("learn", "init"), ("optstate", "param"), ("optstate", "init"),
    ("state", "learn"),
    ("loss", "param"), ("loss", "init"), ("param", "learn"), ("param", "attention"),
}
CONTEXT_ONLY = {"param"}   # from parameter groups, draw only what they write into or generate for


def to_dot(ng: NestingGraph) -> str:
    groups: dict[str, list[Component]] = {}
    for c in sorted(ng.components(), key=lambda c: c.id):
        groups.setdefault(_group_key(c), []).append(c)
    owner = {c.id: key for key, members in groups.items() for c in members}
    ids = {key: f"n{i}" for i, key in enumerate(groups)}
    level_of = {key: members[0].level for key, members in groups.items()}
    out = [f'digraph "{_esc(ng.name)}" {{',
           '  graph [rankdir=TB, fontname="Helvetica", fontsize=12, nodesep=0.3, ranksep=0.5, newrank=true,'
           f' label=<<B>{_esc(ng.kind)} {_esc(ng.name)}</B>: {len(ng.levels)} levels, fastest at the top>,'
           ' labelloc=t];',
           '  node [fontname="Helvetica", fontsize=11, style="rounded,filled", fillcolor=white, penwidth=1.2];',
           '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];']
    anchors: list[str] = []
    for i, level in enumerate(ng.levels, start=1):
        comps = [ng.component(n) for n in level]
        keys = sorted({owner[c.id] for c in comps})
        times = sorted({_time_text(c) for c in comps})
        out.append(f"  subgraph cluster_level{i} {{")
        out.append(f'    label=<<B>Level {i}</B> · f = {_esc(_freq_text(comps[0].frequency))} · '
                   f'{_esc("; ".join(times))}>;')
        out.append(f'    style="rounded,filled"; fillcolor="{LEVEL_COLOURS[(i - 1) % len(LEVEL_COLOURS)]}";'
                   ' color="#b0b0b0"; labeljust=l;')
        for key in keys:
            members = groups[key]
            out.append(f"    {ids[key]} [label={_label(members)}, shape={SHAPES[members[0].kind]}];")
        out.append(f"    {{rank=same; {'; '.join(ids[k] for k in keys)}}}")
        out.append("  }")
        anchors.append(ids[keys[0]])
    for key, members in groups.items():
        if members[0].kind == "loss":
            out.append(f'  {ids[key]} [label=<<B>outer loss</B><BR/><FONT POINT-SIZE="9">'
                       f'{_esc(members[0].name)}</FONT>>, shape=oval, fillcolor="#fbfcfc"];')
            level_of[key] = len(ng.levels) + 1
            anchors.append(ids[key])
    for a, b in pairwise(anchors):   # keep the levels stacked, fastest on top
        out.append(f"  {a} -> {b} [style=invis, weight=20];")
    out += _edges(ng, owner, ids, level_of)
    out += _legend()
    out.append("}")
    return "\n".join(out) + "\n"


def _edges(ng: NestingGraph, owner: dict[str, str], ids: dict[str, str], level_of: dict[str, int]) -> list[str]:
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
    lines = []
    for (a, b, kind), policies in sorted(merged.items()):
        colour, style, _ = EDGE_STYLES[kind]
        label = ", ".join(sorted(p for p in policies if p and p != "gradient"))
        if kind == "init" and label:
            label = f"backprop {label}"
        attrs = [f'color="{colour}"', f"style={style}"]
        if label:
            attrs.append(f'label="{_esc(label)}", fontcolor="{colour}"')
        if level_of[a] > level_of[b]:   # slow → fast edges must not pull the levels out of order
            attrs.append("constraint=false")
        lines.append(f"  {ids[a]} -> {ids[b]} [{', '.join(attrs)}];")
    return lines


def _time_text(c: Component) -> str:
    if c.kind == "attention":
        return "per query"
    learn = c.memory.learn if c.memory is not None else None
    text = str(c.time)
    if learn is not None and learn.chunk > 1:
        text += f" (grads every {learn.chunk})"
    return text


def _legend() -> list[str]:
    rows = "".join(f'<TR><TD><FONT COLOR="{colour}">━━</FONT></TD><TD ALIGN="LEFT">{_esc(text)}'
                   f' ({style})</TD></TR>' for colour, style, text in EDGE_STYLES.values())
    return ['  subgraph cluster_legend { label="edges"; fontsize=10; style=dashed; color="#cccccc";',
            f'    legend [shape=plaintext, style="", label=<<TABLE BORDER="0" CELLSPACING="1">{rows}</TABLE>>];',
            "  }"]


def timeline_dot(ng: NestingGraph, max_events: int = 48) -> str:
    """Which levels fire over one hyperperiod: one row per level, one column per firing time."""
    schedule = analyze(ng)
    rows: list[tuple[str, str, int]] = []     # (title, time text, period)
    for i, level in enumerate(ng.levels, start=1):
        comps = [ng.component(n) for n in level]
        periods = {schedule.tokens.periods.get(c.id) for c in comps} - {None}
        names = ", ".join(c.name for c in comps[:4]) + (", …" if len(comps) > 4 else "")
        if periods:
            rows.append((f"Level {i}: {names}", _time_text(comps[0]), min(p for p in periods if p is not None)))
    hyper = schedule.tokens.hyperperiod
    events = sorted({t for _, _, p in rows if p > 1 for t in range(p, hyper + 1, p)})
    shown = events[:max_events]
    header = "".join(f'<TD><FONT POINT-SIZE="8">{t}</FONT></TD>' for t in shown)
    more = '<TD><FONT POINT-SIZE="8">…</FONT></TD>' if len(events) > len(shown) else ""
    body = []
    for i, (title, timing, period) in enumerate(rows):
        colour = LEVEL_COLOURS[i % len(LEVEL_COLOURS)].replace("#", "")
        if period == 1:
            cells = f'<TD COLSPAN="{len(shown) + bool(more)}" BGCOLOR="#{colour}">fires every token</TD>'
        else:
            cells = "".join(f'<TD BGCOLOR="{"#34495e" if t % period == 0 else "white"}"> </TD>' for t in shown)
            cells += "<TD> </TD>" if more else ""
        body.append(f'<TR><TD ALIGN="LEFT">{_esc(title)}</TD><TD ALIGN="LEFT">{_esc(timing)}</TD>{cells}</TR>')
    table = (f'<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
             f'<TR><TD><B>level</B></TD><TD><B>updates</B></TD>{header}{more}</TR>{"".join(body)}</TABLE>')
    title = f"{ng.name}: firing times (token) over one hyperperiod of {hyper} tokens"
    return (f'digraph timeline {{\n  graph [fontname="Helvetica", label="{_esc(title)}", labelloc=t];\n'
            f'  node [fontname="Helvetica", fontsize=10, shape=plaintext];\n  t [label=<{table}>];\n}}\n')


class Diagram:
    """A rendered nesting graph. Displays as SVG in notebooks; `.save(path)` writes svg/png/dot."""

    def __init__(self, dot: str) -> None:
        self.dot = dot

    def pipe(self, fmt: str) -> bytes:
        exe = shutil.which("dot")
        if exe is None:
            raise GraphvizMissing("Graphviz `dot` is not installed: install it (`apt-get install graphviz`, "
                                  "`brew install graphviz`, `conda install graphviz`) or save as .dot")
        done = subprocess.run([exe, f"-T{fmt}"], input=self.dot.encode(), capture_output=True, check=False)
        if done.returncode != 0:
            first = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
            raise GraphvizMissing(f"Graphviz `dot` could not draw it ({first}); reinstall Graphviz or save as .dot")
        return done.stdout

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "svg"
        if fmt == "dot" or fmt == "gv":
            path.write_text(self.dot, encoding="utf-8")
        else:
            path.write_bytes(self.pipe(fmt))
        return path

    def _repr_svg_(self) -> str:
        return self.pipe("svg").decode("utf-8")

    def __str__(self) -> str:
        return self.dot


def diagram(ng: NestingGraph, timeline: bool = False) -> Diagram:
    return Diagram(timeline_dot(ng) if timeline else to_dot(ng))

