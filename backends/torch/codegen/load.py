"""Write a compiled model's source to disk and import it, so tracebacks show the generated lines."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from nldsl.backends.torch.codegen.emit import emit_model, emit_optimizer
from nldsl.spec import Spec


def cache_dir() -> Path:
    root = os.environ.get("NLDSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nldsl"
    return Path(root)


def import_source(source: str, stem: str, directory: Path | None = None) -> ModuleType:
    """Import generated source from a file named by its content hash (written atomically)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}_{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, encoding="utf-8")
        tmp.replace(path)
    return import_file(path, f"nldsl_generated.{stem}_{digest}")


def import_file(path: Path, name: str) -> ModuleType:
    """Import a generated module from its file under `name` (once; a module that fails to import
    is not kept), so tracebacks show the generated lines."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def model_class(spec: Spec, name: str | None = None) -> type:
    """The compiled model class (a generated module exports it as MODEL)."""
    name = name or next(u for u in spec.local_units if u in spec.models)
    return import_source(emit_model(spec, name), "model").MODEL


def optimizer_class(spec: Spec, name: str) -> type:
    """The compiled optimizer class (a generated module exports it as OPTIMIZER)."""
    return import_source(emit_optimizer(spec, name), "optim").OPTIMIZER
