"""The reference interpreter against recurrences written out by hand: it must be the math itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nldsl
from nldsl.backends import functional as fn
from nldsl.backends.reference import Reference

torch.set_default_dtype(torch.float64)
HEADER = "vocab = 11, dim = 8, heads = 2, context = 16"


def spec(body: str, header: str = HEADER) -> nldsl.Spec:
    text = f"model T({header}) {{\n  block {{\n{body}\n  }}\n}}\n"
    r = nldsl.check_text(text, "<t>.nl")
    assert r.ok, r.render()
    return r.spec


PROJ = """
    param W_q : matrix(dim, dim)
    param W_k : matrix(dim, dim)
    param W_v : matrix(dim, dim)
    q = h @ W_q
    k = h @ W_k
    v = h @ W_v
"""


def tokens(batch=2, length=9, seed=0):
    return torch.randint(0, 11, (batch, length), generator=torch.Generator().manual_seed(seed))


def setup(body: str, seed: int = 0):
    model = Reference(spec(PROJ + body), dtype=torch.float64, seed=seed)
    tok = tokens()
    p = {n: model.params[f"block0/0/{n}"].detach() for n in ("W_q", "W_k", "W_v")}
    h = model.params["embed"].detach()[tok]
    return model, tok, h, p["W_q"], p["W_k"], p["W_v"]


def heads(x):
    return x.unflatten(-1, (2, 4))


def logits_from(model, h):
    return fn.rmsnorm(h, model.params["final_norm"]) @ model.params["unembed"]


def assert_model_output(model, tok, h, y):
    out, _ = model(tok)
    torch.testing.assert_close(out, logits_from(model, h + y).detach(), rtol=1e-10, atol=1e-10)


def test_linear_attention_is_a_running_sum_of_outer_products():
    model, tok, h, wq, wk, wv = setup("""
    memory M : matrix per head init zeros
    learn M : dot(self(k), v) by gd(lr = 1)
    h = h + M(q)
""")
    q, k, v = heads(h @ wq), heads(h @ wk), heads(h @ wv)
    state = torch.zeros(2, 2, 4, 4)
    ys = []
    for t in range(tok.shape[1]):
        state = state + torch.einsum("bho,bhi->bhoi", v[:, t], k[:, t])        # M_t = M_t−1 + v kᵀ
        ys.append(torch.einsum("bhoi,bhi->bho", state, q[:, t]).flatten(-2))   # read after the write
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_delta_rule_read_before_with_per_head_rate():
    model, tok, h, wq, wk, wv = setup("""
    param W_b : matrix(dim, heads)
    beta = sigmoid(h @ W_b)
    memory M : matrix per head init zeros
    learn M : l2(self(k), v) by gd(lr = beta) read before
    h = h + M(q)
""")
    wb = model.params["block0/0/W_b"].detach()
    q, k, v, beta = heads(h @ wq), heads(h @ wk), heads(h @ wv), torch.sigmoid(h @ wb)
    state = torch.zeros(2, 2, 4, 4)
    ys = []
    for t in range(tok.shape[1]):
        ys.append(torch.einsum("bhoi,bhi->bho", state, q[:, t]).flatten(-2))   # read before the write
        err = torch.einsum("bhoi,bhi->bho", state, k[:, t]) - v[:, t]
        state = state - beta[:, t, :, None, None] * torch.einsum("bho,bhi->bhoi", err, k[:, t])
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_dgd_adds_the_decorrelating_term():
    model, tok, h, wq, wk, wv = setup("""
    memory M : matrix per head init zeros
    learn M : l2(self(k), v) by dgd(lr = 0.1, retain = 0.9)
    h = h + M(q)
""")
    q, k, v = heads(h @ wq), heads(h @ wk), heads(h @ wv)
    state = torch.zeros(2, 2, 4, 4)
    ys = []
    eye = torch.eye(4)
    for t in range(tok.shape[1]):
        kk = torch.einsum("bhi,bhj->bhij", k[:, t], k[:, t])
        err = torch.einsum("bhoi,bhi->bho", state, k[:, t]) - v[:, t]
        state = state @ (0.9 * eye - 0.1 * kk) - 0.1 * torch.einsum("bho,bhi->bhoi", err, k[:, t])
        ys.append(torch.einsum("bhoi,bhi->bho", state, q[:, t]).flatten(-2))
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_period_holds_the_state_and_applies_the_summed_update():
    model, tok, h, wq, wk, wv = setup("""
    memory M : matrix per head init zeros
    learn M : l2(self(k), v) by gd(lr = 0.5) every 4 tokens
    h = h + M(q)
