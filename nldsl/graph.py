"""Stage 3, graph: the nesting graph of one model (or optimizer) and its derived levels.

Nodes are components: memories, their momentum/Adam states, learned initial states, static
parameters and the outer optimizer's states. Edges say how information moves: `data` (an output
feeds a read), `write` (it is what a memory is trained on), `generate` (it sets a memory's learning
rate, retention or momentum), `init`, `update` (a state updates its owner) and `grad` (the outer
gradient reaching a parameter through an inner level, labelled with the gradient policy).

Levels follow the paper's Definition 2: components are sorted by update frequency, fastest first;
at equal frequency, A is faster than B when B's state at time t needs A's state at time t.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict

from nldsl.dataflow import Deps, Flow, block_output, learn_exprs, usage
from nldsl.diagnostics import Diagnostics
from nldsl.parse import gc_paused
from nldsl.source import Span, unvalidated
from nldsl.spec import Block, Memory, Model, Optimizer, Spec, Time

INFINITE = Fraction(10**12)   # attention: re-solved per query, faster than anything with a period

Kind = Literal["memory", "attention", "state", "init", "param", "loss"]


class Component(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    kind: Kind
    name: str
    block: str | None = None
    repeat: int = 1
    time: Time
    frequency: Fraction                 # updates per token of context; see `frequency()`
    level: int = 0
    asserted: int | None = None
    span: Span | None = None
    memory: Memory | None = None
    shape: tuple[int, ...] = ()
    note: str = ""

    def with_level(self, level: int) -> Component:
        """This component at its derived level (`model_copy` without its cost: one per component)."""
        return unvalidated(Component, {**self.__dict__, "level": level}, self.model_fields_set | {"level"})


class NestingGraph:
    """Components and the edges between them, plus the derived levels. Built in plain dicts (a
    100,000-line spec adds a hundred thousand edges); `g` is the same graph as a networkx
    MultiDiGraph, made when first asked for."""

    def __init__(self, name: str, kind: Literal["model", "optimizer"]) -> None:
        self.name = name
        self.kind = kind
        self.levels: list[list[str]] = []
        self.model: Model | None = None
        self.optimizer: Optimizer | None = None
        self._components: dict[str, Component] = {}              # in the order they were added
        self._edges: dict[tuple[str, str, str], str] = {}         # (src, dst, kind) -> policy: one of each kind
        self._needs: dict[str, dict[str, None]] = {}              # A -> {B}: B's state at t needs A's at t
        self._g: nx.MultiDiGraph | None = None

    def add(self, c: Component) -> None:
        self._components[c.id] = c
        self._g = None

    def replace(self, c: Component) -> None:
        """Put `c` in place of the component with its id."""
        self._components[c.id] = c
        self._g = None

    def edge(self, src: str, dst: str, kind: str, policy: str = "") -> None:
        key = (src, dst, kind)
        if key not in self._edges and src in self._components and dst in self._components:
            self._edges[key] = policy
            self._g = None

    def need(self, src: str, dst: str) -> None:
        """`dst`'s state at token t needs `src`'s state at t (ordering within one frequency)."""
        self._needs.setdefault(src, {})[dst] = None
        self._needs.setdefault(dst, {})      # every node in the order it first appears, as networkx keeps them

    def edges(self) -> list[tuple[str, str, str, str]]:
        """Every edge as (src, dst, kind, policy), in the order they were added."""
        return [(src, dst, kind, policy) for (src, dst, kind), policy in self._edges.items()]

    @property
    def g(self) -> nx.MultiDiGraph:
        """The graph as a networkx MultiDiGraph: nodes carry `component`, edges `kind` and `policy`."""
        if self._g is None:
            g = nx.MultiDiGraph()
            g.add_nodes_from((n, {"component": c}) for n, c in self._components.items())
            g.add_edges_from((src, dst, {"kind": kind, "policy": policy}) for src, dst, kind, policy in self.edges())
            self._g = g
        return self._g

    def component(self, node: str) -> Component:
        return self._components[node]

    def components(self) -> list[Component]:
        return list(self._components.values())

    def level_of(self, node: str) -> int:
        return self.component(node).level


def frequency(time: Time, context: int, batch: int, chunk: int = 1) -> Fraction:
    """Updates per token. A per-token memory with chunk C counts as 1/C (Hope §8.2: f = L/C)."""
    if time.base == "query":
        return INFINITE
    if time.base == "never":
        return Fraction(0)
    if time.base == "token":
        return Fraction(1, time.period * chunk)
    return Fraction(1, time.period * context * batch)


# ---- models -------------------------------------------------------------------------------------

@gc_paused()
def build(spec: Spec, name: str | None, diags: Diagnostics, lint: bool = True) -> NestingGraph | None:
    """The nesting graph of `name`, or of the entry file's first unit. `lint` adds the warnings
    about unused components, which are only trustworthy once the spec has no errors."""
    if name is None:
        name = next((u for u in spec.local_units if u in spec.models or u in spec.optimizers), None)
    if name in spec.models:
        return build_model(spec, spec.models[name], diags, lint)
    if name in spec.optimizers:
        return build_optimizer(spec.optimizers[name], diags)
    return None


def _group_of(model: Model, name: str) -> tuple[int, int]:
    """(group index, period in steps) of the optimize group that owns a parameter; (-1, 0) if none."""
    catch_all = -1
    for i, g in enumerate(model.train.groups):
        if name in g.targets:
            return i, g.period
        if not g.targets:
            catch_all = i
    if catch_all >= 0:
        return catch_all, model.train.groups[catch_all].period
    return -1, 0


def build_model(spec: Spec, model: Model, diags: Diagnostics, lint: bool = True) -> NestingGraph:
    ng = NestingGraph(model.name, "model")
    ng.model = model
    ctx, batch = model.context, model.train.batch

    times: dict[tuple[int, int], tuple[Time, Fraction]] = {}     # one per optimize group: shared, frozen

    def outer_clock(name: str, frozen: bool) -> tuple[Time, Fraction]:
        """When the outer optimizer updates `name`, and how often that is per token."""
        gi, period = _group_of(model, name)
        key = (-1, 0) if frozen or gi < 0 else (gi, period)
        if key not in times:
            t = Time(base="never") if key[0] < 0 else Time(base="step", period=period)
            times[key] = (t, frequency(t, ctx, batch))
        return times[key]

    def add_param(pid: str, name: str, block: Block | None, shape, frozen, span, level=None, note="") -> None:
        t, f = outer_clock(name, frozen)
        ng.add(Component(id=pid, kind="param", name=name, block=block.name if block else None,
                         repeat=block.repeat if block else 1, time=t, frequency=f,
                         asserted=level, span=span, shape=shape, note=note))

    ng.add(Component(id="loss", kind="loss", name=model.train.loss, time=Time(base="step"),
                     frequency=Fraction(0), span=model.train.span))
    for pname, p in model.params.items():
        add_param(pname, pname, None, p.shape, p.frozen, p.span, p.level)
        ng.edge(pname, "loss", "data")
    used: set[str] = set()
    for block in model.blocks:
        flow = Flow(block.assignments)      # each value summarised once, for every question below
        _add_block(ng, block, flow, model, add_param, outer_clock)
        if lint:
            used |= _usage_diagnostics(block, flow, diags)
    if lint:
        for pname, p in model.params.items():
            if not p.implicit and not p.frozen and pname not in used:
                diags.warn("NL073", f"parameter '{pname}' is never used", p.span, "use it or delete it")
    _add_outer_optimizer(ng, spec, model)
    _derive_levels(ng, diags)
    return ng


def _node(block: Block, name: str) -> str:
    return f"{block.name}.{name}"


def _add_block(ng: NestingGraph, block: Block, flow: Flow, model: Model, add_param, outer_clock) -> None:
    ctx, batch = model.context, model.train.batch
    out = block_output(block)
    for pname, p in block.params.items():
        add_param(_node(block, pname), pname, block, p.shape, p.frozen, p.span, p.level,
                  "from " + pname.rsplit("_", 1)[-1] if p.implicit else "")
    for mname, m in block.memories.items():
        nid = _node(block, mname)
        if not m.parametric:
            t = Time(base="query")
            ng.add(Component(id=nid, kind="attention", name=mname, block=block.name, repeat=block.repeat, time=t,
                             frequency=INFINITE, asserted=m.level, span=m.span, memory=m))
            continue
        if m.learn is None:
            t, f = outer_clock(mname, m.frozen)
            ng.add(Component(id=nid, kind="memory", name=mname, block=block.name, repeat=block.repeat, time=t,
                             frequency=f, asserted=m.level, span=m.span, memory=m,
                             note="static: changes only through the outer optimizer"))
            continue
        learn = m.learn
        f = frequency(learn.time, ctx, batch, learn.chunk)
        ng.add(Component(id=nid, kind="memory", name=mname, block=block.name, repeat=block.repeat,
                         time=learn.time, frequency=f, asserted=m.level, span=m.span, memory=m))
        for state, present in (("momentum", learn.rule.momentum is not None), ("adam", learn.rule.kind == "adam")):
            if present:
                sid = f"{nid}.{state}"
                ng.add(Component(id=sid, kind="state", name=f"{mname}.{state}", block=block.name,
                                 repeat=block.repeat, time=learn.time, frequency=f, span=learn.rule.span,
                                 note=f"{state} of {mname}'s update rule"))
                ng.edge(sid, nid, "update")
                ng.need(sid, nid)
        if m.init == "learned":
            iid = f"{nid}.init"
            t, f = outer_clock(mname, False)
            ng.add(Component(id=iid, kind="init", name=f"{mname}₀", block=block.name, repeat=block.repeat,
                             time=t, frequency=f, span=m.span,
                             note=f"learned initial state of {mname}"))
            ng.edge(iid, nid, "init")
            ng.edge(nid, iid, "grad", learn.backprop)
    # data, write and generate edges, and same-time dependencies
    for mname, m in block.memories.items():
        if m.learn is None:
            continue
        nid = _node(block, mname)
        for role, exprs in learn_exprs(m.learn).items():
            for e in exprs:
                d = flow.deps(e)
                for src in d.reads:
                    ng.edge(_node(block, src), nid, role)
                    if _read_now(block.memories.get(src)):
                        ng.need(_node(block, src), nid)
                for p in d.params:
                    ng.edge(_node(block, p) if p in block.params else p, nid, role)
                    if m.learn.backprop in ("through", "truncate"):
                        ng.edge(nid, _node(block, p) if p in block.params else p, "grad", m.learn.backprop)
        if m.learn.objective is None:  # teach signal: needs every state the output reads now
            if out is not None:
                for src in flow.deps(flow.of(out)).reads:
                    if src != mname and _read_now(block.memories.get(src)):
                        ng.need(_node(block, src), nid)
            ng.edge("loss", nid, "write", "teach signal")
    for memory, d in _read_inputs(flow).items():
        target = _node(block, memory)
        for src in d.reads:
            ng.edge(_node(block, src), target, "data")
        for p in d.params:
            ng.edge(_node(block, p) if p in block.params else p, target, "data")
    if out is not None:
        d = flow.deps(flow.of(out))
        for src in d.reads:
            ng.edge(_node(block, src), "loss", "data")
        for p in d.params:
            ng.edge(_node(block, p) if p in block.params else p, "loss", "data")


def _read_inputs(flow: Flow) -> dict[str, Deps]:
    """What the inputs of every read of each memory depend on, one `Deps` per memory: a value shared
    by many reads is followed once (a long chain of values read step by step stays linear)."""
    inputs: dict[str, Deps] = {}
    for i in range(len(flow.assignments)):
        for memory, args in flow.of(i).read_inputs:
            flow.deps(args, inputs.setdefault(memory, Deps()))
    return inputs


def _read_now(m: Memory | None) -> bool:
    """Whether a read of `m` at token t sees its state at t (rather than at t-1)."""
    return m is not None and m.learn is not None and m.learn.read == "after"


def _usage_diagnostics(block: Block, flow: Flow, diags: Diagnostics) -> set[str]:
    """Warn about what a block declares but never uses; returns the parameter names it does use."""
    u = usage(block, flow)
    if block_output(block) is None:
        diags.warn("NL073", f"block '{block.name}' never assigns `h`: it has no effect on the output", block.span,
                   "end the block with `h = h + ...`")
        return u.params
    for name, m in block.memories.items():
        if name not in u.memories:
            diags.warn("NL072", f"memory '{name}' is never read on the way to the output", m.span,
                       "read it, e.g. `h = h + " + name + "(x)`, or delete it")
    for i, a in enumerate(block.assignments):
        if i not in u.values and a.target != "h":
            diags.warn("NL073", f"'{a.target}' is computed but never used", a.span, "use it or delete it")
    for name, p in block.params.items():
        if p.implicit or p.frozen:
            continue
        if name not in u.params:
            diags.warn("NL073", f"parameter '{name}' is never used", p.span, "use it or delete it")
        elif name not in u.graded:
            diags.warn("NL074", f"parameter '{name}' gets no outer gradient: every use of it flows into stopgrad or "
                                "into writes that are not differentiated", p.span,
                       "use `backprop through` on the memory it feeds, or declare it `frozen`")
    for name, m in block.memories.items():
        learned = m.learn is not None and m.learn.backprop != "stop" and m.init == "learned" and m.parametric
        if learned and name in u.memories and name not in u.graded:
            diags.warn("NL074", f"the learned initial state of '{name}' gets no outer gradient: every read of it "
                                "flows into stopgrad", m.span,
                       "a target that should stay trainable can use `fixed(...)`: constant for the memory's own "
                       "gradient, differentiated by the outer level")
    return u.params


def _add_outer_optimizer(ng: NestingGraph, spec: Spec, model: Model) -> None:
    ctx, batch = model.context, model.train.batch
    for gi, group in enumerate(model.train.groups):
        opt = spec.optimizers.get(group.optimizer)
        if opt is None:
            continue
        owned = [n for n, c in ng._components.items() if c.kind in ("param", "init", "memory")
                 and c.time.base == "step" and _group_of(model, c.name)[0] == gi]
        for mname, m in opt.memories.items():
            period = (m.learn.time.period if m.learn and m.learn.time.base == "step" else 1) * group.period
            t = Time(base="step", period=period)
            sid = f"{group.optimizer}#{gi}.{mname}" if len(model.train.groups) > 1 else f"{group.optimizer}.{mname}"
            ng.add(Component(id=sid, kind="state", name=f"{group.optimizer}.{mname}", time=t,
                             frequency=frequency(t, ctx, batch), span=m.span, memory=m,
                             note=f"state of the outer optimizer, one per parameter ({len(owned)} components)"))
            for p in owned:
                ng.edge(p, sid, "grad", "gradient")
                ng.edge(sid, p, "update")
                if m.learn is None or m.learn.read == "after":
                    ng.need(sid, p)


# ---- optimizers ---------------------------------------------------------------------------------

def build_optimizer(opt: Optimizer, diags: Diagnostics) -> NestingGraph:
    """An optimizer spec alone: its states and the parameter they update, per step."""
    ng = NestingGraph(opt.name, "optimizer")
    ng.optimizer = opt
    t = Time(base="step")
    ng.add(Component(id="param", kind="param", name="param", time=t, frequency=Fraction(1), span=opt.span,
                     note="any parameter this optimizer updates"))
    ng.add(Component(id="loss", kind="loss", name="loss", time=t, frequency=Fraction(0), span=opt.span))
    ng.edge("param", "loss", "data")
    flow = Flow(opt.assignments)
    update_reads = flow.deps(opt.update).reads
    for mname, m in opt.memories.items():
        mt = m.learn.time if m.learn else Time(base="never")
        ng.add(Component(id=mname, kind="state", name=mname, time=mt,
                         frequency=Fraction(1, mt.period) if mt.base == "step" else Fraction(0),
                         asserted=m.level, span=m.span, memory=m))
        ng.edge("param", mname, "grad", "gradient")
        if mname in update_reads:
            ng.edge(mname, "param", "update")
            if m.learn is None or m.learn.read == "after":
                ng.need(mname, "param")
        if m.learn is not None:
            for exprs in learn_exprs(m.learn).values():
                for e in exprs:
                    for src in flow.deps(e).reads:
                        ng.edge(src, mname, "write")
                        if _read_now(opt.memories.get(src)):
                            ng.need(src, mname)
    _derive_levels(ng, diags)
    return ng


# ---- Definition 2 -------------------------------------------------------------------------------

def _derive_levels(ng: NestingGraph, diags: Diagnostics) -> None:
    nodes = [n for n, c in ng._components.items() if c.kind != "loss"]
    needs = _needs_among(ng, set(nodes))
    order = _topological(needs)
    if order is None:               # cycles: one report per tangle, whose edges go so levels can still be derived
        tangled = nx.DiGraph()
        tangled.add_nodes_from(needs)
        tangled.add_edges_from((src, dst) for src, dsts in needs.items() for dst in dsts)
        for cycle in _cycles(tangled):
            _report_cycle(ng, cycle, diags)
        needs = {n: dict.fromkeys(tangled.successors(n)) for n in tangled}
        order = _topological(needs)
        assert order is not None
    # Frequencies compared as (numerator, denominator): a Fraction's own hash and == are slow
    rate = {n: (c.frequency.numerator, c.frequency.denominator) for n in nodes for c in [ng.component(n)]}
    depth = dict.fromkeys(nodes, 0)    # the longest chain of needs at the node's own frequency below it
    for n in order:
        f = rate[n]
        for succ in needs[n]:
            if rate[succ] == f:
                depth[succ] = max(depth[succ], depth[n] + 1)
    by_rate: dict[tuple[int, int], list[str]] = {}
    for n in nodes:
        by_rate.setdefault(rate[n], []).append(n)
    level = 0
    levels: list[list[str]] = []
    for key in sorted(by_rate, key=lambda k: Fraction(*k), reverse=True):
        group = by_rate[key]
        layers: list[list[str]] = [[] for _ in range(max(depth[n] for n in group) + 1)]
        for n in group:
            layers[depth[n]].append(n)
        for layer in map(sorted, layers):
            level += 1
            levels.append(layer)
            for n in layer:
                ng.replace(ng.component(n).with_level(level))
    ng.levels = levels
    for n in nodes:
        c = ng.component(n)
        if c.asserted is not None and c.asserted != c.level and c.span is not None:
            diags.error("NL071", f"'{c.name}' is asserted at level {c.asserted}, but its derived level is "
                                 f"{c.level}", c.span, f"levels are derived from update frequencies: change the "
                                                       f"assertion to `level {c.level}` or the period")


def _needs_among(ng: NestingGraph, nodes: set[str]) -> dict[str, dict[str, None]]:
    """The same-time needs between `nodes`, in the order they were recorded (cycle reports follow it)."""
    return {src: {dst: None for dst in dsts if dst in nodes} for src, dsts in ng._needs.items() if src in nodes}


def _topological(needs: dict[str, dict[str, None]]) -> list[str] | None:
    """The nodes of `needs` with every node after those it needs (Kahn's algorithm); None if it
    has a cycle."""
    indegree = dict.fromkeys(needs, 0)
    for dsts in needs.values():
        for dst in dsts:
            indegree[dst] += 1
    order = [n for n, d in indegree.items() if d == 0]
    for n in order:                 # grows as it goes
        for dst in needs[n]:
            indegree[dst] -= 1
            if indegree[dst] == 0:
                order.append(dst)
    return order if len(order) == len(needs) else None


def _report_cycle(ng: NestingGraph, cycle: list[str], diags: Diagnostics) -> None:
    comps = [ng.component(n) for n in cycle]
    names = " → ".join(c.name for c in [*comps, comps[0]])
    span = next((c.span for c in comps if c.span is not None), None)
    if span is not None and len(comps) == 1:
        diags.error("NL070", f"'{comps[0].name}' reads its own write of a token to compute that write", span,
                    "a memory's update cannot depend on a `read after` of itself; add `read before`")
    elif span is not None:
        diags.error("NL070", f"dependency cycle at equal time: {names}", span,
                    "each needs the other's state at the same token; add `read before` to one of them")


def _cycles(g: nx.DiGraph) -> list[list[str]]:
    """One cycle per strongly connected tangle, starting at its smallest node (so reports do not
    depend on hashing); every edge inside a tangle is removed from `g`, leaving it acyclic."""
    out = []
    for comp in sorted(nx.strongly_connected_components(g), key=min):
        if len(comp) == 1 and not g.has_edge(min(comp), min(comp)):
            continue
        cycle = [e[0] for e in nx.find_cycle(g.subgraph(comp), source=min(comp))]
        i = cycle.index(min(cycle))
        out.append(cycle[i:] + cycle[:i])
        g.remove_edges_from(list(g.subgraph(comp).edges))
    return out
