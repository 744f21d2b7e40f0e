"""An exact per-token interpreter of a checked model: the oracle every fast lowering is tested against.

It executes each memory's declared objective and update rule literally, one token at a time, with
autograd for the inner gradients, in float32 or float64:

- `every token`: the state changes every token; with `chunk C` its gradients are taken at the state
  where the current chunk began (refreshed every C tokens), otherwise at the current state;
- `every P tokens`: reads see the state committed at the last boundary; gradients are taken there;
  the rule runs token by token on a shadow state, which is committed every P tokens;
- `read before` reads come before the token's write, `read after` reads after it (`nldsl.lower`
  orders the work of a token from these dependencies);
- `outer` objectives (teach signal) use δ = ∂(sum of the chunk's per-token losses)/∂(memory output)
  and update once the chunk's last loss is known;
- backprop policies: `through` differentiates every write, `first_order` keeps writes out of the
  graph but lets the initial state's gradient through (state = init + detached delta), `stop`
  detaches the state, `truncate N` detaches it every N chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nldsl.backends import functional as fn
from nldsl.backends.params import make_parameters, views
from nldsl.dataflow import block_output
from nldsl.lower import LoweredBlock, lower_block, memory_key, memory_parts, memory_shapes, parameter_table
from nldsl.ops import OBJECTIVES, OpKind
from nldsl.spec import Block, Memory, Model, Op, Spec


@dataclass
class MemoryState:
    cur: list[torch.Tensor]                      # the evolving state (a shadow state for `every P tokens`)
    ref: list[torch.Tensor]                      # where gradients are taken; what period memories show
    momentum: list[torch.Tensor] | None = None
    adam: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    updates: int = 0                             # Adam's bias-correction count
    pending: list[dict] = field(default_factory=list)     # teach signal: this chunk's reads and coefficients
    losses: list[torch.Tensor] = field(default_factory=list)
    reads: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # this token's (x, y)


@dataclass
class LayerState:
    memories: dict[str, MemoryState]
    conv: dict[str, torch.Tensor] = field(default_factory=dict)        # last K−1 inputs per convolution
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # attention caches


@dataclass
class State:
    """Everything a sequence carries from one token to the next; pass it back to continue a stream."""

    pos: int
    layers: list[LayerState]


@dataclass
class Ctx:
    """What evaluating an expression at one token of one layer can see."""

    block: Block
    view: dict[str, str]                                 # the names this layer's code uses → parameter keys
    layer: LayerState
    h: torch.Tensor
    pos: int                                             # the token's position in the sequence
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    self_memory: Memory | None = None
    self_weights: list[torch.Tensor] | None = None
    fixed_weights: list[torch.Tensor] | None = None      # the same state, as the outer level sees it
    key: tuple[Op, torch.Tensor] | None = None           # dgd's key and its value at this token


def _time_period(m: Memory) -> int:
    assert m.learn is not None
    return m.learn.time.period if m.learn.time.base == "token" else 1


class Reference(nn.Module):
    """`Reference(spec)(tokens)` → logits, one token at a time."""

    def __init__(self, spec: Spec, model: str | None = None, dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        name = model or next(u for u in spec.local_units if u in spec.models)
        self.model: Model = spec.models[name]
        self.dtype = dtype
        table = parameter_table(self.model)
        self.params = make_parameters(table, seed, dtype)
        self.layers: list[tuple[Block, int, LoweredBlock]] = [
            (b, i, lower_block(b)) for b in self.model.blocks for i in range(b.repeat)]
        self.views = views(table, [(b.name, i) for b, i, _ in self.layers])
        self.persistent: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}   # (evolving, committed)
        self.steps = 0

    # ---- states -----------------------------------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        layers = []
        for li, (block, i, _) in enumerate(self.layers):
            mems = {}
            for name, m in block.memories.items():
                if m.learn is None:
                    continue
                cur, ref = self._initial_memory(block, i, self.views[li], m, batch)
                mems[name] = MemoryState(cur=cur, ref=ref)
                rule = m.learn.rule
                if rule.momentum is not None:
                    mems[name].momentum = [torch.zeros_like(w) for w in cur]
                if rule.kind == "adam":
                    mems[name].adam = ([torch.zeros_like(w) for w in cur], [torch.zeros_like(w) for w in cur])
            layers.append(LayerState(memories=mems))
        return State(pos=0, layers=layers)

    def _initial_memory(self, block: Block, layer: int, view: dict[str, str], m: Memory,
                        batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        key = memory_key(block, layer, m)
        if m.scope == "persistent" and key in self.persistent:
            cur, ref = self.persistent[key]
            return list(cur), list(ref)
        lead = 1 if m.scope == "persistent" else batch
        if m.init == "zeros":
            init = [torch.zeros((lead, *s), dtype=self.dtype) for s in memory_shapes(m)]
        else:
            weights = [self.params[view[f"{m.name}/{part}"]] for part in memory_parts(m)]
            init = [w.unsqueeze(0).expand(lead, *w.shape) for w in weights]
        return init, list(init)

    # ---- the sequence -----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None,
                final: bool = True) -> tuple[torch.Tensor, State]:
        """Logits (B, T, vocab) and the state after the last token. `targets` (B, T), default the next
        token, feed teach signals; `final=False` leaves partial chunks open for a stream to continue."""
        batch, length = tokens.shape
        st = state or self.initial_state(batch)
        if targets is None:
            targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
        teach = any(m.learn is not None and m.learn.objective is None for b, _, _ in self.layers
                    for m in b.memories.values())
        embed, unembed = self.params["embed"], self.params["unembed"]
        logits = []
        with torch.enable_grad() if teach else nullcontext():   # δ needs autograd even when evaluating
            for t in range(length):
                h = embed[tokens[:, t]]
                for li, (block, _, lowered) in enumerate(self.layers):
                    h = self._token(block, self.views[li], lowered, st.layers[li], h, st.pos)
                logit = fn.rmsnorm(h, self.params["final_norm"]) @ unembed
                logits.append(logit)
                if teach:
                    loss = F.cross_entropy(logit, targets[:, t], ignore_index=-100, reduction="none")
                    self._teach(st, loss, st.pos, last=final and t == length - 1)
                st.pos += 1
            if final:
                self._end_of_sequence(st)
        return torch.stack(logits, dim=1), st

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, _ = self(tokens)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())

    def _end_of_sequence(self, st: State) -> None:
        """Flush partial periods, commit per-step memories whose step has come, and keep persistent
        memories for the next sequence."""
        self.steps += 1
        for li, (block, layer, _) in enumerate(self.layers):
            for name, ms in st.layers[li].memories.items():
                m = block.memories[name]
                assert m.learn is not None
                time = m.learn.time
                if m.learn.objective is not None and time.base == "token" and time.period > 1:
                    ms.ref = list(ms.cur)
                if time.base == "step" and self.steps % time.period == 0:
                    ms.ref = list(ms.cur)
                if m.scope == "persistent":
                    self.persistent[memory_key(block, layer, m)] = ([w.detach().clone() for w in ms.cur],
                                                           [w.detach().clone() for w in ms.ref])

    # ---- one token of one layer -------------------------------------------------------------------
    def _token(self, block: Block, view: dict[str, str], lowered: LoweredBlock, ls: LayerState, h: torch.Tensor,
               pos: int) -> torch.Tensor:
        ctx = Ctx(block=block, view=view, layer=ls, h=h, pos=pos)
        for name, ms in ls.memories.items():
            learn = block.memories[name].learn
            assert learn is not None
            if learn.time.base != "token":
                continue
            unit = learn.chunk * learn.time.period
            if learn.backprop == "truncate" and pos and pos % unit == 0 and (pos // unit) % learn.truncate == 0:
                ms.cur = [w.detach() for w in ms.cur]     # truncated backprop: forget older writes
                ms.ref = [w.detach() for w in ms.ref]
            if learn.time.period == 1 and pos % learn.chunk == 0:
                ms.ref = list(ms.cur)                     # a new chunk: gradients are taken at this state
        for step in lowered.order:
            if step.kind == "assign":
                ctx.values[step.index] = self._eval(block.assignments[step.index].expr, ctx)
            else:
                self._update(block.memories[step.memory], ls.memories[step.memory], ctx, pos)
        for name, ms in ls.memories.items():   # teach-signal memories: remember this token's reads
            m = block.memories[name]
            assert m.learn is not None
            if m.learn.objective is None:
                ms.pending.append({"reads": ms.reads, "coeffs": self._coefficients(m, ctx)})
                ms.reads = []
        out = block_output(block)
        return ctx.values[out] if out is not None else h

    def _visible(self, m: Memory, ms: MemoryState) -> list[torch.Tensor]:
        assert m.learn is not None
        period_like = _time_period(m) > 1 or m.learn.time.base == "step"
        return ms.ref if period_like else ms.cur

    def _weights(self, ctx: Ctx, m: Memory) -> list[torch.Tensor]:
        if m.learn is None:
            return [self._param(ctx, f"{m.name}/{part}") for part in memory_parts(m)]
        return self._visible(m, ctx.layer.memories[m.name])

    # ---- expressions ------------------------------------------------------------------------------
    def _eval(self, op: Op, ctx: Ctx) -> torch.Tensor:
        return EVALUATE[op.op](self, op, ctx)

    def _fixed(self, op: Op, ctx: Ctx) -> torch.Tensor:
        """self(...) inside reads the state off the inner gradient's leaves."""
        leaves, ctx.self_weights = ctx.self_weights, ctx.fixed_weights
        try:
            return self._eval(op.args[0], ctx)
        finally:
            ctx.self_weights = leaves

    def _state(self, op: Op, ctx: Ctx) -> torch.Tensor:
        m = ctx.block.memories[op.attrs["memory"]]
        w = ctx.self_weights if op.attrs.get("self") else self._weights(ctx, m)
        assert w is not None
        return w[0].flatten(-2)

    def _self(self, op: Op, ctx: Ctx) -> torch.Tensor:
        m = ctx.self_memory
        assert m is not None and ctx.self_weights is not None
        key = ctx.key
        x = key[1] if key is not None and op.args[0].structure() == key[0].structure() else self._eval(op.args[0], ctx)
        return self._apply(m, ctx.self_weights, x)

    def _param(self, ctx: Ctx, name: str) -> torch.Tensor:
        return self.params[ctx.view[name]]

    def _apply(self, m: Memory, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        s = m.structure
        return fn.memory_apply(s.kind, weights, x, m.heads, s.act, s.residual, s.norm)

    def _conv(self, ctx: Ctx, name: str, x: torch.Tensor) -> torch.Tensor:
        weight = self._param(ctx, name)
        k = weight.shape[1]
        hist = ctx.layer.conv.get(name)
        if hist is None:
            hist = torch.zeros(x.shape[0], k - 1, x.shape[-1], dtype=x.dtype)
        window = torch.cat([hist, x.unsqueeze(1)], dim=1)
        ctx.layer.conv[name] = window[:, 1:]
        return fn.conv_window(window, weight)

    def _read(self, op: Op, ctx: Ctx) -> torch.Tensor:
        m = ctx.block.memories[op.attrs["memory"]]
        args = [self._eval(x, ctx) for x in op.args]
        if not m.parametric:
            return self._attention(m, op, ctx, *args)
        y = self._apply(m, self._weights(ctx, m), args[0])
        if m.learn is not None and m.learn.objective is None:   # teach signal: δ will be taken at y
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            ctx.layer.memories[m.name].reads.append((args[0], y))
        return y

    def _attention(self, m: Memory, op: Op, ctx: Ctx, q: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor) -> torch.Tensor:
        site = f"{m.name}@{op.span.line}:{op.span.col}"
        keys, values = ctx.layer.kv.get(site, (k[:, None, :0], v[:, None, :0]))
        keys = torch.cat([keys, k.unsqueeze(1)], dim=1) if keys.shape[-1] else k.unsqueeze(1)
        values = torch.cat([values, v.unsqueeze(1)], dim=1) if values.shape[-1] else v.unsqueeze(1)
        if m.structure.window:
            keys, values = keys[:, -m.structure.window:], values[:, -m.structure.window:]
        ctx.layer.kv[site] = (keys, values)
        heads = m.heads
        qh = q.unflatten(-1, (heads, -1))                        # (B, H, d)
        kh = keys.unflatten(-1, (heads, -1))                     # (B, t, H, d)
        vh = values.unflatten(-1, (heads, -1))
        scores = torch.einsum("bhd,bthd->bht", qh, kh) / qh.shape[-1] ** 0.5
        return torch.einsum("bht,bthd->bhd", scores.softmax(-1), vh).flatten(-2)

    # ---- writes -----------------------------------------------------------------------------------
    def _coefficients(self, m: Memory, ctx: Ctx) -> dict[str, torch.Tensor | None]:
        assert m.learn is not None
        rule = m.learn.rule
        out: dict[str, torch.Tensor | None] = {}
        for k in ("lr", "retain", "momentum", "precond"):
            e = getattr(rule, k)
            out[k] = None if e is None else self._eval(e, ctx)
        return out

    @staticmethod
    def _decorrelated(m: Memory, weights: list[torch.Tensor], key: torch.Tensor | None) -> list[torch.Tensor | None]:
        """dgd's input x (B, H, in) of each layer its `decorrelate` picks, in the read self(k) at the
        state the gradient is taken at (the first layer's is the key); None for the other layers."""
        assert m.learn is not None
        if key is None:
            return [None] * len(weights)
        inputs = fn.decorrelated_inputs(m.learn.rule.decorrelated(len(weights)), weights, key, m.heads, m.structure.act)
        return [x if x is None else x.squeeze(-2) for x in inputs]

    def _update(self, m: Memory, ms: MemoryState, ctx: Ctx, pos: int) -> None:
        learn = m.learn
        assert learn is not None and learn.objective is not None
        if learn.time.base == "never":
            return
        policy = learn.backprop
        persistent = m.scope == "persistent"
        batch = ctx.h.shape[0]
        ref = [w.expand(batch, *w.shape[1:]) for w in ms.ref] if persistent else ms.ref
        # a fresh node per weight: the inner gradient flows through the self(...) calls only, not
        # through values the memory produced earlier (self-generated keys are data to the objective)
        leaves = [w.clone() if w.requires_grad else w.detach().requires_grad_(True) for w in ref]
        # dgd's key is one value per token, the one its self(...) call reads: evaluated once, since a
        # convolution or attention read in it advances its cache each time it is evaluated
        key = self._eval(learn.key, ctx) if learn.rule.kind == "dgd" and learn.key is not None else None
        with torch.enable_grad():
            ctx.self_memory, ctx.self_weights, ctx.fixed_weights = m, leaves, ref
            ctx.key = None if key is None else (learn.key, key)
            loss = self._eval(learn.objective, ctx).sum()
            ctx.self_memory = ctx.self_weights = ctx.fixed_weights = ctx.key = None
            graph = policy in ("through", "truncate") and torch.is_grad_enabled() and loss.requires_grad
            grads = torch.autograd.grad(loss, leaves, create_graph=graph, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, leaves, strict=True)]
        self._step(m, ms, list(grads), self._coefficients(m, ctx), persistent, batch, self._decorrelated(m, ref, key))
        period = _time_period(m)
        if learn.time.base == "token" and period > 1 and (pos + 1) % period == 0:
            ms.ref = list(ms.cur)

    def _step(self, m: Memory, ms: MemoryState, grads: list[torch.Tensor], coeffs: dict, persistent: bool,
              batch: int, inputs: list[torch.Tensor | None] | None = None) -> None:
        """One application of the update rule to the evolving state (`inputs`: dgd's, `_decorrelated`)."""
        learn = m.learn
        assert learn is not None
        policy = learn.backprop
        detach = policy in ("first_order", "stop")
        cur = [w.expand(batch, *w.shape[1:]) for w in ms.cur] if persistent else ms.cur
        if detach:
            grads = [g.detach() for g in grads]
            coeffs = {k: (v.detach() if v is not None else None) for k, v in coeffs.items()}
            inputs = None if inputs is None else [x if x is None else x.detach() for x in inputs]
        new = fn.rule_step(learn.rule, m.heads, [w.detach() if detach else w for w in cur], grads, coeffs, ms,
                           inputs)
        if policy == "first_order":
            new = [w + (n - w.detach()) for w, n in zip(cur, new, strict=True)]
        if persistent:    # one state shared by every sequence: writes are averaged over the batch
            new = [n.mean(0, keepdim=True) for n in new]
        ms.cur = new

    def _teach(self, st: State, loss: torch.Tensor, pos: int, last: bool) -> None:
        """After a token's loss: teach-signal memories whose chunk ends here learn from δ."""
        for li, (block, _, _) in enumerate(self.layers):
            for name, ms in st.layers[li].memories.items():
                m = block.memories[name]
                assert m.learn is not None
                if m.learn.objective is not None:
                    continue
                ms.losses.append(loss)
                # a per-step memory's window is the whole sequence; it commits between steps
                per_step = m.learn.time.base == "step"
                if (per_step or (pos + 1) % _time_period(m)) and not last:
                    continue
                total = torch.stack(ms.losses).sum()
                ys = [y for record in ms.pending for _, y in record["reads"]]
                deltas = torch.autograd.grad(total, ys, retain_graph=True, allow_unused=True) if ys else []
                deltas = [torch.zeros_like(y) if d is None else d for d, y in zip(deltas, ys, strict=True)]
                i = 0
                batch = loss.shape[0]
                shared = m.scope == "persistent"     # each sequence's own gradient; _step averages the writes
                for record in ms.pending:
                    leaves = [(w.expand(batch, *w.shape[1:]) if shared else w).detach().requires_grad_(True)
                              for w in ms.ref]
                    with torch.enable_grad():
                        inner = sum((self._apply(m, leaves, x.detach()) * deltas[i + j].detach()).sum()
                                    for j, (x, _) in enumerate(record["reads"]))
                    i += len(record["reads"])
                    grads = torch.autograd.grad(inner, leaves, allow_unused=True) if record["reads"] else \
                        [None] * len(leaves)
                    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, leaves, strict=True)]
                    self._step(m, ms, grads, record["coeffs"], m.scope == "persistent", batch)
                if not per_step:
                    ms.ref = list(ms.cur)
                ms.pending, ms.losses = [], []