""")
    q, k, v = heads(h @ wq), heads(h @ wk), heads(h @ wv)
    committed = torch.zeros(2, 2, 4, 4)
    pending = torch.zeros_like(committed)
    ys = []
    for t in range(tok.shape[1]):
        err = torch.einsum("bhoi,bhi->bho", committed, k[:, t]) - v[:, t]       # gradient at the held state
        pending = pending - 0.5 * torch.einsum("bho,bhi->bhoi", err, k[:, t])
        if (t + 1) % 4 == 0:
            committed, pending = committed + pending, torch.zeros_like(pending)
        ys.append(torch.einsum("bhoi,bhi->bho", committed, q[:, t]).flatten(-2))   # read after: sees the commit
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_chunked_gradients_with_per_token_state_momentum_and_retention():
    model, tok, h, wq, wk, wv = setup("""
    memory M : matrix per head init zeros
    learn M : l2(self(k), v) by gd(lr = 0.3, momentum = 0.8, retain = 0.95) every token chunk 3
    h = h + M(q)
""")
    q, k, v = heads(h @ wq), heads(h @ wk), heads(h @ wv)
    state = torch.zeros(2, 2, 4, 4)
    anchor, mom = state, torch.zeros_like(state)
    ys = []
    for t in range(tok.shape[1]):
        if t % 3 == 0:
            anchor = state
        err = torch.einsum("bhoi,bhi->bho", anchor, k[:, t]) - v[:, t]
        mom = 0.8 * mom - 0.3 * torch.einsum("bho,bhi->bhoi", err, k[:, t])
        state = 0.95 * state + mom
        ys.append(torch.einsum("bhoi,bhi->bho", state, q[:, t]).flatten(-2))
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_mlp_memory_gradient_matches_autograd_of_the_objective():
    model, tok, h, wq, wk, wv = setup("""
    memory M : mlp(depth = 2, expand = 2, act = tanh, residual) per head init learned
    learn M : huber(self(k), v, delta = 0.5) by gd(lr = 0.2) read before
    h = h + M(q)
""")
    w = [model.params[f"block0/0/M/w{j}"].detach().expand(2, -1, -1, -1) for j in range(2)]
    q, k, v = h @ wq, h @ wk, h @ wv
    ys = []
    for t in range(tok.shape[1]):
        ys.append(fn.memory_apply("mlp", w, q[:, t], 2, "tanh", True))
        leaves = [x.clone().requires_grad_(True) for x in w]
        pred = fn.memory_apply("mlp", leaves, k[:, t], 2, "tanh", True)
        loss = F.huber_loss(pred, v[:, t], delta=0.5, reduction="sum")
        grads = torch.autograd.grad(loss, leaves)
        w = [x - 0.2 * g for x, g in zip(w, grads, strict=True)]
    assert_model_output(model, tok, h, torch.stack(ys, 1))


def test_batch_elements_are_independent_and_streaming_equals_one_pass():
    model, tok, *_ = setup("""
    memory M : mlp(depth = 2, expand = 2, act = silu, residual) per head init learned
    learn M : l2(self(k), v) by dgd(lr = 0.1, retain = 0.9) every 2 tokens
    h = h + M(q)
""")
    both, _ = model(tok)
    one, _ = model(tok[:1])
    torch.testing.assert_close(both[:1], one)
    first, state = model(tok[:, :5], final=False)
    second, _ = model(tok[:, 5:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), both)


@pytest.mark.parametrize("policy", ["through", "first_order", "stop"])
def test_backprop_policies(policy):
    init = "zeros" if policy == "stop" else "learned"
    model, tok, *_ = setup(f"""
    memory M : matrix per head init {init}
    learn M : l2(self(k), v) by gd(lr = 0.5) backprop {policy}
    h = h + M(q)
