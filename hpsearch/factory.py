"""A user's own network: `model.kind: python` names a factory, `file.py:function` (a file, its path
resolved against the spec's folder when the spec is read) or `package.module:function`, called as
`factory(input_shape, num_classes, **args)` and returning an nn.Module that maps a batch to logits.

A spec that names Python code runs that code, as a Makefile or a conftest.py does. A stage pins the
file's text when it starts (`FactorySource`) and ships it to worker processes and Ray tasks, so every
trial runs the code whose hash run.json records, even on a node without the file or after an edit.
May import: errors, spec; torch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from hpsearch.errors import SpecError
from hpsearch.spec import ModelSpec, is_factory_file

if TYPE_CHECKING:
    from hpsearch.data import Dataset

CHECK_BATCH = 2  # examples of the training set run through the network before any trial: two, not
# one, so that a network with BatchNorm (which refuses a batch of one in training mode) passes


@dataclass(frozen=True)
class FactorySource:
    """A factory file's path, text and sha256, as the stage read it: picklable, for the workers."""

    path: str  # absolute, as the spec resolved it: tracebacks and error_at name it
    text: str
    sha256: str

    @classmethod
    def of(cls, path: str, text: str) -> FactorySource:
        return cls(path, text, _sha256(text.encode()))


_SOURCES: dict[str, FactorySource] = {}  # path -> the text this process runs for it (register_source)
_LOADED: dict[tuple[str, str], Callable[..., Any]] = {}  # (reference, source hash) -> the function


def factory_file(reference: str) -> Path | None:
    """The file a factory reference names, or None for an importable module."""
    where = reference.rpartition(":")[0]
    return Path(where) if is_factory_file(where) else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"model.factory: {path}: no such file") from None
    except OSError as e:
        raise SpecError(f"model.factory: {path}: cannot read: {e.strerror or e}") from None


def source_hash(reference: str) -> str | None:
    """sha256 of the factory's file on disk now (None for a module): a stage records it, and
    --resume refuses a file that changed since."""
    path = factory_file(reference)
    return None if path is None else _sha256(_read(path))


def read_source(model: ModelSpec) -> FactorySource | None:
    """The factory file's text as it is now, for a stage to pin and ship; None for a built-in net or
    a module (installed code, importable wherever hpsearch is)."""
    path = factory_file(model.factory) if model.kind == "python" and model.factory else None
    if path is None:
        return None
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"model.factory: {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return FactorySource(str(path), text, _sha256(raw))


def register_source(source: FactorySource) -> None:
    """From now on this process runs `source.text` for its path, whatever is (or is not) on disk
    there: a stage's driver, its worker processes and its Ray tasks all run the text it started with."""
    _SOURCES[source.path] = source
    # Tracebacks print source lines through linecache: give it the shipped text (mtime None: never
    # re-read from disk, where the file may be missing or different).
    lines = source.text.splitlines(keepends=True)
    linecache.cache[source.path] = (len(source.text), None, lines, source.path)


def describe(model: ModelSpec, source: FactorySource | None = None) -> str | None:
    """The line a command prints about the code it runs, 'model: fn from /abs/nets.py (sha256
    1a2b3c4d...)', of `source` (what check_model read) or else of the file now; None for a built-in
    net, or a file that cannot be read (check_model says why)."""
    if model.kind != "python" or model.factory is None:
        return None
    where, _, name = model.factory.rpartition(":")
    path = factory_file(model.factory)
    if path is None:
        origin = _module_origin(where)
        return f"model: {name} from module {where}" + (f" ({origin})" if origin else "")
    try:
        digest = source.sha256 if source is not None else source_hash(model.factory)
    except SpecError:
        return None
    return f"model: {name} from {path.resolve()} (sha256 {digest[:8] if digest else '?'}...)"


def _module_origin(module: str) -> str | None:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package that does not import: check_model says so
        return None
    return found.origin if found is not None and found.has_location else None


def load_factory(reference: str) -> Callable[..., Any]:
    """The factory function, imported once per process (again when its file changed): from the
    registered text for its path if there is one, else from disk."""
    path = factory_file(reference)
    shipped = _SOURCES.get(str(path)) if path is not None else None
    key = (reference, shipped.sha256 if shipped else source_hash(reference) or "")
    if key not in _LOADED:
        _LOADED[key] = _import(reference, shipped)
    return _LOADED[key]


