"""Generated code is a product: golden files of the emitted code of three specs (linear attention,
Hope, AdamW), reviewed for readability, and the rules every generated module keeps (lines within
120 characters, its class exported by name, keyword arguments past the first).
Set NLDSL_UPDATE_GOLDEN=1 to rewrite the golden files from the current emitter."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from specutil import ALL_SPECS, SPECS

import nldsl
from nldsl.backends.torch.codegen.emit import emit_model, emit_optimizer, emit_trainer
from nldsl.backends.torch.codegen.pretty import wrap
from nldsl.backends.torch.runtime import calls
from nldsl.lower import Kernel, Read

GOLDEN = Path(__file__).resolve().parent / "golden" / "emit"
TINY = {"dim": 64, "heads": 2, "layers": 2, "context": 128}


def spec_of(path: Path) -> nldsl.Spec:
    header = {k for m in nldsl.check_file(path).spec.models.values() for k in m.config}
    return nldsl.load_spec(path, {k: v for k, v in TINY.items() if k in header})


CASES = {
    "linear_attention.py": lambda: emit_model(spec_of(SPECS / "linear_attention.nl")),
    "hope.py": lambda: emit_model(spec_of(SPECS / "hope.nl")),
    "adamw.py": lambda: emit_optimizer(nldsl.load_spec(SPECS / "optim" / "adamw.nl"), "adamw"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name: str) -> None:
    source = CASES[name]()
    golden = GOLDEN / name
    if os.environ.get("NLDSL_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(source, encoding="utf-8")
    assert source == golden.read_text(encoding="utf-8")


def generated() -> list[tuple[str, str]]:
    out = []
    for path in ALL_SPECS:
        result = nldsl.check_file(path)
        for unit in result.spec.local_units:
            if unit in result.spec.models:
                out += [(f"{path.name}:model", emit_model(result.spec, unit)),
                        (f"{path.name}:train", emit_trainer(result.spec, unit))]
            else:
                out.append((f"{path.name}:optimizer", emit_optimizer(result.spec, unit)))
    return out


@pytest.mark.parametrize(("where", "source"), generated(), ids=lambda x: x if ":" in str(x)[:40] else "")
def test_generated_modules_read_well(where: str, source: str) -> None:
    tree = ast.parse(source)
    assert all(len(line) <= 120 for line in source.splitlines()), where
    exported = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    if where.endswith(":model"):
        assert "MODEL" in exported
    if where.endswith(":optimizer"):
        assert "OPTIMIZER" in exported
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert all(c[:1].isupper() for c in classes), classes
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert not [n.name for f in functions for n in ast.walk(f) if isinstance(n, ast.FunctionDef) and n is not f]
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "rt"}
    assert used <= set(calls.__all__), f"{where} calls {sorted(used - set(calls.__all__))}, not in runtime.calls"


def test_every_kernel_lowering_can_choose_is_a_runtime_call() -> None:
    """Each `Kernel` names the function that runs it, and every read kernel is there too."""
    for name in {k.value for k in Kernel} | {r.value for r in Read}:
        assert name in calls.__all__ and callable(getattr(calls, name)), name


def test_wrap_keeps_meaning() -> None:
    """A wrapped line is the same Python: a one-item tuple stays a tuple, nesting stays nested."""
    long = "x" * 130
    for line in [f"f(a, ({long},), b)", f"y = g(({long}, 1), [2, 3], {{'k': {long}}})   # note",
                 f"    return ({long} + h(1, (2,)))", f"z = (({long}))"]:
        wrapped = wrap(line)
        assert ast.dump(ast.parse("\n".join(wrapped).strip())) == ast.dump(ast.parse(line.strip())), wrapped


def _dgd_model(structure: str, option: str) -> str:
    text = f"""model X(vocab = 13, dim = 8, heads = 2, context = 32) {{
  block {{
    k = l2norm(h, groups = heads)
    memory M : {structure} per head init learned
    learn M : l2(self(k), h) by dgd(lr = 0.1{option}) every 4 tokens
    h = h + M(k)
  }}
}}
"""
    r = nldsl.check_text(text, "x.nl")
    assert r.ok, r.render()
    return emit_model(r.spec)


def test_dgd_decorrelate_is_printed_only_where_it_picks_other_layers() -> None:
    """`decorrelate = first` is the default: the same code as without it. A matrix memory has one
    layer, so every choice is that code too. An MLP's other choices name their layers in the rule
    and in the kernel's description."""
    mlp = "mlp(depth = 2, expand = 2, act = tanh)"
    assert _dgd_model(mlp, ", decorrelate = first") == _dgd_model(mlp, "")
    for choice in ("first", "last", "each"):
        assert _dgd_model("matrix", f", decorrelate = {choice}") == _dgd_model("matrix", "")
    last, each = _dgd_model(mlp, ", decorrelate = last"), _dgd_model(mlp, ", decorrelate = each")
    assert "rt.Rule(kind='dgd', decorrelate=(1,))" in last and "dgd on the last layer" in last
    assert "rt.Rule(kind='dgd', decorrelate=(0, 1))" in each and "dgd on every layer" in each