""")
    model.loss(tok).backward()
    wk = model.params["block0/0/W_k"].grad
    # W_k only reaches the loss through M's writes: through → a gradient; first_order/stop → none
    assert (wk is not None and wk.abs().sum() > 0) == (policy == "through")
    if policy == "first_order":
        assert model.params["block0/0/M/w0"].grad.abs().sum() > 0


def test_first_order_initial_state_gradient_is_straight_through():
    model, tok, h, wq, wk, wv = setup("""
    memory M : matrix per head init learned
    learn M : dot(self(k), v) by gd(lr = 1) backprop first_order
    h = h + M(q)
""")
    model.loss(tok).backward()
    got = model.params["block0/0/M/w0"].grad
    # by hand: M_t = M_0 + (Σ v kᵀ) with every write held constant, so d M_t / d M_0 = I
    init = model.params["block0/0/M/w0"].detach().clone().requires_grad_(True)
    q, k, v = heads(h @ wq), heads(h @ wk), heads(h @ wv)
    delta = torch.zeros(2, 2, 4, 4)
    ys = []
    for t in range(tok.shape[1]):
        delta = delta + torch.einsum("bho,bhi->bhoi", v[:, t], k[:, t])
        ys.append(torch.einsum("bhoi,bhi->bho", init + delta, q[:, t]).flatten(-2))
    logits = logits_from(model, h + torch.stack(ys, 1))
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tok[:, 1:].flatten())
    (expected,) = torch.autograd.grad(loss, init)
    torch.testing.assert_close(got, expected)


def test_teach_signal_is_the_gradient_of_the_tokens_loss():
    text = """
    memory C : mlp(depth = 2, expand = 2, act = silu, residual) init learned
    # allow NL083
    learn C : outer by gd(lr = 0.5) read before
    h = h + C(h)
"""
    model = Reference(spec(text), dtype=torch.float64)
    tok = tokens(batch=1, length=4)
    _, state = model(tok)
    w = [model.params[f"block0/0/C/w{j}"].detach() for j in range(2)]
    emb = model.params["embed"].detach()[tok]
    for t in range(3):     # the last token has no target, so no teach signal
        leaves = [x.clone().requires_grad_(True) for x in w]
        y = fn.memory_apply("mlp", [x.unsqueeze(0) for x in leaves], emb[:, t], 1, "silu", True)
        loss = F.cross_entropy(logits_from(model, emb[:, t] + y), tok[:, t + 1], reduction="sum")
        grads = torch.autograd.grad(loss, leaves)
        w = [x - 0.5 * g for x, g in zip(w, grads, strict=True)]
    torch.testing.assert_close(state.layers[0].memories["C"].cur[0][0], w[0])
    torch.testing.assert_close(state.layers[0].memories["C"].cur[1][0], w[1])


def test_persistent_memory_carries_across_sequences():
    model, tok, *_ = setup("""
    memory M : matrix per head init zeros scope persistent
    learn M : dot(self(k), v) by gd(lr = 0.1)
    h = h + M(q)
""")
    a, _ = model(tok)
    b, _ = model(tok)
    assert not torch.allclose(a, b), "the second pass starts from the first pass' final state"


def test_self_generated_keys_are_data_to_the_objective():
    # k comes from M's own (read-before) output: the objective's gradient flows through self(k) only
    model, tok, h, wq, _, _ = setup("""
    memory M : matrix per head init learned
    k = M(h)
    learn M : l2(self(k), h) by gd(lr = 0.1) read before
    h = h + M(q)
""")
    state = model.params["block0/0/M/w0"].detach().expand(2, -1, -1, -1)
    ys = []
    for t in range(tok.shape[1]):
        x = heads(h[:, t])
        ys.append(torch.einsum("bhoi,bhi->bho", state, heads((h @ wq)[:, t])).flatten(-2))
        k = torch.einsum("bhoi,bhi->bho", state, x)                         # a value: computed, then held
        err = torch.einsum("bhoi,bhi->bho", state, k) - x
        state = state - 0.1 * torch.einsum("bho,bhi->bhoi", err, k)
    assert_model_output(model, tok, h, torch.stack(ys, 1))
