"""Writes bench/results/peers.md from the driver's measurements (bench/peer_bench.py)."""

from __future__ import annotations

import json

ISSUE = {"peer_online": 586.0, "peer_readonly": 25_200.0, "titans_pytorch": 132.0}
TARGET_ONLINE, TARGET_TITANS = 10.0, 20.0

# What could not be made equal, found by reading the peers' source (nested_learning 0.2.0:
# model.py, hope/block.py, titan/self_modifying.py, cms.py, optim/, training.py; titans_pytorch
# 0.5.5: neural_memory.py, memory_models.py).
HOPE_MISMATCHES = [
    "**Heads.** hope_selfmod's self-modifying memories are single full-width memories: "
    "`SelfModifyingTitans` hard-codes `hidden = dim` (128 → 128 → 128) and the variant never reads "
    "`model.heads` (nor `self_mod_hidden`). nldsl's are 4 memories per head, 32 → 128 → 32. Both have "
    "32,768 weights per square memory and the same read cost per token, but the DGD term differs in "
    "size: the peer builds the preconditioner (α I − η k kᵀ) as a dense 128 × 128 matrix and multiplies "
    "W₂ (and, for M_eta and M_alpha, the skip projection) by it at every token of every memory, 128³ "
    "multiply-adds per token, memory and sequence, where nldsl's per-head keys are 32 wide. In a "
    "cProfile of two online steps (quiet machine) 84 % of the peer's time was its per-token update "
    "loop (`SelfModifyingTitans._apply_chunk_update_seq`), 70 % in `_apply_param_update`, nearly all "
    "of it these matrix products.",
    "**M_eta and M_alpha** give one value per token in the peer (not one per head), through a skip "
    "projection (`w_skip`, dim → 1) besides the MLP; η = softplus(·) · 10⁻³ and α = sigmoid(·) there, "
    "η = 0.1 · sigmoid(·) and α = 1 − 0.1 · sigmoid(·) in hope.nl. Same shapes of work, other numbers.",
    "**Normalization and convolution.** The peer normalizes q and k but not v (hope.nl also "
    "normalizes v), and applies one causal convolution (width 4) to the block input before every "
    "memory, where hope.nl convolves q, k and v each.",
    "**Activation.** The peer's memories and CMS levels use GELU; neither is exposed through the "
    "model config (`HOPESelfModBlockConfig.activation` is not passed by `HOPEModel`). hope.nl: SiLU.",
    "**Block wiring.** The peer's block is `CMS(SelfModTitans(x))`, with no residual stream around "
    "either and no pre-norm; each CMS level has its own LayerNorm (`cms_use_layernorm`, the "
    "default) and rescales its output to norm ≤ 1 per token. hope.nl: `h = h + M_memory(q)`, "
    "`h = h + cms(rmsnorm(h))`. The peer ties the output head to the embedding; its final norm is a "
    "LayerNorm. A few elementwise operations either way.",
    "**Gradient through the in-context writes.** nldsl differentiates the training loss through "
    "every write of the self-modifying memories (`backprop through`, the default: the initial "
    "states and the projections feeding keys, values and rates are meta-learned through the DGD "
    "recurrence). The peer's writes run under `torch.no_grad()` (`two_pass_stopgrad_updates`; "
    "its other mode changes nothing here: `HOPESelfModBlock` ignores `differentiable_updates`), and "
    "its reads pass the gradient straight through to the initial weights. So the peer's online "
    "step has no backward through the writes at all: less work per token than nldsl's. The CMS "
    "levels are first-order on both sides.",
    "**Chunked loop.** The peer's online path is its training loop: per 16-token chunk a forward, "
    "the loss, a backward, then a second, no-grad pass that recomputes the block and applies the "
    "writes (16 of each per sequence). nldsl runs one forward over the sequence (writes inside) and "
    "one backward, plus one teach-signal backward per CMS window.",
    "**M_memory's period.** The peer's `forward_with_updates` applies every pending update at the "
    "end of each call, and the loop calls it per 16-token chunk, so M_memory is written every 16 "
    "tokens, not every 64. The peer's write cost is per token whatever the period, so this changes "
    "the semantics, not the work.",
    "**CMS state across the batch.** With `use_fast_state`, the peer keeps one CMS fast state for the "
    "whole batch (it warns: 'shares CMS/TITAN fast state across the batch'): each CMS update is one "
    "gradient over the 4 sequences. The self-modifying state is per sequence. nldsl: everything per "
    "sequence.",
    "**Read-only path.** With no in-context writes the peer computes only q = x W_q, M_memory(q) and "
    "the CMS: M_k, M_v, M_eta, M_alpha are not evaluated at all. It is the issue's reference point "
    "for 'faster than the peer without writes'; nldsl has no such mode for hope.nl (a Hope without "
    "learning is a different spec).",
    "**Unused peer weights.** The peer also holds M_q and a `titan_level` spec that hope_selfmod does "
    "not use (`self_mod_adaptive_q = false`); unused weights get no gradient and cost nothing.",
]

