"""A user's arrays from one .npz file: `x_train`, `y_train`, optional `x_val`/`y_val` and `x_test`/`y_test`.

Read with `np.load(allow_pickle=False)`, so a file cannot run code. `x` is images, uint8 (N, H, W) (grayscale),
(N, C, H, W) or (N, H, W, C) (taken as NHWC when the last dim is 1 or 3 and the second is not, and moved to
NCHW), or float features of any shape (kept as float32; a 4-D float array is images too, and the same layout
rule applies). Labels are integers 0..C-1: C is data.num_classes when the spec gives it, else the largest label in
any split + 1, and then every class must have an example somewhere (a gap is refused: a stray label would add
empty classes). Every problem is a DataError naming the file and the array. The split types are shared with `folder`.
This module imports `hpsearch.data.cifar10` (for `RawSplits`) and no other module of the package.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from hpsearch.data.cifar10 import RawSplits
from hpsearch.errors import DataError, first_line
from hpsearch.spec.schema import DataSize

Split = tuple[torch.Tensor, torch.Tensor]  # (x, y) of one split
SPLITS = ("train", "val", "test")
_KEYS = tuple(f"{a}_{s}" for s in SPLITS for a in "xy")


def load_npz(path: Path, num_classes: int | None = None) -> tuple[RawSplits, Split | None]:
    """The file's splits, checked: (train and test as RawSplits, the file's own validation split or None).
    `num_classes`: data.num_classes, when the labels need not show every class."""
    arrays = _read(path)
    for name in arrays:
        if name not in _KEYS:
            raise DataError(f"{path}: unknown array '{name}' (expected {', '.join(_KEYS)})")
    splits: dict[str, Split] = {}
    for split in SPLITS:
        xs, ys = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if xs is None and ys is None and split != "train":
            continue
        if xs is None or ys is None:
            have, lack = ("x", "y") if ys is None else ("y", "x")
            raise DataError(f"{path}: has {have}_{split} but no {lack}_{split}")
        if len(xs) != len(ys):
            raise DataError(f"{path}: x_{split} has {len(xs)} examples but y_{split} has {len(ys)}")
        splits[split] = (_examples(path, f"x_{split}", xs), _labels(path, f"y_{split}", ys))
    shape, dtype = splits["train"][0].shape[1:], splits["train"][0].dtype
    for split, (x, _) in splits.items():
        if x.shape[1:] != shape or x.dtype != dtype:
            raise DataError(
                f"{path}: x_{split} holds {_name(x.dtype)} examples of shape {tuple(x.shape[1:])}, "
                f"but x_train holds {_name(dtype)} of shape {tuple(shape)}"
            )
    for split in ("train", "val"):
        if split in splits and len(splits[split][1]) == 0:
            raise DataError(f"{path}: x_{split} and y_{split} are empty")
    count = check_labels(str(path), {f"y_{s}": y for s, (_, y) in splits.items()}, num_classes)
    classes = tuple(str(i) for i in range(count))
    empty = (shape_like(splits["train"][0]), torch.zeros(0, dtype=torch.int64))
    x_test, y_test = splits.get("test", empty)
    return RawSplits(*splits["train"], x_test, y_test, classes), splits.get("val")


def shape_like(x: torch.Tensor) -> torch.Tensor:
    """An empty split with x's example shape and dtype."""
    return x.new_zeros((0, *x.shape[1:]))


def check_labels(where: str, labels: dict[str, torch.Tensor], stated: int | None = None) -> int:
    """The number of classes: `stated` (data.num_classes) after refusing a label outside it, else
    the largest label + 1 after refusing labels that skip a class (labels 0..2 and one stray 7 would
    make 8 classes, 4 of them without an example), a negative label, one that would make more classes
    than there are labels, or a single class. int64 labels by name; `where` names the file."""
    total = sum(len(y) for y in labels.values())
    top = max(int(y.max()) for y in labels.values() if len(y))
    for name, y in labels.items():
        bad = (y < 0).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where}: {name}[{i}] is {int(y[i])}; labels must be 0..C-1 (no negative labels)")
    if stated is not None:
        _refuse_outside(where, labels, stated)
    elif top + 1 > total:
        name, i = _first(labels, top)
        raise DataError(
            f"{where}: {name}[{i}] is {top}, which makes {top + 1} classes for {total} labels; labels must be 0..C-1"
        )
    present = torch.unique(torch.cat([y for y in labels.values()])).tolist()
    if len(present) < 2:
        raise DataError(f"{where}: every label is {top}; a classifier needs at least 2 classes (labels 0..C-1)")
    if stated is not None:
        return stated
    missing = sorted(set(range(top + 1)) - set(present))
    if missing:
        above = next(v for v in present if v > missing[0])
        name, i = _first(labels, above)
        raise DataError(
            f"{where}: no example has label {_listed(missing, 'or')}, yet {name}[{i}] is {above} "
            f"({_examples_of(labels, above)}): labels must be 0..C-1 with examples of each; fix the labels, "
            f"or set data.num_classes: {top + 1} to train with classes that have no examples"
        )
    return top + 1


