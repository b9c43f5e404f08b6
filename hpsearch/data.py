"""CIFAR-10 (binary and python releases, download + verify + safe extract), synthetic data, preprocessing.

Images stay uint8 NCHW in memory (150 MB for CIFAR-10's training set instead of 600 MB as float32);
trials normalize each batch on the fly with `Dataset.normalize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch

from hpsearch.errors import DataError
from hpsearch.spec import DataSpec, Preprocess

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
PYTHON_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"
DATA_ROOT_ENV = "HPSEARCH_DATA_ROOT"

BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
BINARY_DIR = "cifar-10-batches-bin"
PYTHON_DIR = "cifar-10-batches-py"

ProgressFn = Callable[[str, int, int | None], None]  # (description, done, total), e.g. bytes downloaded

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # bytes per image: a 32x32 red plane, then green, then blue, each row-major
RECORDS_PER_FILE = 10_000
RECORD_BYTES = 1 + PIXELS  # binary release: one label byte, then the pixels
TRAIN_FILES = 5
_CHUNK = 1 << 20  # bytes per read when downloading or hashing
_STATS_CHUNK = 1024  # images per chunk when summing statistics: 1024 * 3072 * 8 B = 25 MB of int64


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


# --------------------------------------------------------------------------- download and extract


def download_file(url: str, dest: Path, md5: str, progress: ProgressFn | None = None, timeout: float = 30) -> Path:
    """Stream `url` to `dest`, verifying its md5; `dest` appears only complete and verified."""
    return _download(url, dest, md5, progress, timeout, manual=f"put it at {dest}")


def _download(url: str, dest: Path, md5: str, progress: ProgressFn | None, timeout: float, manual: str) -> Path:
    """download_file; `manual` tells the user where to put the file by hand when the network fails.
    A failed download leaves nothing behind: no partial file, no directory made for it."""
    with _new_dirs_removed_on_failure(dest.parent):
        return _fetch(url, dest, md5, progress, timeout, manual)


@contextlib.contextmanager
def _new_dirs_removed_on_failure(directory: Path) -> Iterator[None]:
    """If the block fails, the directories it made on the way to `directory` are removed again
    (those still empty)."""
    made = [d for d in (directory, *directory.parents) if not d.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _fetch(url: str, dest: Path, md5: str, progress: ProgressFn | None, timeout: float, manual: str) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name in dest's directory: concurrent downloads don't mix, and the final
        # rename is atomic (same filesystem).
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write the download there: {e.strerror or e}") from None
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, part, progress, timeout, dest.name, manual)
        if got != md5.lower():
            raise DataError(f"checksum mismatch for {url}: expected {md5}, got {got}; the partial file was removed")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a partial file behind, whatever stopped us
        raise
    return dest


def _stream(
    url: str, out: IO[bytes], part: Path, progress: ProgressFn | None, timeout: float, what: str, manual: str
) -> str:
    """Copy url's body to `out`; the md5 hex digest of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(f"downloading {what}", 0, total)
            while chunk := response.read(_CHUNK):
                _write(out, chunk, part)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(f"downloading {what}", done, total)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, resets are OSErrors
        reason = _network_reason(e, timeout)
    else:
        if total is None or done >= total:
            return digest.hexdigest()
        # http.client ends a body cut short as if it were complete: without this, a dropped connection
        # would be reported as a checksum mismatch.
        reason = f"the connection closed after {done} of {total} bytes"
    raise DataError(
        f"cannot download {url}: {reason}. Without network, download {url.rsplit('/', 1)[-1]} elsewhere and {manual}"
    )


