"""Every `.nl` example in the documentation is checked, so the docs cannot drift from the language.

The convention (stated at the top of docs/reference.md):

    ```nl                           a complete file: checks with no errors and no warnings
                                    (warnings silenced by `# allow NLxxx` in the example are fine)
    ```nl error=NL020               a complete file that must produce error NL020
    ```nl warning=NL064             ... warning NL064
    ```nl error=NL012 also=NL090    ... and may also produce NL090 (a follow-on error), nothing else
    ```nl levels=3                  ... and its first unit has 3 derived levels
    ```nl fragment                  part of a block body: only parsed, after wrapping
    ```nl fragment=WHERE            WHERE is file, model, block, train, optimizer or expr

A complete example may hold several files: a line `# file: NAME.nl` starts a file (the first one
is the entry point) and `# file: NAME.nl latin-1` writes that file in Latin-1 (for NL012).
Files are written to a fresh directory and checked with `nldsl.check_file`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import nldsl
from nldsl import catalog
from nldsl.codes import CODES
from nldsl.parse import parse, parser
from nldsl.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md")) + ([ROOT / "README.md"] if (ROOT / "README.md").is_file() else [])

FRAGMENT_HEADER = "model Fragment(vocab = 256, dim = 64, heads = 4, context = 64)"
WRAPPERS = {
    "file": "{body}\n",
    "model": FRAGMENT_HEADER + " {{\n{body}\n}}\n",
    "block": FRAGMENT_HEADER + " {{\n  block {{\n{body}\n  }}\n}}\n",
    "train": FRAGMENT_HEADER + " {{\n  train {{\n{body}\n  }}\n}}\n",
    "optimizer": "optimizer fragment(lr = 0.1) {{\n{body}\n}}\n",
    "expr": FRAGMENT_HEADER + " {{\n  block {{\n    value = {body}\n  }}\n}}\n",
}
FILE_MARK = re.compile(r"^# file: (?P<name>[\w./-]+\.nl)(?P<enc> latin-1)?[ \t]*$")
CODE = re.compile(r"NL[0-9]{3}")


@dataclass
class Example:
    doc: Path
    line: int                        # line of the opening fence
    body: str
    fragment: str | None = None      # wrapper name for fragments
    expect: tuple[str, str] | None = None   # (severity, code)
    also: set[str] = field(default_factory=set)
    levels: int | None = None        # asserted number of derived levels

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"


def parse_info(info: str, where: str) -> dict:
    out: dict = {"fragment": None, "expect": None, "also": set(), "levels": None}
    for word in info.split():
        key, _, value = word.partition("=")
        if key == "fragment":
            out["fragment"] = value or "block"
            assert out["fragment"] in WRAPPERS, f"{where}: unknown fragment kind {value!r}"
        elif key in ("error", "warning"):
            assert CODE.fullmatch(value), f"{where}: {key}= needs a code, got {value!r}"
            out["expect"] = (key, value)
        elif key == "levels":
            assert value.isdigit(), f"{where}: levels= needs a number, got {value!r}"
            out["levels"] = int(value)
        elif key == "also":
            out["also"] = set(value.split(","))
            assert all(CODE.fullmatch(c) for c in out["also"]), f"{where}: bad also= list {value!r}"
        else:
            raise AssertionError(f"{where}: unknown fence attribute {word!r}")
    assert not (out["fragment"] and out["expect"]), f"{where}: a fragment is only parsed; it cannot expect a code"
    assert not (out["levels"] and (out["fragment"] or out["expect"])), f"{where}: levels= needs a clean example"
    return out


def extract(doc: Path) -> list[Example]:
    """Every ```nl block of a Markdown file (blocks of other languages are skipped whole)."""
    examples: list[Example] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, info = m.groups()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        assert i < len(lines), f"{doc.name}:{start + 1}: unclosed code fence"
        i += 1
        if lang == "nl":
            where = f"{doc.name}:{start + 1}"
            examples.append(Example(doc=doc, line=start + 1, body="\n".join(body) + "\n", **parse_info(info, where)))
    return examples


EXAMPLES = [e for doc in DOC_FILES for e in extract(doc)]


def split_files(example: Example) -> list[tuple[str, bool, str]]:
    """(name, latin-1?, text) of each file of an example; one `example.nl` without markers."""
    lines = example.body.splitlines()
    if not any(FILE_MARK.match(line) for line in lines):
        return [("example.nl", False, example.body)]
    files: list[tuple[str, bool, list[str]]] = []
    for line in lines:
        m = FILE_MARK.match(line)
        if m:
            files.append((m["name"], bool(m["enc"]), []))
        else:
            assert files or not line.strip(), f"{example.id}: text before the first `# file:` marker"
            if files:
                files[-1][2].append(line)
    return [(name, latin1, "\n".join(body) + "\n") for name, latin1, body in files]


def write_files(example: Example, directory: Path) -> Path:
    """Write the example's file(s) into `directory`; return the entry point (the first file)."""
    files = split_files(example)
    for name, latin1, text in files:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("latin-1" if latin1 else "utf-8"))
    return directory / files[0][0]