TITANS_MISMATCHES = [
    "**Granularity of the inner rule.** titans-pytorch takes one surprise per 16-token chunk (the "
    "gradient of the chunk's lr-weighted summed loss, which equals the sum of the per-token "
    "gradients at the same weights), and one momentum gate and one decay gate per chunk, from the "
    "chunk's mean input (`AveragePool`); its scans run over chunks. titans.nl takes per-token "
    "surprises at the chunk-start state and runs momentum and forgetting token by token inside the "
    "chunk, with per-token gates. The surprises agree; the gates' granularity does not.",
    "**Convolution.** titans.nl passes q, k and v through a causal convolution of width 4; "
    "NeuralMemory has no such option. Its q/k normalization (`qk_rmsnorm`, RMSNorm with a learned "
    "scale) stands for titans.nl's per-head L2 normalization.",
    "**Retrieve gate and biases.** NeuralMemory multiplies each head's read by a learned sigmoid "
    "gate (`retrieve_gate`, on whenever heads > 1; no option turns it off) and its rate, momentum "
    "and decay projections have biases. A few thousand multiply-adds per token.",
    "**The `sequential` variant's loop.** With `batch_size = 16` NeuralMemory stores each 16-token "
    "piece in its own `store_memories` call, a Python-level loop of 16 per sequence, as nldsl's "
    "compiled model loops over 16 segments.",
]

METHOD = [
    "Each measurement is a fresh process. A training step is forward (with the in-context "
    "updates), next-token cross-entropy, backward, gradient clipping at norm 1 and an AdamW step, "
    "on a batch of 4 × 256 random tokens; tokens/s = 1024 / step time.",
    "The first steps are warm-up and excluded (they hold nldsl's compilation, torch.func's first "
    "calls and the allocator's growth); the timed steps are cut into windows and the table gives "
    "the median window (all windows are in peers.json).",
    "Peak memory is the kernel's high-water mark of the process's resident set (VmHWM), reset "
    "after the warm-up, so it is the peak during the timed steps: model, optimizer state, "
    "activations, the framework itself. The process peak including compilation is in peers.json.",
    "nldsl's compiled mode starts from an empty inductor cache, so `first step` includes the full "
    "compilation.",
    "`other load` is the CPU time that processes other than the measurement used during it, in "
    "cores: 2 cores are all there is, so anything above ~0.1 slows the measurement and makes "
    "its numbers unreliable.",
]


def _fmt(x, nd=1):
    return "—" if x is None else f"{x:,.{nd}f}"


def _ok(r):
    return r is not None and not r.get("failed")