def _import(reference: str, shipped: FactorySource | None) -> Callable[..., Any]:
    where, _, name = reference.rpartition(":")
    path = factory_file(reference)
    try:
        with _clean_argv(str(path) if path is not None else where):
            if path is not None:
                text = shipped.text if shipped else _read(path).decode("utf-8", errors="replace")
                module = _import_text(path, text)
            else:
                module = importlib.import_module(where)
    except SystemExit as e:  # a script's sys.exit or argparse at module level: hpsearch must not exit with it
        shown = path.name if path is not None else where
        raise SpecError(
            f"model.factory: {shown} exited while being imported{_exited_at(e, path)}: "
            'put the script part under `if __name__ == "__main__":`'
        ) from None
    except SyntaxError as e:
        raise SpecError(f"model.factory: {e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except ModuleNotFoundError as e:
        if path is None and e.name and where.startswith(e.name):
            raise SpecError(f"model.factory: no module named '{where}' (a file needs a .py name)") from None
        raise SpecError(f"model.factory: {where}: importing it failed: {_raised(e)}") from None
    except SpecError:
        raise
    except Exception as e:  # the user's module raised at import: say what and where, not a traceback
        raise SpecError(f"model.factory: {where}: importing it failed: {_raised(e)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SpecError(f"model.factory: {where} has no function '{name}'")
    return fn  # type: ignore[no-any-return]


@contextmanager
def _clean_argv(argv0: str) -> Iterator[None]:
    """sys.argv while a factory's file is imported: what `python nets.py` gives it, never hpsearch's own
    arguments, which a training script's argparse at module level would read and reject."""
    saved = sys.argv
    sys.argv = [argv0]
    try:
        yield
    finally:
        sys.argv = saved


def _exited_at(e: SystemExit, path: Path | None) -> str:
    """' (at nets.py:12)': the innermost line of the factory's file on the way to the exit."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if path is not None and f.filename == str(path)]
    return f" (at {path.name}:{frames[-1].lineno})" if path is not None and frames else ""


def _import_text(path: Path, text: str) -> types.ModuleType:
    # A module name of its own per file, so two specs' nets.py never shadow each other.
    module_name = f"hpsearch_user_{_sha256(str(path.resolve()).encode())[:12]}_{path.stem}"
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    # Compiled with the user's path as its file name: tracebacks and error_at name nets.py:LINE.
    code = compile(text, str(path), "exec", dont_inherit=True)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _raised(e: BaseException) -> str:
    """'Type: message at file:line', the line the innermost frame outside hpsearch, torch and the
    import machinery: the user's."""
    skip = (f"{os.sep}hpsearch{os.sep}", f"{os.sep}torch{os.sep}", f"{os.sep}importlib{os.sep}", "<frozen ")
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not any(s in f.filename for s in skip)]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    message = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {message}{where}" if message else f"{type(e).__name__}{where}"


def build_user_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Call the factory; refuse anything but an nn.Module. Seed torch first for a reproducible init."""
    assert spec.factory is not None
    net = load_factory(spec.factory)(tuple(input_shape), num_classes, **spec.args)
    if not isinstance(net, nn.Module):
        raise SpecError(f"model.factory: {spec.factory} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def check_model(model: ModelSpec, data: Dataset, spec_path: str) -> FactorySource | None:
    """Before any trial runs: read the user's factory file once and pin it in this process (every
    later trial here runs that text; the caller ships it to workers), build the network once with
    `model` (the first trial's) and run CHECK_BATCH real training examples through it without
    gradients. A factory that does not load, raises, returns no nn.Module, or a network with no
    trainable parameter, that raises, or whose output is not a (batch, num_classes) float tensor is
    refused with one line naming model.factory.
    Returns the pinned source (None for a module or a built-in net, which is not checked)."""
    if model.kind != "python" or model.factory is None:
        return None
    try:
        source = read_source(model)
        if source is not None:
            register_source(source)
        _check(model, data)
    except SpecError as e:
        raise SpecError(f"{spec_path}: {e}") from None
    return source


def _check(model: ModelSpec, data: Dataset) -> None:
    assert model.factory is not None
    where, _, name = model.factory.rpartition(":")
    path = factory_file(model.factory)
    # 'nets.py:tiny((3, 32, 32), 10, hidden=8)': what was called, and from which file
    args = "".join(f", {k}={v!r}" for k, v in model.args.items())
    call = f"{path.name if path else where}:{name}({data.input_shape}, {data.num_classes}{args})"
    try:
        net = build_user_model(model, data.input_shape, data.num_classes)
    except SpecError:
        raise
    except Exception as e:  # the user's factory raised: refused with its line, as a trial would fail
        raise SpecError(f"model.factory: {call} raised {_raised(e)}") from None
    x = data.normalize(data.x_train[:CHECK_BATCH])
    try:
        with torch.no_grad():
            out = net.to(x.device)(x)
    except Exception as e:  # every trial would fail the same way
        raise SpecError(
            f"model.factory: the network of {call} raised on a batch of {len(x)} training examples "
            f"of shape {tuple(x.shape[1:])}: {_raised(e)}"
        ) from None
    expected = (len(x), data.num_classes)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != expected:
        got = f"an output of shape {shape}" if shape is not None else f"a {type(out).__name__}, not a tensor"
        raise SpecError(
            f"model.factory: the network of {call} gave {got} for a batch of {len(x)} examples of shape "
            f"{tuple(x.shape[1:])}; expected {expected} (batch, num_classes): one logit per class"
        )
    if not out.is_floating_point():
        raise SpecError(f"model.factory: the network of {call} gave {out.dtype} logits; expected floating point")
    # After the forward pass: a network that raises says where, which is more use than having no parameters.
    _check_trainable(net, call)


def _check_trainable(net: nn.Module, call: str) -> None:
    """A network with nothing to train: every trial would fail (an optimizer refuses an empty
    parameter list) or learn nothing."""
    params = list(net.parameters())
    if not params:  # nn.Module registers only attributes that are modules: a list's layers are unseen
        raise SpecError(
            f"model.factory: the network of {call} has no trainable parameters "
            "(layers kept in a plain list? use nn.ModuleList)"
        )
    if not any(p.requires_grad for p in params):
        raise SpecError(
            f"model.factory: the network of {call} has {len(params)} parameter tensors, none trainable "
            "(requires_grad=False on every one): training would change nothing"
        )
