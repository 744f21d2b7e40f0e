"""Optimizer `adamw` compiled by nldsl from adamw.nl. Generated code: edit
the spec, not this; `# line N` comments point at its lines.
"""

import torch

from nldsl.backends import functional as fn
from nldsl.backends.torch.runtime import calls as rt
from nldsl.backends.torch.runtime import optimizer as opt


def objective_m(w, a0):   # line 8
    return fn.objective('dot', w[0], a0).sum()


def objective_v(w, a0):   # line 9
    return fn.objective('dot', w[0], a0).sum()


def update(param, grad, S, hp, step):
    """One step of `adamw` for one parameter: updates its states S, returns its new value."""
    opt.learn(S['m'], objective_m, (grad,), step, rt.Rule(), lr=(1.0 - hp['beta1']), retain=hp['beta1'])   # line 8
    opt.learn(
        S['v'], objective_v, ((grad * grad),), step, rt.Rule(), lr=(1.0 - hp['beta2']), retain=hp['beta2'])   # line 9
    m_hat = (opt.value(S['m']) / (1.0 - (hp['beta1'] ** step)))   # line 10
    v_hat = (opt.value(S['v']) / (1.0 - (hp['beta2'] ** step)))   # line 11
    return (
        (param * (1.0 - (hp['lr'] * hp['weight_decay']))) - ((hp['lr'] * m_hat) / (torch.sqrt(v_hat) + hp['eps']))
    )   # line 12


class Adamw(opt.SpecOptimizer):
    DEFAULTS = {'lr': 0.001, 'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-08, 'weight_decay': 0.01}
    ELEMENTWISE = True   # whether a shard of a parameter can be updated alone
    STATES = {
        'm': {
            'kind': 'elementwise', 'shapes': (), 'init': 'zeros', 'act': 'identity', 'residual': False, 'norm': 'none',
            'period': 1, 'read_after': True, 'momentum': False, 'adam': False},   # line 7
        'v': {
            'kind': 'elementwise', 'shapes': (), 'init': 'zeros', 'act': 'identity', 'residual': False, 'norm': 'none',
            'period': 1, 'read_after': True, 'momentum': False, 'adam': False},   # line 7
    }
    update = staticmethod(update)


OPTIMIZER = Adamw
