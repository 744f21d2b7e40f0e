"""Stage 5, emit: a checked, lowered model → the source of a readable PyTorch module.

One method per block (one segment of tokens through one layer), statements in the order
`nldsl.lower.token_order` gives, each line commented with the spec line it comes from. Names come
from the spec, made safe: a spec can never inject code, because every identifier is matched
against `[A-Za-z_][A-Za-z0-9_]*` by the grammar and renamed if it is a Python keyword or one of
the generated code's own names, and every number is printed with `repr` of a float.
"""

from __future__ import annotations

import keyword
from pathlib import Path

from nldsl.lower import Binding, LoweredBlock, lower_block, memory_param_names, memory_shapes, parameter_table, \
    segment_length
from nldsl.spec import Block, Memory, Model, Op, Spec

TAKEN = {"self", "P", "S", "cache", "h", "fires", "torch", "F", "fn", "rt", "nn", "objective", "w", "probe"}
UNARY = {"sigmoid": "torch.sigmoid", "silu": "F.silu", "gelu": "F.gelu", "relu": "torch.relu", "tanh": "torch.tanh",
         "softplus": "F.softplus", "exp": "torch.exp", "log": "torch.log", "sqrt": "torch.sqrt", "abs": "torch.abs",
         "square": "torch.square", "sign": "torch.sign"}
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def safe(name: str) -> str:
    return f"{name}_" if keyword.iskeyword(name) or name in TAKEN or name.startswith("__") else name


def _uses_self(op: Op) -> bool:
    return any(o.op == "self" or (o.op == "state" and o.attrs.get("self")) for o in op.walk())


