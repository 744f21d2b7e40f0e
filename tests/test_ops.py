"""The op vocabulary (`nldsl.ops`): one entry per op, in the front end and in each backend.

Adding an op means one `OpKind` member, its `OpDef`, and one entry in each backend's registry; these
tests fail until every piece is there, and catch a checker that builds a node its `OpDef` does not
describe.
"""

from __future__ import annotations

import pytest
from specutil import ALL_SPECS

import nldsl
from nldsl import catalog
from nldsl.backends.reference.interpreter import EVALUATE
from nldsl.backends.torch.codegen.emit import RENDER
from nldsl.lower import Assign, FusedRead, TeachCoefficients, Update, lower_block
from nldsl.ops import OBJECTIVES, OPS, Family, OpKind, Width, result_width
from nldsl.spec import Op

# Ops the reference interpreter never meets: it runs models as checked, before lowering, so not an
# optimizer's hyperparameters or Newton-Schulz (optimizers only), nor lowering's hoisted arguments and
# fused reads.
NOT_IN_CHECKED_MODELS = {OpKind.HYPER, OpKind.NEWTON_SCHULZ, OpKind.ARG, OpKind.FUSED}


def test_every_op_has_one_definition():
    assert set(OPS) == set(OpKind)


def test_the_code_generator_prints_every_op():
    assert set(RENDER) == set(OpKind)


def test_the_reference_interpreter_evaluates_every_op_of_a_checked_model():
    assert set(EVALUATE) == set(OpKind) - NOT_IN_CHECKED_MODELS


def test_built_in_functions_and_objectives_are_the_catalogs():
    functions = {k for k, d in OPS.items() if d.family is Family.FUNCTION} | {OpKind.MIN, OpKind.MAX} | \
        {k for k, d in OPS.items() if d.family is Family.UNARY and k is not OpKind.NEG}
    assert {str(k) for k in functions} == set(catalog.FUNCTIONS)
    assert {str(k) for k in OBJECTIVES} == set(catalog.OBJECTIVES)
    for kind in functions:
        signature = catalog.FUNCTIONS[kind]
        # conv's width is a constant of the spec: it becomes the node's `kernel`, not an argument
        positional = [p for p in signature.positional if not (kind is OpKind.CONV and p == "width")]
        # norms: inside an objective, lowering passes their scale as a second argument
        assert OPS[kind].arity[0] == len(positional), kind
        assert set(signature.options) <= set(OPS[kind].attrs), kind


def _lowered_exprs(block) -> list[Op]:
    out = []
    for st in lower_block(block).statements:
        if isinstance(st, Assign):
            out.append(st.expr)
        elif isinstance(st, FusedRead):
            out += [x for x in (st.query, st.key, st.value, st.lr, st.erase, st.retain) if x is not None]
        elif isinstance(st, Update):
            out += [st.objective, *st.hoisted] + [x for x in (st.lr, st.retain, st.momentum, st.precond, st.key)
                                                  if x is not None]
        elif isinstance(st, TeachCoefficients):
            out += [x for x in (st.lr, st.retain, st.momentum, st.precond) if x is not None]
    return out


def _checked_exprs(spec) -> list[Op]:
    out = []
    for model in spec.models.values():
        for block in model.blocks:
            out += [a.expr for a in block.assignments]
            for m in block.memories.values():
                if m.learn is not None:
                    rule = m.learn.rule
                    out += [x for x in (m.learn.objective, m.learn.key, rule.lr, rule.retain, rule.momentum,
                                        rule.precond) if x is not None]
            out += _lowered_exprs(block)
    for opt in spec.optimizers.values():
        out += [a.expr for a in opt.assignments] + [opt.update]
        for m in opt.memories.values():
            if m.learn is not None and m.learn.objective is not None:
                out.append(m.learn.objective)
    return out


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_every_node_of_every_shipped_spec_is_what_its_definition_says(path):
    """Checked and lowered: each node's kind is an `OpKind`, its number of arguments one its
    definition allows, it carries every attribute the definition names, and its width is what its
    definition's width rule makes of its arguments'."""
    spec = nldsl.load_spec(path)
    seen = set()
    for expr in _checked_exprs(spec):
        for node in expr.walk():
            assert isinstance(node.op, OpKind), node.op
            definition = OPS[node.op]
            assert len(node.args) in definition.arity, (node.op, len(node.args))
            assert set(definition.attrs) <= set(node.attrs), (node.op, node.attrs)
            if definition.width not in (Width.DECLARED, Width.MEMORY):
                heads = max([m.heads for u in spec.models.values() for b in u.blocks for m in b.memories.values()]
                            + [int(u.config.get("heads", 0)) for u in spec.models.values()] or [0])
                assert node.width == result_width(node.op, tuple(a.width for a in node.args), node.attrs, heads), \
                    (node.op, node.width, [a.width for a in node.args])
            seen.add(node.op)
    assert seen, "no expressions found"


def test_width_rules():
    """Each family's rule, on widths a spec can have (8 wide, 2 heads, parameter-shaped 0)."""
    assert result_width(OpKind.ADD, (8, 8), {}) == 8
    assert result_width(OpKind.MUL, (8, 1), {}) == result_width(OpKind.MUL, (1, 8), {}) == 8
    assert result_width(OpKind.MUL, (8, 2), {}, heads=2) == 8          # one value per head
    assert result_width(OpKind.MUL, (8, 3), {}, heads=2) is None
    assert result_width(OpKind.MATMUL, (8, 5), {}) == 5
    assert result_width(OpKind.MEAN, (8,), {"groups": 2}) == 2
    assert result_width(OpKind.SUM, (0,), {"groups": 1}) == 1             # a whole parameter sums to one value
    assert result_width(OpKind.ROPE, (8,), {"groups": 2, "base": 10000.0}) == 8
    assert result_width(OpKind.L2, (8, 8), {}) == 1
    with pytest.raises(ValueError):
        result_width(OpKind.READ, (8,), {"memory": "M"})