HEADER = ["| implementation | path | tokens/s | FLOPs/token (M) | MFU | step (s) | peak RSS (MB) | other load | "
          "nldsl compiled ÷ this |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]


def _row(label, path, r, ref, peak):
    """One measurement. MFU = the implementation's own training FLOPs per token (FlopCounterMode on
    one eager step of its own code) × tokens/s ÷ the fp32 matmul peak measured in the same run."""
    if not _ok(r):
        err = (r or {}).get("error", "not run").strip().splitlines()
        return f"| {label} | {path} | failed: {err[-1] if err else '?'} | | | | | | |"
    mem = r.get("peak_rss_mb_timed") or r.get("peak_rss_mb_process")
    ratio = "" if not _ok(ref) else f"{ref['tokens_per_s'] / r['tokens_per_s']:,.2f}×"
    flops = r.get("flops_per_token")
    mfu = f"{100 * flops * r['tokens_per_s'] / peak:.1f} %" if flops and peak else "—"
    return (f"| {label} | {path} | {r['tokens_per_s']:,.1f} | {_fmt(flops and flops / 1e6, 2)} | {mfu} | "
            f"{r['step_s_median']:.3f} | {_fmt(mem, 0)} | {r['other_load_cores']:.2f} | {ratio} |")


def _compile_s(r):
    """The first step of the first try: a retried measurement reuses the inductor cache."""
    return (r.get("first_try") or {}).get("first_step_s") or r["first_step_s"]


def _verdict(ratio, target, strict=False):
    if ratio is None:
        return "not measured"
    met = ratio > target if strict else ratio >= target
    if met:
        return f"**met** ({ratio:,.2f}×)"
    return f"**missed** ({ratio:,.2f}×, short by {target / ratio:,.1f}×)"


def write_report(info: dict, results: dict) -> str:
    g = results.get
    nc, ne = g("nldsl_hope_compiled"), g("nldsl_hope_eager")
    po, pi, pr = g("peer_hope_online"), g("peer_hope_online_inplace"), g("peer_hope_readonly")
    pp, ti = g("peer_hope_poststep"), g("peer_titans_issue")
    tc, te = g("nldsl_titans_compiled"), g("nldsl_titans_eager")
    ts, tp = g("peer_titans_sequential"), g("peer_titans_parallel")

    def ratio(a, b):
        return a["tokens_per_s"] / b["tokens_per_s"] if _ok(a) and _ok(b) else None

    peak = info.get("matmul_peak")

    loads = [r.get("other_load_cores", 0) for r in results.values() if r]
    L = ["# nldsl against public implementations: Hope and Titans (training speed, CPU)", "",
         "Written by `bash bench/peers/run.sh` (`bench/peer_bench.py`) in one run; the raw measurements are in "
         "`peers.json` beside this file. The peers run from PyPI in their own environment "
         "(`bench/.peers-venv`, made by `bench/peers/setup.sh`), on the same torch build as nldsl.", "",
         "## Machine", "",
         f"- CPU: {info.get('cpu')}, {info.get('cores')} cores"
         f"{', AVX-512' if info.get('avx512') else ''}; {info.get('ram_gib')} GiB RAM; Linux {info.get('kernel')}",
         f"- torch {info.get('torch_nldsl')} (nldsl venv) and {info.get('torch_peers', '?')} (peers venv), "
         f"Python {info.get('python')}, {info.get('cores')} threads",
         f"- nested-learning {info.get('nested_learning', '?')}, titans-pytorch {info.get('titans_pytorch', '?')}",
         f"- date: {info.get('date')}; the run took {info.get('wall_s', 0) / 60:.1f} min",
         f"- other processes before the run: {info.get('load_before')} cores (sampled over 3 s); during the "
         f"measurements: up to {max(loads) if loads else 0:.2f} cores (column `other load`)",
         f"- fp32 matmul peak: {_fmt(peak and peak / 1e9, 0)} GFLOP/s (square products, measured at the start of "
         "this run). MFU = an implementation's own training FLOPs per token (torch's FlopCounterMode over one "
         "eager training step of its own code, in-context writes included) × tokens/s ÷ that peak; "
         "implementations doing less work per token (see below) can be faster at a lower MFU", ""]
    if loads and max(loads) > 0.15:
        L += [f"> **Caveat:** other processes used up to {max(loads):.2f} of the 2 cores during this run, "
              "so absolute numbers are low and noisy; ratios between neighbouring measurements are less "
              "affected, but treat them as approximate.", ""]

    L += ["## Hope", "",
          "specs/hope.nl at dim 128, 2 layers, 4 heads, vocab 256, context 256, batch 4, AdamW; the peer is "
          "`nested-learning` 0.2.0, variant `hope_selfmod`, configured as in "
          "[How the work was made equal](#how-the-work-was-made-equal).", "",
          *HEADER,
          _row("nldsl", "compiled (`model.compile()`), in-context updates", nc, nc, peak),
          _row("nldsl", "eager, in-context updates", ne, nc, peak),
          _row("nested-learning", "online: in-context updates, per-context fast state (`use_fast_state`)", po, nc,
               peak)]
    if pi:
        L.append(_row("nested-learning", "online, writes in place (`use_fast_state = false`, as its "
                      "pilot_selfmod config)", pi, nc, peak))
    L += [_row("nested-learning", "post-step teach pass (`online_updates = false`): writes after the "
               "step, read by no token of the sequence (the issue's 586 tokens/s path)", pp, nc, peak),
          _row("nested-learning", "read-only: no in-context writes", pr, nc, peak), ""]
    if _ok(nc):
        L.append(f"nldsl's first compiled step (compilation from an empty cache included): "
                 f"**{_compile_s(nc):.0f} s**; compiled ÷ eager = {_fmt(ratio(nc, ne), 2)}×.")
    L += ["", "## Titans", "",
          "One Titans neural-memory layer, dim 128, 4 heads of 32, chunk 16, MLP memory 32 → 128 → 32 (GELU, "
          "LayerNorm, residual) per head, with momentum and forgetting, between a token embedding (vocab 16) "
          "and an output head; batch 4 × 256, AdamW. nldsl: `bench/specs/titans_memory.nl` (the memory of "
          "specs/titans.nl alone). Peer: titans-pytorch 0.5.5 `NeuralMemory`.", "",
          *HEADER,
          _row("nldsl", "compiled (`model.compile()`)", tc, tc, peak),
          _row("nldsl", "eager", te, tc, peak),
          _row("titans-pytorch", "`sequential`: batch_size 16, weights advance every chunk (the spec's "
               "semantics)", ts, tc, peak),
          _row("titans-pytorch", "`parallel`: batch_size None (package default), all surprises at the "
               "initial weights", tp, tc, peak),
          _row("titans-pytorch", "`issue`: NeuralMemory(dim 128, heads 4, chunk_size 16), all else default: "
               "dim_head 128, so 4 full-width heads (the call the issue timed; not the spec's memory)", ti, tc,
               peak),
          ""]
    if _ok(tc):
        L.append(f"nldsl's first compiled step (compilation included): **{_compile_s(tc):.0f} s**; "
                 f"compiled ÷ eager = {_fmt(ratio(tc, te), 2)}×.")

    r_on, r_ro, r_ts, r_tp = ratio(nc, po), ratio(nc, pr), ratio(tc, ts), ratio(tc, tp)
    r_pp, r_ti = ratio(nc, pp), ratio(tc, ti)
    L += ["", "## Targets", "",
          "| target (issue) | measured | |", "|---|---|---|",
          f"| compiled Hope with in-context updates ≥ {TARGET_ONLINE:.0f}× the peer's online path | "
          f"{_fmt(nc and nc.get('tokens_per_s'))} vs {_fmt(po and po.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_on, TARGET_ONLINE)} |",
          f"| compiled Hope faster than the peer's read-only path | "
          f"{_fmt(nc and nc.get('tokens_per_s'))} vs {_fmt(pr and pr.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_ro, 1.0, strict=True)} |",
          f"| Titans ≥ {TARGET_TITANS:.0f}× titans-pytorch (`sequential`, the same algorithm) | "
          f"{_fmt(tc and tc.get('tokens_per_s'))} vs {_fmt(ts and ts.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_ts, TARGET_TITANS)} |",
          f"| (for reference) Titans vs titans-pytorch `parallel` (package default, less sequential work) | "
          f"{_fmt(tc and tc.get('tokens_per_s'))} vs {_fmt(tp and tp.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_tp, TARGET_TITANS)} |",
          f"| (for reference) Hope vs the peer's post-step teach pass (the issue's 586 tokens/s path; not "
          f"in-context) | {_fmt(nc and nc.get('tokens_per_s'))} vs {_fmt(pp and pp.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_pp, TARGET_ONLINE)} |",
          f"| (for reference) Titans vs titans-pytorch `issue` (4 full-width heads, 16× the memory) | "
          f"{_fmt(tc and tc.get('tokens_per_s'))} vs {_fmt(ti and ti.get('tokens_per_s'))} tokens/s | "
          f"{_verdict(r_ti, TARGET_TITANS)} |", "",
          "**The issue's peer numbers, reconciled.** The issue measured the peer's online path at "
          f"{ISSUE['peer_online']:,.0f} tokens/s, its read-only path at {ISSUE['peer_readonly']:,.0f} and "
          f"titans-pytorch at {ISSUE['titans_pytorch']:,.0f}. This run: "
          f"post-step teach pass {_fmt(pp and pp.get('tokens_per_s'))}, read-only "
          f"{_fmt(pr and pr.get('tokens_per_s'))}, titans-pytorch `issue` {_fmt(ti and ti.get('tokens_per_s'))}. "
          "(1) The 586 tokens/s matches the training loop's *post-step* teach pass (`train.online_updates = "
          "false`; with self-mod chunk 8 it ran at 602 tokens/s in a spot check on this machine): "
          "one forward and backward over the sequence, then a pass that writes the memories "
          "into the weights after the AdamW step. No token of the sequence reads those writes, so it is not an "
          "in-context update; the loop's in-context path (`train.online_updates = true`: per 16-token chunk a "
          "forward, backward and write pass, later chunks reading earlier chunks' writes) is the row "
          "`online`, and it is what hope.nl's in-context updates compare to. (2) The 132 tokens/s matches "
          "NeuralMemory(dim 128, heads 4, chunk_size 16) with its default `dim_head = dim` (the `issue` row, "
          "same order of magnitude; no other configuration tried came near it): four heads of "
          "width 128 each, a memory 16× larger per head than specs/titans.nl's 32-wide heads. With "
          "`dim_head = 32` (the spec's memory) titans-pytorch is far faster, which is why the Titans target "
          "is far from met against the equal configuration.", ""]

    L += ["## How the work was made equal", "",
          "### Hope: nested-learning options", "",
          "The peer's configuration is its own `configs/pilot.yaml` + `configs/hope/pilot_selfmod.yaml` with "
          "these changes (the full resolved configuration is in `peers.json`):", "",
          "| option | value | why |", "|---|---|---|"]
    src = po if _ok(po) else (pr if _ok(pr) else None)
    if src:
        cfg = src["config"]
        for key, why in src["overrides"].items():
            val = cfg
            for part in key.split("."):
                val = val.get(part) if isinstance(val, dict) else None
            L.append(f"| `{key}` | `{json.dumps(val)}` | {why} |")
    L += ["", "Modes: `online` is the configuration above run by the package's own "
          "`nested_learning.training.run_training_loop` (timed by a hook on its AdamW step); "
          "`online, writes in place` changes `train.use_fast_state` and `train.online_boundary_targets` to "
          "false, as pilot_selfmod runs it (the writes go to the module's weights; 17-token chunks with a "
          "1-token overlap); `post-step teach pass` sets `train.online_updates` (and `use_fast_state`) to false: "
          "the loop's other branch, one forward and backward over the whole sequence, the AdamW step, then "
          "the teach-signal pass writing the memories into the weights; `read-only` builds the same model "
          "with `build_model_from_cfg` and trains it with a plain step (forward, loss, backward, clip, "
          "AdamW) that makes no in-context write.", "",
          "### Hope: what remains different", ""]
    L += [f"{i}. {m}" for i, m in enumerate(HOPE_MISMATCHES, 1)]
    L += ["", "### Titans: NeuralMemory options", "", "| option | value | why |", "|---|---|---|"]
    src = ts if _ok(ts) else (tp if _ok(tp) else None)
    if src:
        nm = src["config"]["NeuralMemory"]
        for key, why in src["options"].items():
            L.append(f"| `{key}` | `{nm.get(key)}` | {why} |")
        L.append("| `batch_size` | `16` (`sequential`) / `None` (`parallel`) | 16: the weights advance after "
                 "every 16-token chunk and the next chunk's surprise is taken at them, as titans.nl's `every 16 "
                 "tokens`; None (the default) takes every surprise at the sequence's initial weights |")
    L += ["", "The harness wraps NeuralMemory as nldsl wraps every model: embedding (vocab 16), "
          "`h + NeuralMemory(h)`, RMSNorm, output head, next-token cross-entropy. NeuralMemory's per-head "
          "initial weights are created as broadcast views of one tensor; AdamW's in-place weight decay "
          "refuses those ('more than one element of the written-to tensor refers to a single memory "
          "location'), so the harness copies each into its own storage (same values) before training.", "",
          "### Titans: what remains different", ""]
    L += [f"{i}. {m}" for i, m in enumerate(TITANS_MISMATCHES, 1)]
    L += ["", "## Method", ""] + [f"- {m}" for m in METHOD] + [""]
    return "\n".join(L)
