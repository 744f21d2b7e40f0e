"""Bad inputs to every command, run through the real command line (a subprocess each): the exit
code, a one-line message, no traceback, no "internal error", and nothing written.

CASES is the one list: the table "When something is wrong" in docs/training.md is generated from it
(`python tests/test_bad_inputs.py` rewrites it) and test_docs_table_is_generated_from_the_cases
holds the two equal. Every case runs in its own copy of a workspace of good and broken inputs, so
the cases run side by side and each one's writes are its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "training.md"
BEGIN = "<!-- bad inputs: generated from CASES in tests/test_bad_inputs.py; run it to rewrite -->"
END = "<!-- end of bad inputs -->"
NLDSL = str(Path(sys.executable).with_name("nldsl")) if Path(sys.executable).with_name("nldsl").exists() \
    else shutil.which("nldsl")


@dataclass(frozen=True)
class Case:
    bad: str            # the bad input, in words
    args: str           # the command line after `nldsl`; {names} are files of the workspace (see PATHS)
    message: str        # the last line the command prints; … stands for any text
    status: int         # the exit code

    @property
    def command(self) -> str:
        return "train --resume" if self.args.startswith("train --resume") else self.args.split()[0]


# {name} → (the path in the workspace, how the docs show it)
PATHS = {
    "spec": ("la.nl", "SPEC"), "signsgd_spec": ("la_signsgd.nl", "SPEC"), "optimizer": ("signsgd.nl", "SPEC"),
    "run": ("run", "RUN"), "mqar_run": ("mqar-run", "RUN"),
    "no_info": ("no-run-json", "RUN"), "bad_json": ("bad-run-json", "RUN"), "bad_info": ("bad-run-info", "RUN"),
    "no_code": ("no-code", "RUN"), "no_ckpt": ("no-checkpoint", "RUN"), "truncated": ("truncated", "RUN"),
    "corrupted": ("corrupted", "RUN"), "extra": ("extra-tensor", "RUN"), "wide": ("wider", "RUN"),
    "foreign": ("foreign", "RUN"),
    "text": ("text.txt", "FILE"), "short": ("short.txt", "FILE"), "empty": ("empty.txt", "FILE"),
    "binary": ("binary.bin", "FILE"), "binaries": ("binaries", "DIR"), "missing": ("missing", "PATH"),
    "a_file": ("a-file", "FILE"), "busy": ("busy", "DIR"), "new": ("new-run", "DIR"),
}
TINY = "--set dim=16 --set layers=1 --batch 2 --steps 2"
NEW = f"{TINY} --corpus {{text}} --out {{new}}"
RUN_FOLDERS = [   # what every command that reads a run folder says about a broken one
    ("a path that does not exist", "{missing}", "error: {missing}: no such run folder or checkpoint file"),
    ("a folder without run.json", "{no_info}",
     "error: {no_info} is not a run folder: it has no run.json (`nldsl train SPEC --out DIR` makes one)"),
    ("run.json that is not JSON", "{bad_json}",
     "error: {bad_json}/run.json is damaged (Invalid JSON: …): it cannot describe a run"),
    ("run.json without its fields", "{bad_info}",
     "error: {bad_info}/run.json is damaged (code: Field required): it cannot describe a run"),
    ("the generated code missing", "{no_code}",
     "error: {no_code} is incomplete: {no_code}/code/model.py is missing (the generated code the run trained)"),
    ("no checkpoint yet", "{no_ckpt}",
     "error: {no_ckpt} has no checkpoint yet (checkpoint.safetensors): the run stopped before writing one; "
     "train it again"),
    ("a truncated checkpoint", "{truncated}",
     "error: {truncated}/checkpoint.safetensors is truncated or padded: … bytes where its header describes …; "
     "use an intact copy"),
    ("a checkpoint with a flipped byte", "{corrupted}",
     "error: {corrupted}/checkpoint.safetensors is corrupted: its bytes no longer match the SHA-256 written with "
     "them (changed on disk since); use an intact copy"),
    ("a checkpoint with a tensor added", "{extra}",
     "error: {extra}/checkpoint.safetensors is corrupted: …"),
    ("another width's checkpoint", "{wide}",
     "error: {wide}/checkpoint.safetensors is another model's: embed is 256×32 there and 256×16 here (… shapes "
     "differ); load it into the model it was trained as (the run folder it came from)"),
    ("another spec's checkpoint", "{foreign}",
     "error: {foreign}/checkpoint.safetensors is another model's: it has … parameters this model lacks (…); load it "
     "into the model it was trained as (the run folder it came from)"),
    ("a file that is not a checkpoint", "{run}/run.json",
     "error: {run}/run.json is not a safetensors checkpoint (…): give the checkpoint.safetensors of a run"),
]


def usage(command: str, flag: str, expects: str, got: str) -> str:
    return f"nldsl {command}: error: argument {flag}: expects {expects}, got '{got}' (see nldsl {command} --help)"


SET = "NAME=NUMBER with a finite number"
CASES: list[Case] = [
    Case("no command", "frobnicate",
         "nldsl: error: argument COMMAND: invalid choice: 'frobnicate' (choose from …) (see nldsl --help)", 2),
    Case("`--set` with NaN", "check {spec} --set dim=nan", usage("check", "--set", SET, "dim=nan"), 2),
    Case("`--set` with infinity", "explain {spec} --set dim=inf", usage("explain", "--set", SET, "dim=inf"), 2),
    Case("`--set` past a float", "render {spec} -o x.svg --set dim=1e400",
         usage("render", "--set", SET, "dim=1e400"), 2),
    Case("`--set` with a word", "compile {spec} -o out --set dim=wide", usage("compile", "--set", SET, "dim=wide"), 2),
    Case("`--set` without a name", "train {spec} --set =3", usage("train", "--set", SET, "=3"), 2),
    Case("`--set` without a value", "continual {spec} --set dim=", usage("continual", "--set", SET, "dim="), 2),
    Case("a table narrower than 40", "explain {spec} --width 5",
         usage("explain", "--width", "a whole number from 40 to 10000", "5"), 2),
    Case("a picture format Graphviz lacks", "render {spec} -o x.zzz",
         usage("render", "-o/--output", "a file ending in .svg, .png, .pdf, .jpg, .dot, .gv", "x.zzz"), 2),
    Case("a model the spec lacks", "compile {spec} -o out --unit Nope",
         "error: {spec} defines no model named 'Nope' to compile (it defines LinearAttention)", 1),
    Case("an output folder that is a file", "compile {spec} -o {a_file}", "error: cannot use {a_file}: File exists", 1),
    Case("a spec that does not exist", "fmt {missing}", "error: cannot read {missing}: No such file or directory", 1),
    # train: flags
    Case("negative steps", "train {spec} --steps -1", usage("train", "--steps", "a whole number ≥ 1", "-1"), 2),
    Case("an empty batch", "train {spec} --batch 0", usage("train", "--batch", "a whole number ≥ 1", "0"), 2),
    Case("a negative context", "train {spec} --context -5", usage("train", "--context", "a whole number ≥ 1", "-5"), 2),
    Case("no MQAR pairs", "train {spec} --task mqar --pairs 0", usage("train", "--pairs", "a whole number ≥ 1", "0"),
         2),
    Case("checkpoints every 0 steps", "train {spec} --checkpoint-every 0",
         usage("train", "--checkpoint-every", "a whole number ≥ 1", "0"), 2),
    Case("a learning rate that is not a number", "train {spec} --lr nan",
         usage("train", "--lr", "a finite number > 0", "nan"), 2),
    Case("a seed past 32 bits", "train {spec} --seed 99999999999",
         usage("train", "--seed", "a whole number from 0 to 4294967295", "99999999999"), 2),
    Case("an unknown device", "train {spec} --device gpu", usage("train", "--device", "cpu, cuda or cuda:N", "gpu"), 2),
    Case("`--context` and `--set context` apart", "train {spec} --context 32 --set context=64",
         "nldsl train: error: --context 32 and --set context=64 disagree", 2),
    Case("no spec", "train --steps 3", "nldsl train: error: nldsl train needs a SPEC (or --resume RUN)", 2),
    # train: inputs that do not fit the model
    Case("a vocabulary too small for bytes", f"train {{spec}} {NEW} --set vocab=64",
         "error: {text} is text, and text needs a vocabulary of 256 (every byte), but the model's vocab is 64: use a "
         "model with vocab = 256 (--set vocab=256)", 1),
    Case("a corpus that does not exist", f"train {{spec}} {TINY} --corpus {{missing}} --out {{new}}",
         "error: no corpus '{missing}': name one of shakespeare, sotu, moby-dick, or a text file or folder", 1),
    Case("an empty corpus", f"train {{spec}} {TINY} --corpus {{empty}} --out {{new}}",
         "error: {empty} is empty: there is no text to train on", 1),
    Case("a binary corpus", f"train {{spec}} {TINY} --corpus {{binary}} --out {{new}}",
         "error: {binary} is not text (it holds NUL bytes): give a text file or a folder of them", 1),
    Case("a folder without text", f"train {{spec}} {TINY} --corpus {{binaries}} --out {{new}}",
         "error: {binaries}: the folder holds no text files (binary files and hidden ones are skipped)", 1),
    Case("a corpus shorter than the context", f"train {{spec}} {TINY} --corpus {{short}} --context 512 --out {{new}}",
         "error: {short}'s training part has … bytes, not more than one window of context + 1 = 513: use a longer "
         "text or a shorter --context", 1),
    Case("a held-out part shorter than the context", f"train {{spec}} {NEW} --context 4096",
         "error: {text}'s held-out part has … bytes, not more than one window of context + 1 = 4,097: use a longer "
         "text or a shorter --context", 1),
    Case("MQAR pairs past the vocabulary", f"train {{spec}} {NEW} --set vocab=16 --task mqar --pairs 8 --context 64",
         "error: MQAR with 8 pairs needs a vocabulary of at least 18 tokens (the model's vocab is 16): lower --pairs "
         "or raise vocab", 1),
    Case("MQAR pairs past the context", f"train {{spec}} {NEW} --task mqar --pairs 32 --context 64",
         "error: MQAR with 32 pairs needs an even context of at least 128 tokens (got 64): raise --context or lower "
         "--pairs", 1),
    Case("S-NIAH in a short context", f"train {{spec}} {NEW} --task sniah --context 64",
         "error: S-NIAH needs a context of at least 388 bytes (got 64): raise --context", 1),
    Case("a model too large for the machine", f"train {{spec}} {NEW} --set dim=1000000",
         "error: training LinearAttention (batch 2 × context 256) needs about … (parameters …), more than the … "
         "available on cpu: make the model smaller (--set dim=..., layers=...) or the batch and context shorter", 1),
    Case("`--lr` for an optimizer without one", f"train {{signsgd_spec}} {NEW} --lr 0.1",
         "error: optimizer signsgd has no hyperparameter lr (--lr sets `lr` of every `optimize` group)", 1),
    Case("a device the machine lacks", f"train {{spec}} {NEW} --device cuda:99",
         "error: --device cuda:99: this machine has …", 1),
    Case("a spec without a model", f"train {{optimizer}} {NEW}", "error: {optimizer} defines no model to train", 1),
    Case("a model the spec lacks", f"train {{spec}} {NEW} --unit Nope",
         "error: {spec} defines no model named 'Nope' to train (it defines LinearAttention)", 1),
    Case("`--out` a file", f"train {{spec}} {TINY} --corpus {{text}} --out {{a_file}}",
         "error: --out {a_file} is a file: name a folder for the run", 1),
    Case("`--out` another run", f"train {{spec}} {TINY} --corpus {{text}} --out {{run}}",
         "error: {run} already holds a run: continue it with --resume, or choose another --out", 1),
    Case("`--out` a folder in use", f"train {{spec}} {TINY} --corpus {{text}} --out {{busy}}",
         "error: {busy} is not empty: a run folder starts empty; choose another --out", 1),
    # train --resume
    Case("settings with --resume", "train --resume {run} --context 8",
         "nldsl train: error: --resume continues a run with its own spec and settings: drop --context (only --steps "
         "and --sample apply)", 2),
    Case("fewer steps than the checkpoint's", "train --resume {run} --steps 1",
         "error: --steps 1: the run's checkpoint is already at step 2", 1),
    *[Case(bad, f"train --resume {target}", message, 1) for bad, target, message in RUN_FOLDERS[:-1]],
    # continual
    Case("a corpus that does not exist", f"continual {{spec}} {TINY} --corpora {{text}} {{missing}} --out {{new}}",
         "error: no corpus '{missing}': name one of shakespeare, sotu, moby-dick, or a text file or folder", 1),
    # eval
    *[Case(bad, f"eval {target}", message, 1) for bad, target, message in RUN_FOLDERS],
    Case("no documents", "eval {run} --limit 0", usage("eval", "--limit", "a whole number ≥ 1", "0"), 2),
    Case("an unknown device", "eval {run} --device tpu", usage("eval", "--device", "cpu, cuda or cuda:N", "tpu"), 2),
    Case("MQAR pairs past the context", "eval {mqar_run} --task mqar --pairs 100",
         "error: MQAR with 100 pairs needs an even context of at least 400 tokens (got 32): raise --context or lower "
         "--pairs", 1),
    Case("text on a model without bytes", "eval {mqar_run} --task lambada",
         "error: lambada is text, and text needs a vocabulary of 256 (every byte), but the model's vocab is 64: use a "
         "model with vocab = 256 (--set vocab=256)", 1),
    Case("a window longer than the held-out text", "eval {run} --corpus {short} --context 100",
         "error: {short}'s held-out part has … bytes, not more than one window of context + 1 = 101: use a longer "
         "text or a shorter --context", 1),
    # generate
    *[Case(bad, f"generate {target}", message, 1) for bad, target, message in RUN_FOLDERS],
    Case("a negative length", "generate {run} --bytes -5", usage("generate", "--bytes", "a whole number ≥ 0", "-5"), 2),
    Case("a negative temperature", "generate {run} --temperature -1",
         usage("generate", "--temperature", "a finite number ≥ 0", "-1"), 2),
    Case("a temperature that is not a number", "generate {run} --temperature nan",
         usage("generate", "--temperature", "a finite number ≥ 0", "nan"), 2),
    Case("top-k of nothing", "generate {run} --top-k 0", usage("generate", "--top-k", "a whole number ≥ 1", "0"), 2),
    Case("a broken escape", r"generate {run} --escapes --prompt 'A\x'",
         r"nldsl generate: error: --prompt A\x: with --escapes a prompt is bytes, written with \n, \t or \xNN escapes "
         r"(no broken escapes, no \u escapes above \xff)", 2),
    Case("bytes the model has no token for", "generate {mqar_run} --prompt ROMEO",
         "error: the prompt holds byte 82, but this model's vocabulary has 64 tokens (0 to 63): it was not trained on "
         "text", 1),
]


# ---- the docs' table -----------------------------------------------------------------------------

def shown(template: str) -> str:
    """A template as the docs show it: workspace names as RUN, SPEC, FILE, ..."""
    return template.format(**{name: doc for name, (_, doc) in PATHS.items()})


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    rows = ["| command | bad input | what it prints | exit |", "|---|---|---|---|"]
    for c in CASES:
        rows.append(f"| `{c.command}` | {c.bad}: `nldsl {cell(shown(c.args))}` | `{cell(shown(c.message))}` "
                    f"| {c.status} |")
    return "\n".join(rows)


def documented() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"{DOC.name} has no generated bad-input table"
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()


def test_docs_table_is_generated_from_the_cases() -> None:
    assert documented() == table(), f"the table in {DOC.name} is stale: run `python tests/test_bad_inputs.py`"


def test_every_command_has_bad_inputs() -> None:
    assert {c.command for c in CASES} >= {"check", "explain", "render", "compile", "fmt", "train", "train --resume",
                                          "continual", "eval", "generate"}
    assert len({c.args for c in CASES}) == len(CASES), "two cases run the same command line"


# ---- the workspace -------------------------------------------------------------------------------

def checkpoint(run: Path) -> Path:
    return run / "checkpoint.safetensors"


def broken_copy(good: Path, name: str, spoil) -> None:
    target = good.parent / name
    shutil.copytree(good, target)
    spoil(target)


def flip_a_data_byte(run: Path) -> None:
    raw = bytearray(checkpoint(run).read_bytes())
    (size,) = struct.unpack("<Q", raw[:8])
    raw[8 + size + (len(raw) - 8 - size) // 2] ^= 0x01
    checkpoint(run).write_bytes(raw)


def add_a_tensor(run: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(checkpoint(run)), framework="pt") as f:
        names, meta = f.keys(), f.metadata()
        tensors = {k: f.get_tensor(k) for k in names}
    save_file({**tensors, "param.extra": torch.zeros(3)}, str(checkpoint(run)), metadata=meta)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good inputs (a spec, a tiny trained run, corpora) and broken ones, made in this process."""
    from nldsl.cli import main
    root = tmp_path_factory.mktemp("workspace")
    la = (ROOT / "specs" / "linear_attention.nl").read_text()
    (root / "la.nl").write_text(la)
    (root / "signsgd.nl").write_text("optimizer signsgd(eta = 0.01) {\n  param = param - eta * sign(grad)\n}\n")
    (root / "la_signsgd.nl").write_text(la.replace('import "optim/sgd.nl"', 'import "signsgd.nl"')
                                        .replace("sgd(lr = 0.1)", "signsgd(eta = 0.01)"))
    (root / "text.txt").write_text("".join(f"{i}: to be, or not to be, that is the question.\n" for i in range(400)))
    (root / "short.txt").write_text("Brevity is the soul of wit.\n" * 10)
    (root / "empty.txt").write_text("")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "binaries").mkdir()
    (root / "binaries" / "data.bin").write_bytes(b"\0" * 64)
    (root / "binaries" / ".notes.txt").write_text("hidden, so skipped\n" * 100)
    (root / "a-file").write_text("not a folder\n")
    (root / "busy").mkdir()
    (root / "busy" / "notes.txt").write_text("someone's work\n")
    tiny = ["--set", "dim=16", "--set", "layers=1", "--batch", "2", "--steps", "2", "--sample", "0",
            "--context", "32", "--checkpoint-every", "1", "--corpus", str(root / "text.txt")]
    others = root.parent / f"{root.name}-others"       # runs whose checkpoints are foreign to `run`
    assert main(["train", str(root / "la.nl"), *tiny, "--out", str(root / "run")]) == 0
    assert main(["train", str(root / "la.nl"), *tiny, "--set", "vocab=64", "--task", "mqar", "--pairs", "4",
                 "--out", str(root / "mqar-run")]) == 0
    assert main(["train", str(root / "la.nl"), *tiny, "--set", "dim=32", "--out", str(others / "wide")]) == 0
    assert main(["train", str(ROOT / "specs" / "deltanet.nl"), *tiny, "--out", str(others / "deltanet")]) == 0
    good = root / "run"
    broken_copy(good, "no-run-json", lambda r: (r / "run.json").unlink())
    broken_copy(good, "bad-run-json", lambda r: (r / "run.json").write_text("{"))
    broken_copy(good, "bad-run-info", lambda r: (r / "run.json").write_text(json.dumps({"model": "LinearAttention"})))
    broken_copy(good, "no-code", lambda r: (r / "code" / "model.py").unlink())
    broken_copy(good, "no-checkpoint", lambda r: checkpoint(r).unlink())
    broken_copy(good, "truncated", lambda r: checkpoint(r).write_bytes(checkpoint(r).read_bytes()[:-100]))
    broken_copy(good, "corrupted", flip_a_data_byte)
    broken_copy(good, "extra-tensor", add_a_tensor)
    broken_copy(good, "wider", lambda r: shutil.copy(checkpoint(others / "wide"), checkpoint(r)))
    broken_copy(good, "foreign", lambda r: shutil.copy(checkpoint(others / "deltanet"), checkpoint(r)))
    return root