def _write(out: IO[bytes], chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as e:  # a local failure (disk full), not a network one: raised as ours, not caught above
        raise DataError(f"{part}: cannot write: {e.strerror or e}") from None


def _network_reason(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason  # the socket error underneath: refused, timed out, unknown host
    if isinstance(e, TimeoutError):
        return f"no response within {timeout:g} s"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    return digest.hexdigest()


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive's regular files and directories under `target`, never writing outside it.

    Every member is checked before anything is written: absolute paths, '..' components, links,
    device files and anything resolving outside `target` are refused with the member's name.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            root = target.resolve()
            for member in members:
                problem = _member_problem(member, root)
                if problem:
                    raise DataError(f"{archive}: refusing to extract member '{member.name}': {problem}")
            target.mkdir(parents=True, exist_ok=True)
            # Our checks come first so the error is ours; the stdlib's "data" filter is a second layer.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4, where our checks are the only layer
                tar.extractall(target, members=members)
    except FileNotFoundError:
        raise DataError(f"{archive}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:  # truncated or corrupt archive
        raise DataError(f"{archive}: not a readable tar archive: {e}") from None
    except OSError as e:  # disk full, permissions
        raise DataError(f"{archive}: cannot extract to {target}: {e.strerror or e}") from None


def _member_problem(member: tarfile.TarInfo, root: Path) -> str | None:
    name = member.name
    if PurePosixPath(name).is_absolute():
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' path component"
    if member.issym() or member.islnk():
        return f"link to '{member.linkname}'"
    if member.isdev():
        return "device or fifo"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or directory"
    # Catches what the rules above cannot: a symlink already inside target that points out of it,
    # and platform quirks (a drive letter or backslashes on Windows).
    if not (root / name).resolve().is_relative_to(root):
        return f"resolves outside {root}"
    return None


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
            if bin_dir.exists():
                return read_cifar10_bin(bin_dir)
            if py_dir.exists():
                return read_cifar10_py(py_dir)
            if archive.exists():
                got = _file_md5(archive)
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
    _download(
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


# --------------------------------------------------------------------------- synthetic data


def make_synthetic(n_train: int, n_test: int, seed: int = 0, num_classes: int = 10) -> RawSplits:
    """A CIFAR-shaped dataset a small model can learn: per-class smooth prototypes plus noise.

    Each class has a fixed random low-frequency prototype image (a shared base plus a class
    deviation); an example is its prototype plus low-frequency noise (which, unlike pixel noise,
    does not average away over pixels, so classes overlap and accuracy tops out near 80%) plus
    pixel noise, clipped to 0..255. Deterministic in `seed`.
    """
    if n_train < 1 or n_test < 0 or num_classes < 2:
        raise ValueError(f"need n_train >= 1, n_test >= 0, num_classes >= 2 (got {n_train}, {n_test}, {num_classes})")
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 195, size=(1, 3, _COARSE, _COARSE))
    prototypes = (base + rng.normal(0, _CLASS_SPREAD, size=(num_classes, 3, _COARSE, _COARSE))).astype(np.float32)
    x_train, y_train = _synthetic_split(rng, prototypes, n_train)
    x_test, y_test = _synthetic_split(rng, prototypes, n_test)
    return RawSplits(x_train, y_train, x_test, y_test, tuple(f"class_{i}" for i in range(num_classes)))


_COARSE = 4  # prototypes and structured noise live on a 4x4 grid, upsampled smoothly to 32x32
_CLASS_SPREAD = 20.0  # std of each class prototype around a shared base image, in pixel units
_SHAPE_NOISE = 50.0  # std of the low-frequency per-example noise, in pixel units
_PIXEL_NOISE = 20.0  # std of the independent per-pixel noise, in pixel units


def _synthetic_split(rng: np.random.Generator, prototypes: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = len(prototypes)
    labels = rng.permutation(np.arange(n) % num_classes)  # balanced to within one example per class
    coarse = prototypes[labels] + rng.normal(0, _SHAPE_NOISE, size=(n, 3, _COARSE, _COARSE)).astype(np.float32)
    up = _upsample_matrix(_COARSE, IMAGE_SHAPE[1])
    images = up @ coarse @ up.T  # (n, 3, 32, 32): bilinear upsampling of both axes
    images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(_PIXEL_NOISE)
    pixels = np.clip(images, 0, 255, out=images).round(out=images).astype(np.uint8)
    return torch.from_numpy(pixels), torch.from_numpy(labels.astype(np.int64))


@functools.cache
def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear-interpolation weights, pixel centers aligned (like align_corners=False)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] += 1 - frac
    m[np.arange(dst), hi] += frac
    return m


# --------------------------------------------------------------------------- split and preprocess


@dataclass(frozen=True)
class Dataset:
    """What trials train on: uint8 images in memory, normalized a batch at a time by `normalize`."""

    x_train: torch.Tensor  # uint8 (N, 3, 32, 32)
    y_train: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    shift: torch.Tensor  # float32, broadcastable to (B, 3, 32, 32), in [0, 1] pixel units
    scale: torch.Tensor  # float32, broadcastable; divides after the shift
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (c, h, w)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float32 (x/255 - shift)/scale."""
        gain, offset = self.affine
        return torch.addcmul(offset, x.to(torch.float32), gain)

    @functools.cached_property
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        # (x/255 - shift)/scale == x*gain + offset: one fused multiply-add per batch. Cached in the
        # instance __dict__ (cached_property bypasses the frozen __setattr__), computed once per device.
        return 1.0 / (255.0 * self.scale), -self.shift / self.scale

    def to(self, device: torch.device) -> Dataset:
        """This dataset with every tensor on `device`."""
        return dataclasses.replace(
            self,
            **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "classes"},
        )


def split_and_preprocess(raw: RawSplits, val_size: int, train_subset: int | None, preprocess: Preprocess) -> Dataset:
    """Hold out the last `val_size` training examples, keep the first `train_subset` of the rest, and
    compute the preprocessing statistics from that training split alone."""
    n = len(raw.y_train)
    if not 1 <= val_size < n:
        raise DataError(f"data.val_size: {val_size} must be at least 1 and less than the {n} training examples")
    available = n - val_size
    if train_subset is not None and not 1 <= train_subset <= available:
        raise DataError(
            f"data.train_subset: {train_subset} must be between 1 and the {available} training examples "
            f"left after data.val_size={val_size}"
        )
    end = available if train_subset is None else train_subset
    # Slices along dim 0 are views: no copy of the dataset is made.
    x_train, y_train = raw.x_train[:end], raw.y_train[:end]
    shift, scale = _statistics(x_train, Preprocess(preprocess))
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=raw.x_train[available:].contiguous(),
        y_val=raw.y_train[available:].contiguous(),
        shift=shift,
        scale=scale,
        classes=raw.classes,
    )


def _statistics(x: torch.Tensor, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) in [0, 1] pixel units, float32, from uint8 images x (N, C, H, W)."""
    c = x.shape[1]
    ones = torch.ones(1, c, 1, 1, dtype=torch.float32)
    if preprocess is Preprocess.NONE:
        return torch.zeros_like(ones), ones
    total, squares = _pixel_sums(x, squares=preprocess is Preprocess.PER_CHANNEL_STANDARDIZE)
    n = x.shape[0]
    mean_image = total.to(torch.float64) / (n * 255.0)  # (1, C, H, W)
    if preprocess is Preprocess.MEAN_IMAGE:
        return mean_image.float(), ones
    per_pixel = n * x.shape[2] * x.shape[3]  # values per channel
    mean = total.sum(dim=(2, 3), keepdim=True).to(torch.float64) / (per_pixel * 255.0)
    if preprocess is Preprocess.PER_CHANNEL_MEAN:
        return mean.float(), ones
    assert squares is not None
    var = squares.to(torch.float64) / (per_pixel * 255.0**2) - mean.square()
    std = var.clamp_min(0).sqrt()
    # A constant channel has std 0: leave it unscaled rather than divide by zero.
    return mean.float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def _pixel_sums(x: torch.Tensor, squares: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact int64 sums over the batch dim, (1, C, H, W), and of squares per channel, (1, C, 1, 1).

    Chunked so no full-size wide copy of the dataset is ever made; int64 keeps the sums exact.
    """
    total = torch.zeros(1, *x.shape[1:], dtype=torch.int64, device=x.device)
    total_sq = torch.zeros(1, x.shape[1], 1, 1, dtype=torch.int64, device=x.device) if squares else None
    for chunk in _chunks(x, _STATS_CHUNK):
        wide = chunk.to(torch.int64)
        total += wide.sum(dim=0, keepdim=True)
        if total_sq is not None:
            total_sq += wide.square().sum(dim=(0, 2, 3), keepdim=True)
    return total, total_sq


def _chunks(x: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    return (x[i : i + size] for i in range(0, len(x), size))


def build_dataset(
    spec: DataSpec, data_root: Path | None = None, progress: ProgressFn | None = None, seed: int = 0
) -> Dataset:
    """The dataset a spec's `data:` section describes; `data_root` is the CLI's --data-root."""
    if spec.dataset == "synthetic":
        try:
            raw = make_synthetic(spec.synthetic_train, spec.synthetic_test, seed)
        except MemoryError:
            gb = (spec.synthetic_train + spec.synthetic_test) * PIXELS * 4 / 1e9  # float32 while generating
            raise DataError(
                f"data.synthetic_train, data.synthetic_test: {spec.synthetic_train} + {spec.synthetic_test} "
                f"images need about {gb:.3g} GB to generate, more than this machine can allocate"
            ) from None
    else:
        raw = load_cifar10(resolve_data_root(data_root, spec.root), download=spec.download, progress=progress)
    return split_and_preprocess(raw, spec.val_size, spec.train_subset, spec.preprocess)
