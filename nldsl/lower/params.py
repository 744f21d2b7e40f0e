"""The parameter table: every outer-level tensor of a model, where it lives, its shape and how it
starts. Both backends, the trainer and checkpoints name tensors by its keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from nldsl.spec import Block, Memory, Model, Param

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
    std: float = 0.02            # of a normal initialization
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
    if p.init == "normal":
        std = p.shape[0] ** -0.5 if len(p.shape) == 2 else 0.02
        return ParamInfo(owner=owner, layer=layer, local=p.name, shape=p.shape, init="normal", std=std,
                         trainable=not p.frozen)
    return ParamInfo(owner=owner, layer=layer, local=p.name, shape=p.shape, init=p.init, trainable=not p.frozen)


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
