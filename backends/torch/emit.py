"""Stage 5, emit: a checked, lowered model → the source of a readable PyTorch module.

One function per block (one segment of tokens through one layer), statements in the order
`nldsl.lower.token_order` gives, each line commented with the spec line it comes from. Nothing
from the spec reaches the source except through `names`: identifiers from a `Scope` (distinct by
construction, never a keyword, builtin or generated name), constants through `literal` (repr),
and comment and docstring text through `text`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from nldsl.backends.torch.names import Scope, literal, text

from nldsl.lower import (
    Binding,
    LoweredBlock,
    ParamInfo,
    lower_block,
    memory_parts,
    memory_shapes,
    parameter_table,
    segment_length,
)
from nldsl.spec import Block, Memory, Model, Op, Optimizer, Spec

# Names the generated modules define or import, and the parameters of their functions: every
# name allocated for the spec's things avoids them.
MODEL_MODULE = ("torch", "F", "fn", "rt", "CompiledModel", "ParamInfo", "PARAMS", "MODEL")
BLOCK_ARGS = ("P", "S", "cache", "h", "fires")
OBJECTIVE_ARGS = ("w", "probe", "at")
OPTIMIZER_MODULE = ("torch", "fn", "opt", "rt", "update", "OPTIMIZER")
UPDATE_ARGS = ("param", "grad", "S", "hp", "step")
UNARY = {"sigmoid": "torch.sigmoid", "silu": "F.silu", "gelu": "F.gelu", "relu": "torch.relu", "tanh": "torch.tanh",
         "softplus": "F.softplus", "exp": "torch.exp", "log": "torch.log", "sqrt": "torch.sqrt", "abs": "torch.abs",
         "square": "torch.square", "sign": "torch.sign"}
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def _uses_self(op: Op) -> bool:
    return any(o.op == "self" or (o.op == "state" and o.attrs.get("self")) for o in op.walk())


def hoist(objective: Op, scope: Scope) -> tuple[list[Op], dict[str, str]]:
    """The largest parts of an objective that do not involve the memory being learned: computed
    once by the caller and passed in as a0, a1, ... (named in the objective's own `scope`); what
    remains is a function of the weights."""
    hoisted: list[Op] = []
    seen: set[str] = set()

    def visit(op: Op) -> None:
        if not _uses_self(op):
            key = op.model_dump_json()
            if key not in seen:
                seen.add(key)
                hoisted.append(op)
            return
        for a in op.args:
            visit(a)

    visit(objective)
    return hoisted, {h.model_dump_json(): scope.name(("arg", i), f"a{i}") for i, h in enumerate(hoisted)}


def value_names(assignments, scope: Scope, inputs: tuple[str, ...]) -> dict[int, str]:
    """An identifier per assignment: the spec's name, numbered from its second version (`x`,
    `x_2`) and from the first when it reassigns an input (`h_2`); so every version of every value
    has its own name, and statements can run in any order their dependencies allow."""
    names: dict[int, str] = {}
    versions: dict[str, int] = {}
    for i, a in enumerate(assignments):
        versions[a.target] = versions.get(a.target, 1 if a.target in inputs else 0) + 1
        n = versions[a.target]
        names[i] = scope.name(("value", i), a.target if n == 1 else f"{a.target}_{n}")
    return names


def attention_site(read: Op) -> str:
    """The name of one attention read's key/value cache: the memory and where it is read."""
    return f"{read.attrs['memory']}@{read.span.line}:{read.span.col}"


