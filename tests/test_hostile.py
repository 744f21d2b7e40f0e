"""Hostile input, property-based: specs whose names are drawn from a hostile alphabet (Python
keywords and builtins, dunders, the generated code's own names, nn.Module methods, names holding
`__` or differing only in `_` placement, unicode, very long names), with random reassignments and
nesting, and spec files with hostile names. For every one: either positioned diagnostics, or the
compiled model equals the reference interpreter (loss and gradients, float64), its parameters
fall into the right optimizer groups and it trains a step; and nothing the test plants in a file
name reaches generated code outside a string literal."""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import math
import re
import tokenize
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from specutil import one_thread  # noqa: F401

import nldsl
from nldsl.backends.reference import Reference
from nldsl.backends.torch.app.trainer import param_groups
from nldsl.backends.torch.codegen.emit import emit_model, emit_optimizer, write_package
from nldsl.backends.torch.codegen.load import import_source, model_class, optimizer_class
from nldsl.codes import CODES

GENERATED = ["torch", "F", "fn", "rt", "nn", "CompiledModel", "ParamInfo", "PARAMS", "MODEL", "OPTIMIZER", "P", "S",
             "cache", "h", "fires", "w", "probe", "at", "a0", "a1", "a2", "objective_A", "objective_C",
             "objective_A_C", "LAYER_A", "LAYER_C", "B_A", "A_B_C", "update", "opt", "hp", "grad", "param", "step",
             "views", "st", "tokens", "layer", "layer_2", "x_2", "h_2", "h_3", "x1", "h1", "v", "v_2"]
MODULE_METHODS = ["to", "eval", "train", "forward", "loss", "params", "segment", "view", "compile", "state_dict",
                  "parameters", "cuda", "float", "table", "views", "blocks", "steps", "persistent", "held_out",
                  "initial_state", "keys", "items", "values", "get", "pop", "apply", "zero_grad", "training",
                  "dtype", "device", "register_parameter", "extra_repr"]
PYTHON = [*sorted(set(keyword.kwlist) | set(keyword.softkwlist) - {"_"}),
          "print", "len", "input", "object", "super", "type", "list", "dict", "id", "__import__", "exec", "open"]
DUNDERS = ["__init__", "__class__", "__x", "__builtins__", "__name__", "__dict__", "_", "__", "___", "_x", "x_", "x__"]
UNDERSCORES = ["a__0__b", "b__0__c", "a__b", "a_b", "ab_", "_ab", "a_b_c", "b_c", "A_b", "a_B", "AB", "ab"]
UNICODE = ["é", "naïve", "αβ", "ℌ", "x\u200b"]
HOSTILE = GENERATED + MODULE_METHODS + PYTHON + DUNDERS + UNDERSCORES + UNICODE + ["x" * 300, "X" * 300]

plain = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
names = st.one_of(st.sampled_from(HOSTILE), plain)

HEADER = "vocab = 11, dim = 8, heads = 2, context = 8"
TOKENS = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))


@st.composite
def expressions(draw, bound: list[str], depth: int = 0) -> str:
    """A random width-8 expression over the values bound so far (h is always bound)."""
    if depth >= 3 or draw(st.booleans()):
        return draw(st.sampled_from(bound))
    inner = draw(expressions(bound, depth + 1))
    form = draw(st.sampled_from(["rmsnorm({})", "({} + {})", "{} * 0.5", "sigmoid({})", "({} - {}) * 2",
                                 "l2norm({}, groups = heads)", "conv({}, 2)", "tanh(({}))"]))
    return form.format(inner, draw(expressions(bound, depth + 1)))


@st.composite
def assignments(draw, values: list[str], bound: list[str], count: int) -> list[str]:
    """`count` assignments to names from `values` (reassigning some, `h` among them)."""
    lines = []
    for _ in range(count):
        target = draw(st.sampled_from([*values, "h"]))
        lines.append(f"    {target} = {draw(expressions(list(bound)))}")
        if target not in bound:
            bound.append(target)
    return lines


