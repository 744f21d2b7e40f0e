"""The negative corpus: golden diagnostics for realistic bad specs (tests/bad/*.nl).

Every `tests/bad/X.nl` starts with `# expect: NLxxx[, NLyyy]`, the codes the file is about, and has
a golden `X.expected` holding exactly `check_file("tests/bad/X.nl").render()`, run from the
repository root so that locations read `tests/bad/X.nl:LINE:COL`.

When the checker's wording changes on purpose, regenerate the goldens and read the diff:

    NLDSL_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/test_bad_specs.py
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nldsl.api import CheckResult, check_file
from nldsl.codes import CODES

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "bad"
SPECS = sorted(BAD.glob("*.nl"))
UPDATE = os.environ.get("NLDSL_UPDATE_GOLDEN") == "1"
EXPECT = re.compile(r"# expect: (NL\d{3}(?:, NL\d{3})*)")

# Codes the checker emits as warnings; every other code is an error. A file whose `# expect:` codes
# are all warnings must still check ok; a file expecting any error code must not.
WARNING_CODES = {code for code, c in CODES.items() if c.severity == "warning"}

# Registered codes that no bad spec can trigger, with the reason. Empty: every code is exercised.
UNTRIGGERABLE: dict[str, str] = {}

# Bad specs on which `check_file` raises instead of reporting (checker bugs), as strict xfails: when a
# bug is fixed the test XPASSes and the entry must go. Empty: none known.
KNOWN_CRASHES: dict[str, str] = {}

# Expected codes the checker does not report yet (an independent mistake hidden by an earlier one).
# The `# expect:` line states what a user needs to see; the gap is checked as a strict xfail.
KNOWN_GAPS: dict[str, tuple[set[str], str]] = {}

# Bad specs whose rendering changes with PYTHONHASHSEED (a checker bug); test_render_is_hash_seed_independent
# keeps this list honest. Empty: rendering is deterministic.
UNSTABLE: dict[str, str] = {}
SEEDS = ("0", "1", "7", "11")


def _params() -> list:
    out = []
    for spec in SPECS:
        marks = []
        if spec.name in KNOWN_CRASHES:
            marks.append(pytest.mark.xfail(raises=IndexError, strict=True, reason=KNOWN_CRASHES[spec.name]))
        out.append(pytest.param(spec, id=spec.stem, marks=marks))
    return out


PARAMS = _params()


def expected_codes(spec: Path) -> list[str]:
    first = spec.read_bytes().decode("utf-8", errors="replace").splitlines()[0]
    m = EXPECT.fullmatch(first.strip())
    assert m, f"{spec.name}: the first line must read `# expect: NLxxx[, NLyyy]`, got {first!r}"
    return m.group(1).split(", ")


def relative(spec: Path) -> str:
    return spec.relative_to(ROOT).as_posix()


def run(spec: Path) -> CheckResult:
    """`check_file` on the spec's path relative to the repository root, as the goldens were made."""
    with contextlib.chdir(ROOT):
        return check_file(relative(spec))


def golden_path(spec: Path) -> Path:
    return spec.with_suffix(".expected")


# ---- the corpus itself --------------------------------------------------------------------------

def test_corpus_is_large_and_well_formed():
    assert len(SPECS) >= 45
    for spec in SPECS:
        codes = expected_codes(spec)
        unknown = [c for c in codes if c not in CODES]
        assert not unknown, f"{spec.name} expects unregistered codes {unknown}"
    orphans = [g.name for g in BAD.glob("*.expected") if not g.with_suffix(".nl").exists()]
    assert not orphans, f"goldens without a spec: {orphans}"


def test_every_code_is_exercised():
    exercised = {c for spec in SPECS if spec.name not in KNOWN_CRASHES for c in expected_codes(spec)}
    missing = sorted(set(CODES) - exercised - set(UNTRIGGERABLE))
    assert not missing, f"codes no bad spec expects: {missing} (add a spec, or justify them in UNTRIGGERABLE)"


def test_untriggerable_list_is_honest():
    for code in UNTRIGGERABLE:
        assert code in CODES, f"{code} is not registered"
        users = [s.name for s in SPECS if code in expected_codes(s)]
        assert not users, f"{code} is listed as untriggerable but {users} expect it: drop it from UNTRIGGERABLE"


# ---- one bad spec at a time ---------------------------------------------------------------------

@pytest.mark.parametrize("spec", PARAMS)
def test_golden(spec: Path):
    """(a) checking never raises; (b) the rendered diagnostics equal the golden."""
    rendered = run(spec).render()
    golden = golden_path(spec)
    if UPDATE:
        with golden.open("w", encoding="utf-8", newline="") as f:
            f.write(rendered)
        return
    assert golden.exists(), f"no golden for {spec.name}: run with NLDSL_UPDATE_GOLDEN=1 and review it"
    with golden.open(encoding="utf-8", newline="") as f:
        want = f.read()
    if rendered != want and spec.name in UNSTABLE:
        pytest.xfail(f"hash-seed dependent: {UNSTABLE[spec.name]}")
    assert rendered == want, f"{spec.name}: diagnostics differ from {golden.name}"


