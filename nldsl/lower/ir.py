"""A block lowered to typed statements: every decision about how it runs is made here, and a
backend only prints or executes them.

- which kernel runs each memory (`kernels.bind`), and which kernel reads it (`Op(op=OpKind.READ)`
  nodes carry it as `attrs["kernel"]`);
- reads fused with their memory's writes (`FusedRead`, its result an `Op(op="fused")`);
- identical memories learned by one statement run stacked, as one memory (`Update.memories`);
- what is computed outside an objective: its parts that do not involve the memory being learned
  (`Update.hoisted`, referred to inside it as `Op(op="arg")`);
- where dgd's probe goes, and how many losses an objective returns (one per head).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import block_output
from nldsl.lower.kernels import FUSED, PERIOD, Binding, Kernel, Read, bind
from nldsl.lower.order import Step, token_order
from nldsl.ops import OBJECTIVES, OpKind
from nldsl.spec import Block, Learn, Memory, Op


class Statement(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int                     # the spec line it comes from


class Assign(Statement):
    """`value = expr`, for the block's assignment `index`."""

    index: int
    expr: Op


class FusedRead(Statement):
    """A matrix memory read once and written every token: its reads and writes over a segment in
    one chunkwise kernel. The assignment reading it uses the result as `Op(op="fused")`."""

    kernel: Kernel
    memory: str
    query: Op
    key: Op
    value: Op
    lr: Op
    erase: Op | None = None       # the delta rule's erase strength (lr for gd, 2 lr for dgd)
    retain: Op | None = None


class Update(Statement):
    """A memory's learn statement at its place in the token order."""

    kernel: Kernel
    memories: tuple[str, ...]     # several: identical memories run stacked, heads side by side
    objective: Op                 # of the weights; its self-free parts are `arg` ops
    hoisted: tuple[Op, ...]       # the values of those `arg`s, computed outside
    lr: Op
    retain: Op | None = None
    momentum: Op | None = None
    precond: Op | None = None
    key: Op | None = None         # the key (dgd's k kᵀ, in_chunk's inputs): an `arg` when it is hoisted


class Commit(Statement):
    """At a period boundary, memories' shadow states become their committed ones."""

    memories: tuple[str, ...]


class TeachCoefficients(Statement):
    """A teach-signal memory's coefficients for this segment's reads (it updates once its window's
    losses are known, outside the block)."""

    memory: str
    lr: Op
    retain: Op | None = None
    momentum: Op | None = None
    precond: Op | None = None


AnyStatement = Assign | FusedRead | Update | Commit | TeachCoefficients


class LoweredBlock(BaseModel):
    model_config = ConfigDict(frozen=True)

    block: Block
    order: tuple[Step, ...]                  # the order of work inside a token
    bindings: dict[str, Binding]             # the kernel of each memory
    statements: tuple[AnyStatement, ...]
    stacks: tuple[tuple[str, ...], ...]      # memories updated stacked
    output: int | None                       # the assignment the block returns (None: its input)
    # a teach-signal memory's reads per segment, by their widths: each gets a probe, a zero the
    # read's result is added to, made outside the block, whose gradient is that read's δ
    teach_reads: dict[str, tuple[int, ...]] = {}

    def ops(self) -> Iterator[Op]:
        """Every node of every expression the block evaluates, statement by statement."""
        yield from _ops(self.statements)


def _rebuild(op: Op, visit) -> Op:
    """`op` with `visit` applied to its arguments first (a copy only where something changed)."""
    args = tuple(visit(a) for a in op.args)
    return op if args == op.args else op.model_copy(update={"args": args})


