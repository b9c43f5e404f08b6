"""CIFAR-10 as released: where it lives on disk, reading its binary and python releases, and finding or fetching it.

`load_cifar10` takes the extracted binary or python release from the data root, else extracts the archive there,
else downloads it. The python release is read with an unpickler that refuses anything but numpy arrays, so a
downloaded pickle cannot run code. Images come back as `RawSplits`: uint8 (N, 3, 32, 32), before any validation
split. This module imports `hpsearch.data.download` (fetching, md5, safe extraction) and no other module of the
package; `synthetic` and `dataset` import it for `RawSplits` and the image constants.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from hpsearch.data.download import ProgressFn, download_file, file_md5, safe_extract
from hpsearch.errors import DataError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
DATA_ROOT_ENV = "HPSEARCH_DATA_ROOT"

BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
BINARY_DIR = "cifar-10-batches-bin"
PYTHON_DIR = "cifar-10-batches-py"

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # bytes per image: a 32x32 red plane, then green, then blue, each row-major
RECORDS_PER_FILE = 10_000
RECORD_BYTES = 1 + PIXELS  # binary release: one label byte, then the pixels
TRAIN_FILES = 5
TRAIN_IMAGES = TRAIN_FILES * RECORDS_PER_FILE  # 50,000, before the validation split


@dataclass(frozen=True)
class RawSplits:
    """A whole dataset as released, before the validation split."""

    x_train: torch.Tensor  # uint8 (N, 3, 32, 32), contiguous
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]


# --------------------------------------------------------------------------- where the data lives


def default_data_root() -> Path:
    """$HPSEARCH_DATA_ROOT if set, else $XDG_CACHE_HOME/hpsearch/cifar10 or ~/.cache/hpsearch/cifar10."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    cache = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return cache / "hpsearch" / "cifar10"


def resolve_data_root(cli_root: Path | None, spec_root: Path | None) -> Path:
    """The data root by precedence: CLI --data-root > $HPSEARCH_DATA_ROOT > spec data.root > cache dir."""
    if cli_root is not None:
        return Path(cli_root).expanduser()
    if os.environ.get(DATA_ROOT_ENV):
        return default_data_root()
    if spec_root is not None:
        return Path(spec_root).expanduser()
    return default_data_root()


# --------------------------------------------------------------------------- binary release


def read_cifar10_bin(directory: Path) -> RawSplits:
    """Read the binary release (data_batch_1..5.bin, test_batch.bin) from `.../cifar-10-batches-bin`."""
    _require_dir(directory)
    train = [_read_bin_batch(directory / f"data_batch_{i}.bin") for i in range(1, TRAIN_FILES + 1)]
    test = _read_bin_batch(directory / "test_batch.bin")
    return _to_splits(train, test, _read_meta_txt(directory / "batches.meta.txt"))


def _read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8 (10000,), pixels uint8 (10000, 3072)) of one binary batch file."""
    expected = RECORDS_PER_FILE * RECORD_BYTES
    try:
        size = path.stat().st_size
        if size != expected:
            raise DataError(f"{path}: expected {expected} bytes, found {size} (truncated or not CIFAR-10)")
        flat = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the CIFAR-10 binary release has {_BIN_FILES})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if flat.size != expected:  # the file changed between stat and read
        raise DataError(f"{path}: expected {expected} bytes, read {flat.size} (truncated or not CIFAR-10)")
    records = flat.reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0]
    _check_labels(path, labels)
    return labels, records[:, 1:]


_BIN_FILES = "data_batch_1.bin .. data_batch_5.bin and test_batch.bin"


def _read_meta_txt(path: Path) -> tuple[str, ...]:
    """Class names, one a line; the release ends the file with blank lines."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return CIFAR10_CLASSES
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return _check_class_names(path, [line.strip() for line in text.splitlines() if line.strip()])


def _check_class_names(path: Path, names: list[str]) -> tuple[str, ...]:
    if len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{path}: expected {len(CIFAR10_CLASSES)} class names, found {len(names)}")
    return tuple(names)


def _check_labels(path: Path, labels: np.ndarray) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(CIFAR10_CLASSES)))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: record {i} has label {int(labels[i])}, expected 0-9")


def _to_splits(
    train: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray], classes: tuple[str, ...]
) -> RawSplits:
    # One copy each into contiguous arrays; torch then shares their memory.
    x_train = np.concatenate([pixels for _, pixels in train])
    y_train = np.concatenate([labels for labels, _ in train])
    return RawSplits(
        x_train=torch.from_numpy(x_train).view(-1, *IMAGE_SHAPE),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(test[1])).view(-1, *IMAGE_SHAPE),
        y_test=torch.from_numpy(test[0].astype(np.int64)),
        classes=classes,
    )


def _require_dir(directory: Path) -> None:
    try:
        if not directory.is_dir():
            what = "does not exist" if not directory.exists() else "is not a directory"
            raise DataError(f"{directory}: {what}")
    except PermissionError:
        raise DataError(f"{directory}: permission denied") from None
    if not os.access(directory, os.R_OK | os.X_OK):
        raise DataError(f"{directory}: not readable (permission denied)")


# --------------------------------------------------------------------------- python (pickle) release