class Emitter(ABC):
    """Python for expressions. Subclasses say how values, states and memory reads are named."""

    def __init__(self, file: str, module: Scope) -> None:
        self.file = file
        self.module = module        # the module's names
        self.scope = module         # the function the statements go in (see `enter`)
        self.names: dict[int, str] = {}

    def enter(self, scope: Scope, assignments, inputs: tuple[str, ...]) -> None:
        """Start emitting a function body: its scope and the names of its values."""
        self.scope = scope
        self.names = value_names(assignments, scope, inputs)

    def where(self, op_or_span) -> str:
        """Provenance: the line of the spec file (named once, in the module's docstring)."""
        span = getattr(op_or_span, "span", op_or_span)
        return f"line {span.line}"

    def objective_scope(self, fixed: tuple[str, ...]) -> Scope:
        """An objective's own scope: its body names only its arguments and module-level names."""
        return self.module.child(fixed)

    def input(self, op: Op) -> str:
        return "h"

    @abstractmethod
    def read(self, op: Op, e) -> str: ...

    @abstractmethod
    def state(self, op: Op, args: dict[str, str] | None, weights: str) -> str: ...

    @abstractmethod
    def self_call(self, op: Op, e, weights: str, probe: bool) -> str: ...

    def fixed(self, op: Op, args: dict[str, str] | None, weights: str) -> str:
        """`fixed(x)`: x with no inner gradient. Here nothing differentiates the objective from
        outside (optimizer states), so that is a detach."""
        return f"{self.expr(op.args[0], args, weights)}.detach()"

    def expr(self, op: Op, args: dict[str, str] | None = None, weights: str = "", probe: Op | None = None) -> str:
        """Python for an expression. Inside an objective, `args` names hoisted sub-expressions,
        `weights` is the memory's weights and `probe` the self(...) call that gets dgd's probe."""
        e = lambda o: self.expr(o, args, weights, probe)  # noqa: E731
        if args is not None and op.model_dump_json() in args:
            return args[op.model_dump_json()]
        o = op.op
        if o == "const":
            return literal(float(op.attrs["value"]))
        if o == "input":
            return self.input(op)
        if o == "value":
            return self.names[op.attrs["index"]]
        if o == "param":
            return f'P[{literal(op.attrs["name"])}]'
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
        if o == "fixed":
            return self.fixed(op, args, weights)
        if o == "rmsnorm":
            return f'fn.rmsnorm({e(op.args[0])}, P[{literal(op.attrs["param"])}], {literal(op.attrs["groups"])})'
        if o == "layernorm":
            return f'fn.layernorm({e(op.args[0])}, P[{literal(op.attrs["param"])}], {literal(op.attrs["groups"])})'
        if o == "l2norm":
            return f"fn.l2norm({e(op.args[0])}, {literal(op.attrs['groups'])})"
        if o in ("sum", "mean"):
            return f"fn.reduce({e(op.args[0])}, {literal(op.attrs['groups'])}, mean={o == 'mean'})"
        if o == "conv":
            name = literal(op.attrs["param"])
            return f"rt.conv(cache, {name}, {e(op.args[0])}, P[{name}])"
        if o in ("l2", "dot", "l1", "huber"):
            delta = f", delta={literal(float(op.attrs['delta']))}" if o == "huber" else ""
            return f'fn.objective("{o}", {e(op.args[0])}, {e(op.args[1])}{delta}, groups={self._groups(op)})'
        if o == "self":
            return self.self_call(op, e, weights, probe is not None and op.model_dump_json() == probe.model_dump_json())
        if o == "state":
            return self.state(op, args, weights)
        if o == "read":
            return self.read(op, e)
        if o == "hyper":
            return f'hp[{literal(op.attrs["name"])}]'
        if o == "newton_schulz":
            return f"fn.newton_schulz({e(op.args[0])}, {literal(op.attrs['steps'])})"
        raise AssertionError(f"cannot emit op {o!r}")

    def _groups(self, op: Op) -> int:
        return 1


