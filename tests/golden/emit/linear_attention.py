"""Model `LinearAttention` compiled by nldsl from linear_attention.nl. Generated code: edit
the spec, not this; `# line N` comments point at its lines, `[B, T, D]` is a value's shape
(batch, tokens, features).

The kernel each memory runs on:
  layer.M: chunk_linear_attention (matrix + dot objective + gd: chunkwise (gated) linear attention)
  layer.ffn: read_static (no in-context learning: a plain module)
"""

import torch
import torch.nn.functional as F

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime import calls as rt
from nldsl.backends.torch.runtime.model import CompiledModel
from nldsl.lower import ParamInfo

LAYER_M = rt.MemSpec(
    name='M', kind='matrix', heads=2, shapes=((2, 32, 32),), init='zeros')   # line 18: chunk_linear_attention
LAYER_FFN = rt.MemSpec(
    name='ffn', kind='mlp', heads=1, shapes=((1, 256, 64), (1, 64, 256)), act='gelu')   # line 24: read_static

PARAMS = (
    ParamInfo(local='embed', shape=(256, 64), init='normal'),
    ParamInfo(local='final_norm', shape=(64,), init='ones'),
    ParamInfo(local='unembed', shape=(64, 256), init='normal'),
    ParamInfo(owner='layer', layer=0, local='W_q', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='W_k', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='W_v', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='W_o', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='x_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=0, local='h_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=0, local='ffn', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=0, local='ffn', part='w1', shape=(1, 64, 256), init='normal', std=0.0625),
    ParamInfo(owner='layer', layer=1, local='W_q', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='W_k', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='W_v', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='W_o', shape=(64, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='x_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=1, local='h_rmsnorm', shape=(64,), init='ones'),
    ParamInfo(owner='layer', layer=1, local='ffn', part='w0', shape=(1, 256, 64), init='normal', std=0.125),
    ParamInfo(owner='layer', layer=1, local='ffn', part='w1', shape=(1, 64, 256), init='normal', std=0.0625),
)


def layer(P, S, cache, h, fires):
    """Block `layer` (line 12): one segment of tokens through one layer."""
    x = fn.rmsnorm(h, P['x_rmsnorm'])   # [B, T, 64]  line 13
    q = (x @ P['W_q'])   # [B, T, 64]  line 19
    k = (x @ P['W_k'])   # [B, T, 64]  line 20
    v = (x @ P['W_v'])   # [B, T, 64]  line 21
    M_out = rt.chunk_linear_attention(S['M'], q, k, v, lr=1.0, retain=None)   # [B, T, 64]  line 23
    h_2 = (h + (M_out @ P['W_o']))   # [B, T, 64]  line 23
    h_3 = (
        h_2 + rt.read_static(LAYER_FFN, [P['ffn/w0'], P['ffn/w1']], fn.rmsnorm(h_2, P['h_rmsnorm']))
    )   # [B, T, 64]  line 25
    return h_3


class LinearAttention(CompiledModel):
    PARAMS = PARAMS
    BLOCKS = {'layer': layer}
    CONVS = {'layer': {}}   # convolution → (width, kernel)
    SITES = {'layer': {}}   # attention read → (key width, value width)
    LAYERS = (('layer', 0), ('layer', 1))
    MEMORIES = {'layer': {'M': LAYER_M}}
    SEGMENT = None   # tokens per step of the segment loop
    VOCAB = 256


MODEL = LinearAttention