class Block_:
    """Emission context of one block: value names, memory bindings, hoisted objective arguments."""

    def __init__(self, block: Block, lowered: LoweredBlock, file: str, heads: int) -> None:
        self.block = block
        self.lowered = lowered
        self.file = file
        self.heads = heads
        self.names: dict[int, str] = {}
        counts: dict[str, int] = {}
        multi = {a.target for i, a in enumerate(block.assignments)
                 if [b.target for b in block.assignments].count(a.target) > 1}
        for i, a in enumerate(block.assignments):
            if a.target in multi:
                counts[a.target] = counts.get(a.target, 0) + 1
                self.names[i] = safe(f"{a.target}{counts[a.target]}")
            else:
                self.names[i] = safe(a.target)

    def binding(self, name: str) -> Binding:
        return self.lowered.bindings[name]

    def const(self, name: str) -> str:
        return f"{self.block.name.upper()}_{name.upper()}"

    def where(self, op_or_span) -> str:
        span = getattr(op_or_span, "span", op_or_span)
        return f"{Path(self.file).name}:{span.line}"

    # ---- expressions ------------------------------------------------------------------------------
    def expr(self, op: Op, args: dict[str, str] | None = None, weights: str = "", probe: Op | None = None) -> str:
        """Python for an expression. Inside an objective, `args` names hoisted sub-expressions,
        `weights` is the memory's weights and `probe` the self(...) call that gets dgd's probe."""
        e = lambda o: self.expr(o, args, weights, probe)  # noqa: E731
        if args is not None and op.model_dump_json() in args:
            return args[op.model_dump_json()]
        o = op.op
        if o == "const":
            return repr(float(op.attrs["value"]))
        if o == "input":
            return "h"
        if o == "value":
            return self.names[op.attrs["index"]]
        if o == "param":
            return f'P["{op.attrs["name"]}"]'
        if o == "matmul":
            return f"({e(op.args[0])} @ {e(op.args[1])})"
        if o in BINARY:
            a, b = op.args
            left, right = e(a), e(b)
            if a.width != b.width and 1 not in (a.width, b.width):   # one value per head against a vector
                if a.width < b.width:
                    left = f"fn.expand_heads({left}, {b.width})"
                else:
                    right = f"fn.expand_heads({right}, {a.width})"
            return f"({left} {BINARY[o]} {right})"
        if o in ("min", "max"):
            return f"torch.{o}imum(*fn.broadcast_pair({e(op.args[0])}, {e(op.args[1])}))"
        if o == "neg":
            return f"(-{e(op.args[0])})"
        if o in UNARY:
            return f"{UNARY[o]}({e(op.args[0])})"
        if o == "stopgrad":
            return f"{e(op.args[0])}.detach()"
        if o == "rmsnorm":
            return f'fn.rmsnorm({e(op.args[0])}, P["{op.attrs["param"]}"], {op.attrs["groups"]})'
        if o == "layernorm":
            return f'fn.layernorm({e(op.args[0])}, P["{op.attrs["param"]}"], {op.attrs["groups"]})'
        if o == "l2norm":
            return f"fn.l2norm({e(op.args[0])}, {op.attrs['groups']})"
        if o in ("sum", "mean"):
            return f"fn.reduce({e(op.args[0])}, {op.attrs['groups']}, mean={o == 'mean'})"
        if o == "conv":
            return f'rt.conv(cache, "{op.attrs["param"]}", {e(op.args[0])}, P["{op.attrs["param"]}"])'
        if o in ("l2", "dot", "l1", "huber"):
            delta = f", delta={float(op.attrs['delta'])!r}" if o == "huber" else ""
            return f'fn.objective("{o}", {e(op.args[0])}, {e(op.args[1])}{delta}, groups={self._groups(op)})'
        if o == "self":
            p = ", probe" if probe is not None and op.model_dump_json() == probe.model_dump_json() else ""
            mem = self.block.memories[op.attrs["memory"]]
            return f"rt.apply({self.const(mem.name)}, {weights}, {e(op.args[0])}{p})"
        if o == "state":
            if op.attrs.get("self"):
                return f"rt.state_of({weights}, {next(iter(args.values())) if args else 'h'})"
            mem = self.block.memories[op.attrs["memory"]]
            return f'rt.state_of(S["{mem.name}"].seen, h)' if mem.learn else f'P["{mem.name}__s"].flatten(-2)'
        if o == "read":
            return self.read(op, e)
        raise AssertionError(f"cannot emit op {o!r}")

    def _groups(self, op: Op) -> int:
        """Objectives of per-head memories return one loss per head, so each head's learning rate
        can weigh its own gradient."""
        memories = {o.attrs["memory"] for o in op.walk() if o.op == "self"}
        heads = [self.block.memories[m].heads for m in memories]
        return heads[0] if heads and all(x == heads[0] for x in heads) else 1

    def read(self, op: Op, e) -> str:
        mem = self.block.memories[op.attrs["memory"]]
        args = [e(a) for a in op.args]
        b = self.binding(mem.name)
        if b.algorithm == "attention":
            site = f"{mem.name}@{op.span.line}:{op.span.col}"
            return f'rt.attention(cache, "{site}", {", ".join(args)}, {mem.heads}, {mem.structure.window})'
        if b.algorithm == "static":
            names = ", ".join(f'P["{n.split(".", 2)[-1].replace(".", "__")}"]'
                              for n in memory_param_names("x.0", mem))
            return f"rt.apply({self.const(mem.name)}, [{names}], {args[0]})"
        if b.algorithm == "teach":
            return f'rt.remember(S["{mem.name}"], {args[0]})'
        if b.algorithm in ("linear_attention", "delta_rule"):
            learn = mem.learn
            assert learn is not None and learn.objective is not None and learn.key is not None
            target = learn.objective.args[1]
            retain = e(learn.rule.retain) if learn.rule.retain is not None else "None"
            return (f'rt.fused(S["{mem.name}"], {args[0]}, {e(learn.key)}, {e(target)}, {e(learn.rule.lr)}, '
                    f"{retain})")
        return f'rt.read(S["{mem.name}"], {args[0]})'

    # ---- statements -------------------------------------------------------------------------------
    def update(self, mem: Memory) -> list[str]:
        """A learn statement: the objective as a function of the memory's weights (its
        self-free parts computed here and passed in), the coefficients, the update, the commit."""
        learn = mem.learn
        assert learn is not None and learn.objective is not None
        hoisted: list[Op] = []

        def hoist(op: Op) -> None:
            if not _uses_self(op):
                if op.model_dump_json() not in {h.model_dump_json() for h in hoisted}:
                    hoisted.append(op)
                return
            for a in op.args:
                hoist(a)

        hoist(learn.objective)
        args = {h.model_dump_json(): f"a{i}" for i, h in enumerate(hoisted)}
        params = ", ".join(["w", "probe", *args.values()])
        key = learn.key if learn.rule.kind == "dgd" else None
        probe_call = next((o for o in learn.objective.walk() if o.op == "self" and key is not None
                           and o.args[0].model_dump_json() == key.model_dump_json()), None)
        body = self.expr(learn.objective, args, "w", probe_call)
        lines = [f"def objective_{mem.name}({params}):   # {self.where(learn.objective)}",
                 f"    return {body}"]
        values = ", ".join(self.expr(hv) for hv in hoisted)
        rule = learn.rule
        coeffs = [f"lr={self.expr(rule.lr)}"]
        for k in ("retain", "momentum", "precond"):
            if getattr(rule, k) is not None:
                coeffs.append(f"{k}={self.expr(getattr(rule, k))}")
        if key is not None:
            coeffs.append(f"key={self.expr(key)}")
        lines.append(f'rt.update(S["{mem.name}"], objective_{mem.name}, ({values},), {", ".join(coeffs)})'
                     f"   # {self.where(learn.span)}")
        lines.append(f'rt.commit(S["{mem.name}"], fires["{mem.name}"])')
        return lines

    def method(self) -> list[str]:
        block = self.block
        out = [f"def {block.name}(self, P, S, cache, h, fires):",
               f'    """Block `{block.name}` ({self.where(block.span)}): one segment of tokens through one layer."""']
        for step in self.lowered.order:
            if step.kind == "assign":
                a = block.assignments[step.index]
                out.append(f"    {self.names[step.index]} = {self.expr(a.expr)}   # {self.where(a)}")
            else:
                mem = block.memories[step.memory]
                if self.binding(mem.name).algorithm in ("linear_attention", "delta_rule"):
                    continue     # fused with its read
                out += ["    " + line for line in self.update(mem)]
        for name, mem in block.memories.items():
            if self.binding(name).algorithm == "teach":
                rule = mem.learn.rule
                coeffs = [f"lr={self.expr(rule.lr)}"] + [f"{k}={self.expr(getattr(rule, k))}"
                                                        for k in ("retain", "momentum", "precond")
                                                        if getattr(rule, k) is not None]
                out.append(f'    rt.teach_coefficients(S["{name}"], {", ".join(coeffs)})   # {self.where(mem.learn.span)}')
        outputs = [i for i, a in enumerate(block.assignments) if a.target == "h"]
        out.append(f"    return {self.names[outputs[-1]] if outputs else 'h'}")
        return out

    def constants(self) -> list[str]:
        out = []
        for name, mem in self.block.memories.items():
            if not mem.parametric:
                continue
            s = mem.structure
            learn = mem.learn
            b = self.binding(name)
            fields = [f'"{name}"', f'"{s.kind}"', f"heads={mem.heads}", f"shapes={tuple(memory_shapes(mem))!r}",
                      f'init="{"zeros" if mem.init == "zeros" and learn is not None else "param"}"',
                      f'act="{s.act}"', f"residual={s.residual}", f'norm="{s.norm}"', f'algorithm="{b.algorithm}"']
            if learn is not None:
                r = learn.rule
                rule = f'rt.Rule("{r.kind}", momentum={r.momentum is not None}, output_steps={r.output_steps or 0}, ' \
                       f"beta1={r.beta1!r}, beta2={r.beta2!r}, eps={r.eps!r})"
                period = learn.time.period if learn.time.base == "token" else 1
                fields += [f"rule={rule}", f"period={period}", f"chunk={learn.chunk}",
                           f"read_after={learn.read == 'after'}", f'backprop="{learn.backprop}"',
                           f"truncate={learn.truncate}", f"persistent={mem.scope == 'persistent'}"]
            out.append(f"{self.const(name)} = rt.MemSpec({', '.join(fields)})   # {self.where(mem.span)}")
            out.append(f"#   {b.algorithm}: {b.reason}")
        return out


