"""The command line: exit codes, one-line OKs, diagnostics on stderr, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from specutil import ALL_SPECS, ROOT, SPECS

# the console script installed next to this interpreter (the tests run against the installed package)
NLDSL = str(Path(sys.executable).with_name("nldsl")) if Path(sys.executable).with_name("nldsl").exists() \
    else shutil.which("nldsl")


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    assert NLDSL, "the nldsl console script is not installed"
    return subprocess.run([NLDSL, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_check_library_is_clean():
    done = run("check", *map(str, ALL_SPECS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK ") == len(ALL_SPECS)
    assert done.stderr == ""


def test_check_bad_spec_exits_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.nl"
    bad.write_text('import "optim/sgd.nl"\nmodel M(vocab = 8, dim = 8, context = 8) {\n  block {\n'
                   "    h = h + rmsnrm(h)\n    h = h + q\n  }\n  train { optimize all by sgd(lr = 0.1) }\n}\n")
    done = run("check", str(bad))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert "error[NL022]: unknown function 'rmsnrm'" in done.stderr
    assert "did you mean 'rmsnorm'?" in done.stderr
    assert "error[NL020]: unknown name 'q'" in done.stderr
    assert "bad.nl:4:13" in done.stderr


def test_check_missing_file(tmp_path):
    done = run("check", str(tmp_path / "nope.nl"))
    assert done.returncode == 1 and "NL012" in done.stderr and "Traceback" not in done.stderr


def test_explain_hope():
    done = run("explain", "specs/hope.nl", "--width", "260")
    assert done.returncode == 0, done.stderr
    assert "model Hope: 6 levels" in done.stdout
    for name in ("M_memory", "cms_3", "adamw.m", "initial states", "l2", "teach signal"):
        assert name in done.stdout
    assert "parameters (outer level):" in done.stdout


def test_explain_unknown_unit():
    done = run("explain", "specs/hope.nl", "--unit", "Nope")
    assert done.returncode == 1 and "defines no model or optimizer named 'Nope'" in done.stderr


def test_render_writes_svg_png_dot(tmp_path):
    for ext in ("svg", "png", "dot"):
        target = tmp_path / f"hope.{ext}"
        done = run("render", str(SPECS / "hope.nl"), "-o", str(target))
        assert done.returncode == 0, done.stderr
        assert target.stat().st_size > 1000
    done = run("render", str(SPECS / "hope.nl"), "-o", str(tmp_path / "t.svg"), "--timeline")
    assert done.returncode == 0 and (tmp_path / "t.svg").exists()


def test_render_without_graphviz_writes_dot_and_says_how(tmp_path):
    """No `dot` on PATH: exit 0, the .dot file beside the asked-for picture, one warning, the command to run."""
    target = tmp_path / "hope.svg"
    done = subprocess.run([NLDSL, "render", str(SPECS / "hope.nl"), "-o", str(target)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False, env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert not target.exists() and (tmp_path / "hope.dot").read_text().startswith("digraph hierarchy {")
    assert done.stderr.startswith("warning: Graphviz `dot` is not installed: install it (`apt-get install graphviz`")
    assert f"wrote {tmp_path / 'hope.dot'} instead; turn it into a picture with " \
           f"`dot -Tsvg {tmp_path / 'hope.dot'} -o {target}`" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_error_exit_2():
    done = run("frobnicate")
    assert done.returncode == 2


@pytest.mark.parametrize("path", [SPECS / "hope.nl", SPECS / "optim" / "adam.nl"], ids=lambda p: p.name)
def test_fmt_check_on_library(path, tmp_path):
    copy = tmp_path / path.name
    formatted = run("fmt", str(path))
    assert formatted.returncode == 0, formatted.stderr
    copy.write_text(formatted.stdout)
    again = run("fmt", "--check", str(copy))
    assert again.returncode == 0, again.stdout + again.stderr


def test_compile_writes_a_runnable_package(tmp_path):
    out = tmp_path / "la"
    done = run("compile", str(SPECS / "linear_attention.nl"), "-o", str(out), "--set", "dim=16", "--set",
               "context=32")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"model.py", "optim_sgd.py", "train.py"}
    model = (out / "model.py").read_text()
    assert "class LinearAttention(CompiledModel):" in model and "# line " in model
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 200)
    trained = subprocess.run([sys.executable, str(out / "train.py"), "--steps", "3", "--batch", "2", "--context", "32",
                              "--corpus", str(corpus), "--out", str(tmp_path / "run")], capture_output=True, text=True,
                             timeout=300, check=False)
    assert trained.returncode == 0, trained.stderr
    assert "heldout bpb" in trained.stdout
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()


def test_set_rejects_malformed_overrides():
    done = run("compile", str(SPECS / "linear_attention.nl"), "-o", "/tmp/x", "--set", "dim")
    assert done.returncode != 0 and "NAME=NUMBER" in done.stderr


def test_set_reaches_check_explain_and_render(tmp_path):
    """Header parameters can be set wherever a spec is read: the costs follow, and bad values are
    diagnosed against the spec's source."""
    small = run("explain", "specs/hope.nl", "--width", "260", "--set", "dim=128", "--set", "layers=2")
    assert small.returncode == 0, small.stderr
    assert "parameters (outer level): 1,152,640" in small.stdout    # dim 128 × 2 layers, not 8.8M
    bad = run("check", "specs/hope.nl", "--set", "heads=3")
    assert bad.returncode == 1 and "NL052" in bad.stderr and "Traceback" not in bad.stderr
    dot = tmp_path / "hope.dot"
    assert run("render", "specs/hope.nl", "-o", str(dot), "--set", "layers=1").returncode == 0
    assert "M_memory" in dot.read_text()


def test_source_lines_are_printed_verbatim(tmp_path):
    """rich would read `:x:` as an emoji code and `[bold]` as markup, even in a spec's comment: the
    consoles print text as it is."""
    line = "    h = h + rmsnrm(h)   # :x: [bold]not bold[/bold] :smile: [red]"
    bad = tmp_path / "bad.nl"
    bad.write_text(f'import "optim/sgd.nl"\nmodel M(vocab = 8, dim = 8, context = 8) {{\n  block {{\n{line}\n  }}\n'
                   "  train { optimize all by sgd(lr = 0.1) }\n}\n")
    done = run("check", str(bad))
    assert done.returncode == 1
    assert f"4 | {line}" in done.stderr
    assert "❌" not in done.stderr and "😄" not in done.stderr


def test_check_exits_with_all_output_flushed(tmp_path):
    """`nldsl check` leaves without freeing its trees (`cli.entry`): everything printed must still
    arrive, for several files, warnings and errors alike, and the exit status must be the check's."""
    warned = tmp_path / "warned.nl"
    extra_block = "  block {\n    unused = h * 2\n  }\n  block"
    warned.write_text((SPECS / "transformer.nl").read_text().replace("  block", extra_block, 1))
    bad = tmp_path / "bad.nl"
    bad.write_text("model M(vocab = 8, dim = 8, context = 8) {\n  block {\n    h = h + q\n  }\n}\n")
    done = run("check", str(warned), str(bad), *map(str, ALL_SPECS))
    assert done.returncode == 1
    assert done.stdout.count("OK ") == len(ALL_SPECS) + 1 and "1 warning" in done.stdout
    assert "NL073" in done.stderr and "error[NL020]: unknown name 'q'" in done.stderr
