"""A user's image folder, `train/<class>/*.png|jpg|jpeg` with optional `val/` and `test/`, as uint8 NCHW tensors.

Classes are train/'s sub-folders sorted by name (label i is the i-th); val/ and test/ may hold only classes train/
has. Files starting with '.' are skipped; any other file must be a .png, .jpg or .jpeg image. Every image is
decoded once with Pillow: when all of them are grayscale they become 1 channel (mode L), else all become RGB
(3 channels, alpha dropped). They must share one size, unless `data.resize: [height, width]` asks to resize
every one (bilinear, antialiased when shrinking). The decoded tensors are cached in the folder as
`.hpsearch-cache-<key>.npz` (or under the user cache dir when the folder is not writable), keyed by every image's
relative name, size and modification time and by `resize`, so a second run reads one file instead of decoding
thousands. Every problem is a DataError naming the folder or file.
This module imports `hpsearch.data.cifar10`, `download` (for `ProgressFn`) and `npz` (the shared split types), and
no other module of the package; Pillow is imported when a folder is first decoded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpsearch.data.cifar10 import RawSplits
from hpsearch.data.download import ProgressFn
from hpsearch.data.npz import SPLITS, Split, shape_like
from hpsearch.errors import DataError, first_line
from hpsearch.spec.schema import DataSize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_PREFIX = ".hpsearch-cache-"
_CACHE_VERSION = "1"  # part of the key: a change to how images are decoded must not read an old cache
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_KINDS = "a .png, .jpg or .jpeg image"


@dataclass(frozen=True)
class _Image:
    path: str  # strings, not Paths: pathlib costs more than the whole cached load on a folder of 5000 images
    rel: str  # relative to the data folder: what the cache key holds
    label: int
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class _Listing:
    classes: tuple[str, ...]
    splits: dict[str, list[_Image]]  # train, and val / test where the folder has them


def load_folder(
    root: Path, resize: tuple[int, int] | None, progress: ProgressFn | None = None
) -> tuple[RawSplits, Split | None]:
    """The folder's splits: (train and test as RawSplits, val or None), from the cache when it is current."""
    listing = _list(root)
    key = _cache_key(listing, resize)
    for cache in _cache_paths(root, key):
        arrays = _read_cache(cache)
        if arrays is not None:
            return _splits(arrays, listing)
    arrays = _decode(root, listing, resize, progress)
    _write_cache(root, key, arrays)
    return _splits(arrays, listing)


def folder_size(root: Path) -> DataSize:
    """The folder's training images and whether it has val/, from its listing (nothing decoded)."""
    listing = _list(root)
    return DataSize(len(listing.splits["train"]), "val" in listing.splits)


# --------------------------------------------------------------------------- listing and checks