class BlockEmitter(Emitter):
    """Emission context of one block: its module-level names (constants, its function), then its
    value names, memory bindings and hoisted objective arguments."""

    def __init__(self, block: Block, lowered: LoweredBlock, file: str, module: Scope) -> None:
        super().__init__(file, module)
        self.block = block
        self.lowered = lowered
        self.groups = self._groups_of_memories()
        self.consts = {n: module.name(("memory", block.name, n), f"{block.name}_{n}".upper())
                       for n, m in block.memories.items() if m.parametric}
        self.group_consts = {ms[0].name: module.name(("group", block.name, ms[0].name),
                                                     "_".join([block.name, *(m.name for m in ms)]).upper())
                             for ms in self.groups.values() if len(ms) > 1}
        self.function = module.name(("block", block.name), block.name)

    def binding(self, name: str) -> Binding:
        return self.lowered.bindings[name]

    def const(self, name: str) -> str:
        return self.consts[name]

    merged: tuple[str, str, int] | None = None    # (memory, merged spec expression, copies) while emitting a group

    def _groups(self, op: Op) -> int:
        """Objectives of per-head memories return one loss per head, so each head's learning rate
        can weigh its own gradient."""
        memories = {o.attrs["memory"] for o in op.walk() if o.op == "self"}
        heads = [self.block.memories[m].heads for m in memories]
        copies = self.merged[2] if self.merged else 1
        return heads[0] * copies if heads and all(x == heads[0] for x in heads) else 1

    def self_call(self, op: Op, e, weights: str, probe: bool) -> str:
        mem = self.block.memories[op.attrs["memory"]]
        spec = self.merged[1] if self.merged and self.merged[0] == mem.name else self.const(mem.name)
        return f"rt.apply({spec}, {weights}, {e(op.args[0])}{', probe' if probe else ''})"

    def fixed(self, op: Op, args: dict[str, str] | None, weights: str) -> str:
        """`fixed(x)`: x at the state the gradient is taken at (`at`, passed by the runtime), outside
        the inner differentiation but inside the outer one."""
        return self.expr(op.args[0], args, "at")

    def state(self, op: Op, args: dict[str, str] | None, weights: str) -> str:
        if op.attrs.get("self"):
            return f"rt.state_of({weights}, {next(iter(args.values())) if args else 'h'})"
        mem = self.block.memories[op.attrs["memory"]]
        if mem.learn:
            return f"rt.state_of(S[{literal(mem.name)}].seen, h)"
        return f"P[{literal(mem.name + '/s')}].flatten(-2)"

    def read(self, op: Op, e) -> str:
        mem = self.block.memories[op.attrs["memory"]]
        args = [e(a) for a in op.args]
        b = self.binding(mem.name)
        state = f"S[{literal(mem.name)}]"
        if b.algorithm == "attention":
            site = literal(attention_site(op))
            return f"rt.attention(cache, {site}, {', '.join(args)}, {mem.heads}, {mem.structure.window})"
        if b.algorithm == "static":
            names = ", ".join(f"P[{literal(f'{mem.name}/{part}')}]" for part in memory_parts(mem))
            return f"rt.apply({self.const(mem.name)}, [{names}], {args[0]})"
        if b.algorithm == "teach":
            return f"rt.remember({state}, {args[0]})"
        if b.algorithm in ("linear_attention", "delta_rule"):
            learn = mem.learn
            assert learn is not None and learn.objective is not None and learn.key is not None
            target = learn.objective.args[1]
            retain = e(learn.rule.retain) if learn.rule.retain is not None else "None"
            return f"rt.fused({state}, {args[0]}, {e(learn.key)}, {e(target)}, {e(learn.rule.lr)}, {retain})"
        return f"rt.read({state}, {args[0]})"

    # ---- statements -------------------------------------------------------------------------------
    def update(self, mem: Memory, group: list[Memory] | None = None) -> list[str]:
        """A learn statement: the objective as a function of the memory's weights (its
        self-free parts computed here and passed in), the coefficients, the update, the commit.
        A `group` of identical memories learned by one statement updates as one memory with their
        heads side by side (heads are independent, so this is the same computation, batched)."""
        learn = mem.learn
        assert learn is not None and learn.objective is not None
        members = group or [mem]
        if len(members) > 1:
            self.merged = (mem.name, self.group_consts[mem.name], len(members))
        inner = self.objective_scope(OBJECTIVE_ARGS)
        hoisted, args = hoist(learn.objective, inner)
        params = ", ".join(["w", "probe", *args.values(), "*", "at"])
        key = learn.key if learn.rule.kind == "dgd" else None
        probe_call = next((o for o in learn.objective.walk() if o.op == "self" and key is not None
                           and o.args[0].model_dump_json() == key.model_dump_json()), None)
        body = self.expr(learn.objective, args, "w", probe_call)
        self.merged = None
        objective = self.scope.name(("objective", mem.name), "objective_" + "_".join(m.name for m in members))
        lines = [f"def {objective}({params}):   # {self.where(learn.objective)}",
                 f"    return {body}"]
        values = ", ".join(self.expr(hv) for hv in hoisted)
        lines.append(f"{'rt.update' if len(members) == 1 else 'rt.update_group'}("
                     f"{self._states(members)}, {objective}, ({values},), {self.coefficients(learn)})"
                     f"   # {self.where(learn.span)}")
        lines += [f"rt.commit(S[{literal(m.name)}], fires[{literal(m.name)}])" for m in members]
        return lines

    def _states(self, members: list[Memory]) -> str:
        states = [f"S[{literal(m.name)}]" for m in members]
        return states[0] if len(states) == 1 else "[" + ", ".join(states) + "]"

    def coefficients(self, learn, key: bool = True) -> str:
        """The rule's coefficients as keyword arguments (dgd's key too)."""
        rule = learn.rule
        coeffs = [f"lr={self.expr(rule.lr)}"] + [f"{k}={self.expr(getattr(rule, k))}"
                                                for k in ("retain", "momentum", "precond")
                                                if getattr(rule, k) is not None]
        if key and rule.kind == "dgd" and learn.key is not None:
            coeffs.append(f"key={self.expr(learn.key)}")
        return ", ".join(coeffs)

    def _groups_of_memories(self) -> dict[str, list[Memory]]:
        """Memories updated together: learned by one statement, identical, bound to the chunk closed
        form, and adjacent in the token order (so no read falls between their updates)."""
        out: dict[str, list[Memory]] = {}
        run: list[Memory] = []

        def close() -> None:
            buckets: dict[str, list[Memory]] = {}
            for m in run:
                assert m.learn is not None
                key = f"{m.learn.span}|{m.structure}|{m.heads}|{m.scope}"
                buckets.setdefault(key, []).append(m)
            for members in buckets.values():
                out[members[0].name] = members
                for m in members[1:]:
                    out[m.name] = []
            run.clear()

        for step in self.lowered.order:
            mem = self.block.memories.get(step.memory) if step.kind == "update" else None
            if mem is not None and self.binding(mem.name).algorithm == "period":
                run.append(mem)
            else:
                close()
        close()
        return out

    def function_lines(self) -> list[str]:
        """The block's function. Its local names are allocated here, after every module-level one."""
        block = self.block
        self.enter(self.module.child(BLOCK_ARGS), block.assignments, ("h",))
        out = [f"def {self.function}({', '.join(BLOCK_ARGS)}):",
               f'    """Block `{text(block.name)}` ({self.where(block.span)}): one segment of tokens through one '
               'layer."""']
        groups = self.groups
        for step in self.lowered.order:
            if step.kind == "assign":
                a = block.assignments[step.index]
                out.append(f"    {self.names[step.index]} = {self.expr(a.expr)}   # {self.where(a)}")
            else:
                mem = block.memories[step.memory]
                if self.binding(mem.name).algorithm in ("linear_attention", "delta_rule"):
                    continue     # fused with its read
                if mem.name in groups and not groups[mem.name]:
                    continue     # updated with the first member of its group
                out += ["    " + line for line in self.update(mem, groups.get(mem.name))]
        for name, mem in block.memories.items():
            if self.binding(name).algorithm == "teach":
                out.append(f"    rt.teach_coefficients(S[{literal(name)}], {self.coefficients(mem.learn, False)})"
                           f"   # {self.where(mem.learn.span)}")
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
            fields = [literal(name), literal(s.kind), f"heads={mem.heads}",
                      f"shapes={literal(tuple(memory_shapes(mem)))}",
                      f"init={literal('zeros' if mem.init == 'zeros' and learn is not None else 'param')}",
                      f"act={literal(s.act)}", f"residual={s.residual}", f"norm={literal(s.norm)}",
                      f"algorithm={literal(b.algorithm)}"]
            if learn is not None:
                r = learn.rule
                rule = (f"rt.Rule({literal(r.kind)}, momentum={r.momentum is not None}, "
                        f"output_steps={r.output_steps or 0}, beta1={literal(r.beta1)}, beta2={literal(r.beta2)}, "
                        f"eps={literal(r.eps)})")
                # a per-step memory commits between sequences only (its shadow runs over the tokens)
                period = learn.time.period if learn.time.base == "token" else "rt.NEVER"
                steps = learn.time.period if learn.time.base == "step" else 0
                fields += [f"rule={rule}", f"period={period}", f"steps={steps}", f"chunk={learn.chunk}",
                           f"read_after={learn.read == 'after'}", f"backprop={literal(learn.backprop)}",
                           f"truncate={learn.truncate}", f"persistent={mem.scope == 'persistent'}"]
            out.append(f"{self.const(name)} = rt.MemSpec({', '.join(fields)})   # {self.where(mem.span)}")
            out.append(f"#   {b.algorithm}: {text(b.reason)}")
        for members in self.groups.values():
            if len(members) > 1:
                out.append(f"{self.group_consts[members[0].name]} = rt.merged({self.const(members[0].name)}, "
                           f"{len(members)})   # {', '.join(text(m.name) for m in members)} learn side by side")
        return out