@pytest.mark.parametrize("spec", PARAMS)
def test_expected_codes_are_reported(spec: Path):
    """(c) every code named on the `# expect:` line is among the diagnostics."""
    reported = {d.code for d in run(spec).diagnostics}
    missing = [c for c in expected_codes(spec) if c not in reported]
    gap, why = KNOWN_GAPS.get(spec.name, (set(), ""))
    assert set(missing) <= gap, f"{spec.name}: expected {missing}, got {sorted(reported)}"
    if gap:
        assert set(missing) == gap, f"{spec.name}: {sorted(gap - set(missing))} now reported: drop it from KNOWN_GAPS"
        pytest.xfail(f"known gap: {why}")


@pytest.mark.parametrize("spec", PARAMS)
def test_diagnostics_are_well_formed(spec: Path):
    """(d) registered codes with a consistent severity, and spans that lie inside their file."""
    result = run(spec)
    assert result.diagnostics, f"{spec.name}: a bad spec must produce at least one diagnostic"
    for d in result.diagnostics:
        assert d.code in CODES, f"unregistered code {d.code}"
        severity = "warning" if d.code in WARNING_CODES else "error"
        assert d.severity == severity, f"{d.code} is reported as a {d.severity}, expected a {severity}"
        source = result.sources.get(d.span.file)
        if source is not None:
            lines = source.text.splitlines() or [""]
        else:  # a file that could not be read (NL012): measure it on disk
            lines = (ROOT / d.span.file).read_bytes().splitlines() or [b""]
        assert 1 <= d.span.line <= len(lines), f"{d.code} at line {d.span.line} of a {len(lines)}-line file"
        assert d.span.col >= 1, f"{d.code} at column {d.span.col}"
        assert d.span.col <= len(lines[d.span.line - 1]) + 1, f"{d.code} past the end of line {d.span.line}"
        assert (d.span.end_line, d.span.end_col) >= (d.span.line, d.span.col), f"{d.code} span ends before it starts"


@pytest.mark.parametrize("spec", PARAMS)
def test_ok_matches_severity(spec: Path):
    """(d) a file about an error fails the check; a file about warnings only still passes it."""
    result = run(spec)
    expects_error = any(c not in WARNING_CODES for c in expected_codes(spec))
    if expects_error:
        assert not result.ok, f"{spec.name} expects an error but checks ok"
    else:
        assert result.ok, f"{spec.name} expects only warnings but has errors: " + \
            ", ".join(f"{d.code} at {d.span}" for d in result.errors)


# ---- determinism --------------------------------------------------------------------------------

_RENDER_ALL = """
import json, sys
from nldsl.api import check_file
out = {}
for path in sys.argv[1:]:
    try:
        out[path] = check_file(path).render()
    except Exception as e:  # a known crash: compare the exception instead
        out[path] = type(e).__name__
print(json.dumps(out))
"""


def test_render_is_hash_seed_independent():
    """Goldens are only meaningful if the output does not depend on Python's string hashing."""
    paths = [relative(s) for s in SPECS]
    renders = []
    for seed in SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", _RENDER_ALL, *paths], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)
        renders.append(json.loads(proc.stdout))
    unstable = sorted(Path(p).name for p in paths if len({r[p] for r in renders}) > 1)
    assert set(unstable) <= set(UNSTABLE), f"output depends on PYTHONHASHSEED: {unstable}"
    assert set(unstable) == set(UNSTABLE), \
        f"{sorted(set(UNSTABLE) - set(unstable))} no longer depend on the hash seed: drop them from UNSTABLE"


# ---- header overrides (`--set NAME=VALUE`) ------------------------------------------------------

OVERRIDDEN = """import "optim/sgd.nl"

model M(vocab = 256, dim = 64, context = 64, scale = 2) {
  block {
    h = h * scale
  }
  train {
    optimize all by sgd(lr = 0.1)
  }
}
"""


@pytest.mark.parametrize(("name", "value", "words"), [
    ("dim", float("nan"), "not a finite number"),
    ("scale", float("inf"), "not a finite number"),
    ("scale", float("1e400"), "not a finite number"),    # what `--set scale=1e400` parses to
    ("dim", 64.5, "must be a positive integer"),
    ("context", 1e300, "must be at most 9,007,199,254,740,992"),
])
def test_a_bad_override_is_one_error_at_the_parameter_it_sets(name: str, value: float, words: str):
    """Overrides arrive as floats; nan, inf and absurd sizes are refused where the parameter is declared,
    and its uses stay quiet (no unknown name, no nan-sized model)."""
    result = check_text_with(OVERRIDDEN, {name: value})
    (error,) = result.diagnostics
    assert error.code == "NL042" and words in error.message, result.render()
    assert error.span.line == 3 and OVERRIDDEN.splitlines()[2][error.span.col - 1:].startswith(
        {"dim": "64", "scale": "2", "context": "64"}[name])


def check_text_with(text: str, overrides: dict[str, float]) -> CheckResult:
    from nldsl.api import check_text
    return check_text(text, "<test>.nl", overrides)


def test_header_arithmetic_is_done_operator_by_operator():
    """`10 * 400` once failed as "not a finite real number": every operator was computed, 10 ^ 400 too."""
    result = check_text_with(OVERRIDDEN.replace("scale = 2", "scale = 10 * 400 / 4000"), {})
    assert result.ok and not result.diagnostics, result.render()