def test_docs_exist_and_have_examples():
    names = {d.name for d in DOC_FILES}
    assert {"reference.md", "diagnostics.md", "tutorial.md"} <= names
    for name in ("reference.md", "diagnostics.md", "tutorial.md"):
        assert extract(DOCS / name), f"{name} has no ```nl example"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example(example: Example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # imports resolve next to the example, then in specs/
    if example.fragment is not None:
        text = WRAPPERS[example.fragment].format(body=example.body.rstrip("\n"))
        module, errors = parse(SourceFile(path=example.id, text=text))
        assert module is not None and not errors, "\n".join(e.render({example.id: SourceFile(path=example.id,
                                                                                              text=text)})
                                                           for e in errors) + "\n--- wrapped as:\n" + text
        return
    entry = write_files(example, tmp_path)
    result = nldsl.check_file(entry)
    report = result.render()
    if example.expect is None:
        assert result.ok and not result.warnings, f"{example.id} should check clean:\n{report}"
        assert result.graphs, f"{example.id}: a complete example defines a model or an optimizer"
        if example.levels is not None:
            levels = result.graph().levels
            assert len(levels) == example.levels, f"{example.id}: {len(levels)} levels, not {example.levels}: " + \
                "; ".join(", ".join(result.graph().component(n).name for n in lv) for lv in levels)
        return
    severity, code = example.expect
    produced = {d.code for d in result.diagnostics}
    assert any(d.code == code and d.severity == severity for d in result.diagnostics), \
        f"{example.id} should produce {severity} {code}:\n{report or '(no diagnostics)'}"
    unexpected = produced - {code} - example.also
    assert not unexpected, f"{example.id} also produces {sorted(unexpected)} (list them in also=):\n{report}"


# ---- coverage ------------------------------------------------------------------------------------

def test_diagnostics_doc_covers_every_code():
    text = (DOCS / "diagnostics.md").read_text(encoding="utf-8")
    headings = dict(re.findall(r"^## (NL[0-9]{3}): (.+?)\s*$", text, re.M))
    assert set(headings) == set(CODES), f"missing: {sorted(set(CODES) - set(headings))}, " \
                                        f"unknown: {sorted(set(headings) - set(CODES))}"
    for code, title in headings.items():
        assert title == CODES[code].title, f"{code}: heading says {title!r}, codes.py says {CODES[code].title!r}"
    shown = {e.expect[1] for e in EXAMPLES if e.doc.name == "diagnostics.md" and e.expect}
    assert shown == set(CODES), f"codes without an example: {sorted(set(CODES) - shown)}"


def test_diagnostics_examples_sit_under_their_heading():
    """Each `error=NLxxx` example in diagnostics.md appears in the section of that code."""
    lines = (DOCS / "diagnostics.md").read_text(encoding="utf-8").splitlines()
    for e in EXAMPLES:
        if e.doc.name != "diagnostics.md" or e.expect is None:
            continue
        section = next((m[1] for line in reversed(lines[:e.line]) if (m := re.match(r"^## (NL[0-9]{3})", line))),
                       None)
        assert section == e.expect[1], f"{e.id}: example for {e.expect[1]} sits under {section}"


def catalog_names() -> set[str]:
    """Every name the catalog defines: built-ins, their options and option values, modifiers, settings."""
    names: set[str] = set()
    for table in (catalog.FUNCTIONS, catalog.OBJECTIVES, catalog.STRUCTURES, catalog.PARAM_TYPES, catalog.RULES,
                  catalog.OUTPUT_MAPS, catalog.SCHEDULES):
        for fname, sig in table.items():
            names.add(fname)
            names |= set(sig.positional) | set(sig.options)
            for opt in sig.options.values():
                names |= set(opt.choices)
    for table in (catalog.SCOPES, catalog.MEMORY_INITS, catalog.PARAM_INITS, catalog.PER, catalog.ANCHORS,
                  catalog.READS, catalog.BACKPROPS, catalog.LOSSES, catalog.TRAIN_SETTINGS, catalog.MODEL_INPUTS,
                  catalog.OPTIMIZER_INPUTS, catalog.RESERVED_HEADER, catalog.UNARY):
        names |= set(table)
    names |= set(catalog.ACTIVATIONS)
    return names


def code_words(text: str) -> set[str]:
    """Identifiers that appear in code: inline `code` spans and fenced blocks."""
    spans = re.findall(r"^\s*(`{3,}|~{3,}).*?\n(.*?)^\s*\1\s*$", text, re.M | re.S)
    code = [body for _, body in spans]
    prose = re.sub(r"^\s*(`{3,}|~{3,}).*?\n.*?^\s*\1\s*$", "", text, flags=re.M | re.S)
    code += re.findall(r"`([^`\n]+)`", prose)
    return {w for c in code for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", c)}


def test_reference_mentions_every_catalog_name():
    words = code_words((DOCS / "reference.md").read_text(encoding="utf-8"))
    missing = sorted(catalog_names() - words)
    assert not missing, f"docs/reference.md never shows these catalog names in code: {missing}"


def test_reference_mentions_every_keyword():
    words = code_words((DOCS / "reference.md").read_text(encoding="utf-8"))
    keywords = {t.pattern.value for t in parser().terminals
                if t.pattern.type == "str" and re.fullmatch(r"[a-z_]+", t.pattern.value)}
    assert not keywords - words, f"keywords missing from docs/reference.md: {sorted(keywords - words)}"


def test_reference_lists_every_shipped_spec():
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    specs = sorted(p.relative_to(ROOT / "specs").as_posix() for p in (ROOT / "specs").rglob("*.nl"))
    missing = [s for s in specs if f"specs/{s}" not in text]
    assert not missing, f"docs/reference.md does not list: {missing}"
