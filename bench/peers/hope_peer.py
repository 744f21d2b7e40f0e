"""The peer side of the Hope comparison: the `nested-learning` package (0.2.0), variant
`hope_selfmod` (the paper's Hope block: self-modifying Titans followed by a CMS), configured to
match nldsl's specs/hope.nl at dim 128, 2 layers, 4 heads, vocab 256, context 256, batch 4.

Runs in bench/.peers-venv (bench/peers/setup.sh). One mode per process, one JSON line out:

    bench/.peers-venv/bin/python bench/peers/hope_peer.py --mode online
    bench/.peers-venv/bin/python bench/peers/hope_peer.py --mode online-inplace
    bench/.peers-venv/bin/python bench/peers/hope_peer.py --mode poststep
    bench/.peers-venv/bin/python bench/peers/hope_peer.py --mode readonly

online          the package's own training loop (`nested_learning.training.run_training_loop`)
                with its in-context updates on: every 16-token chunk is a forward, the LM loss,
                its backward, then the teach-signal pass that writes the self-modifying memories
                and the CMS levels; the fast state is per context (`train.use_fast_state=true`,
                the package's paper-faithful setting).
online-inplace  the same loop as the package's `hope/pilot_selfmod` config runs it: the writes go
                to the module's parameters in place (`train.use_fast_state=false`).
poststep        the loop with `train.online_updates=false`: one forward, loss and backward over
                the whole sequence and the AdamW step, then the teach-signal pass writes the
                memories (in place, into the weights). No token of the sequence reads those
                writes: they are not in-context. This is the path the issue's 586 tokens/s
                was measured on (with self-mod chunk 8).
readonly        the same model, trained with no in-context write at all: forward, the LM loss,
                backward, clipping and AdamW.

The configuration starts from the package's own configs/pilot.yaml + configs/hope/pilot_selfmod.yaml
and changes only what `OVERRIDES` lists; the resolved configuration is part of the output.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import StepClock, emit, peak_rss_mb, set_threads, step_flops

VOCAB, DIM, LAYERS, HEADS, CONTEXT, BATCH = 256, 128, 2, 4, 256, 4

# Every option changed from the package's hope/pilot_selfmod config, with the reason (the driver
# copies these reasons into bench/results/peers.md).
OVERRIDES = {
    "model.vocab_size": (VOCAB, "byte vocabulary, as nldsl's Hope"),
    "model.dim": (DIM, "width"),
    "model.num_layers": (LAYERS, "depth"),
    "model.heads": (HEADS, "heads (hope_selfmod does not read it: its memories are full-width)"),
    "model.block_variant": ("hope_selfmod", "the paper's Hope block (self-modifying Titans + CMS); "
                            "already pilot_selfmod's"),
    "model.self_mod_chunk_size": (16, "M_k, M_v, M_eta, M_alpha update every 16 tokens, as in "
                                  "hope.nl (pilot_selfmod: 8)"),
    "model.self_mod_chunk_size_memory": (64, "M_memory updates every 64 tokens, as in hope.nl"),
    "model.self_mod_local_conv_window": (4, "causal convolution of width 4 (§8.3), as hope.nl's conv(·, 4)"),
    "model.qk_l2_norm": (True, "q and k are L2-normalized, as in hope.nl (pilot default: off)"),
    "model.self_mod_adaptive_q": (False, "q = x W_q, a static projection, as hope.nl's W_q"),
    "model.self_mod_use_skip": (True, "residual memories ((·) + W₁σ(W₂ ·)), as hope.nl's `residual`"),
    "model.self_mod_use_rank1_precond": (True, "DGD: M (α I − η k kᵀ) − η ∇ℓ, as hope.nl's dgd(retain = alpha)"),
    "model.self_mod_use_alpha": (True, "a generated retention α, as hope.nl's M_alpha"),
    "model.self_mod_momentum": (0.0, "no momentum in the inner rule, as hope.nl's dgd"),
    "model.self_mod_stopgrad_vhat": (True, "target v̂ = M(v) under stop-gradient, as hope.nl's stopgrad(self(v))"),
    "model.self_mod_objective": ("l2", "l2 objective ||M(k) − v̂||², as hope.nl"),
    "model.cms_levels": ([{"name": "cms_1", "update_period": 16, "optimizer_key": "cms_opt"},
                          {"name": "cms_2", "update_period": 128, "optimizer_key": "cms_opt"},
                          {"name": "cms_3", "update_period": 512, "optimizer_key": "cms_opt"}],
                         "three chained MLP levels at periods 16, 128, 512, as hope.nl (pilot: 1, 4, 32, 128)"),
    "model.cms_flush_partial_at_end": (True, "a level whose period is not reached by the end of the "
                                       "sequence still learns from the partial window, as nldsl does"),
    "model.optimizers.cms_opt": ({"type": "deep_momentum", "lr": 1e-3,
                                  "params": {"beta": 0.0, "variant": "plain"}},
                                 "CMS levels learn by plain gradient descent, lr 0.001, as hope.nl's "
                                 "gd(lr = 0.001): DeepMomentum with beta 0 and a variant name it does not "
                                 "special-case returns the gradient itself (pilot: momentum 0.9 + rank-1 "
                                 "projection)"),
    "model.teach_scale": (1.0, "the teach signal is the LM loss' gradient itself (pilot: 0.1)"),
    "model.teach_clip": (0.0, "no clipping of the teach signal (pilot: 5.0)"),
    "model.teach_schedule": ({}, "no warm-up ramp of the teach signal (pilot: 2000 steps)"),
    "model.surprise_threshold": (None, "every update happens, none is gated on surprise (pilot: 0.02)"),
    "model.gradient_checkpointing": (False, "no recomputation"),
    "train.online_updates": (True, "in-context updates during training (modes online*)"),
    "train.online_chunk_size": (0, "0 = the smallest CMS period, 16 tokens: the loop's chunk equals "
                                "hope.nl's 16-token update period"),
    "train.per_layer_teach_signal": (True, "each layer's teach signal is dL/d(its output), the LM loss' "
                                     "gradient at the CMS output, as hope.nl's `outer`"),
    "train.use_fast_state": (True, "fast memories per context, started from the meta-learned initial "
                             "states at every sequence, as hope.nl's `init learned` (mode online; "
                             "mode online-inplace sets false, as pilot_selfmod does)"),
    "train.online_boundary_targets": (True, "chunks of exactly 16 tokens with the next token as the "
                                      "boundary target (no 1-token overlap): every chunk scores 16 "
                                      "next-token targets, as nldsl's 16-token segments"),
    "train.algorithm_mode": ("two_pass_stopgrad_updates", "the package's default; its other mode "
                             "changes nothing for hope_selfmod, whose blocks ignore differentiable_updates"),
    "train.strict_streaming_contract": (False, "true refuses batch > 1 with a fast state"),
    "train.mixed_precision.enabled": (False, "float32 on CPU, as nldsl"),
    "train.compile.enable": (False, "the package's default path (eager)"),
    "train.device": ("cpu", "this machine"),
    "train.checkpoint.enable": (False, "no checkpoint files"),
    "optim": ({"type": "adamw", "lr": 3e-4, "weight_decay": 0.1, "fused": False, "param_policy": "all"},
              "AdamW(lr 3e-4, weight decay 0.1) on all parameters, as hope.nl's train block "
              "(pilot: Muon)"),
    "data": ({"source": "synthetic", "vocab_size": VOCAB, "seq_len": CONTEXT, "dataset_size": 4096,
              "batch_size": BATCH, "num_workers": 0},
             "random tokens, 4 × 256 per step, as the nldsl side"),
    "logging.enabled": (False, "no metric files"),
}


def build_cfg(mode: str, steps: int):
    import nested_learning
    from omegaconf import OmegaConf
    root = Path(nested_learning.__file__).parent / "configs"
    base = OmegaConf.load(root / "pilot.yaml")
    sel = OmegaConf.load(root / "hope" / "pilot_selfmod.yaml")
    for c in (base, sel):
        c.pop("defaults", None)
        c.pop("hydra", None)
    cfg = OmegaConf.merge(base, sel)
    for key, (value, _why) in OVERRIDES.items():
        OmegaConf.update(cfg, key, copy.deepcopy(value), merge=False)
    cfg.train.steps = steps
    cfg.train.log_interval = 10**9
    cfg.train.seed = 0
    cfg.train.deterministic = False
    if mode == "online-inplace":
        cfg.train.use_fast_state = False
        cfg.train.online_boundary_targets = False      # pilot_selfmod's: 17-token chunks, 1 overlap
    if mode == "poststep":
        cfg.train.online_updates = False
        cfg.train.use_fast_state = False           # a fast state would be dropped after the step
        cfg.train.online_boundary_targets = False  # only read by the online branch
    if mode == "readonly":
        cfg.train.online_updates = False
    return cfg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("online", "online-inplace", "poststep", "readonly"), required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--per-window", type=int, default=2)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    threads = set_threads()

    import nested_learning.training as T
    import torch
    from omegaconf import OmegaConf
    torch.manual_seed(0)
    clock = StepClock(args.warmup, args.windows, args.per_window, BATCH * CONTEXT)
    cfg = build_cfg(args.mode, clock.total_steps)
    t0 = time.perf_counter()
    if args.mode != "readonly":
        def run_loop(config) -> None:
            # run_training_loop prints one line per log interval and its warnings to stdout
            with open(os.devnull, "w") as devnull:
                old, sys.stdout = sys.stdout, devnull
                try:
                    T.run_training_loop(config, device=torch.device("cpu"))
                finally:
                    sys.stdout = old

        flops = step_flops(lambda: run_loop(build_cfg(args.mode, 1)))    # one step of the same loop
        # The package's own loop; a step ends with its AdamW step, which this hook timestamps.
        from torch.optim.optimizer import register_optimizer_step_post_hook
        handle = register_optimizer_step_post_hook(lambda *_: clock.mark())
        clock.start = time.perf_counter()
        run_loop(cfg)
        handle.remove()
        model = None
    else:
        model = T.build_model_from_cfg(cfg.model)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=g)

        def step() -> None:
            logits = model(tokens)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB),
                                                     tokens[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()

        flops = step_flops(step)
        clock.start = time.perf_counter()
        clock.run(step)
    res = clock.result()
    if model is None:
        model = T.build_model_from_cfg(cfg.model)
    import importlib.metadata as md
    emit({
        "side": "peer", "package": "nested-learning", "version": md.version("nested-learning"),
        "torch": torch.__version__, "threads": threads, "mode": args.mode, **res,
        "flops_per_token": flops / (BATCH * CONTEXT),
        "wall_s": time.perf_counter() - t0, "peak_rss_mb_end": peak_rss_mb(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "overrides": {k: v[1] for k, v in OVERRIDES.items()},
    })


if __name__ == "__main__":
    main()
