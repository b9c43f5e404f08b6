"""A user's own network: `model.kind: python` names a factory, `file.py:function` (a file, its path
resolved against the spec's folder when the spec is read) or `package.module:function`, called as
`factory(input_shape, num_classes, **args)` and returning an nn.Module that maps a batch to logits.

A spec that names Python code runs that code, as a Makefile or a conftest.py does. A factory file is
imported as `python nets.py` would run it: its folder first on sys.path (so `from lenet import LeNet`
finds the lenet.py beside it) and sys.argv its own path, never hpsearch's command line. The modules of
that folder it imports (`local_modules`, read from its import statements) belong to it: a stage pins
the text of the file and of each of them when it starts (`FactorySource`) and ships it to worker
processes and Ray tasks, so every trial runs the code whose hash run.json records, even on a node
without the files or after an edit.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from hpsearch.errors import SpecError
from hpsearch.spec.schema import ModelSpec, is_factory_file

if TYPE_CHECKING:
    from hpsearch.data import Dataset

CHECK_BATCH = 2  # examples of the training set run through the network before any trial: two, not
# one, so that a network with BatchNorm (which refuses a batch of one in training mode) passes


@dataclass(frozen=True)
class LocalModule:
    """A module of the factory file's folder that the factory imports (lenet.py for `from lenet
    import LeNet`), or that such a module imports, as read from disk."""

    name: str  # as imported: 'lenet', 'zoo.layers'
    path: str  # absolute
    text: str
    sha256: str
    package: bool  # an __init__.py, whose folder holds its submodules

    @classmethod
    def of(cls, name: str, path: str, text: str, package: bool = False) -> LocalModule:
        return cls(name, path, text, _sha256(text.encode()), package)


@dataclass(frozen=True)
class FactorySource:
    """A factory file's path and text, the local modules it imports, and their sha256, as the stage
    read them: picklable, for the workers."""

    path: str  # absolute, as the spec resolved it: tracebacks and error_at name it
    text: str
    sha256: str  # of the file alone when it imports no local module (as stages recorded before them), else of all
    modules: tuple[LocalModule, ...] = ()

    @classmethod
    def of(cls, path: str, text: str, modules: Iterable[LocalModule] = ()) -> FactorySource:
        modules = tuple(sorted(modules, key=lambda m: m.name))
        own = _sha256(text.encode())
        if not modules:
            return cls(path, text, own)
        combined = "".join(f"{m.name} {m.sha256}\n" for m in modules)
        return cls(path, text, _sha256(f"{own}\n{combined}".encode()), modules)

    @property
    def files(self) -> dict[str, str]:
        """Each file's sha256 by its absolute path, the factory's first: a stage records it, so that
        a refused resume can name the file that changed."""
        return {self.path: _sha256(self.text.encode()), **{m.path: m.sha256 for m in self.modules}}


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


def _read_text(path: Path) -> str:
    raw = _read(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"model.factory: {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def disk_source(reference: str) -> FactorySource | None:
    """The factory file and its local modules as they are on disk now; None for an importable module."""
    path = factory_file(reference)
    if path is None:
        return None
    text = _read_text(path)
    return FactorySource.of(str(path), text, local_modules(path, text))


def read_source(model: ModelSpec) -> FactorySource | None:
    """The factory file's text and its local modules' as they are now, for a stage to pin and ship;
    None for a built-in net or a module (installed code, importable wherever hpsearch is)."""
    if model.kind != "python" or not model.factory:
        return None
    return disk_source(model.factory)


# --------------------------------------------------------------------------- the modules beside the file


def local_modules(path: Path, text: str) -> tuple[LocalModule, ...]:
    """The modules of the factory file's folder (lenet.py, or a package zoo/ with its __init__.py)
    named by its import statements, and by theirs in turn, wherever in the file they are (a function's
    body too). Found by reading the statements, not by running them: the same files whether or not
    the code ran, in this process or another; a module imported by a computed name is not found."""
    folder = path.parent
    found: dict[str, LocalModule] = {}
    todo: list[tuple[str, str, str | None]] = [(text, str(path), None)]  # text, file, its package
    while todo:
        text, filename, package = todo.pop()
        for dotted in _imported_names(text, filename, package):
            parts = dotted.split(".")
            for i in range(len(parts)):  # 'zoo.lenet' imports zoo, then zoo.lenet
                name = ".".join(parts[: i + 1])
                module = found.get(name)
                if module is None:
                    module = _local_module(folder, name)
                    if module is None:
                        break
                    found[name] = module
                    todo.append((module.text, module.path, name if module.package else name.rpartition(".")[0]))
                if not module.package:  # a plain module has no submodules
                    break
    return tuple(sorted(found.values(), key=lambda m: m.name))


def _imported_names(text: str, filename: str, package: str | None) -> Iterator[str]:
    """Each module name an import statement of `text` may import; for `from a import b`, both a and
    a.b (b may be a submodule). Relative imports resolve against `package`."""
    try:
        tree = ast.parse(text, filename)
    except SyntaxError:  # importing the file says where, with the line
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not package:  # a relative import outside a package: the import itself fails
                    continue
                up = package.split(".")
                if node.level - 1 >= len(up):
                    continue
                base = ".".join(up[: len(up) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module:
                base = node.module
            else:
                continue
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _local_module(folder: Path, name: str) -> LocalModule | None:
    """`name` as a module of `folder`: a .py file or a package; None when it is not one (installed
    code). Standard-library names are never local: a random.py beside nets.py would otherwise
    replace the `random` of every module of this process."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return None
    where = folder.joinpath(*name.split("."))
    for file, package in ((where / "__init__.py", True), (where.with_name(where.name + ".py"), False)):
        if file.is_file():
            return LocalModule.of(name, str(file), _read_text(file), package)
    return None


class _LocalFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports each registered local module from its pinned text, ahead of sys.path: a worker
    process, a Ray node or load_model runs the text the stage hashed, wherever the file is or is not."""

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        module = _MODULES.get(fullname)
        if module is None:
            return None
        where = [str(Path(module.path).parent)] if module.package else None
        return importlib.util.spec_from_file_location(
            fullname, module.path, loader=self, submodule_search_locations=where
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        local = _MODULES[module.__name__]
        exec(compile(local.text, local.path, "exec", dont_inherit=True), module.__dict__)
        _SERVED[local.name] = (local.path, local.sha256, module)


_MODULES: dict[str, LocalModule] = {}  # module name -> the text this process imports it from
_SERVED: dict[str, tuple[str, str, types.ModuleType]] = {}  # name -> (path, sha256, module) _LocalFinder made
_FINDER = _LocalFinder()


def _serve(source: FactorySource) -> None:
    """From now on `source`'s local modules import from its text; one imported earlier from other
    text (an edited lenet.py, another spec's) is dropped from sys.modules, to be imported again."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    folder = Path(source.path).parent
    for module in source.modules:
        _MODULES[module.name] = module
        _cache_lines(module.path, module.text)
        current = sys.modules.get(module.name)
        if current is None or _SERVED.get(module.name) == (module.path, module.sha256, current):
            continue
        # Only a module this finder made or one from the factory's folder: never an installed one
        # that happens to share the name.
        file = getattr(current, "__file__", None)
        if module.name in _SERVED or (file is not None and Path(file).parent == folder):
            del sys.modules[module.name]


def _cache_lines(path: str, text: str) -> None:
    # Tracebacks print source lines through linecache: give it the text that runs (mtime None: never
    # re-read from disk, where the file may be missing or different).
    linecache.cache[path] = (len(text), None, text.splitlines(keepends=True), path)


def register_source(source: FactorySource) -> None:
    """From now on this process runs `source.text` for its path, whatever is (or is not) on disk
    there: a stage's driver, its worker processes and its Ray tasks all run the text it started with."""
    _SOURCES[source.path] = source
    _cache_lines(source.path, source.text)


def describe(model: ModelSpec, source: FactorySource | None = None) -> str | None:
    """The line a command prints about the code it runs, 'model: fn from /abs/nets.py (sha256
    1a2b3c4d...)', or with local modules '... (sha256 1a2b3c4d..., with lenet.py)', of `source`
    (what check_model read) or else of the files now; None for a built-in net, or a file that cannot
    be read (check_model says why)."""
    if model.kind != "python" or model.factory is None:
        return None
    where, _, name = model.factory.rpartition(":")
    path = factory_file(model.factory)
    if path is None:
        origin = _module_origin(where)
        return f"model: {name} from module {where}" + (f" ({origin})" if origin else "")
    try:
        read = source if source is not None else disk_source(model.factory)
    except SpecError:
        return None
    if read is None:
        return None
    beside = ", ".join(os.path.relpath(m.path, path.parent) for m in read.modules)
    return f"model: {name} from {path.resolve()} (sha256 {read.sha256[:8]}...{', with ' + beside if beside else ''})"


def _module_origin(module: str) -> str | None:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package that does not import: check_model says so
        return None
    return found.origin if found is not None and found.has_location else None


def load_factory(reference: str) -> Callable[..., Any]:
    """The factory function, imported once per process (again when its file or a local module it
    imports changed): from the registered text for its path if there is one, else from disk."""
    path = factory_file(reference)
    source = (_SOURCES.get(str(path)) or disk_source(reference)) if path is not None else None
    key = (reference, source.sha256 if source else "")
    if key not in _LOADED:
        _LOADED[key] = _import(reference, source)
    return _LOADED[key]


def _import(reference: str, source: FactorySource | None) -> Callable[..., Any]:
    where, _, name = reference.rpartition(":")
    path = factory_file(reference)
    try:
        with _clean_argv(str(path) if path is not None else where):
            if path is not None and source is not None:
                _serve(source)
                with _first_on_path(path.parent):
                    module = _import_text(path, source.text)
            else:
                module = importlib.import_module(where)
    except SystemExit as e:  # a script's sys.exit or argparse at module level: hpsearch must not exit with it
        shown = path.name if path is not None else where
        raise SpecError(
            f"model.factory: {shown} exited while being imported{_exited_at(e, source)}: "
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


@contextmanager
def _first_on_path(folder: Path) -> Iterator[None]:
    """The factory's folder first on sys.path while it is imported, as for `python nets.py`: a module
    beside it that local_modules did not find (imported by a computed name) imports from there."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:  # the user's code may have taken it out itself
            sys.path.remove(entry)


def _exited_at(e: SystemExit, source: FactorySource | None) -> str:
    """' (at nets.py:12)': the innermost line of the factory's file or a local module of it on the
    way to the exit."""
    if source is None:
        return ""
    files = source.files
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename in files]
    if not frames:
        return ""
    return f" (at {os.path.relpath(frames[-1].filename, Path(source.path).parent)}:{frames[-1].lineno})"


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
