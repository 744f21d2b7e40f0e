"""Model `Hope` compiled by nldsl from hope.nl. Generated code: edit
the spec, not this; `# line N` comments point at its lines, `[B, T, D]` is a value's shape
(batch, tokens, features).

The kernel each memory runs on:
  layer.M_k: period_dgd (state fixed for 16 tokens: all gradients of a chunk at its start state in one vector-
      Jacobian product, dgd's first layer as a delta rule, the others by gd in closed form)
  layer.M_v: period_dgd (state fixed for 16 tokens: all gradients of a chunk at its start state in one vector-
      Jacobian product, dgd's first layer as a delta rule, the others by gd in closed form)
  layer.M_memory: period_dgd (state fixed for 64 tokens: all gradients of a chunk at its start state in one vector-
      Jacobian product, dgd's first layer as a delta rule, the others by gd in closed form)
  layer.M_eta: period_dgd (state fixed for 16 tokens: all gradients of a chunk at its start state in one vector-
      Jacobian product, dgd's first layer as a delta rule, the others by gd in closed form)
  layer.M_alpha: period_dgd (state fixed for 16 tokens: all gradients of a chunk at its start state in one vector-
      Jacobian product, dgd's first layer as a delta rule, the others by gd in closed form)
  layer.cms_1: teach (teach signal: chunk-interleaved forward/backward)
  layer.cms_2: teach (teach signal: chunk-interleaved forward/backward)
  layer.cms_3: teach (teach signal: chunk-interleaved forward/backward)
"""

import torch
import torch.nn.functional as F

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime import calls as rt
from nldsl.backends.torch.runtime.model import CompiledModel
from nldsl.lower import ParamInfo

LAYER_M_K = rt.MemSpec(
    name='M_k', kind='mlp', heads=2, shapes=((2, 128, 32), (2, 32, 128)), act='silu', residual=True,
    rule=rt.Rule(kind='dgd'), period=16, read_after=False)   # line 31: period_dgd
LAYER_M_V = rt.MemSpec(
    name='M_v', kind='mlp', heads=2, shapes=((2, 128, 32), (2, 32, 128)), act='silu', residual=True,
    rule=rt.Rule(kind='dgd'), period=16, read_after=False)   # line 31: period_dgd
LAYER_M_MEMORY = rt.MemSpec(
    name='M_memory', kind='mlp', heads=2, shapes=((2, 128, 32), (2, 32, 128)), act='silu', residual=True,
    rule=rt.Rule(kind='dgd'), period=64, read_after=False)   # line 31: period_dgd
LAYER_M_ETA = rt.MemSpec(
    name='M_eta', kind='mlp', heads=2, shapes=((2, 128, 32), (2, 1, 128)), act='silu', rule=rt.Rule(kind='dgd'),
    period=16, read_after=False)   # line 33: period_dgd
LAYER_M_ALPHA = rt.MemSpec(
    name='M_alpha', kind='mlp', heads=2, shapes=((2, 128, 32), (2, 1, 128)), act='silu', rule=rt.Rule(kind='dgd'),
    period=16, read_after=False)   # line 33: period_dgd
LAYER_CMS_1 = rt.MemSpec(
    name='cms_1', kind='mlp', heads=1, shapes=((1, 256, 64), (1, 64, 256)), act='silu', residual=True, period=16,
    read_after=False, backprop='first_order', teach=rt.period_gd, reads=(64,))   # line 51: teach
LAYER_CMS_2 = rt.MemSpec(
    name='cms_2', kind='mlp', heads=1, shapes=((1, 256, 64), (1, 64, 256)), act='silu', residual=True, period=128,
    read_after=False, backprop='first_order', teach=rt.period_gd, reads=(64,))   # line 52: teach
LAYER_CMS_3 = rt.MemSpec(
    name='cms_3', kind='mlp', heads=1, shapes=((1, 256, 64), (1, 64, 256)), act='silu', residual=True, period=512,
    read_after=False, backprop='first_order', teach=rt.period_gd, reads=(64,))   # line 53: teach
LAYER_M_ALPHA_M_ETA = rt.merged(LAYER_M_ALPHA, 2)   # M_alpha, M_eta learn stacked, heads side by side
LAYER_M_K_M_V = rt.merged(LAYER_M_K, 2)   # M_k, M_v learn stacked, heads side by side