try:  # numpy >= 2 moved numpy.core to numpy._core; files written by either name the function differently
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# Everything the real pickles reference: one array reconstructor and the two classes it needs.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global (os.system, eval...) is refused.

    Pickle runs whatever callable a file names, so this allowlist is what makes reading a
    downloaded pickle safe: nothing outside it is ever looked up, let alone called.
    """

    def __init__(self, file: IO[bytes], path: Path) -> None:
        # The release was pickled by Python 2: its str become bytes (b"data", b"labels").
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _PICKLE_ALLOWED.get((module, name))
        if allowed is None:
            raise DataError(f"{self._path}: refusing to unpickle '{module}.{name}' (only numpy arrays are allowed)")
        return allowed


def read_cifar10_py(directory: Path) -> RawSplits:
    """Read the python release (data_batch_1..5, test_batch, batches.meta) from `.../cifar-10-batches-py`."""
    _require_dir(directory)
    train = [_read_py_batch(directory / f"data_batch_{i}") for i in range(1, TRAIN_FILES + 1)]
    test = _read_py_batch(directory / "test_batch")
    return _to_splits(train, test, _read_meta_pickle(directory / "batches.meta"))


def _load_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return _NumpyOnlyUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the CIFAR-10 python release has {_PY_FILES})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as e:
        # What a truncated or foreign file makes the unpickler (or numpy's __setstate__) raise.
        raise DataError(f"{path}: not a CIFAR-10 pickle ({type(e).__name__}: {e})") from None
    except MemoryError:  # a few bytes can declare a petabyte-long object, allocated before it is read
        raise DataError(f"{path}: not a CIFAR-10 pickle (it declares an object too large for memory)") from None


_PY_FILES = "data_batch_1 .. data_batch_5, test_batch and batches.meta"


def _read_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with 'data' and 'labels', found {type(batch).__name__}")
    pixels = _get(batch, "data", path)
    labels = np.asarray(_get(batch, "labels", path))
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.shape != (RECORDS_PER_FILE, PIXELS):
        found = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DataError(f"{path}: 'data' must be uint8 ({RECORDS_PER_FILE}, {PIXELS}), found {found}")
    if labels.shape != (RECORDS_PER_FILE,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be {RECORDS_PER_FILE} integers, found {labels.dtype} {labels.shape}")
    _check_labels(path, labels)
    return labels, pixels


def _get(d: dict[Any, Any], key: str, path: Path) -> Any:
    """d[b"key"] (Python 2 pickles) or d["key"] (Python 3 pickles)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: no '{key}' entry (keys: {', '.join(map(repr, d))})")


def _read_meta_pickle(path: Path) -> tuple[str, ...]:
    if not path.exists():
        return CIFAR10_CLASSES
    meta = _load_pickle(path)
    names = _get(meta, "label_names", path) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: expected a dict with 'label_names', a list of strings")
    return _check_class_names(path, [n.decode("ascii", "replace") if isinstance(n, bytes) else n for n in names])


# --------------------------------------------------------------------------- CIFAR-10, wherever it is


def load_cifar10(
    root: Path,
    *,
    download: bool = True,
    progress: ProgressFn | None = None,
    binary_url: str = BINARY_URL,
    binary_md5: str = BINARY_MD5,
) -> RawSplits:
    """CIFAR-10 from `root`: its extracted binary or python release, its archive, or a fresh download."""
    root = Path(root)
    bin_dir, py_dir, archive = root / BINARY_DIR, root / PYTHON_DIR, root / BINARY_ARCHIVE
    try:
        if root.exists():
            _require_dir(root)
            # --data-root naming the release folder itself rather than the folder holding it.
            if (root / "data_batch_1.bin").is_file():
                return read_cifar10_bin(root)
            if (root / "data_batch_1").is_file() and (root / "batches.meta").is_file():
                return read_cifar10_py(root)
            if bin_dir.exists():
                return read_cifar10_bin(bin_dir)
            if py_dir.exists():
                return read_cifar10_py(py_dir)
            if archive.exists():
                got = file_md5(archive)
                if got != binary_md5.lower():
                    raise DataError(
                        f"{archive}: checksum mismatch: expected {binary_md5}, got {got} "
                        "(corrupt or not the CIFAR-10 binary release; delete it to download again)"
                    )
                return read_cifar10_bin(_extract_release(archive, root))
    except PermissionError:
        raise DataError(f"{root}: permission denied") from None
    if not download:
        raise DataError(
            f"CIFAR-10 not found in {root}: put {BINARY_DIR}/ or {PYTHON_DIR}/ or {BINARY_ARCHIVE} there, "
            "or allow downloading (data.download: true)"
        )
    download_file(
        binary_url,
        archive,
        binary_md5,
        progress,
        timeout=30,
        manual=f"put it at {archive} (or its extracted {BINARY_DIR}/ under {root})",
    )
    return read_cifar10_bin(_extract_release(archive, root))


def _extract_release(archive: Path, root: Path) -> Path:
    """Extract the archive's cifar-10-batches-bin/ to root; it appears there only complete."""
    bin_dir = root / BINARY_DIR
    try:
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    except OSError as e:
        raise DataError(f"{root}: cannot extract there: {e.strerror or e}") from None
    try:
        safe_extract(archive, staging)
        extracted = staging / BINARY_DIR
        if not extracted.is_dir():
            raise DataError(f"{archive}: has no {BINARY_DIR}/ directory (not the CIFAR-10 binary release)")
        try:
            extracted.rename(bin_dir)
        except OSError as e:
            if not bin_dir.is_dir():  # otherwise a concurrent load extracted it first: use theirs
                raise DataError(f"{bin_dir}: cannot move the extracted release there: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir
