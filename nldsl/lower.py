"""Stage 4, lower: a checked model → the facts every backend executes the same way.

- the parameter table: canonical names, shapes and initializations, shared by the reference
  interpreter and the compiled module so one can be loaded into the other;
- the order of work inside one token: assignments and memory updates, from their dependencies
  (a read-after read waits for the write; a write waits for every read-before read);
- the algorithm each memory is bound to, chosen from its pattern (structure, objective, rule,
  time), never from the spec's name.
"""

from __future__ import annotations

from math import gcd
from typing import Literal

from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import learn_exprs
from nldsl.spec import Block, Memory, Model, Op, Param

Init = Literal["normal", "zeros", "ones", "eye", "conv", "layernorm"]
SHARED = "model"     # the owner of parameters declared at model level, outside any block


class ParamInfo(BaseModel):
    """One outer-level tensor: where it lives in the model, its shape and how it starts.

    Its `key` is the one name the compiled model, the reference interpreter, the trainer and
    checkpoints use; nothing recovers these fields by parsing a key."""

    model_config = ConfigDict(frozen=True)

    owner: str | None = None     # None: the model's own tensors (embed, unembed, final_norm);
    #                              SHARED: declared at model level; else the block's name
    layer: int | None = None     # which repetition of the block
    local: str                   # the spec's name: a parameter, or the memory whose state this is
    part: str | None = None      # a memory's state tensor: w0, w1, ... (weights) or s (elementwise)
    shape: tuple[int, ...]
    init: Init
    std: float = 0.02
    trainable: bool = True

    @property
    def key(self) -> str:
        """`embed`, `model/W`, `layer/0/W_q`, `layer/0/M_k/w0`. The parts are identifiers and one
        number, joined by a character no identifier holds, so two tensors never share a key; and
        a key with a `/` is never the name of a module attribute."""
        parts = [self.owner, None if self.layer is None else str(self.layer), self.local, self.part]
        return "/".join(p for p in parts if p is not None)

    @property
    def view_name(self) -> str:
        """How a block's code names it: `W_q`, or `M_k/w0` for a memory's state."""
        return self.local if self.part is None else f"{self.local}/{self.part}"


def state_parts(kind: str, tensors: int) -> list[str]:
    """Names of a memory's state tensors: one per weight matrix (mlp, matrix) or `s` (elementwise)."""
    return ["s"] if kind == "elementwise" else [f"w{j}" for j in range(tensors)]


def memory_parts(m: Memory) -> list[str]:
    return state_parts(m.structure.kind, len(memory_shapes(m)))


def memory_key(block: Block, layer: int, m: Memory) -> str:
    """The name of one layer's copy of a memory (persistent states, checkpoints)."""
    return f"{block.name}/{layer}/{m.name}"


def memory_shapes(m: Memory) -> list[tuple[int, ...]]:
    if m.structure.kind == "elementwise":
        return [(m.heads, m.structure.in_dim)]
    return [(m.heads, o, i) for o, i in m.structure.layer_shapes()]


def _memory_params(block: Block, layer: int, m: Memory) -> list[ParamInfo]:
    """Tensors holding a memory's initial state, or its weights for a static memory. Static memories
    and learned initial states are trained by the outer optimizer; zero or identity initial states of
    a memory that learns in context are constants."""
    static = m.learn is None
    if not m.parametric or (m.init == "zeros" and not static):
        return []
    out = []
    shapes = memory_shapes(m)
    last = len(shapes) - 1
    trainable = not m.frozen and (static or m.init == "learned")
    for j, (part, shape) in enumerate(zip(memory_parts(m), shapes, strict=True)):
        if m.init == "identity":
            init: Init = "eye" if m.structure.kind == "matrix" else ("zeros" if j == last else "normal")
        elif m.init == "zeros":
            init = "zeros"
        else:
            init = "normal"
        std = shape[-1] ** -0.5 if len(shape) == 3 else 0.02
        if m.structure.residual and j == last:
            std = 0.02
        out.append(ParamInfo(owner=block.name, layer=layer, local=m.name, part=part, shape=shape, init=init,
                             std=std, trainable=trainable))
    return out


def _param(p: Param, owner: str | None, layer: int | None) -> ParamInfo:
    """A declared (or built-in-created) parameter; its initialization comes from the declaration,
    never from its name."""
    std = 0.0
    if p.init == "normal":
        std = p.shape[0] ** -0.5 if len(p.shape) == 2 else 0.02
    return ParamInfo(owner=owner, layer=layer, local=p.name, shape=p.shape, init=p.init, std=std,
                     trainable=not p.frozen)


def parameter_table(model: Model) -> dict[str, ParamInfo]:
    """Every outer-level tensor of the model, by key."""
    infos: list[ParamInfo] = []
    for name, p in model.params.items():
        if name in ("embed", "unembed"):
            infos.append(ParamInfo(local=name, shape=p.shape, init="normal", std=0.02))
        elif name == "final_norm":
            infos.append(ParamInfo(local=name, shape=p.shape, init="ones"))
        else:
            infos.append(_param(p, SHARED, None))
    for block in model.blocks:
        for layer in range(block.repeat):
            infos += [_param(p, block.name, layer) for p in block.params.values()]
            for m in block.memories.values():
                infos += _memory_params(block, layer, m)
    table = {info.key: info for info in infos}
    assert len(table) == len(infos), "two parameters share a key"   # the checker keeps names unique
    return table


def layer_view(table: dict[str, ParamInfo], block: str, layer: int) -> dict[str, str]:
    """The names a block's code uses for the tensors one of its layers sees (the model's own and
    shared ones, and the layer's), each mapped to its key."""
    return {info.view_name: key for key, info in table.items()
            if info.owner in (None, SHARED) or (info.owner == block and info.layer == layer)}


def init_tensor(info: ParamInfo, generator, dtype):
    """A freshly initialized tensor for one parameter (torch imported lazily: the front end has no torch)."""
    import torch

    shape = info.shape
    if info.init == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype) * info.std
    if info.init == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if info.init == "ones":
        return torch.ones(shape, dtype=dtype)
    if info.init == "eye":
        return torch.eye(shape[-1], dtype=dtype).expand(shape).clone()
    if info.init == "layernorm":
        return torch.stack([torch.ones(shape[1], dtype=dtype), torch.zeros(shape[1], dtype=dtype)])
    t = torch.zeros(shape, dtype=dtype)   # conv: the identity on the current token
    t[:, -1] = 1.0
    return t


# ---- the order of work inside one token ---------------------------------------------------------

class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["assign", "update"]
    index: int = -1          # assignment index
    memory: str = ""         # memory updated


def _reads(ops: list[Op]) -> set[str]:
    return {o.attrs["memory"] for e in ops for o in e.walk() if o.op in ("read", "state") and not o.attrs.get("self")}


def _values(ops: list[Op]) -> set[int]:
    return {o.attrs["index"] for e in ops for o in e.walk() if o.op == "value"}


def deferred(m: Memory) -> bool:
    """Teach-signal memories update after the token's loss is known, not inside the block."""
    return m.learn is not None and m.learn.objective is None


def token_order(block: Block) -> list[Step]:
    """Assignments and in-block memory updates in an order that respects every dependency."""
    learned = {n: m for n, m in block.memories.items() if m.learn is not None and not deferred(m)}
    after = {n for n, m in learned.items() if m.learn is not None and m.learn.read == "after"}
    deps: dict[str, set[str]] = {}
    position: dict[str, tuple[int, int, int]] = {}
    for i, a in enumerate(block.assignments):
        key = f"a{i}"
        deps[key] = {f"a{j}" for j in _values([a.expr])} | {f"u{n}" for n in _reads([a.expr]) & after}
        position[key] = (a.span.line, a.span.col, 0)
    for n, m in learned.items():
        assert m.learn is not None
        exprs = [e for group in learn_exprs(m.learn).values() for e in group]
        key = f"u{n}"
        deps.setdefault(key, set()).update({f"a{j}" for j in _values(exprs)} |
                                           {f"u{r}" for r in _reads(exprs) & after if r != n})
        position[key] = (m.learn.span.line, m.learn.span.col, 1)
    for n in learned.keys() - after:        # a write waits for every read that must see the old state
        for i, a in enumerate(block.assignments):
            if n in _reads([a.expr]):
                deps[f"u{n}"].add(f"a{i}")
        for r, m in learned.items():
            assert m.learn is not None
            if r != n and n in _reads([e for g in learn_exprs(m.learn).values() for e in g]):
                deps[f"u{n}"].add(f"u{r}")
    pending = {k: set(v) for k, v in deps.items()}
    order: list[Step] = []
    while pending:   # Kahn's algorithm, taking the ready step that comes first in the source
        ready = [k for k, v in pending.items() if not v]
        if not ready:  # the checker reports cycles as NL070; reaching here is a compiler bug
            raise AssertionError(f"dependency cycle inside a token among {sorted(pending)}")
        key = min(ready, key=lambda k: position[k])
        del pending[key]
        for v in pending.values():
            v.discard(key)
        order.append(Step(kind="assign", index=int(key[1:])) if key[0] == "a" else Step(kind="update", memory=key[1:]))
    return order


# ---- algorithms ---------------------------------------------------------------------------------

Algorithm = Literal["attention", "static", "teach", "linear_attention", "delta_rule", "period", "generic"]


class Binding(BaseModel):
    model_config = ConfigDict(frozen=True)

    memory: str
    algorithm: Algorithm
    reason: str