PARAMS = (
    ParamInfo(local='embed', shape=(256, 64), init='normal'),
    ParamInfo(local='final_norm', shape=(64,), init='ones'),
    ParamInfo(local='unembed', shape=(64, 256), init='normal'),
    ParamInfo(owner='layer', layer=0, local='W_q', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='x_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=0, local='q_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=0, local='k_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=0, local='v_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=0, local='h_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(
        owner='layer', layer=0, local='M_k', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=0, local='M_k', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=0, local='M_v', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=0, local='M_v', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=0, local='M_memory', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=0, local='M_memory', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=0, local='M_eta', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(
        owner='layer', layer=0, local='M_eta', part='w1', shape=(2, 1, 128), init='normal', std=0.08838834764831845),
    ParamInfo(
        owner='layer', layer=0, local='M_alpha', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(
        owner='layer', layer=0, local='M_alpha', part='w1', shape=(2, 1, 128), init='normal', std=0.08838834764831845),
    ParamInfo(owner='layer', layer=0, local='cms_1', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='cms_1', part='w1', shape=(1, 64, 256), init='normal'),
    ParamInfo(owner='layer', layer=0, local='cms_2', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='cms_2', part='w1', shape=(1, 64, 256), init='normal'),
    ParamInfo(owner='layer', layer=0, local='cms_3', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='cms_3', part='w1', shape=(1, 64, 256), init='normal'),
    ParamInfo(owner='layer', layer=1, local='W_q', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='x_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=1, local='q_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=1, local='k_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=1, local='v_conv', shape=(64, 4), init='conv'),
    ParamInfo(owner='layer', layer=1, local='h_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(
        owner='layer', layer=1, local='M_k', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=1, local='M_k', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=1, local='M_v', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=1, local='M_v', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=1, local='M_memory', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(owner='layer', layer=1, local='M_memory', part='w1', shape=(2, 32, 128), init='normal'),
    ParamInfo(
        owner='layer', layer=1, local='M_eta', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(
        owner='layer', layer=1, local='M_eta', part='w1', shape=(2, 1, 128), init='normal', std=0.08838834764831845),
    ParamInfo(
        owner='layer', layer=1, local='M_alpha', part='w0', shape=(2, 128, 32), init='normal', std=0.1767766952966369),
    ParamInfo(
        owner='layer', layer=1, local='M_alpha', part='w1', shape=(2, 1, 128), init='normal', std=0.08838834764831845),
    ParamInfo(owner='layer', layer=1, local='cms_1', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='cms_1', part='w1', shape=(1, 64, 256), init='normal'),
    ParamInfo(owner='layer', layer=1, local='cms_2', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='cms_2', part='w1', shape=(1, 64, 256), init='normal'),
    ParamInfo(owner='layer', layer=1, local='cms_3', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='cms_3', part='w1', shape=(1, 64, 256), init='normal'),
)


def objective_M_alpha_M_eta(w, probe, a0, a1, *, at):   # line 43
    return fn.objective(
        'l2', rt.apply(LAYER_M_ALPHA_M_ETA, w, a0, probe), rt.apply(LAYER_M_ALPHA_M_ETA, at, a1), groups=4)


def objective_M_k_M_v(w, probe, a0, a1, *, at):   # line 43
    return fn.objective('l2', rt.apply(LAYER_M_K_M_V, w, a0, probe), rt.apply(LAYER_M_K_M_V, at, a1), groups=4)


def objective_M_memory(w, probe, a0, a1, *, at):   # line 45
    return fn.objective('l2', rt.apply(LAYER_M_MEMORY, w, a0, probe), rt.apply(LAYER_M_MEMORY, at, a1), groups=2)


def layer(P, S, cache, h, fires):
    """Block `layer` (line 28): one segment of tokens through one layer."""
    x = fn.rmsnorm(h, P['x_rmsnorm'])   # [B, T, 64]  line 29
    q = fn.l2norm(rt.conv(cache, 'q_conv', (x @ P['W_q']), P['q_conv']), groups=2)   # [B, T, 64]  line 35
    k = fn.l2norm(
        rt.conv(cache, 'k_conv', rt.read_committed(S['M_k'], x), P['k_conv']), groups=2)   # [B, T, 64]  line 36
    v = fn.l2norm(
        rt.conv(cache, 'v_conv', rt.read_committed(S['M_v'], x), P['v_conv']), groups=2)   # [B, T, 64]  line 37
    eta = (0.1 * torch.sigmoid(rt.read_committed(S['M_eta'], x)))   # [B, T, 2]  line 38
    alpha = (1.0 - (0.1 * torch.sigmoid((rt.read_committed(S['M_alpha'], x) - 5.0))))   # [B, T, 2]  line 41
    rt.stacked(
        rt.period_dgd, [S['M_alpha'], S['M_eta']], LAYER_M_ALPHA_M_ETA, objective_M_alpha_M_eta, (k, v), lr=eta,
        retain=alpha, key=k)   # line 43
    rt.commit(S['M_alpha'], fires['M_alpha'])
    rt.commit(S['M_eta'], fires['M_eta'])
    rt.stacked(
        rt.period_dgd, [S['M_k'], S['M_v']], LAYER_M_K_M_V, objective_M_k_M_v, (k, v), lr=eta, retain=alpha, key=k
    )   # line 43
    rt.commit(S['M_k'], fires['M_k'])
    rt.commit(S['M_v'], fires['M_v'])
    h_2 = (h + rt.read_committed(S['M_memory'], q))   # [B, T, 64]  line 47
    rt.period_dgd(S['M_memory'], objective_M_memory, (k, v), lr=eta, retain=alpha, key=k)   # line 45
    rt.commit(S['M_memory'], fires['M_memory'])
    h_3 = (
        h_2 + rt.remember(S['cms_3'], rt.remember(S['cms_2'], rt.remember(S['cms_1'], fn.rmsnorm(h_2, P['h_rmsnorm']))))
    )   # [B, T, 64]  line 57
    rt.teach_coefficients(S['cms_1'], lr=0.001)   # line 56
    rt.teach_coefficients(S['cms_2'], lr=0.001)   # line 56
    rt.teach_coefficients(S['cms_3'], lr=0.001)   # line 56
    return h_3


class Hope(CompiledModel):
    PARAMS = PARAMS
    BLOCKS = {'layer': layer}
    CONVS = {'layer': {'q_conv': (64, 4), 'k_conv': (64, 4), 'v_conv': (64, 4)}}   # convolution → (width, kernel)
    SITES = {'layer': {}}   # attention read → (key width, value width)
    LAYERS = (('layer', 0), ('layer', 1))
    MEMORIES = {
        'layer': {
            'M_k': LAYER_M_K, 'M_v': LAYER_M_V, 'M_memory': LAYER_M_MEMORY, 'M_eta': LAYER_M_ETA,
            'M_alpha': LAYER_M_ALPHA, 'cms_1': LAYER_CMS_1, 'cms_2': LAYER_CMS_2, 'cms_3': LAYER_CMS_3}
    }
    SEGMENT = 16   # tokens per step of the segment loop
    VOCAB = 256


MODEL = Hope