@st.composite
def hostile_specs(draw) -> tuple[str, str]:
    """(spec text, the name of its first block) with hostile names everywhere a name goes."""
    things = draw(st.lists(names, min_size=9, max_size=9, unique=True))
    model, block, other, mem_a, mem_c, mem_d, weight, shared, extra = things
    values = draw(st.lists(names.filter(lambda n: n not in things), min_size=1, max_size=4, unique=True))
    bound = ["h"]
    body = draw(assignments(values, bound, draw(st.integers(1, 3))))
    key, val = draw(st.sampled_from(bound)), draw(st.sampled_from(bound))
    rule = draw(st.sampled_from(["gd(lr = 0.5)", "gd(lr = 0.5, retain = 0.9)"]))
    body += [f"    param {weight} : matrix(dim, dim)",
             f"    memory {mem_a} : matrix per head init zeros",
             f"    learn {mem_a} : dot(self({key} @ {weight}), {val}) by {rule} every token read after",
             f"    h = h + {mem_a}({draw(st.sampled_from(bound))} @ {weight})"]
    body += draw(assignments(values, bound, draw(st.integers(0, 2))))
    key, val = draw(st.sampled_from(bound)), draw(st.sampled_from(bound))
    rule = draw(st.sampled_from(["gd(lr = 0.1)", "dgd(lr = 0.1, retain = 0.95)", "gd(lr = 0.1, momentum = 0.5)"]))
    period = draw(st.sampled_from(["every 2 tokens", "every token"]))
    body += [f"    memory {mem_c} : mlp(expand = 1) per head",
             f"    learn {mem_c} : l2(self({key}), {val}) by {rule} {period}",
             f"    h = h + {mem_c}({draw(st.sampled_from(bound))})"]
    body += draw(assignments(values, bound, draw(st.integers(0, 2))))
    repeat = draw(st.sampled_from(["", " repeat 2"]))
    first = f"  block {block}{repeat} {{\n" + "\n".join(body) + "\n  }\n"
    second = (f"  block {other} {{\n    param {extra} : vector(dim)\n    memory {mem_d} : mlp(expand = 1)\n"
              f"    h = h + {mem_d}(rmsnorm(h) @ {shared}) * {extra}\n  }}\n")
    targets = draw(st.sampled_from([weight, f"{weight}, {shared}", mem_c, extra]))
    text = (f'import "optim/sgd.nl"\nmodel {model}({HEADER}) {{\n  param {shared} : matrix(dim, dim)\n'
            f"{first}{second}  train {{\n    optimize {targets} by sgd(lr = 0.01)\n"
            "    optimize all by sgd(lr = 0.02)\n  }\n}\n")
    return text, block


def assert_positioned(result: nldsl.CheckResult) -> None:
    """Every diagnostic is registered and points into a file it names, at a real line and column."""
    assert result.errors
    for d in result.diagnostics:
        assert d.code in CODES, d
        assert d.span.line >= 1 and d.span.col >= 1, d
        source = result.sources.get(d.span.file)
        assert source is not None, d
        assert d.span.line <= max(1, len(source.text.splitlines())) + 1, d
    result.render()


def close(a: torch.Tensor, b: torch.Tensor, what: str, floor: float = 1e-12) -> None:
    """Equal to float64 rounding; a random spec may blow up, but then both blow up alike. `floor`:
    the least scale rounding is measured against (a gradient that is all cancellation, 1e-10 beside
    gradients of 1, carries the rounding of the terms that cancelled, not of its own size)."""
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: not a number in different places"
    a, b = a.nan_to_num(), b.nan_to_num()
    scale = max(a.abs().max().item(), b.abs().max().item(), floor)
    assert (a - b).abs().max().item() <= 1e-9 * scale, f"{what}: {(a - b).abs().max().item():.3e} (scale {scale:.2e})"


