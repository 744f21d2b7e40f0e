"""What generated models call for everything that carries state across tokens.

A generated model runs a sequence segment by segment (a segment is as long as the shortest period
of the model's memories, or the whole sequence when nothing forces a cut). Inside a segment every
operation is vectorized over its tokens; the objects here carry what crosses segment boundaries:
memory states (`Mem`), convolution histories and attention caches (`Cache`), and the teach-signal
windows. The kernels are named after `nldsl.lower.Kernel`, and generated code calls the one
lowering chose for each memory; nothing here dispatches on what a memory is:

- `chunk_linear_attention` / `chunk_delta_rule`: a chunkwise kernel (`chunkwise`) fused with the
  memory's read;
- `period_gd` / `period_momentum` / `period_dgd`: gradients of all the segment's tokens at the
  committed state in one vector-Jacobian product, weighted so that the rule's recurrence
  (retention, momentum) is applied in closed form; each layer dgd decorrelates runs the
  delta-rule kernel.
  Reads (`read_committed`) see the committed state;
- `generic_update`: per-token gradients (`torch.func`) and the rule applied token by token;
- `teach`: δ = ∂(the window's losses)/∂(outputs) by autograd once the window's last loss is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.func import grad, vjp, vmap

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime import chunkwise
from nldsl.backends.torch.runtime.memspec import NEVER, MemSpec, Rule
from nldsl.backends.torch.runtime.recurrences import cumulative_log, momentum_end
from nldsl.backends.torch.runtime.tape import Tape, follows, weighted_grads

Objective = Callable[..., torch.Tensor]   # (weights, probe, *values, at=state of the gradient) → losses (..., H)
__all__ = ["NEVER", "MemSpec", "Rule"]   # re-exported: runtime/calls.py lists what generated code calls


@dataclass
class Mem:
    spec: MemSpec
    cur: list[torch.Tensor]                      # evolving (shadow) state, (B, H, out, in) per layer
    ref: list[torch.Tensor]                      # committed state: gradients are taken here
    seen: list[torch.Tensor] = field(default_factory=list)   # committed state at the segment's start
    momentum: list[torch.Tensor] | None = None
    adam: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    updates: int = 0
    fired: bool = False
    window: list[dict] = field(default_factory=list)          # teach signal: reads and coefficients
    losses: list[torch.Tensor] = field(default_factory=list)  # teach signal: the window's token losses
    scratch: list[dict] = field(default_factory=list)         # this segment's teach-signal reads
    probes: list[torch.Tensor] = field(default_factory=list)  # this segment's teach-signal probes, one per read

    @classmethod
    def start(cls, spec: MemSpec, init: list[torch.Tensor]) -> Mem:
        ref = [w.view_as(w) for w in init]    # never the shadow's own objects (see `commit`)
        m = cls(spec=spec, cur=list(init), ref=ref, seen=list(ref))
        if spec.rule.momentum:
            m.momentum = [torch.zeros_like(w) for w in init]
        if spec.rule.kind == "adam":
            m.adam = ([torch.zeros_like(w) for w in init], [torch.zeros_like(w) for w in init])
        return m


@dataclass
class Cache:
    """Convolution histories and attention keys/values carried from segment to segment. They
    start as zeros / empty, so a segment's code does not depend on whether one came before it."""

    conv: dict[str, torch.Tensor] = field(default_factory=dict)
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    positions: torch.Tensor | None = None    # the segment's tokens' positions in the sequence (T,), for rope

    @classmethod
    def start(cls, batch: int, convs: dict[str, tuple[int, int]], sites: dict[str, tuple[int, int]],
              dtype: torch.dtype, device: torch.device | None = None) -> Cache:
        """`convs`: name → (width, kernel); `sites`: attention read → (key width, value width)."""
        grad = torch.is_grad_enabled()    # later histories carry gradients: keep the same tensor kind

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device, requires_grad=grad)

        return cls(conv={n: zeros(batch, k - 1, w) for n, (w, k) in convs.items()},
                   kv={s: (zeros(batch, 0, kw), zeros(batch, 0, vw)) for s, (kw, vw) in sites.items()})


# ---- stateless reads and sequence ops -----------------------------------------------------------

