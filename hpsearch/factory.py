"""A user's own network: `model.kind: python` names a factory, `file.py:function` (a file, its path
resolved against the spec's folder when the spec is read) or `package.module:function`, called as
`factory(input_shape, num_classes, **args)` and returning an nn.Module that maps a batch to logits.

A spec that names Python code runs that code, as a Makefile or a conftest.py does.
May import: errors, spec; torch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from hpsearch.errors import SpecError
from hpsearch.spec import ModelSpec, is_factory_file

_LOADED: dict[tuple[str, str], Callable[..., Any]] = {}  # (reference, source hash) -> the function


def factory_file(reference: str) -> Path | None:
    """The file a factory reference names, or None for an importable module."""
    where = reference.rpartition(":")[0]
    return Path(where) if is_factory_file(where) else None


def source_hash(reference: str) -> str | None:
    """sha256 of the factory's file (None for a module): a stage records it, and --resume refuses
    a file that changed since."""
    path = factory_file(reference)
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise SpecError(f"model.factory: {path}: cannot read: {e.strerror or e}") from None


def load_factory(reference: str) -> Callable[..., Any]:
    """The factory function, imported once per process (again when its file changed)."""
    key = (reference, source_hash(reference) or "")
    if key not in _LOADED:
        _LOADED[key] = _import(reference)
    return _LOADED[key]


def _import(reference: str) -> Callable[..., Any]:
    where, _, name = reference.rpartition(":")
    path = factory_file(reference)
    try:
        if path is not None:
            module = _import_file(path)
        else:
            module = importlib.import_module(where)
    except SyntaxError as e:
        raise SpecError(f"model.factory: {e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except ModuleNotFoundError as e:
        if path is None and e.name and where.startswith(e.name):
            raise SpecError(f"model.factory: no module named '{where}' (a file needs a .py name)") from None
        raise SpecError(f"model.factory: {where}: importing it failed: {type(e).__name__}: {e}") from None
    except SpecError:
        raise
    except Exception as e:  # the user's module raised at import: say where, not a traceback
        raise SpecError(f"model.factory: {where}: importing it failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SpecError(f"model.factory: {where} has no function '{name}'")
    return fn  # type: ignore[no-any-return]


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"model.factory: {path}: no such file")
    # A module name of its own per file, so two specs' nets.py never shadow each other.
    module_name = f"hpsearch_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"model.factory: {path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def build_user_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Call the factory; refuse anything but an nn.Module. Seed torch first for a reproducible init."""
    assert spec.factory is not None
    net = load_factory(spec.factory)(tuple(input_shape), num_classes, **spec.args)
    if not isinstance(net, nn.Module):
        raise SpecError(f"model.factory: {spec.factory} returned {type(net).__name__}, not a torch.nn.Module")
    return net