def assert_compiles_exactly(spec: nldsl.Spec) -> None:
    """Compiled = reference in float64 (logits, loss gradients), then one training step."""
    ref = Reference(spec, dtype=torch.float64)
    comp = model_class(spec)(dtype=torch.float64)
    assert list(ref.params) == list(comp.params)
    comp.load_state_dict(ref.state_dict())
    logits = comp(TOKENS)[0]
    close(ref(TOKENS)[0], logits, "logits")
    loss_r, loss_c = ref.loss(TOKENS), comp.loss(TOKENS)
    close(loss_r, loss_c, "loss")
    grads_r = torch.autograd.grad(loss_r, list(ref.params.values()), allow_unused=True)
    grads_c = torch.autograd.grad(loss_c, list(comp.params.values()), allow_unused=True)
    finite = [g[g.isfinite()] for g in grads_r if g is not None]
    largest = max((g.abs().max().item() for g in finite if g.numel()), default=0.0)
    for key, a, b in zip(ref.params, grads_r, grads_c, strict=True):
        if a is None or b is None:
            assert (a if a is not None else b if b is not None else torch.zeros(1)).abs().max() == 0, key
        else:
            close(a, b, f"gradient of {key}", floor=largest)
    model = next(spec.models[u] for u in spec.local_units if u in spec.models)
    groups = [(g.optimizer, dict(g.args), tuple(g.targets), g.period) for g in model.train.groups]
    claimed = param_groups(comp, groups)
    for (_, _, targets, _), params in zip(groups, claimed, strict=True):   # each target lands in its own group
        mine = {id(p) for p in params}
        for key, info in comp.table.items():
            if targets and comp.params[key].requires_grad:
                assert (id(comp.params[key]) in mine) == (info.local in targets), (key, targets)
    loss = comp.loss(TOKENS)
    loss.backward()
    for (name, args, _, _), params in zip(groups, claimed, strict=True):
        if params:
            optimizer_class(spec, name)(params, **args).step()
    if torch.isfinite(logits).all():    # a random spec may diverge (an inner lr too large for its inputs)
        assert all(torch.isfinite(p).all() for p in comp.params.values())


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLDSL_CACHE", str(tmp_path / "cache"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(hostile_specs())
def test_hostile_names_compile_exactly_or_are_diagnosed(case):
    text, _ = case
    result = nldsl.check_text(text, "hostile.nl")
    event("diagnosed" if not result.ok else "compiled")
    if not result.ok:
        assert_positioned(result)
        return
    for source in (emit_model(result.spec), *(emit_optimizer(result.spec, o) for o in result.spec.optimizers)):
        ast.parse(source)
    assert_compiles_exactly(result.spec)


@pytest.mark.parametrize("name", sorted(set(GENERATED + MODULE_METHODS + PYTHON + DUNDERS + UNDERSCORES)))
def test_every_hostile_name_as_every_kind_of_name(name):
    """Each name of the alphabet as the model, a block, a memory, a parameter and a value at once:
    a diagnostic, or an exact model."""
    text = (f'import "optim/sgd.nl"\nmodel {name}({HEADER}) {{\n  block {name} {{\n    {name} = rmsnorm(h)\n'
            f"    {name} = {name} * 2\n    memory M : matrix per head init zeros\n"
            f"    learn M : dot(self({name}), h) by gd(lr = 0.5) every token read after\n"
            f"    h = h + M({name})\n  }}\n  block b2 {{\n    param {name} : vector(dim)\n"
            f"    memory {name}_ : mlp(expand = 1) per head\n"
            f"    learn {name}_ : l2(self(h), h * {name}) by gd(lr = 0.1) every 2 tokens\n"
            f"    h = h + {name}_(h)\n  }}\n  train {{ optimize {name} by sgd(lr = 0.01) }}\n}}\n")
    result = nldsl.check_text(text, "name.nl")
    if not result.ok:
        assert_positioned(result)
        return
    assert_compiles_exactly(result.spec)


