"""Memories that outlive a sequence: `scope persistent` (one state shared by the batch, each write
the mean of the sequences' writes) and `every N steps` (a shadow recurrence over the tokens,
committed between outer steps). The compiled model must follow the reference interpreter across
several sequences, through every commit."""

import pytest
import torch
from test_compile_exact import close, pair, tokens

import nldsl
from nldsl.lower import bind

BLOCK = """
import "optim/adamw.nl"
model X(vocab = 13, dim = 8, heads = 2, context = 32) {{
  block {{
    x = rmsnorm(h)
    param W_k : matrix(dim, dim)
    param W_a : matrix(dim, heads)
    k = l2norm(x @ W_k, groups = heads)
    a = 1 - 0.1 * sigmoid(x @ W_a)
{body}
  }}
  train {{ optimize all by adamw(lr = 0.001) }}
}}
"""

CASES = {
    # the slow level of specs/cms_continual.nl: teach signal, committed every 2 steps
    "teach_every_2_steps": ("teach", """
    memory slow : mlp(expand = 2, act = silu, residual) scope persistent init learned
    learn slow : outer by gd(lr = 0.1) every 2 steps read before
    h = h + slow(rmsnorm(h))"""),
    "teach_steps_beside_cms": ("teach", """
    memory fast : cms [ mlp(expand = 2, act = silu, residual) every 4 tokens ] init learned
    learn fast : outer by gd(lr = 0.1) read before
    h = h + fast(rmsnorm(h))
    memory slow : mlp(expand = 2, act = silu, residual) scope persistent init learned
    learn slow : outer by gd(lr = 0.1) every 2 steps read before
    h = h + slow(rmsnorm(h))"""),
    "local_every_step": ("generic_update", """
    memory long : matrix per head scope persistent init zeros
    learn long : l2(self(k), stopgrad(x)) by gd(lr = 0.1) every step backprop first_order
    h = h + long(k)"""),
    "mlp_momentum_every_3_steps": ("generic_update", """
    memory long : mlp(expand = 2, act = silu, residual) per head scope persistent init learned
    learn long : l2(self(k), stopgrad(x)) by gd(lr = 0.1, momentum = 0.9) every 3 steps
    h = h + long(k)"""),
    "per_token_gd": ("generic_update", """
    memory long : matrix per head scope persistent init zeros
    learn long : l2(self(k), stopgrad(x)) by gd(lr = 0.1)
    h = h + long(k)"""),
    # linear in the state with a shared coefficient: the closed form, averaged at the segment's end
    "period_momentum_constant_retain": ("period_momentum", """
    memory long : mlp(expand = 2, act = silu, residual) per head scope persistent init learned
    learn long : l2(self(k), stopgrad(x)) by gd(lr = 0.1, momentum = 0.9, retain = 0.95) every 4 tokens
    h = h + long(k)"""),
    # not linear in the state (dgd) or a per-sequence retention: token by token, averaged every token
    "period_dgd": ("generic_update", """
    memory long : matrix per head scope persistent init zeros
    learn long : l2(self(k), stopgrad(x)) by dgd(lr = 0.1, retain = 0.9) every 4 tokens read before
    h = h + long(k)"""),
    "period_data_dependent_retain": ("generic_update", """
    memory long : matrix per head scope persistent init zeros
    learn long : l2(self(k), stopgrad(x)) by gd(lr = 0.1, retain = a) every 4 tokens
    h = h + long(k)"""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_follows_reference_across_sequences(name: str) -> None:
    algorithm, body = CASES[name]
    result = nldsl.check_text(BLOCK.format(body=body), f"{name}.nl")
    assert result.ok, result.render()
    ref, comp = pair(result.spec)
    block = result.spec.models["X"].blocks[0]
    assert algorithm in {bind(m, block).kernel for m in block.memories.values()}
    for call in range(4):     # four sequences: every case commits at least once in between
        tok = tokens(seed=call)
        out_r, _ = ref(tok)
        out_c, _ = comp(tok)
        close(out_r, out_c, 1e-8)
        assert ref.persistent.keys() == comp.persistent.keys()
        for key, (cur_r, ref_r) in ref.persistent.items():
            cur_c, ref_c = comp.persistent[key]
            for a, b in zip(cur_r + ref_r, cur_c + ref_c, strict=True):
                close(a, b, 1e-8)


def test_per_step_memory_commits_only_at_its_step() -> None:
    """`every 2 steps`: after one sequence the committed state is still the initial one (the shadow
    has moved); after the second it is the shadow."""
    _, body = CASES["local_every_step"]
    result = nldsl.check_text(BLOCK.format(body=body.replace("every step", "every 2 steps")), "x.nl")
    assert result.ok, result.render()
    _, comp = pair(result.spec)
    _, st = comp(tokens(seed=0))
    mem = st.layers[0].memories["long"]
    assert torch.equal(mem.ref[0], torch.zeros_like(mem.ref[0])) and mem.cur[0].abs().max() > 0
    _, st = comp(tokens(seed=1))
    mem = st.layers[0].memories["long"]
    assert mem.ref[0].abs().max() > 0 and torch.equal(mem.ref[0], mem.cur[0])


def test_a_persistent_learned_initial_state_is_said_to_train_on_the_first_sequence_only() -> None:
    """It starts the first sequence; the carried state replaces it after that (NL076), so no
    gradient reaches it again: `explain` gives it a row of its own that says so."""
    text = BLOCK.format(body=CASES["mlp_momentum_every_3_steps"][1])
    result = nldsl.check_text(text, "x.nl")
    assert result.ok and "NL076" in [d.code for d in result.warnings]
    rows = {r.component: r for r in rows_of(result)}
    assert rows["block0: initial states (persistent)"].time == "first sequence only"
    _, comp = pair(result.spec)
    comp.loss(tokens(length=32)).backward()           # the first sequence: the initial state has a gradient
    key = next(k for k, info in comp.table.items() if info.local == "long")
    assert comp.params[key].grad is not None and comp.params[key].grad.abs().sum() > 0
    comp.zero_grad(set_to_none=True)
    comp.loss(tokens(length=32, seed=2)).backward()   # the second: the carried state, no gradient
    assert comp.params[key].grad is None or comp.params[key].grad.abs().sum() == 0


def rows_of(result: nldsl.CheckResult):
    from nldsl.report import rows
    (graph,) = result.graphs.values()
    return rows(graph, result.sources)