def _param_literal(info: ParamInfo) -> str:
    """One entry of the parameter table, with only the fields that differ from their defaults."""
    fields = info.model_dump(exclude_defaults=True)
    fields.setdefault("init", info.init)
    return "ParamInfo(" + ", ".join(f"{k}={literal(v)}" for k, v in fields.items()) + ")"


def emit_model(spec: Spec, name: str | None = None) -> str:
    """The Python source of the compiled model `name` (default: the entry file's first model)."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    model: Model = spec.models[name]
    file = spec.file
    module = Scope(MODEL_MODULE + BLOCK_ARGS + OBJECTIVE_ARGS)
    blocks = [BlockEmitter(b, lower_block(b), file, module) for b in model.blocks]
    cls = module.name(("model",), name)
    lines = [f'"""Model `{text(name)}` compiled by nldsl from {text(Path(file).name)}. Generated code: edit the '
             "spec, not this; `# line N` comments point at its lines.",
             "",
             "Memories and the algorithm each one is bound to:"]
    for blk in blocks:
        for mname, b in blk.lowered.bindings.items():
            lines.append(f"  {text(blk.block.name)}.{text(mname)}: {b.algorithm} ({text(b.reason)})")
    lines += ['"""', "", "import torch", "import torch.nn.functional as F", "",
              "from nldsl.backends import functional as fn", "from nldsl.backends.torch import runtime as rt",
              "from nldsl.backends.torch.model import CompiledModel", "from nldsl.lower import ParamInfo", ""]
    for blk in blocks:
        lines += blk.constants()
    lines += ["", "PARAMS = ("]
    lines += [f"    {_param_literal(info)}," for info in parameter_table(model).values()]
    lines += [")", ""]
    for blk in blocks:
        lines += ["", *blk.function_lines(), ""]

    def per_block(entries) -> str:
        return "{" + ", ".join(f"{literal(blk.block.name)}: {{{', '.join(entries(blk))}}}" for blk in blocks) + "}"

    memories = per_block(lambda blk: [f"{literal(m)}: {blk.const(m)}" for m, mem in blk.block.memories.items()
                                      if mem.parametric and mem.learn is not None
                                      and blk.binding(m).algorithm != "static"])
    convs = per_block(lambda blk: [f"{literal(o.attrs['param'])}: ({o.width}, {o.attrs['kernel']})"
                                   for a in blk.block.assignments for o in a.expr.walk() if o.op == "conv"])
    sites = per_block(lambda blk: [f"{literal(attention_site(o))}: ({o.args[1].width}, {o.args[2].width})"
                                   for a in blk.block.assignments for o in a.expr.walk()
                                   if o.op == "read" and not blk.block.memories[o.attrs["memory"]].parametric])
    layers = ", ".join(f"({literal(b.name)}, {i})" for b in model.blocks for i in range(b.repeat))
    lines += ["", f"class {cls}(CompiledModel):",
              "    PARAMS = PARAMS",
              f"    BLOCKS = {{{', '.join(f'{literal(blk.block.name)}: {blk.function}' for blk in blocks)}}}",
              f"    CONVS = {convs}",
              f"    SITES = {sites}",
              f"    LAYERS = ({layers},)",
              f"    MEMORIES = {memories}",
              f"    SEGMENT = {literal(segment_length(model))}",
              f"    VOCAB = {int(model.config['vocab'])}",
              "", "", f"MODEL = {cls}"]
    return "\n".join(lines).rstrip() + "\n"