# ---- running the cases ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    written: list[str]          # paths created, changed or removed


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in root.rglob("*")}


def run_case(case: Case, workspace: Path, where: Path) -> Outcome:
    """The case in a copy of the workspace of its own, `where` (and a cache of its own)."""
    shutil.copytree(workspace, where, symlinks=True)
    before = snapshot(where)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NLDSL_CACHE": str(where.with_name(where.name + ".cache")),
           "MPLCONFIGDIR": str(where.with_name(where.name + ".mpl"))}
    env.pop("NLDSL_DEBUG", None)
    args = shlex.split(case.args.format(**{name: path for name, (path, _) in PATHS.items()}))
    done = subprocess.run([NLDSL, *args], capture_output=True, text=True, cwd=where, env=env, timeout=300, check=False)
    after = snapshot(where)
    written = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return Outcome(done.returncode, done.stdout, done.stderr, written)


@pytest.fixture(scope="module")
def outcomes(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case at once, as many side by side as there are processors."""
    assert NLDSL, "the nldsl console script is not installed"
    scratch = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda i: run_case(CASES[i], workspace, scratch / f"case{i}"), range(len(CASES)))
        return {c.args: r for c, r in zip(CASES, results, strict=True)}


def pattern(template: str) -> str:
    """A message template as a regular expression: the workspace's paths filled in, … any text."""
    filled = template.format(**{name: path for name, (path, _) in PATHS.items()})
    return ".*".join(re.escape(part) for part in filled.split("…"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}: {c.bad}")
def test_bad_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    got = outcomes[case.args]
    everything = got.stdout + got.stderr
    assert "Traceback" not in everything and "internal error" not in everything, everything
    lines = got.stderr.strip().splitlines()
    assert lines, f"no message (exit {got.status}); stdout: {got.stdout}"
    assert re.fullmatch(pattern(case.message), lines[-1]), f"\n  got:      {lines[-1]}\n  expected: {case.message}"
    before = lines[:-1]     # only a spec's warnings may come first (the checker's, printed before any work)
    assert not before or (before[0].startswith("warning[NL") and not any(ln.startswith(("error", "nldsl"))
                                                                          for ln in before)), got.stderr
    assert got.status == case.status, got.stderr
    assert not got.written, f"the command wrote {got.written}"


# ---- the Python API ------------------------------------------------------------------------------

def test_load_refuses_a_model_too_large_before_allocating() -> None:
    import nldsl
    from nldsl.backends.torch.app.trainer import TooBig
    with pytest.raises(MemoryError, match=r"LinearAttention's parameters needs about .* EB, more than the .* "
                                          r"available on cpu") as caught:
        nldsl.load(ROOT / "specs" / "linear_attention.nl", overrides={"dim": 1_000_000_000, "layers": 1})
    assert isinstance(caught.value, TooBig)


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(text[:text.index(BEGIN) + len(BEGIN)] + "\n\n" + table() + "\n\n" + text[text.index(END):],
                   encoding="utf-8")
    print(f"rewrote the bad-input table in {DOC}")