# ---- how each op evaluates: one entry per op a checked model can hold (tests/test_ops.py) ---------
Evaluate = Callable[[Reference, Op, Ctx], torch.Tensor]


def _of_args(f: Callable[..., torch.Tensor]) -> Evaluate:
    """An op that is `f` of its evaluated arguments."""
    return lambda r, op, ctx: f(*(r._eval(a, ctx) for a in op.args))


def _broadcast(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Evaluate:
    """A binary op, its operands aligned like the compiled code's (`fn.broadcast_pair`)."""
    return _of_args(lambda a, b: f(*fn.broadcast_pair(a, b)))


def _norm(f: Callable[..., torch.Tensor]) -> Evaluate:
    return lambda r, op, ctx: f(r._eval(op.args[0], ctx), r._param(ctx, op.attrs["param"]), op.attrs["groups"])


def _reduce(mean: bool) -> Evaluate:
    return lambda r, op, ctx: fn.reduce(r._eval(op.args[0], ctx), op.attrs["groups"], mean=mean)


def _objective(r: Reference, op: Op, ctx: Ctx) -> torch.Tensor:
    pred, target = (r._eval(a, ctx) for a in op.args)
    return fn.objective(str(op.op), pred, target, op.attrs.get("delta", 1.0))


EVALUATE: dict[OpKind, Evaluate] = {
    OpKind.CONST: lambda r, op, ctx: torch.tensor(op.attrs["value"], dtype=r.dtype),
    OpKind.INPUT: lambda r, op, ctx: ctx.h,
    OpKind.VALUE: lambda r, op, ctx: ctx.values[op.attrs["index"]],
    OpKind.PARAM: lambda r, op, ctx: r._param(ctx, op.attrs["name"]),
    OpKind.STATE: Reference._state,
    OpKind.ADD: _broadcast(torch.add),
    OpKind.SUB: _broadcast(torch.sub),
    OpKind.MUL: _broadcast(torch.mul),
    OpKind.DIV: _broadcast(torch.div),
    OpKind.POW: _broadcast(torch.pow),
    OpKind.MIN: _broadcast(torch.minimum),
    OpKind.MAX: _broadcast(torch.maximum),
    OpKind.MATMUL: lambda r, op, ctx: r._eval(op.args[0], ctx) @ r._param(ctx, op.args[1].attrs["name"]),
    OpKind.NEG: _of_args(torch.neg),
    **{OpKind(name): _of_args(f) for name, f in fn.UNARY.items()},
    OpKind.STOPGRAD: _of_args(torch.Tensor.detach),
    OpKind.FIXED: Reference._fixed,
    OpKind.RMSNORM: _norm(fn.rmsnorm),
    OpKind.LAYERNORM: _norm(fn.layernorm),
    OpKind.L2NORM: lambda r, op, ctx: fn.l2norm(r._eval(op.args[0], ctx), op.attrs["groups"]),
    OpKind.SUM: _reduce(mean=False),
    OpKind.MEAN: _reduce(mean=True),
    OpKind.CONV: lambda r, op, ctx: r._conv(ctx, op.attrs["param"], r._eval(op.args[0], ctx)),
    OpKind.ROPE: lambda r, op, ctx: fn.rope(r._eval(op.args[0], ctx), torch.tensor(ctx.pos), op.attrs["groups"],
                                            op.attrs["base"]),
    **{kind: _objective for kind in OBJECTIVES},
    OpKind.READ: Reference._read,
    OpKind.SELF: Reference._self,
}
