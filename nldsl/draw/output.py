"""A drawing as a Python object: its DOT text, pictures through Graphviz's `dot`, and inline display
in notebooks. Without `dot` the DOT text is still there, and the message says how to get the picture."""

from __future__ import annotations

from pathlib import Path

import graphviz

INSTALL = ("Graphviz `dot` is not installed: install it (`apt-get install graphviz`, `brew install graphviz`, "
           "`conda install graphviz`) or save as .dot")
DOT_SUFFIXES = ("dot", "gv")      # written as text, without Graphviz


class GraphvizMissing(RuntimeError):
    """Graphviz is not installed, or could not draw: the caller can fall back to the .dot text."""


class Diagram:
    """A drawing of a nesting graph, built as a `graphviz.Digraph` (`.graph`). Displays inline (SVG)
    in notebooks; `.save(path)` writes svg, png, pdf, jpg or dot by the path's suffix."""

    def __init__(self, graph: graphviz.Digraph) -> None:
        self.graph = graph

    @property
    def dot(self) -> str:
        return self.graph.source

    def pipe(self, fmt: str) -> bytes:
        """The picture in format `fmt` (svg, png, ...), drawn by `dot`; GraphvizMissing if it cannot be."""
        try:
            return self.graph.pipe(format=fmt, quiet=True)
        except graphviz.ExecutableNotFound:
            raise GraphvizMissing(INSTALL) from None
        except graphviz.CalledProcessError as e:
            said = (e.stderr or b"").decode(errors="replace").strip().splitlines() or ["no message"]
            raise GraphvizMissing(f"Graphviz `dot` could not draw it ({said[0]}); reinstall Graphviz or save as .dot") \
                from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "svg"
        if fmt in DOT_SUFFIXES:
            path.write_text(self.dot, encoding="utf-8")
        else:
            path.write_bytes(self.pipe(fmt))
        return path

    def _repr_svg_(self) -> str | None:
        """The SVG for notebooks; None (no picture, the text form shows) where Graphviz is missing."""
        try:
            return self.pipe("svg").decode("utf-8")
        except GraphvizMissing:
            return None

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        """What Jupyter shows: the SVG, or where Graphviz cannot draw, why and the DOT text. (Jupyter
        filters by `include`/`exclude` itself; they are part of the protocol's signature.)"""
        try:
            svg = self.pipe("svg").decode("utf-8")
        except GraphvizMissing as e:
            return {"text/plain": f"{e}\n\n{self.dot}"}
        return {"image/svg+xml": svg, "text/plain": repr(self)}

    def __repr__(self) -> str:
        return f"<nldsl.Diagram {self.graph.name}>"

    def __str__(self) -> str:
        return self.dot