def lower_objective(objective: Op, key: Op | None, losses: Callable[[Op], int],
                    reads: Callable[[Op], Op]) -> tuple[Op, tuple[Op, ...]]:
    """An objective as a function of the weights: its self-free parts hoisted out (`arg` i is the
    i-th returned value, its reads lowered by `reads`), dgd's probe on the first self(...) call that
    reads `key`, and each objective's number of `losses` (one per head) in its "groups".
    A norm of a value computed from self gets its scale as a second argument, a parameter, so that
    it is hoisted too: the objective runs inside the update, where the block's parameters are not."""
    shape_of_key = key.structure() if key is not None else None
    index: dict[tuple, int] = {}
    hoisted: list[Op] = []
    probed = False

    def visit(op: Op) -> Op:
        nonlocal probed
        if not op.reads_self():
            shape = op.structure()
            if shape not in index:
                index[shape] = len(hoisted)
                hoisted.append(reads(op))
            return Op(op=OpKind.ARG, attrs={"index": index[shape]}, width=op.width, span=op.span)
        probe = op.op == OpKind.SELF and not probed and shape_of_key is not None \
            and op.args[0].structure() == shape_of_key
        probed = probed or probe
        if op.op in (OpKind.RMSNORM, OpKind.LAYERNORM) and len(op.args) == 1:
            scale = Op(op=OpKind.PARAM, attrs={"name": op.attrs["param"]}, width=op.width, span=op.span)
            op = op.model_copy(update={"args": (*op.args, scale)})
        op = _rebuild(op, visit)
        if probe:
            return op.model_copy(update={"attrs": {**op.attrs, "probe": True}})
        if op.op in OBJECTIVES:
            return op.model_copy(update={"attrs": {**op.attrs, "groups": losses(op)}})
        return op

    return visit(objective), tuple(hoisted)