# ---- optimizers ---------------------------------------------------------------------------------

class OptimizerEmitter(Emitter):
    def __init__(self, opt: Optimizer, file: str, module: Scope) -> None:
        super().__init__(file, module)
        self.opt = opt

    def input(self, op: Op) -> str:
        return {"grad": "grad", "param": "param", "step": "step"}[op.attrs["name"]]

    def _map(self, m: Memory, weights: str, x: str) -> str:
        s = m.structure
        return f"opt.apply({literal(s.kind)}, {weights}, {x}, {literal(s.act)}, {s.residual}, {literal(s.norm)})"

    def self_call(self, op: Op, e, weights: str, probe: bool) -> str:
        return self._map(self.opt.memories[op.attrs["memory"]], weights, e(op.args[0]))

    def state(self, op: Op, args: dict[str, str] | None, weights: str) -> str:
        return f"{weights}[0]" if op.attrs.get("self") else f"opt.value(S[{literal(op.attrs['memory'])}])"

    def read(self, op: Op, e) -> str:
        m = self.opt.memories[op.attrs["memory"]]
        return self._map(m, f"S[{literal(m.name)}].visible()", e(op.args[0]))

    def learn(self, m: Memory) -> list[str]:
        learn = m.learn
        assert learn is not None and learn.objective is not None
        hoisted, args = hoist(learn.objective, self.objective_scope(("w",)))
        rule = learn.rule
        coeffs = [f"lr={self.expr(rule.lr)}"] + [f"{k}={self.expr(getattr(rule, k))}"
                                                for k in ("retain", "momentum", "precond")
                                                if getattr(rule, k) is not None]
        r = (f"rt.Rule({literal(rule.kind)}, output_steps={rule.output_steps or 0}, beta1={literal(rule.beta1)}, "
             f"beta2={literal(rule.beta2)}, eps={literal(rule.eps)})")
        values = "".join(f"{self.expr(hv)}, " for hv in hoisted)
        objective = self.scope.name(("objective", m.name), f"objective_{m.name}")
        return [f"def {objective}({', '.join(['w', *args.values()])}):   # {self.where(learn.objective)}",
                f"    return {self.expr(learn.objective, args, 'w')}.sum()",
                f"opt.learn(S[{literal(m.name)}], {objective}, ({values}), step, {r}, {', '.join(coeffs)})"
                f"   # {self.where(learn.span)}"]