def emit_model(spec: Spec, name: str | None = None) -> str:
    """The Python source of the compiled model `name` (default: the entry file's first model)."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    model: Model = spec.models[name]
    file = spec.file
    heads = int(model.config.get("heads", 1))
    blocks = [Block_(b, lower_block(b), file, heads) for b in model.blocks]
    table = parameter_table(model)
    lines = [f'"""Model `{name}` compiled by nldsl from {Path(file).name}. Generated code: edit the spec, not this.',
             "",
             "Memories and the algorithm each one is bound to:"]
    for blk in blocks:
        for mname, b in blk.lowered.bindings.items():
            lines.append(f"  {blk.block.name}.{mname}: {b.algorithm} ({b.reason})")
    lines += ['"""', "", "import torch", "import torch.nn.functional as F", "",
              "from nldsl.backends import functional as fn", "from nldsl.backends.torch import runtime as rt",
              "from nldsl.backends.torch.model import CompiledModel", ""]
    for blk in blocks:
        lines += blk.constants()
    lines += ["", "PARAMS = ("]
    lines += [f"    ({p.name!r}, {p.shape!r}, {p.init!r}, {p.std!r}, {p.trainable!r})," for p in table.values()]
    lines += [")", "", "", f"class {safe(name)}(CompiledModel):"]
    layers = ", ".join(f"({b.name!r}, {i})" for b in model.blocks for i in range(b.repeat))
    memories = ", ".join(
        f"{blk.block.name!r}: {{" + ", ".join(f"{m!r}: {blk.const(m)}" for m, mem in blk.block.memories.items()
                                             if mem.parametric and mem.learn is not None
                                             and blk.binding(m).algorithm != "static") + "}"
        for blk in blocks)
    lines += [f"    PARAMS = PARAMS",
              f"    LAYERS = ({layers},)",
              f"    MEMORIES = {{{memories}}}",
              f"    SEGMENT = {segment_length(model)!r}",
              f"    VOCAB = {int(model.config['vocab'])}", ""]
    for blk in blocks:
        lines += ["    " + line if line else "" for line in blk.method()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