def _refuse_outside(where: str, labels: dict[str, torch.Tensor], stated: int) -> None:
    """A label >= data.num_classes, named with its first place and count."""
    outside = sum(int((y >= stated).sum()) for y in labels.values())
    if not outside:
        return
    name, y = next((n, y) for n, y in labels.items() if bool((y >= stated).any()))
    i = int((y >= stated).nonzero()[0])
    label = int(y[i])
    others = outside - sum(int((y == label).sum()) for y in labels.values())
    more = f", and {others} more with labels >= {stated}" if others else ""
    raise DataError(
        f"{where}: {name}[{i}] is {label}, outside data.num_classes {stated} (labels 0..{stated - 1}): "
        f"{_examples_of(labels, label)}{more}; fix the labels or raise data.num_classes"
    )


def _first(labels: dict[str, torch.Tensor], label: int) -> tuple[str, int]:
    """The first place `label` occurs: (array name, index)."""
    name, y = next((n, y) for n, y in labels.items() if bool((y == label).any()))
    return name, int((y == label).nonzero()[0])


def _examples_of(labels: dict[str, torch.Tensor], label: int) -> str:
    count = sum(int((y == label).sum()) for y in labels.values())
    return f"{count} example{'s' if count != 1 else ''} of label {label}"


def _listed(values: list[int], last: str) -> str:
    """3, 4, 5 or 6: at most 8 shown, then how many more."""
    shown = [str(v) for v in values[:8]]
    if len(values) > 8:
        return f"{', '.join(shown)} and {len(values) - 8} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {last} {shown[-1]}"


def _starts_like_a_pickle(path: Path) -> bool:
    """Pickle protocols 2 and up begin with the PROTO opcode, 0x80."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def npz_size(path: Path) -> DataSize | None:
    """The file's training examples and whether it has x_val, from its labels alone (x_train, the
    bulk, is not read); None when it has no y_train (load_npz says what is missing)."""
    with _open(path) as npz:
        if "y_train" not in npz.files:
            return None
        return DataSize(len(_array(path, npz, "y_train")), "y_val" in npz.files or "x_val" in npz.files)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    """The file opened lazily (an array is read when asked for), or a DataError naming the file."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an .npz file") from None
    except (OSError, ValueError, EOFError) as e:
        if "pickle" in str(e) and _starts_like_a_pickle(path):  # np.load refuses it without unpickling it
            raise DataError(f"{path}: not an .npz file but pickled data, refused (loading it could run code)") from None
        if "pickle" in str(e):  # numpy takes any file that is not a zip or .npy for a pickle
            raise DataError(f"{path}: not an .npz file (neither a zip archive of arrays nor a .npy array)") from None
        raise DataError(f"{path}: not an .npz file ({first_line(e)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz file of named arrays (x_train, y_train, ...)")
    return npz


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, or a DataError naming the file and, where it is one array, the array."""
    with _open(path) as npz:
        return {name: _array(path, npz, name) for name in npz.files}


def _array(path: Path, npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return npz[name]
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
            raise DataError(
                f"{path}: {name} is an object array, refused (loading it would unpickle); "
                f"store numbers (uint8 images, float features, integer labels)"
            ) from None
        raise DataError(f"{path}: {name} is not a readable array ({first_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: {name} is not a readable array ({first_line(e)})") from None
    except MemoryError:
        raise DataError(f"{path}: {name} is larger than this machine can allocate") from None


def _examples(path: Path, name: str, x: np.ndarray) -> torch.Tensor:
    """x as uint8 NCHW images or float32 features, after refusing anything else."""
    if x.dtype == np.uint8:
        if x.ndim == 3:  # (N, H, W): grayscale
            x = x[:, None]
        if x.ndim != 4:
            raise DataError(
                f"{path}: {name} is uint8 of shape {x.shape}; uint8 images are (N, H, W), (N, C, H, W) or "
                f"(N, H, W, C) (store other features as float32)"
            )
    elif np.issubdtype(x.dtype, np.floating):
        if x.ndim < 2:
            raise DataError(f"{path}: {name} has shape {x.shape}; features are (N, ...) with one row per example")
        x = x.astype(np.float32, copy=False)
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            raise DataError(f"{path}: {name}[{i}] holds NaN or infinity (in float32); features must be finite")
    else:
        raise DataError(f"{path}: {name} is {x.dtype}; examples are uint8 images or float features")
    if x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(path: Path, name: str, y: np.ndarray) -> torch.Tensor:
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {name} is {y.dtype}; labels must be integers 0..C-1")
    if y.ndim != 1:
        raise DataError(f"{path}: {name} has shape {y.shape}; labels are one-dimensional, (N,)")
    if y.dtype == np.uint64 and len(y) and int(y.max()) > np.iinfo(np.int64).max:
        i = int(np.argmax(y))
        raise DataError(f"{path}: {name}[{i}] is {int(y[i])}; labels must be 0..C-1")
    return torch.from_numpy(y.astype(np.int64))


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