def test_reassigned_value_next_to_a_value_named_like_its_version():
    """`x` assigned twice beside a user value `x_2` (and `x1`): three values, three names."""
    text = (f'import "optim/sgd.nl"\nmodel T({HEADER}) {{\n  block {{\n    x = rmsnorm(h)\n    x1 = x * 2\n'
            "    x_2 = x * 3\n    x = x + 1\n    memory M : matrix per head init zeros\n"
            "    learn M : dot(self(x), x1 + x_2) by gd(lr = 0.5) every token read after\n    h = h + M(x)\n  }\n"
            "  train { optimize all by sgd(lr = 0.1) }\n}\n")
    result = nldsl.check_text(text, "versions.nl")
    assert result.ok, result.render()
    source = emit_model(result.spec)
    assert "x_2_2 = " in source or "x_3 = " in source
    assert_compiles_exactly(result.spec)


def test_explicit_param_init_does_not_depend_on_its_name():
    text = (f'import "optim/sgd.nl"\nmodel T({HEADER}) {{\n  block {{\n    param my_conv_proj : matrix(dim, dim)\n'
            "    param x_layernorm : vector(dim)\n    h = h + conv(h, 2) @ my_conv_proj * x_layernorm\n  }\n"
            "  train { optimize all by sgd(lr = 0.1) }\n}\n")
    spec = nldsl.check_text(text, "init.nl").spec
    table = model_class(spec)().table
    assert table["block0/0/my_conv_proj"].init == "normal"
    assert table["block0/0/x_layernorm"].init == "normal"
    assert [info.init for info in table.values() if info.local.endswith("_conv")] == ["conv"]


# ---- hostile file names -----------------------------------------------------------------------

PAYLOAD = '"""\n__import__("builtins").PLANTED = 1\n#'
file_names = st.lists(st.sampled_from(['"', "'", '"""', "'''", "\n", "\r", "\\", "\\n", "#", " ", "é", "\t", "{",
                                       "}", "%s", "\x0c", PAYLOAD, "PLANTED", "x"]),
                      min_size=1, max_size=6).map(lambda parts: "".join(parts) + ".nl")