class _Lowering:
    def __init__(self, block: Block) -> None:
        self.block = block
        self.bindings = {n: bind(m, block) for n, m in block.memories.items()}

    def kernel(self, memory: str) -> Kernel:
        return self.bindings[memory].kernel

    # ---- expressions ------------------------------------------------------------------------------
    def reads(self, op: Op) -> Op:
        """An expression whose memory reads name their kernel (fused reads become their result)."""
        op = _rebuild(op, self.reads)
        if op.op != OpKind.READ:
            return op
        name = op.attrs["memory"]
        kernel = self.kernel(name)
        if kernel in FUSED:
            return Op(op=OpKind.FUSED, attrs={"memory": name}, width=op.width, span=op.span)
        m = self.block.memories[name]
        return op.model_copy(update={"attrs": {**op.attrs, "kernel": self._read_kernel(m, kernel)}})

    @staticmethod
    def _read_kernel(m: Memory, kernel: Kernel) -> Read:
        simple = {Kernel.ATTENTION: Read.ATTENTION, Kernel.STATIC: Read.STATIC, Kernel.TEACH: Read.REMEMBER,
                  Kernel.IN_CHUNK: Read.IN_CHUNK}
        if kernel in simple:
            return simple[kernel]
        assert m.learn is not None
        per_token = kernel is Kernel.GENERIC and m.learn.time.base == "token" and m.learn.time.period == 1
        return Read.CURRENT if per_token else Read.COMMITTED

    def optional(self, op: Op | None) -> Op | None:
        return None if op is None else self.reads(op)

    def objective(self, learn: Learn, copies: int, probed: bool) -> tuple[Op, tuple[Op, ...]]:
        """`probed`: the kernel needs error signals at the self(k) call that reads the key."""
        assert learn.objective is not None
        key = learn.key if probed else None
        return lower_objective(learn.objective, key, lambda op: self._losses(op, copies), self.reads)

    def _losses(self, objective: Op, copies: int) -> int:
        """Objectives of per-head memories return one loss per head, so each head's learning rate
        can weigh its own gradient (stacked memories: their heads side by side)."""
        heads = {self.block.memories[o.attrs["memory"]].heads for o in objective.walk() if o.op == OpKind.SELF}
        return heads.pop() * copies if len(heads) == 1 else 1

    # ---- statements -------------------------------------------------------------------------------
    def stacks(self, order: list[Step]) -> dict[str, list[Memory]]:
        """Memories updated together: learned by one statement, identical, bound to the same closed
        form, and adjacent in the token order (so no read falls between their updates). Maps the
        first of each to all of them, and the others to []."""
        out: dict[str, list[Memory]] = {}
        run: list[Memory] = []

        def close() -> None:
            buckets: dict[tuple, list[Memory]] = {}
            for m in run:
                assert m.learn is not None
                buckets.setdefault((m.learn.span, m.structure, m.heads, m.scope), []).append(m)
            for members in buckets.values():
                out[members[0].name] = members
                out.update({m.name: [] for m in members[1:]})
            run.clear()

        for step in order:
            mem = self.block.memories.get(step.memory) if step.kind == "update" else None
            if mem is not None and self.kernel(mem.name) in PERIOD:
                run.append(mem)
            else:
                close()
        close()
        return out

    def fused_reads(self, expr: Op) -> list[FusedRead]:
        out = []
        for o in expr.walk():
            if o.op == OpKind.READ and self.kernel(o.attrs["memory"]) in FUSED:
                m = self.block.memories[o.attrs["memory"]]
                learn = m.learn
                assert learn is not None and learn.objective is not None and learn.key is not None
                rule = learn.rule
                lr = self.reads(rule.lr)
                erase = None
                if self.kernel(m.name) is Kernel.CHUNK_DELTA_RULE:
                    two = Op(op=OpKind.CONST, attrs={"value": 2.0}, width=1, span=rule.span)
                    erase = lr if rule.kind != "dgd" else \
                        Op(op=OpKind.MUL, args=(two, lr), width=lr.width, span=rule.span)
                out.append(FusedRead(line=o.span.line, kernel=self.kernel(m.name), memory=m.name,
                                     query=self.reads(o.args[0]), key=self.reads(learn.key),
                                     value=self.reads(learn.objective.args[1]), lr=lr, erase=erase,
                                     retain=self.optional(rule.retain)))
        return out

    def update(self, members: list[Memory]) -> list[AnyStatement]:
        learn = members[0].learn
        assert learn is not None
        rule = learn.rule
        kernel = self.kernel(members[0].name)
        keyed = rule.kind == "dgd" or kernel is Kernel.IN_CHUNK    # kernels that need the key itself
        body, hoisted = self.objective(learn, len(members), keyed)
        names = tuple(m.name for m in members)
        key = self.reads(learn.key) if keyed and learn.key is not None else None
        shared = [i for i, h in enumerate(hoisted) if key is not None and h.structure() == key.structure()]
        if key is not None and shared:
            # the key is the objective's hoisted input of self(...): that one value, computed once (a
            # convolution or attention read in it advances its cache each time it is computed)
            key = Op(op=OpKind.ARG, attrs={"index": shared[0]}, width=key.width, span=key.span)
        return [Update(line=learn.span.line, kernel=kernel, memories=names, objective=body,
                       hoisted=hoisted, lr=self.reads(rule.lr), retain=self.optional(rule.retain),
                       momentum=self.optional(rule.momentum), precond=self.optional(rule.precond), key=key),
                Commit(line=learn.span.line, memories=names)]

    def lower(self) -> LoweredBlock:
        block = self.block
        order = token_order(block)
        # in-chunk kernels compute the per-token states their reads see: they update first
        in_chunk = frozenset(n for n, b in self.bindings.items() if b.kernel is Kernel.IN_CHUNK)
        run = token_order(block, updates_first=in_chunk) if in_chunk else order
        stacks = self.stacks(run)
        statements: list[AnyStatement] = []
        for step in run:
            if step.kind == "assign":
                a = block.assignments[step.index]
                statements += self.fused_reads(a.expr)
                statements.append(Assign(line=a.span.line, index=step.index, expr=self.reads(a.expr)))
                continue
            if self.kernel(step.memory) in FUSED or stacks.get(step.memory) == []:
                continue     # fused with its read / updated with the first memory of its stack
            statements += self.update(stacks.get(step.memory) or [block.memories[step.memory]])
        for name, m in block.memories.items():
            if self.kernel(name) is Kernel.TEACH:
                assert m.learn is not None
                rule = m.learn.rule
                statements.append(TeachCoefficients(line=m.learn.span.line, memory=name, lr=self.reads(rule.lr),
                                                    retain=self.optional(rule.retain),
                                                    momentum=self.optional(rule.momentum),
                                                    precond=self.optional(rule.precond)))
        return LoweredBlock(block=block, order=tuple(order), bindings=self.bindings, statements=tuple(statements),
                            stacks=tuple(tuple(m.name for m in ms) for ms in stacks.values() if len(ms) > 1),
                            output=block_output(block), teach_reads=_teach_reads(statements))


def _ops(statements) -> Iterator[Op]:
    for st in statements:
        for value in dict(st).values():
            for root in value if isinstance(value, tuple) else (value,):
                if isinstance(root, Op):
                    yield from root.walk()


def _teach_reads(statements: list[AnyStatement]) -> dict[str, tuple[int, ...]]:
    """The widths of every teach-signal read the block's statements make, per memory."""
    out: dict[str, tuple[int, ...]] = {}
    for op in _ops(statements):
        if op.op == OpKind.READ and op.attrs.get("kernel") == Read.REMEMBER:
            name = op.attrs["memory"]
            out[name] = (*out.get(name, ()), op.width)
    return out


def lower_block(block: Block) -> LoweredBlock:
    """A block as statements, every decision about how it runs made."""
    return _Lowering(block).lower()