# ops that need a whole matrix (or a whole row): an update using one cannot run on a parameter's shard
WHOLE_MATRIX_OPS = {"matmul", "newton_schulz", "sum", "mean", "l2norm", "rmsnorm", "layernorm", "conv"}


def _elementwise(o: Optimizer) -> bool:
    """Whether every state and every operation of an optimizer works element by element."""
    def ops(node) -> set[str]:
        if isinstance(node, dict):
            found = {node["op"]} if isinstance(node.get("op"), str) else set()
            return found.union(*(ops(v) for v in node.values()))
        if isinstance(node, list | tuple):
            return set().union(*(ops(v) for v in node))
        return set()
    plain = all(m.structure.kind == "elementwise" and not (m.learn and (m.learn.rule.output_steps or
                                                                        m.learn.rule.precond is not None))
                for m in o.memories.values())
    return plain and not ops(o.model_dump()) & WHOLE_MATRIX_OPS


def emit_optimizer(spec: Spec, name: str) -> str:
    """The Python source of an optimizer spec as a `torch.optim.Optimizer` subclass."""
    o: Optimizer = spec.optimizers[name]
    module = Scope(OPTIMIZER_MODULE + UPDATE_ARGS + ("w",))
    cls = module.name(("optimizer",), name)
    em = OptimizerEmitter(o, spec.file if name in spec.local_units else o.span.file, module)
    em.enter(module.child(UPDATE_ARGS), o.assignments, ())
    steps: list[tuple[tuple[int, int], list[str]]] = []
    for i, a in enumerate(o.assignments):
        steps.append(((a.span.line, a.span.col), [f"{em.names[i]} = {em.expr(a.expr)}   # {em.where(a)}"]))
    for m in o.memories.values():
        if m.learn is not None and m.learn.time.base != "never":
            steps.append(((m.learn.span.line, m.learn.span.col), em.learn(m)))
    states = []
    for m in o.memories.values():
        learn = m.learn
        s = m.structure
        info = {"kind": s.kind, "shapes": tuple(memory_shapes(m)) if s.kind == "mlp" else (), "init": m.init,
                "act": s.act, "residual": s.residual, "norm": s.norm,
                "period": learn.time.period if learn and learn.time.base == "step" else 1,
                "read_after": learn is None or learn.read == "after",
                "momentum": bool(learn and learn.rule.momentum is not None),
                "adam": bool(learn and learn.rule.kind == "adam")}
        states.append(f"    {literal(m.name)}: {literal(info)},   # {em.where(m.span)}")
    lines = [f'"""Optimizer `{text(name)}` compiled by nldsl from {text(Path(em.file).name)}. Generated code: edit '
             "the spec; `# line N` comments point at its lines.",
             '"""', "", "import torch", "", "from nldsl.backends import functional as fn",
             "from nldsl.backends.torch import optimizer as opt", "from nldsl.backends.torch import runtime as rt", "",
             "", f"def update({', '.join(UPDATE_ARGS)}):",
             f'    """One step of `{text(name)}` for one parameter: updates its states S, returns its new value."""']
    for _, body in sorted(steps, key=lambda x: x[0]):
        lines += ["    " + line for line in body]
    lines += [f"    return {em.expr(o.update)}   # {em.where(o.update)}", "", "",
              f"class {cls}(opt.SpecOptimizer):",
              f"    DEFAULTS = {literal(dict(o.defaults))}",
              f"    ELEMENTWISE = {_elementwise(o)}   # whether a shard of a parameter can be updated alone",
              "    STATES = {", *states,
              "    }", "    update = staticmethod(update)", "", "", f"OPTIMIZER = {cls}", ""]
    return "\n".join(lines)


