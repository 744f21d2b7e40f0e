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
from nldsl.ops import OBJECTIVES, OPS, Family, OpKind
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
        assert OPS[kind].arity == (len(positional),), kind
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
    definition allows, and it carries every attribute the definition names."""
    spec = nldsl.load_spec(path)
    seen = set()
    for expr in _checked_exprs(spec):
        for node in expr.walk():
            assert isinstance(node.op, OpKind), node.op
            definition = OPS[node.op]
            assert len(node.args) in definition.arity, (node.op, len(node.args))
            assert set(definition.attrs) <= set(node.attrs), (node.op, node.attrs)
            seen.add(node.op)
    assert seen, "no expressions found"
