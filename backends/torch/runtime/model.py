"""The part of every generated model that is the same for all specs: parameters, initial states
and the loop over segments. The generated subclass supplies one method per block."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch._functorch.config  # not imported by `import torch`; `compile` sets it
import torch.nn.functional as F
from torch import nn

from nldsl.backends import functional as fn
from nldsl.backends.params import make_parameters, resolve, views
from nldsl.backends.torch.runtime import memory as rt
from nldsl.lower import ParamInfo, state_parts


@dataclass
class LayerState:
    memories: dict[str, rt.Mem]
    cache: rt.Cache


@dataclass
class State:
    """What a stream carries between calls: the position, and every layer's memories and caches."""

    pos: int
    layers: list[LayerState]


class CompiledModel(nn.Module):
    """Subclasses (generated) set the class attributes below; BLOCKS holds one function per block,
    `block(P, S, cache, h, fires) -> h`, running one segment of tokens through one layer. `compile()`
    specializes each block once, and again per pattern of the periods that end in a segment only for
    memories read after their update (`rt.commit`)."""

    PARAMS: tuple[ParamInfo, ...] = ()       # the parameter table (nldsl.lower.parameter_table)
    BLOCKS: dict[str, Callable] = {}         # block → its function
    LAYERS: tuple[tuple[str, int], ...] = ()  # (block, layer index), in order
    MEMORIES: dict[str, dict[str, rt.MemSpec]] = {}   # block → memory → spec (memories that learn)
    CONVS: dict[str, dict[str, tuple[int, int]]] = {}  # block → convolution → (width, kernel)
    SITES: dict[str, dict[str, tuple[int, int]]] = {}  # block → attention read → (key, value width)
    SEGMENT: int | None = None               # tokens per segment; None: the whole sequence at once
    VOCAB = 0

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.table = {info.key: info for info in self.PARAMS}
        self.params = make_parameters(self.table, seed, dtype)
        self.views = views(self.table, list(self.LAYERS))
        self.blocks = dict(self.BLOCKS)
        self.dtype = dtype
        self.persistent: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.steps = 0
        # teach signals at the committed state (`memory.teach`): needed once blocks are compiled
        self.teach_at_state = False

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    # ---- parameters and states --------------------------------------------------------------------
    def view(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors layer `index`'s code names: the model's and shared ones, and the layer's own."""
        return resolve(self.params, self.views[index])

    def initial_state(self, batch: int) -> State:
        layers = []
        for index, (block, layer) in enumerate(self.LAYERS):
            mems = {}
            for name, spec in self.MEMORIES.get(block, {}).items():
                key = f"{block}/{layer}/{name}"
                if spec.persistent and key in self.persistent:
                    cur, ref = self.persistent[key]
                    mem = rt.Mem.start(spec, cur)
                    mem.ref = mem.seen = list(ref)
                else:
                    lead = 1 if spec.persistent else batch
                    make = dict(dtype=self.dtype, device=self.device)
                    parts = state_parts(spec.kind, len(spec.shapes))
                    init = [torch.zeros((lead, *s), **make) for s in spec.shapes] if spec.init == "zeros" \
                        else [self.params[self.views[index][f"{name}/{part}"]].unsqueeze(0).expand(lead, *s)
                              .contiguous() for part, s in zip(parts, spec.shapes, strict=True)]
                    mem = rt.Mem.start(spec, init)
                mems[name] = mem
            cache = rt.Cache.start(batch, self.CONVS.get(block, {}), self.SITES.get(block, {}), self.dtype,
                                   self.device)
            layers.append(LayerState(memories=mems, cache=cache))
        return State(pos=0, layers=layers)

    # ---- the sequence -----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None,
                final: bool = True, keep_state: bool = True) -> tuple[torch.Tensor, State | None]:
        """Logits (B, T, vocab) and the state after the last token (pass it back to continue).
        `keep_state=False` returns no state and skips the work that only shapes it: the teach-signal
        windows that close at the last token, whose writes no token of this call reads."""
        batch = tokens.shape[0]
        st = state or self.initial_state(batch)
        if targets is None:
            targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
        teach = [m for ls in st.layers for m in ls.memories.values() if m.spec.teach is not None]
        with torch.enable_grad() if teach else nullcontext():   # teach signals are gradients, even in eval
            logits, st = self._forward(tokens, st, targets, final, teach, keep_state)
        return logits, st if keep_state else None

    def _forward(self, tokens: torch.Tensor, st: State, targets: torch.Tensor, final: bool,
                 teach: list[rt.Mem], keep_state: bool) -> tuple[torch.Tensor, State]:
        batch, length = tokens.shape
        views = [self.view(i) for i in range(len(self.LAYERS))]
        logits = []
        for seg in self._segments(st.pos, length):
            last = final and seg.stop == length
            fires = []
            for ls in st.layers:
                for mem in ls.memories.values():
                    rt.begin_segment(mem, st.pos, batch, seg.stop - seg.start)
                fires.append({name: (st.pos + seg.stop - seg.start) % mem.spec.period == 0
                              for name, mem in ls.memories.items()})
            logit = self.segment(views, st, tokens[:, seg], fires)
            logits.append(logit)
            for mem in teach:
                mem.window += mem.scratch
            if teach:
                loss = F.cross_entropy(logit.flatten(0, 1), targets[:, seg].flatten(), ignore_index=-100,
                                       reduction="none").view(batch, -1)
                due: dict[int, list[rt.Mem]] = {}     # windows ending now, by length: one backward each
                for mem in teach:
                    mem.losses.append(loss)
                    if last and not keep_state and not (mem.spec.persistent or mem.spec.steps):
                        mem.losses, mem.window = [], []    # its write would reach only a state nobody keeps
                        continue
                    if (st.pos + seg.stop - seg.start) % mem.spec.period == 0 or last:
                        due.setdefault(len(mem.losses), []).append(mem)
                for mems in due.values():
                    rt.teach(mems, torch.cat(mems[0].losses, 1), at_state=self.teach_at_state)
                    for mem in mems:
                        rt.commit_now(mem, not mem.spec.steps)     # per-step memories commit between steps
                        mem.losses = []
            st.pos += seg.stop - seg.start
        if final:
            self._end_of_sequence(st)
        return torch.cat(logits, 1), st

    def _segments(self, pos: int, length: int) -> list[slice]:
        """The segments of a call of `length` tokens that starts at stream position `pos`: they end
        where the stream's segments end (multiples of SEGMENT), so a stream continued mid-segment
        commits and refreshes gradients at the same tokens as one pass over it."""
        if self.SEGMENT is None:
            return [slice(0, length)]
        ends = range(self.SEGMENT - pos % self.SEGMENT, length, self.SEGMENT)
        starts = [0, *ends]
        return [slice(a, b) for a, b in zip(starts, [*ends, length], strict=True) if b > a]

    def segment(self, views: list[dict[str, torch.Tensor]], st: State, tokens: torch.Tensor,
                fires: list[dict[str, bool]]) -> torch.Tensor:
        """One segment of tokens through every layer: logits (B, S, vocab)."""
        h = self.params["embed"][tokens]
        positions = torch.arange(st.pos, st.pos + tokens.shape[1], device=tokens.device)   # for rope
        for i, (block, _) in enumerate(self.LAYERS):
            ls = st.layers[i]
            ls.cache.positions = positions
            h = self.blocks[block](views[i], ls.memories, ls.cache, h, fires[i])
            for name, mem in ls.memories.items():
                rt.commit_after_block(mem, fires[i][name])
        return fn.rmsnorm(h, self.params["final_norm"]) @ self.params["unembed"]

    def compile(self, **options) -> CompiledModel:
        """Run every block under `torch.compile(fullgraph=True)` (options go to torch.compile). A
        block's graph serves all its layers, so a 4-layer model compiles as fast as a 1-layer one."""
        # Teach signals differentiate the blocks of their window (retaining the graph) before the
        # step's backward does: a backward compiled with donated buffers refuses to run twice
        # ("non-empty donated buffers ... retain_graph=False"). The setting is read when the
        # backward compiles, after this returns: it is global.
        torch._functorch.config.donated_buffer = False
        self.teach_at_state = True
        self.blocks = {name: torch.compile(block, fullgraph=True, **options) for name, block in self.BLOCKS.items()}
        return self

    @contextmanager
    def held_out(self):
        """Evaluate without consequences: the step count (which per-step memories commit on) and the
        persistent memories are as they were afterwards, so held-out text never trains the model."""
        steps, persistent = self.steps, dict(self.persistent)
        try:
            yield self
        finally:
            self.steps, self.persistent = steps, persistent

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy: of the next token, or of `targets` (-100 where nothing is scored)."""
        if targets is None:
            logits, _ = self(tokens, keep_state=False)
            return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        logits, _ = self(tokens, targets=targets, keep_state=False)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    def _end_of_sequence(self, st: State) -> None:
        """Flush partial periods, commit per-step memories whose step has come, and keep persistent
        memories for the next sequence."""
        self.steps += 1
        for (block, layer), ls in zip(self.LAYERS, st.layers, strict=True):
            for name, mem in ls.memories.items():
                step_due = mem.spec.steps and self.steps % mem.spec.steps == 0
                if (mem.spec.steps == 0 and mem.spec.period > 1) or step_due:
                    mem.ref = list(mem.cur)
                if mem.spec.persistent:
                    self.persistent[f"{block}/{layer}/{name}"] = ([w.detach().clone() for w in mem.cur],
                                                                 [w.detach().clone() for w in mem.ref])