# ---- the trainer script -------------------------------------------------------------------------

def emit_trainer(spec: Spec, name: str) -> str:
    """A runnable train.py next to model.py and the optimizer modules `nldsl compile` writes."""
    model = spec.models[name]
    t = model.train
    groups = [(g.optimizer, dict(g.args), tuple(g.targets), g.period) for g in t.groups]
    settings = {"steps": t.steps, "batch": t.batch, "context": model.context, "clip": t.clip, "seed": t.seed,
                "schedule": (t.schedule.kind, t.schedule.warmup, t.schedule.min_ratio)}
    return "\n".join([
        f'"""Train `{text(name)}`, compiled by nldsl from {text(Path(spec.file).name)}. Run: python train.py --help"""',
        "", "from pathlib import Path", "",
        "from nldsl.backends.torch import run", "",
        f"GROUPS = {literal(groups)}   # (optimizer, arguments, parameters (empty: the rest), period in steps)",
        f"SETTINGS = {literal(settings)}", "",
        'if __name__ == "__main__":',
        f"    run.main(Path(__file__).parent, {literal(name)}, GROUPS, SETTINGS)", ""])


def write_package(spec: Spec, name: str | None, directory: Path) -> list[Path]:
    """`nldsl compile`: model.py, one optim_<name>.py per outer optimizer, and train.py."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"model.py": emit_model(spec, name)}
    for g in spec.models[name].train.groups:
        files[f"optim_{g.optimizer}.py"] = emit_optimizer(spec, g.optimizer)
    files["train.py"] = emit_trainer(spec, name)
    written = []
    for fname, source in files.items():
        path = directory / fname
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