def planted_outside_strings(source: str) -> list[str]:
    """Tokens, other than string literals, that hold text the test planted."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string for t in tokens if "PLANTED" in t.string and t.type != tokenize.STRING]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_names)
def test_hostile_file_names_never_reach_code(tmp_path_factory, name):
    assume(len(name.encode()) < 200)
    folder = tmp_path_factory.mktemp("spec")
    path = folder / name
    path.write_text(f'import "optim/sgd.nl"\nmodel T({HEADER}) {{\n  block {{\n    h = h + rmsnorm(h)\n  }}\n'
                    "  train { optimize all by sgd(lr = 0.1) }\n}\n", encoding="utf-8")
    result = nldsl.check_file(path)
    assert result.ok, result.render()
    written = write_package(result.spec, None, folder / "out")
    for file in written:
        source = file.read_text(encoding="utf-8")
        ast.parse(source)
        assert planted_outside_strings(source) == [], file.name
    import_source(emit_model(result.spec), "model", folder / "cache").MODEL()
    assert not hasattr(builtins, "PLANTED")


def test_every_number_is_finite_or_refused():
    """A constant the checker let through is a finite float in the generated code."""
    text = (f'import "optim/sgd.nl"\nmodel T({HEADER}) {{\n  block {{\n    h = h * 1e300 * 1e-300 + h / 3\n  }}\n'
            "  train { optimize all by sgd(lr = 0.1) }\n}\n")
    source = emit_model(nldsl.check_text(text, "n.nl").spec)
    numbers = [float(t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline)
               if t.type == tokenize.NUMBER]
    assert numbers and all(math.isfinite(n) for n in numbers)


# ---- optimizer specs: renaming changes nothing --------------------------------------------------

OPTIMIZERS = sorted((Path(__file__).resolve().parent.parent / "specs" / "optim").glob("*.nl"))


def trajectory(optimizer: type, steps: int = 4) -> torch.Tensor:
    weight = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4))
    opt = optimizer([weight])
    for t in range(steps):
        weight.grad = torch.sin(weight.detach() * (t + 1)) + 0.1
        opt.step()
    return weight.detach()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPTIMIZERS), st.lists(names, min_size=20, max_size=20, unique=True))
def test_renaming_an_optimizers_names_changes_nothing(path, new_names):
    """An optimizer spec with its values, states and hyperparameters (but `lr`) renamed to hostile
    names is diagnosed, or follows the same trajectory as the original."""
    text = path.read_text()
    spec = nldsl.check_text(text, path.name).spec
    (name, o), = spec.optimizers.items()
    own = [*(k for k in o.defaults if k != "lr"), *o.memories, *dict.fromkeys(a.target for a in o.assignments)]
    rename = dict(zip(own, new_names[:len(own)], strict=True))
    renamed = re.sub(r"\b(" + "|".join(map(re.escape, own)) + r")\b", lambda m: rename[m.group(1)], text)
    result = nldsl.check_text(renamed, path.name)
    event("diagnosed" if not result.ok else "compiled")
    if not result.ok:
        assert_positioned(result)
        return
    torch.testing.assert_close(trajectory(optimizer_class(result.spec, name)),
                               trajectory(optimizer_class(spec, name)), rtol=0, atol=0)


# ---- model specs: renaming changes nothing ------------------------------------------------------

TINY = {"dim": 8, "heads": 2, "layers": 1, "context": 16, "vocab": 13, "window": 5}
SHIPPED = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.nl"))


def own_names(model: nldsl.spec.Model) -> list[str]:
    """Every name a model's spec gives: blocks, parameters, memories (a CMS by its own name), values."""
    out = [n for n in model.params if n not in ("embed", "unembed", "final_norm")]
    for b in model.blocks:
        out.append(b.name)
        out += [p.name for p in b.params.values() if not p.implicit]
        out += [m.group or m.name for m in b.memories.values()]
        out += [a.target for a in b.assignments if a.target != "h"]
    return list(dict.fromkeys(out))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SHIPPED), st.lists(names, min_size=40, max_size=40, unique=True))
def test_renaming_a_models_names_changes_nothing(path, new_names):
    """A shipped spec with every name it gives renamed to hostile names is diagnosed, or computes
    exactly what the original computes (its parameters in the same order, made the same way)."""
    text = path.read_text()
    header = {k for m in nldsl.check_file(path).spec.models.values() for k in m.config}
    overrides = {k: v for k, v in TINY.items() if k in header}
    spec = nldsl.check_text(text, path.name, overrides).spec
    model = next(spec.models[u] for u in spec.local_units if u in spec.models)
    own = [n for n in own_names(model) if not n.startswith(("block", "value", "learn_"))]
    # capture-avoiding: a new name never lands on a name the spec uses and keeps (h, dim, a built-in)
    kept = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)) - set(own)
    fresh = [n for n in new_names if n not in kept]
    own = own[:len(fresh)]
    rename = dict(zip(own, fresh[:len(own)], strict=True))
    renamed = re.sub(r"\b(" + "|".join(map(re.escape, own)) + r")\b", lambda m: rename[m.group(1)], text)
    result = nldsl.check_text(renamed, path.name, overrides)
    event("diagnosed" if not result.ok else "compiled")
    if not result.ok:
        assert_positioned(result)
        return
    original, hostile = model_class(spec)(), model_class(result.spec)()
    assert [(i.shape, i.init, i.trainable) for i in original.table.values()] == \
        [(i.shape, i.init, i.trainable) for i in hostile.table.values()]
    tokens = torch.randint(0, 13, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hostile(tokens)[0], original(tokens)[0], rtol=0, atol=0)
