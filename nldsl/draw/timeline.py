"""The firing timeline as a `graphviz.Digraph`: one table row per level, one column per firing
time over one hyperperiod, a filled cell where the level fires."""

from __future__ import annotations

import graphviz

from nldsl.draw.hierarchy import LEVEL_COLOURS, time_text
from nldsl.draw.labels import label, text
from nldsl.graph import NestingGraph
from nldsl.schedule import analyze


def timeline_graph(ng: NestingGraph, max_events: int = 48) -> graphviz.Digraph:
    schedule = analyze(ng)
    rows: list[tuple[str, str, int]] = []     # (title, time text, period)
    for i, level in enumerate(ng.levels, start=1):
        comps = [ng.component(n) for n in level]
        periods = {schedule.tokens.periods.get(c.id) for c in comps} - {None}
        names = ", ".join(c.name for c in comps[:4]) + (", …" if len(comps) > 4 else "")
        if periods:
            rows.append((f"Level {i}: {names}", time_text(comps[0]), min(p for p in periods if p is not None)))
    hyper = schedule.tokens.hyperperiod
    events = sorted({t for _, _, p in rows if p > 1 for t in range(p, hyper + 1, p)})
    shown = events[:max_events]
    header = "".join(f'<TD><FONT POINT-SIZE="8">{t}</FONT></TD>' for t in shown)
    more = '<TD><FONT POINT-SIZE="8">…</FONT></TD>' if len(events) > len(shown) else ""
    body = []
    for i, (title, timing, period) in enumerate(rows):
        colour = LEVEL_COLOURS[i % len(LEVEL_COLOURS)]
        if period == 1:
            span = max(1, len(shown) + bool(more))     # Graphviz rejects COLSPAN="0" (nothing slower fires)
            cells = f'<TD COLSPAN="{span}" BGCOLOR="{colour}">fires every token</TD>'
        else:
            cells = "".join(f'<TD BGCOLOR="{"#34495e" if t % period == 0 else "white"}"> </TD>' for t in shown)
            cells += "<TD> </TD>" if more else ""
        body.append(f'<TR><TD ALIGN="LEFT">{text(title)}</TD><TD ALIGN="LEFT">{text(timing)}</TD>{cells}</TR>')
    table = (f'<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
             f'<TR><TD><B>level</B></TD><TD><B>updates</B></TD>{header}{more}</TR>{"".join(body)}</TABLE>')
    title = f"{ng.name}: firing times (token) over one hyperperiod of {hyper} tokens"
    g = graphviz.Digraph("timeline", graph_attr={"fontname": "Helvetica", "label": label(text(title)), "labelloc": "t"},
                         node_attr={"fontname": "Helvetica", "fontsize": "10", "shape": "plaintext"})
    g.node("t", label=label(table))
    return g