def apply(spec: MemSpec, weights: list[torch.Tensor], x: torch.Tensor, probe: torch.Tensor | None = None):
    """A memory read: x (B, S, H*in) or one token (B, H*in); weights (B, H, o, i) per sequence, or
    parameters (H, o, i). A per-sequence state is broadcast over the segment's tokens. Inside a
    period kernel's objective the weights are a `Tape`, which follows the read for its pullback."""
    if isinstance(weights, Tape):
        return weights.read(spec, x, probe)
    return fn.memory_apply(spec.kind, weights, x, spec.heads, spec.act, spec.residual, spec.norm, probe)


def state_of(weights: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """An elementwise memory's state as a value: (B, H*in), or (B, 1, H*in) beside a segment."""
    if isinstance(weights, Tape):     # a state used as a value: beyond what the tape follows
        weights.opaque = True
        weights = weights.weights
    s = weights[0].flatten(-2)
    return s.unsqueeze(1) if like.dim() == 3 and s.dim() == 2 else s


def teach_objective(spec: MemSpec) -> Objective:
    """Σ_reads ⟨M(x), δ⟩ per head and token, for the pairs (x, δ) of each read the block makes of the
    memory: its gradient at M is the teach signal pulled back through the memory. A token's reads
    are one term of its loss, so rules that weigh tokens (momentum, retention) weigh them alike."""
    def objective(weights, probe, *pairs, at):
        return sum(fn.groups_of(apply(spec, weights, x) * delta, spec.heads).sum(-1)
                   for x, delta in zip(pairs[::2], pairs[1::2], strict=True))
    return objective


def conv(cache: Cache, name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A causal depthwise convolution of a segment (B, S, w), the history from the cache; weight
    (w, K), the current token last. Written as K shifted products rather than `conv1d`: at a
    segment's few tokens the compiler fuses them into one loop, forward and backward, where the
    library's depthwise convolution backward cost ~0.3 ms a call (measured on Hope at dim 128)."""
    k, length = weight.shape[1], x.shape[1]
    full = torch.cat([cache.conv[name], x], 1)
    cache.conv[name] = full[:, full.shape[1] - (k - 1):].contiguous()
    return sum(full[:, j:j + length] * weight[:, j] for j in range(k))


def attention(cache: Cache, site: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              window: int) -> torch.Tensor:
    """Causal softmax attention of a segment's queries over every key so far (or the last `window`)."""
    old = cache.kv[site]
    keys, values = torch.cat([old[0], k], 1), torch.cat([old[1], v], 1)
    cache.kv[site] = (keys[:, -window:], values[:, -window:]) if window else (keys, values)
    s, t = q.shape[1], keys.shape[1]
    qh = q.unflatten(-1, (heads, -1)).transpose(1, 2)
    kh = keys.unflatten(-1, (heads, -1)).transpose(1, 2)
    vh = values.unflatten(-1, (heads, -1)).transpose(1, 2)
    pos_q = torch.arange(t - s, t, device=q.device).unsqueeze(1)
    pos_k = torch.arange(t, device=q.device).unsqueeze(0)
    allowed = pos_k <= pos_q
    if window:
        allowed = allowed & (pos_k > pos_q - window)
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed)
    return out.transpose(1, 2).flatten(-2)


# ---- reads of learned memories ------------------------------------------------------------------

def read_static(spec: MemSpec, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A memory that does not learn in context: a plain module with the outer level's weights."""
    return apply(spec, weights, x)


def read_current(mem: Mem, x: torch.Tensor) -> torch.Tensor:
    """A memory updated every token, read at its evolving state (segments are one token long)."""
    return apply(mem.spec, mem.cur, x)


def read_committed(mem: Mem, x: torch.Tensor) -> torch.Tensor:
    """A memory whose state is held for a period: the segment's tokens see the state committed
    before it; with `read after`, the last token sees the state committed at the segment's end."""
    spec = mem.spec
    y = apply(spec, mem.seen, x)
    if spec.read_after and mem.fired:
        last = apply(spec, mem.ref, x[:, -1:])
        y = torch.cat([y[:, :-1], last], 1)
    return y


def chunk_linear_attention(mem: Mem, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lr, retain) -> torch.Tensor:
    """A matrix memory learned by gd on a dot objective: its reads and writes over a segment at
    once, as chunkwise (gated) linear attention. q, k, v (B, S, H*d); returns (B, S, H*d)."""
    qh, kh, vh, lr, retain = _split_heads(mem, q, k, v, lr, retain)
    y, state = chunkwise.linear_attention(mem.cur[0], qh, kh, vh, lr, retain, mem.spec.read_after)
    mem.cur = mem.ref = mem.seen = [state]
    return y.flatten(-2)


def chunk_delta_rule(mem: Mem, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lr, erase, retain) -> torch.Tensor:
    """A matrix memory learned by gd or dgd on an l2 objective: its reads and writes over a segment
    at once, as the chunkwise delta rule (WY form); `erase` scales the k kᵀ term (2 lr for dgd)."""
    qh, kh, vh, lr, retain = _split_heads(mem, q, k, v, lr, retain)
    y, state = chunkwise.delta_rule(mem.cur[0], qh, kh, vh, _coef(erase, q), lr, retain, mem.spec.read_after)
    mem.cur = mem.ref = mem.seen = [state]
    return y.flatten(-2)


def _split_heads(mem: Mem, q, k, v, lr, retain):
    heads = mem.spec.heads
    return (*(t.unflatten(-1, (heads, -1)) for t in (q, k, v)), _coef(lr, q), _coef(retain, q))


def _coef(c, like: torch.Tensor):
    """A coefficient as (B, S, 1) or (B, S, H), or None."""
    if c is None:
        return None
    if not isinstance(c, torch.Tensor) or c.dim() == 0:
        return torch.as_tensor(c, dtype=like.dtype, device=like.device).expand(*like.shape[:2], 1)
    return c.expand(*like.shape[:2], c.shape[-1])


# ---- writes -------------------------------------------------------------------------------------

def _detach_for(spec: MemSpec, *things):
    if spec.backprop in ("first_order", "stop"):
        return [_detached(t) for t in things]
    return list(things)


def _detached(t):
    """`t` with every tensor in it detached: tensors, and lists, tuples and dicts of them (the
    coefficients come as a dict)."""
    if isinstance(t, torch.Tensor):
        return t.detach()
    if isinstance(t, list | tuple):
        return type(t)(_detached(x) for x in t)
    if isinstance(t, dict):
        return {k: _detached(v) for k, v in t.items()}
    return t


def _settle(spec: MemSpec, old: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
    """first_order keeps the initial state's gradient (state = init + detached delta)."""
    if spec.backprop == "first_order":
        return [o + (n - o.detach()) for o, n in zip(old, new, strict=True)]
    return new


def _heads(c: torch.Tensor | None, batch: int, length: int, heads: int, like: torch.Tensor) -> torch.Tensor | None:
    """A coefficient → (B, S, H)."""
    if c is None:
        return None
    c = _coef(c, like)
    return c.expand(batch, length, heads) if c.shape[-1] in (1, heads) else c


def stacked(kernel: Callable, mems: list[Mem], spec: MemSpec, objective: Objective, values: tuple,
            **coefficients) -> None:
    """Run `kernel` on identical memories learned by one statement as one memory whose heads are
    theirs side by side (`spec`: their spec with that many heads). Heads never interact, so this
    equals updating each alone."""
    copies = len(mems)
    heads = mems[0].spec.heads

    def tile(t):
        if t is None or not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[-1] == 1:
            return t
        return torch.cat([t] * copies, dim=-1)

    def joined(states: list[list[torch.Tensor]] | None) -> list[torch.Tensor] | None:
        if states is None or states[0] is None:
            return None
        return [torch.cat(ws, dim=1) for ws in zip(*states, strict=True)]

    group = Mem(spec=spec, cur=joined([m.cur for m in mems]), ref=joined([m.ref for m in mems]),
                momentum=joined([m.momentum for m in mems]))
    kernel(group, objective, tuple(tile(v) for v in values), **{k: tile(v) for k, v in coefficients.items()})
    for i, mem in enumerate(mems):   # contiguous parts: the same tensor layout as before the update
        part = slice(i * heads, (i + 1) * heads)
        mem.cur = [w[:, part].contiguous() for w in group.cur]
        if group.momentum is not None:
            mem.momentum = [w[:, part].contiguous() for w in group.momentum]


def merged(spec: MemSpec, copies: int) -> MemSpec:
    """The spec of `copies` identical memories side by side: the same memory with more heads."""
    return replace(spec, heads=spec.heads * copies)


def commit(mem: Mem, fires: bool) -> None:
    """The commit that follows a memory's update in a block. A memory read after its update
    commits here: its segment's last token reads the state committed at the segment's end. Any
    other memory commits after the block (`commit_after_block`): nothing in the block reads its committed
    state again, and a compiled block then has one graph, not one per pattern of periods ending."""
    if mem.spec.read_after:
        commit_now(mem, fires)


def commit_after_block(mem: Mem, fires: bool) -> None:
    """After a segment's block: the commit that `commit` left for now (memories updated in the
    block, not read after their update; a teach-signal memory commits after its own update)."""
    if mem.spec.teach is None and not mem.spec.read_after:
        commit_now(mem, fires)


def commit_now(mem: Mem, fires: bool) -> None:
    """At a period boundary the shadow state becomes the committed one. (A memory updated every
    token has no shadow: its gradient reference moves at chunk starts, in `begin_segment`.)
    The committed tensors are views, never the shadow's own objects: compiled segments then see
    the same aliasing whatever fired before them, and need no recompilation for it."""
    mem.fired = fires and mem.spec.period > 1
    if mem.fired:
        mem.ref = [w.view_as(w) for w in mem.cur]


def begin_segment(mem: Mem, pos: int, batch: int, length: int) -> None:
    """Before a segment of `length` tokens at stream position `pos`: refresh the gradient reference
    and the state the segment reads, and give each teach-signal read its probe (`remember`)."""
    spec = mem.spec
    unit = spec.period * spec.chunk
    if spec.backprop == "truncate" and pos and pos % unit == 0 and (pos // unit) % spec.truncate == 0:
        mem.cur = [w.detach() for w in mem.cur]
        mem.ref = [w.detach() for w in mem.ref]
    if spec.period == 1 and pos % spec.chunk == 0:
        mem.ref = list(mem.cur)
    mem.seen = list(mem.ref)
    mem.fired = False
    mem.scratch = []
    if spec.teach is not None:
        like = mem.ref[0]
        mem.probes = [torch.zeros(batch, length, width, dtype=like.dtype, device=like.device, requires_grad=True)
                      for width in spec.reads]


def _weighted_grads(spec: MemSpec, objective: Objective, theta: list[torch.Tensor], values: tuple,
                    cotangents: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Σ_t c_t ∇θ loss_t for each cotangent c (B, S, H): by hand through the memory's layers where
    the tape follows them (`tape`), else one forward and one pullback per weighting."""
    by_hand = weighted_grads(spec, objective, theta, values, cotangents) if follows(spec) else None
    if by_hand is not None:
        return by_hand[0]
    _, pull = vjp(lambda *th: objective(list(th), None, *values, at=theta), *theta)
    return [list(pull(c)) for c in cotangents]


@dataclass
class _Segment:
    """What the closed forms share: the detached inputs, and the retention's cumulative products."""

    theta: list[torch.Tensor]      # the committed state: where gradients are taken
    cur: list[torch.Tensor]        # the shadow state the writes land on
    values: tuple
    tokens: torch.Tensor           # the first value with a token axis (B, S, w): the segment's shape and dtype
    lr: torch.Tensor               # (B, S, H)
    cum_a: torch.Tensor            # log Γ_t, Γ_t = α_1 ⋯ α_t (B, S, H)
    last_a: torch.Tensor           # log Γ_S (B, H)
    decay_w: torch.Tensor          # Γ_S / Γ_t (B, S, H)
    extra: list                    # the other coefficients, detached like the rest

    def retained(self, w: torch.Tensor) -> torch.Tensor:
        return self.last_a.exp()[..., None, None] * w


def _has_tokens(value) -> bool:
    """An objective's hoisted value with a token axis, (B, S, w): the others are constants and
    parameters, which the objective takes whole."""
    return isinstance(value, torch.Tensor) and value.dim() == 3


def per_token(values: tuple, default: torch.Tensor | None = None) -> torch.Tensor:
    """The first of an objective's hoisted values that has a token axis (else `default`)."""
    found = next((v for v in values if _has_tokens(v)), default)
    assert found is not None, "an objective with no per-token value"
    return found


def _segment(mem: Mem, values: tuple, lr, retain, *extra) -> _Segment:
    spec = mem.spec
    theta, values, lr, retain, cur, *extra = _detach_for(spec, mem.ref, values, lr, retain, mem.cur, *extra)
    like = per_token(values)
    batch, length = like.shape[:2]
    if spec.persistent:     # one state, but each sequence's own gradient: the writes are averaged at the end
        theta = [w.expand(batch, *w.shape[1:]) for w in theta]
        cur = [w.expand(batch, *w.shape[1:]) for w in cur]
    lr = _heads(lr, batch, length, spec.heads, like)
    cum_a = cumulative_log(_heads(retain, batch, length, spec.heads, like)) if retain is not None else \
        torch.zeros_like(lr)
    last_a = cum_a[:, -1]
    return _Segment(theta, cur, values, like, lr, cum_a, last_a, torch.exp(last_a.unsqueeze(1) - cum_a), extra)


def _end_segment(mem: Mem, new: list[torch.Tensor]) -> None:
    if mem.spec.persistent:
        new = [w.mean(0, keepdim=True) for w in new]
    mem.cur = _settle(mem.spec, mem.cur, new)


def period_gd(mem: Mem, objective: Objective, values: tuple, lr, retain=None) -> None:
    """gd over a segment whose gradients all sit at the committed state, in closed form:
    W_S = Γ_S W_0 − Σ_t (Γ_S/Γ_t) lr_t g_t, with Γ the product of the retention gates."""
    seg = _segment(mem, values, lr, retain)
    (grads,) = _weighted_grads(mem.spec, objective, seg.theta, seg.values, [-seg.lr * seg.decay_w])
    _end_segment(mem, [seg.retained(w) + g for w, g in zip(seg.cur, grads, strict=True)])


def period_momentum(mem: Mem, objective: Objective, values: tuple, lr, momentum, retain=None) -> None:
    """gd with momentum β and retention α over a segment, in closed form:
    S_t = β_t S_{t−1} − lr_t g_t,  W_t = α_t W_{t−1} + S_t."""
    seg = _segment(mem, values, lr, retain, momentum, mem.momentum)
    momentum, mom = seg.extra
    batch, length, heads = seg.lr.shape
    cum_b = cumulative_log(_heads(momentum, batch, length, heads, seg.tokens))
    carry, f = momentum_end(seg.lr, cum_b)                  # B_S (B, H, 1, 1); f_u = −lr_u B_S/B_u (B, H, S)
    # e_u = −lr_u Σ_{t≥u} (Γ_S/Γ_t)(B_t/B_u) (the last row of `recurrences.coefficients`);  φ = Σ_t (Γ_S/Γ_t) B_t
    pair = (seg.last_a.unsqueeze(1).unsqueeze(1) - seg.cum_a.unsqueeze(1) + cum_b.unsqueeze(1)
            - cum_b.unsqueeze(2))                                           # [u, t] (B, u, t, H)
    upper = torch.ones(length, length, dtype=torch.bool, device=seg.lr.device).triu()
    e = -seg.lr * pair.masked_fill(~upper[None, :, :, None], float("-inf")).exp().sum(2)
    phi = torch.exp(seg.last_a.unsqueeze(1) - seg.cum_a + cum_b).sum(1)
    grads_w, grads_s = _weighted_grads(mem.spec, objective, seg.theta, seg.values, [e, f.transpose(1, 2)])
    mem.momentum = [carry * s + g for s, g in zip(mom, grads_s, strict=True)]
    _end_segment(mem, [seg.retained(w) + phi[..., None, None] * s + g
                       for w, s, g in zip(seg.cur, mom, grads_w, strict=True)])


def decorrelated(spec: MemSpec, theta: list[torch.Tensor], key: torch.Tensor) -> list[torch.Tensor | None]:
    """dgd's input of each layer its rule decorrelates, (B, H, S, in_j), in the read self(k) of the
    segment's keys (B, S, H*in) at the state the gradients are taken at; None for the other layers."""
    return fn.decorrelated_inputs(spec.rule.decorrelate, theta, key, spec.heads, spec.act)


def dgd_grads(spec: MemSpec, objective: Objective, theta: list[torch.Tensor], values: tuple,
              cotangents: list[torch.Tensor]) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """For each cotangent c (B, S, H), Σ_t c_t ∇ loss_t for the layers dgd does not decorrelate, and
    the per-token error signal δ_j at the output of each layer it does (B, S, H, out_j), first layer
    first: by hand where the tape follows the layers, else by one vector-Jacobian product with
    respect to the other layers and a probe added at each of those outputs."""
    layers = spec.rule.decorrelate
    others = [j for j in range(len(theta)) if j not in layers]
    by_hand = weighted_grads(spec, objective, theta, values, cotangents, others, layers) if follows(spec) else None
    if by_hand is not None:
        return by_hand
    batch, length, heads = cotangents[0].shape
    like = per_token(values)
    probes = [like.new_zeros(batch, length, heads, theta[j].shape[-2]) for j in layers]

    def losses_of(*args):      # the other layers' weights, then the probes
        weights, probe = list(theta), [None] * len(theta)
        for j, w in zip(others, args[:len(others)], strict=True):
            weights[j] = w
        for j, p in zip(layers, args[len(others):], strict=True):
            probe[j] = p
        return objective(weights, probe, *values, at=theta)

    losses, pull = vjp(losses_of, *(theta[j] for j in others), *probes)
    grads = [list(pull(c)[:len(others)]) for c in cotangents]
    return grads, list(pull(torch.ones_like(losses))[len(others):])


def period_dgd(mem: Mem, objective: Objective, values: tuple, lr, key, retain=None) -> None:
    """dgd over a segment: each layer it decorrelates follows W ← W(αI − lr x xᵀ) − lr δ xᵀ, x its
    input, a delta rule whose values are the per-token error signals δ at the layer's output (x and
    δ taken at the committed state); the other layers follow gd in closed form (`dgd_grads`)."""
    seg = _segment(mem, values, lr, retain, key, retain)
    key, alpha = seg.extra
    spec = mem.spec
    batch, length, heads = seg.lr.shape
    (grads,), deltas = dgd_grads(spec, objective, seg.theta, seg.values, [-seg.lr * seg.decay_w])
    alpha = _heads(alpha, batch, length, heads, seg.tokens) if alpha is not None else None
    others, signals = iter(grads), iter(deltas)
    new = []
    for w, x in zip(seg.cur, decorrelated(spec, seg.theta, key), strict=True):
        if x is None:
            new.append(seg.retained(w) + next(others))
            continue
        _, state = chunkwise.delta_rule(w, None, x.transpose(1, 2), -next(signals), seg.lr, seg.lr, alpha,
                                        read_after=True)
        new.append(state)
    _end_segment(mem, new)


def generic_update(mem: Mem, objective: Objective, values: tuple, lr, retain=None, momentum=None, precond=None,
                   key=None) -> None:
    """Per-token gradients at the reference state (`torch.func`), then the rule token by token."""
    spec = mem.spec
    coeffs = {"lr": lr, "retain": retain, "momentum": momentum, "precond": precond}
    like = per_token(values, key)
    theta, values, cur, coeffs, key = _detach_for(spec, mem.ref, values, mem.cur, coeffs, key)
    if spec.backprop in ("first_order", "stop"):
        mem.momentum = _detached(mem.momentum)

    def total(th, *vals):     # `at` is theta as below: expanded over the batch for a persistent memory
        return objective(list(th), None, *vals, at=theta).sum()

    if spec.persistent:     # one state, but each sequence's own gradient: the writes are averaged below
        theta = [w.expand(like.shape[0], *w.shape[1:]) for w in theta]
        cur = [w.expand(like.shape[0], *w.shape[1:]) for w in cur]
    # over tokens: per-token values along their token axis; constants and parameters whole
    token_axes = tuple(1 if _has_tokens(v) else None for v in values)
    grads = vmap(grad(total), in_dims=(None, *token_axes), out_dims=1)(tuple(theta), *values)
    inputs = decorrelated(spec, theta, key) if spec.rule.kind == "dgd" else [None] * len(theta)
    new = cur
    coeffs = {k: (torch.as_tensor(v, dtype=like.dtype) if v is not None and not isinstance(v, torch.Tensor) else v)
              for k, v in coeffs.items()}
    for t in range(like.shape[1]):
        step = {k: (v[:, t] if isinstance(v, torch.Tensor) and v.dim() >= 2 else v) for k, v in coeffs.items()}
        new = fn.rule_step(spec.rule, spec.heads, new, [g[:, t] for g in grads], step, mem,
                           [x if x is None else x[:, :, t] for x in inputs])
        if spec.persistent:     # the shared state takes the mean of the sequences' writes, token by token
            new = [w.mean(0, keepdim=True).expand_as(w) for w in new]
    if spec.persistent:
        new = [w[:1] for w in new]
    mem.cur = _settle(spec, mem.cur, new)


# ---- teach signals ------------------------------------------------------------------------------

def remember(mem: Mem, x: torch.Tensor) -> torch.Tensor:
    """A teach-signal memory's read, plus its probe: a zero made outside the block (`begin_segment`),
    whose gradient is the read's δ once its window's losses are known. A compiled block's outputs
    do not show autograd how the block used them, so δ is asked of the probe, a block input, never
    of the read's result."""
    y = read_committed(mem, x)
    read = list(mem.seen) if y.requires_grad and not mem.spec.read_after else None   # the state y is a function of
    probe = mem.probes[len(mem.scratch)]
    mem.scratch.append({"x": x, "probe": probe, "read": read, "lr": None, "retain": None, "momentum": None,
                        "precond": None})
    return y + probe


def teach_coefficients(mem: Mem, lr, retain=None, momentum=None, precond=None) -> None:
    """The coefficients of this segment's teach-signal reads, known once the block has run."""
    for record in mem.scratch:
        record.update(lr=lr, retain=retain, momentum=momentum, precond=precond)


def _reads_committed(mem: Mem) -> bool:
    """Whether the teach update is the window's loss gradient at the state its reads used: plain
    gd at one constant rate (`period_gd`, no retention), per sequence, the write detached from the
    state (first order or stop), and every read of the window at the committed state itself, which
    no other window read (a period's commit gives each window its own) and which autograd tracks (a
    state made under no_grad, as in evaluation, is not). Then Σ_t ∇⟨M(x_t), δ_t⟩ is
    what the window's backward pass leaves on those tensors, with no second pass through the memory."""
    spec, window = mem.spec, mem.window
    lrs = {r["lr"] for r in window}
    plain = spec.teach is period_gd and spec.backprop in ("first_order", "stop") and not spec.persistent \
        and spec.period > 1 and not spec.steps and len(lrs) == 1 and isinstance(next(iter(lrs)), int | float) \
        and all(r[k] is None for r in window for k in ("retain", "momentum", "precond"))
    return plain and all(w.requires_grad for w in mem.ref) and all(
        r["read"] is not None and all(a is b for a, b in zip(r["read"], mem.ref, strict=True)) for r in window)


def teach(mems: list[Mem], losses: torch.Tensor, at_state: bool = False) -> None:
    """δ = ∂(sum of the window's per-token losses)/∂y for every read in the window, then the
    memory's rule on Σ_t ⟨M(x_t), δ_t⟩ at the committed state, by the kernel lowering chose
    (`MemSpec.teach`). Memories whose windows end together share one backward pass.

    `at_state` (compiled blocks): for plain gd (`_reads_committed`) the backward pass stops at the
    committed state, a block input, and the update is its gradient there, with no second pass
    through the memory. (Eager takes δ at the reads' probes: its products are the same whatever
    the batch, so scores stay exactly batch-invariant.)"""
    direct = [at_state and _reads_committed(mem) for mem in mems]
    wanted = [t for mem, at_state in zip(mems, direct, strict=True)
              for t in (mem.ref if at_state else [r["probe"] for r in mem.window])]
    grads = iter(torch.autograd.grad(losses.sum(), wanted, retain_graph=True, allow_unused=True))
    for mem, at_state in zip(mems, direct, strict=True):
        if at_state:
            lr = mem.window[0]["lr"]
            mem.window = []
            gs = [next(grads) for _ in mem.ref]
            _end_segment(mem, [w.detach() if g is None else w.detach() - lr * g for w, g in zip(mem.cur, gs,
                                                                                                   strict=True)])
            continue
        for r in mem.window:
            d = next(grads)
            r["delta"] = torch.zeros_like(r["probe"]) if d is None else d.detach()
        # the window's records run segment by segment, each segment's reads in the block's order:
        # read i of every segment, joined along time, is one (x, δ) pair of the objective
        reads = len(mem.spec.reads)
        pairs = tuple(torch.cat([r[key].detach() for r in mem.window[i::reads]], 1)
                      for i in range(reads) for key in ("x", "delta"))
        firsts = mem.window[::reads]      # a segment's reads share its coefficients
        cat = {k: (torch.cat([_coef(r[k], r["x"]) for r in firsts], 1) if firsts[0][k] is not None else None)
               for k in ("lr", "retain", "momentum", "precond")}
        mem.window = []
        assert mem.spec.teach is not None
        mem.spec.teach(mem, teach_objective(mem.spec), pairs, **{k: v for k, v in cat.items() if v is not None})