def _plain_prediction(m: Memory) -> bool:
    """objective(self(k), target) with the target free of the memory itself."""
    learn = m.learn
    if learn is None or learn.objective is None or learn.objective.op not in ("l2", "dot"):
        return False
    pred, target = learn.objective.args
    reads_self = any(o.op == "self" or (o.op == "state" and o.attrs.get("self")) for o in target.walk())
    return pred.op == "self" and not reads_self and not any(o.op == "self" for o in pred.args[0].walk())


def read_sites(block: Block, name: str) -> list[tuple[int, Op]]:
    """Where a memory is read: (assignment index, read op) pairs; reads inside objectives count as -1."""
    sites = [(i, o) for i, a in enumerate(block.assignments) for o in a.expr.walk()
             if o.op in ("read", "state") and o.attrs.get("memory") == name]
    for m in block.memories.values():
        if m.learn is not None:
            sites += [(-1, o) for e in learn_exprs(m.learn).values() for x in e for o in x.walk()
                      if o.op in ("read", "state") and o.attrs.get("memory") == name and not o.attrs.get("self")]
    return sites


def _fusable(block: Block, m: Memory) -> bool:
    """A matrix memory read once, in an assignment that comes after everything its update needs:
    its reads and writes can then run together in one chunkwise kernel."""
    sites = read_sites(block, m.name)
    if len(sites) != 1 or sites[0][0] < 0 or m.learn is None:
        return False
    needed = {o.attrs["index"] for g in learn_exprs(m.learn).values() for e in g for o in e.walk() if o.op == "value"}
    return all(i < sites[0][0] for i in needed)


def bind(m: Memory, block: Block | None = None) -> Binding:
    """The cheapest exact algorithm for a memory, from its pattern."""
    learn = m.learn
    if not m.parametric:
        return Binding(memory=m.name, algorithm="attention", reason="softmax attention: scaled_dot_product_attention")
    if learn is None or learn.time.base == "never":
        return Binding(memory=m.name, algorithm="static", reason="no in-context learning: a plain module")
    if learn.objective is None:
        return Binding(memory=m.name, algorithm="teach", reason="teach signal: chunk-interleaved forward/backward")
    rule = learn.rule
    simple_rule = rule.kind in ("gd", "dgd") and rule.momentum is None and rule.output_steps is None \
        and rule.precond is None
    per_token = learn.time.base == "token" and learn.time.period == 1
    if m.structure.kind == "matrix" and simple_rule and per_token and _plain_prediction(m) \
            and m.scope == "sequence" and (block is None or _fusable(block, m)):
        if learn.objective.op == "dot" and rule.kind == "gd":
            return Binding(memory=m.name, algorithm="linear_attention",
                           reason="matrix + dot objective + gd: chunkwise (gated) linear attention")
        if learn.objective.op == "l2" and learn.chunk == 1:
            return Binding(memory=m.name, algorithm="delta_rule",
                           reason=f"matrix + l2 objective + {rule.kind}: chunkwise delta rule (WY form)")
    closed_form = rule.kind == "gd" or (rule.kind == "dgd" and rule.momentum is None)
    if m.scope == "persistent":
        # the shared state takes the batch's mean write at every token: the closed form (each
        # sequence's segment, averaged at its end) is the same only while the rule is linear in the
        # state with one coefficient for all sequences
        closed_form = rule.kind == "gd" and (rule.retain is None or all(o.op == "const" for o in rule.retain.walk()))
    if learn.time.base == "token" and learn.time.period > 1 and closed_form and rule.precond is None \
            and rule.output_steps is None and learn.objective.op in ("l2", "dot", "l1", "huber"):
        return Binding(memory=m.name, algorithm="period",
                       reason=f"state fixed for {learn.time.period} tokens: all gradients of a chunk at its start "
                              "state in one vector-Jacobian product, the rule's recurrence in closed form")
    return Binding(memory=m.name, algorithm="generic",
                   reason="generic path: torch.func gradients of the declared objective, the rule token by token")


def segment_length(model: Model) -> int | None:
    """How many tokens a compiled model processes at once: the greatest common divisor of the
    periods that cut the sequence (1 if some memory must be read token by token), or None when
    nothing does and the whole sequence goes at once."""
    periods: list[int] = []
    for block in model.blocks:
        for m in block.memories.values():
            b = bind(m, block)
            if m.learn is None or b.algorithm in ("static", "attention", "linear_attention", "delta_rule"):
                continue
            if m.learn.time.base != "token":
                continue
            periods.append(m.learn.time.period if m.learn.time.period > 1 else 1)
    return gcd(*periods) if periods else None


class LoweredBlock(BaseModel):
    model_config = ConfigDict(frozen=True)

    block: Block
    order: tuple[Step, ...]
    bindings: dict[str, Binding]


def lower_block(block: Block) -> LoweredBlock:
    return LoweredBlock(block=block, order=tuple(token_order(block)),
                        bindings={n: bind(m, block) for n, m in block.memories.items()})