def _list(root: Path) -> _Listing:
    if not root.is_dir():
        raise DataError(f"{root}: {'is not a folder' if root.exists() else 'no such folder'}")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root}: no train/ folder (expected train/<class>/*.png|jpg|jpeg)")
    classes = tuple(_class_dirs(train))
    if len(classes) < 2:
        found = f"only the class folder '{classes[0]}'" if classes else "no class folders"
        raise DataError(f"{train}: {found}; a classifier needs at least 2 (train/<class>/*.png|jpg|jpeg)")
    splits: dict[str, list[_Image]] = {}
    for split in SPLITS:
        where = root / split
        if split != "train" and not where.is_dir():
            continue
        names = _class_dirs(where)
        if not names:
            raise DataError(f"{where}: no class folders (expected {split}/<class>/*.png|jpg|jpeg)")
        images: list[_Image] = []
        for name in names:
            if name not in classes:
                raise DataError(f"{where / name}: class '{name}' is not in train/ (classes: {', '.join(classes)})")
            images += _class_images(where / name, f"{split}/{name}", classes.index(name))
        splits[split] = images
    return _Listing(classes, splits)


def _class_dirs(split: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith("."))


def _class_images(folder: Path, rel: str, label: int) -> list[_Image]:
    images = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"{entry.path}: not {_KINDS} (a class folder holds images only)")
        st = entry.stat()
        images.append(_Image(entry.path, f"{rel}/{entry.name}", label, st.st_size, st.st_mtime_ns))
    if not images:
        raise DataError(f"{folder}: empty class folder (no .png, .jpg or .jpeg images)")
    return images


# --------------------------------------------------------------------------- decoding


def _decode(
    root: Path, listing: _Listing, resize: tuple[int, int] | None, progress: ProgressFn | None
) -> dict[str, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{root}: reading an image folder needs Pillow (pip install pillow)") from None
    everything = [im for images in listing.splits.values() for im in images]
    # Headers first (cheap): a folder of mixed sizes is refused before thousands of images are decoded.
    headers = [_header(Image, im.path) for im in everything]
    mode = "L" if all(m in _GRAY_MODES for _, m in headers) else "RGB"
    if resize is None:
        _refuse_mixed_sizes(root, everything, [size for size, _ in headers])
        (w, h), _ = headers[0]
    else:
        h, w = resize
    channels = 1 if mode == "L" else 3
    total, done = sum(im.bytes for im in everything), 0
    arrays: dict[str, np.ndarray] = {}
    for split, images in listing.splits.items():
        x = np.empty((len(images), channels, h, w), np.uint8)
        for i, im in enumerate(images):
            pixels = _pixels(Image, im.path, mode, None if resize is None else (w, h))
            x[i] = pixels.reshape(h, w, channels).transpose(2, 0, 1)
            done += im.bytes
            if progress is not None:
                progress(f"decoding {root.name}/", done, total)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = np.array([im.label for im in images], np.int64)
    return arrays


def _header(image: Any, path: str) -> tuple[tuple[int, int], str]:
    """((width, height), mode) from the file's header."""
    try:
        with image.open(path) as img:
            return img.size, img.mode
    except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({first_line(e)})") from None


def _pixels(image: Any, path: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != size:
                img = img.resize(size, image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
        # A truncated or corrupt body shows only when the pixels are read.
        raise DataError(f"{path}: not a readable image ({first_line(e)})") from None


def _refuse_mixed_sizes(root: Path, images: list[_Image], sizes: list[tuple[int, int]]) -> None:
    first: dict[tuple[int, int], str] = {}
    for im, size in zip(images, sizes, strict=True):
        first.setdefault(size, im.path)
    if len(first) == 1:
        return
    shown = [f"{path} is {h}x{w}" for (w, h), path in list(first.items())[:3]]
    more = f" and {len(first) - 3} more sizes" if len(first) > 3 else ""
    raise DataError(
        f"{root}: images of mixed sizes (height x width): {', '.join(shown)}{more}; "
        f"set data.resize: [height, width] to resize every image"
    )


# --------------------------------------------------------------------------- the cache


def _cache_key(listing: _Listing, resize: tuple[int, int] | None) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}\n{resize}\n{listing.classes}\n".encode())
    for images in listing.splits.values():
        h.update("".join(f"{im.rel}\t{im.bytes}\t{im.mtime_ns}\n" for im in images).encode())
    return h.hexdigest()[:16]


def _user_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "hpsearch" / "folders"


def _cache_paths(root: Path, key: str) -> list[Path]:
    """Beside the data first; else under the user cache dir, named for the folder too (many folders share it)."""
    folder = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / f"{CACHE_PREFIX}{key}.npz", _user_cache_dir() / f"{folder}-{key}.npz"]


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache or it cannot be read (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # cut short or not ours: decoding again rewrites it


def _write_cache(root: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache where it can be written; stale caches of this folder are removed. A folder and a user
    cache dir that are both read-only only cost decoding again next time."""
    for path in _cache_paths(root, key):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_atomically(path, arrays)
        except OSError:
            continue
        stem = path.name.removesuffix(f"{key}.npz")
        for old in path.parent.glob(f"{stem}*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        return


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # A temporary file renamed into place: a run killed mid-write never leaves a cut cache behind.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{CACHE_PREFIX}tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _splits(arrays: dict[str, np.ndarray], listing: _Listing) -> tuple[RawSplits, Split | None]:
    tensors = {name: torch.from_numpy(a) for name, a in arrays.items()}
    train = (tensors["x_train"], tensors["y_train"])
    test = (tensors["x_test"], tensors["y_test"]) if "x_test" in tensors else (shape_like(train[0]), train[1][:0])
    val = (tensors["x_val"], tensors["y_val"]) if "x_val" in tensors else None
    return RawSplits(*train, *test, listing.classes), val
