"""The in-memory `Dataset` trials train on: the validation split, preprocessing statistics, and `build_dataset`.

Images stay uint8 NCHW in memory (150 MB for CIFAR-10's training set instead of 600 MB as float32); trials
normalize each batch on the fly with `Dataset.normalize`, whose shift and scale are computed from the training
split alone. A user's npz may hold float features of any shape instead: they stay float32, and the statistics
are per feature (or per index of dim 1, the channel, for the per-channel options). `build_dataset` turns a
spec's `data:` section into a `Dataset`, from CIFAR-10, synthetic data, an npz file or an image folder.
This is the top of the package: it imports `cifar10`, `synthetic`, `npz`, `folder` and `download` (for
`ProgressFn`), and none of them imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from hpsearch.data.cifar10 import PIXELS, TRAIN_IMAGES, RawSplits, load_cifar10, resolve_data_root
from hpsearch.data.download import ProgressFn
from hpsearch.data.folder import folder_size, load_folder
from hpsearch.data.npz import Split, load_npz, npz_size
from hpsearch.data.synthetic import make_synthetic
from hpsearch.errors import DataError
from hpsearch.spec.choices import Preprocess
from hpsearch.spec.schema import DataSize, DataSpec

_STATS_CHUNK = 1024  # images per chunk when summing statistics: 1024 * 3072 * 8 B = 25 MB of int64


@dataclass(frozen=True)
class Dataset:
    """What trials train on: uint8 images (or a user's float features) in memory, normalized a batch at a
    time by `normalize`."""

    x_train: torch.Tensor  # uint8 (N, C, H, W), 3x32x32 for CIFAR-10; or float32 (N, ...) features
    y_train: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    shift: torch.Tensor  # float32, broadcastable to (B, C, H, W), in [0, 1] pixel units (features: their units)
    scale: torch.Tensor  # float32, broadcastable; divides after the shift
    classes: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # about the data as read (classes with no training examples), said once

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for images, anything for features."""
        return tuple(self.x_train.shape[1:])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float32 (x/255 - shift)/scale; float features -> (x - shift)/scale."""
        gain, offset = self.affine
        return torch.addcmul(offset, x.to(torch.float32), gain)

    @functools.cached_property
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        # (x/255 - shift)/scale == x*gain + offset: one fused multiply-add per batch. Cached in the
        # instance __dict__ (cached_property bypasses the frozen __setattr__), computed once per device.
        unit = 255.0 if self.x_train.dtype == torch.uint8 else 1.0  # pixels are 0..255; features are as given
        return 1.0 / (unit * self.scale), -self.shift / self.scale

    def to(self, device: torch.device) -> Dataset:
        """This dataset with every tensor on `device`."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


def split_and_preprocess(
    raw: RawSplits, val_size: int, train_subset: int | None, preprocess: Preprocess, val: Split | None = None
) -> Dataset:
    """Hold out the last `val_size` training examples (unless the data has its own validation split `val`),
    keep the first `train_subset` of the rest, and compute the preprocessing statistics from that training
    split alone."""
    if val is not None:
        return _with_own_val(raw, val, train_subset, preprocess)
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


def _with_own_val(raw: RawSplits, val: Split, train_subset: int | None, preprocess: Preprocess) -> Dataset:
    n = len(raw.y_train)
    if train_subset is not None and not 1 <= train_subset <= n:
        raise DataError(f"data.train_subset: {train_subset} must be between 1 and the {n} training examples")
    end = n if train_subset is None else train_subset
    x_train, y_train = raw.x_train[:end], raw.y_train[:end]
    shift, scale = _statistics(x_train, Preprocess(preprocess))
    return Dataset(x_train, y_train, val[0], val[1], shift, scale, raw.classes)


def _statistics(x: torch.Tensor, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) in [0, 1] pixel units, float32, from uint8 images x (N, C, H, W)."""
    if x.dtype != torch.uint8:
        return _feature_statistics(x, preprocess)
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


def _feature_statistics(x: torch.Tensor, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale), float32, from float features x (N, ...): per feature (mean_image), or per index of
    dim 1 over every later dim (the per-channel options; for (N, D) features that is per feature too)."""
    keep = (1, x.shape[1]) + (1,) * (x.dim() - 2)  # per channel: (1, C, 1, ...)
    ones = torch.ones(keep, dtype=torch.float32)
    if preprocess is Preprocess.NONE:
        return torch.zeros_like(ones), ones
    total = torch.zeros(1, *x.shape[1:], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in _chunks(x, _STATS_CHUNK):  # float64 sums, a chunk at a time: no full float64 copy
        wide = chunk.to(torch.float64)
        total += wide.sum(dim=0, keepdim=True)
        squares += wide.square().sum(dim=0, keepdim=True)
    n = x.shape[0]
    if preprocess is Preprocess.MEAN_IMAGE:
        return (total / n).float(), torch.ones_like(total, dtype=torch.float32)
    later = tuple(range(2, x.dim()))
    count = n * math.prod(x.shape[2:])  # values per channel
    mean = (total.sum(dim=later, keepdim=True) if later else total) / count
    if preprocess is Preprocess.PER_CHANNEL_MEAN:
        return mean.float(), ones
    var = (squares.sum(dim=later, keepdim=True) if later else squares) / count - mean.square()
    std = var.clamp_min(0).sqrt()
    return mean.float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def _chunks(x: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    return (x[i : i + size] for i in range(0, len(x), size))


def build_dataset(spec: DataSpec, data_root: Path | None = None, progress: ProgressFn | None = None) -> Dataset:
    """The dataset a spec's `data:` section describes; `data_root` is the CLI's --data-root."""
    raw, val = raw_splits(spec, data_root, progress)
    data = split_and_preprocess(raw, spec.val_examples(len(raw.y_train)), spec.train_subset, spec.preprocess, val)
    return _with_warnings(data, spec, raw, own_val=val is not None)


def _with_warnings(data: Dataset, spec: DataSpec, raw: RawSplits, own_val: bool) -> Dataset:
    """`data` with a warning naming the classes that have no training example, and where theirs are."""
    counts = torch.bincount(data.y_train, minlength=data.num_classes)
    empty = [c for c in range(data.num_classes) if counts[c] == 0]
    if not empty or spec.path is None:  # CIFAR-10 and the synthetic data have every class
        return data
    names = [data.classes[c] for c in empty]
    kind = f"classes {', '.join(names)} have" if len(names) > 1 else f"class {names[0]} has"
    warning = f"{spec.path}: {kind} {_whereabouts(data, spec, raw, empty, own_val)}"
    return dataclasses.replace(data, warnings=(warning,))


def _whereabouts(data: Dataset, spec: DataSpec, raw: RawSplits, empty: list[int], own_val: bool) -> str:
    """Where the examples of the `empty` classes are instead of the training split, and what would help."""

    def held(y: torch.Tensor) -> int:
        return int(torch.isin(y, torch.tensor(empty, device=y.device)).sum())

    folder = spec.dataset == "folder"
    in_val, in_test = held(data.y_val), held(raw.y_test)
    left_out = held(raw.y_train) - (0 if own_val else in_val)  # past the first data.train_subset
    places = []
    if in_val and not own_val:
        places.append(f"{in_val} in the validation split, the last {len(data.y_val)} training examples")
    if left_out:
        places.append(f"{left_out} after the first data.train_subset {spec.train_subset}")
    if in_val and own_val:
        places.append(f"{in_val} in {'val/' if folder else 'y_val'}")
    if in_test:
        places.append(f"{in_test} in {'test/' if folder else 'y_test'}")
    if not places:
        n = data.num_classes
        return f"no examples at all (data.num_classes is {n}: labels 0..{n - 1}); lower it or fix the labels"
    if in_val and not own_val and folder:
        fix = "a folder's images are read class by class: add a val/ folder"
    elif in_val and not own_val:
        fix = "shuffle the file's examples or give it x_val/y_val"
    elif left_out:
        fix = "raise data.train_subset or shuffle the examples"
    else:
        fix = "a class without training examples cannot be learned"
    return f"no training examples ({'; '.join(places)}); {fix}"


def training_set_size(spec: DataSpec) -> DataSize | None:
    """The training set's size before the validation split, counted without loading it: CIFAR-10's
    50,000 and the synthetic data's from the spec, an npz's from its labels, a folder's from its
    listing; None when the npz has no y_train (loading it says so)."""
    if spec.dataset == "cifar10":
        return DataSize(TRAIN_IMAGES, own_val=False)
    if spec.dataset == "synthetic":
        return DataSize(spec.synthetic_train, own_val=False)
    assert spec.path is not None  # the spec requires it for npz and folder
    return npz_size(spec.path) if spec.dataset == "npz" else folder_size(spec.path)


def raw_splits(
    spec: DataSpec, data_root: Path | None = None, progress: ProgressFn | None = None
) -> tuple[RawSplits, Split | None]:
    """The data's splits as read: train and test, and the data's own validation split if it has one."""
    if spec.dataset == "synthetic":
        try:
            return make_synthetic(spec.synthetic_train, spec.synthetic_test, spec.seed), None
        except MemoryError:
            gb = (spec.synthetic_train + spec.synthetic_test) * PIXELS * 4 / 1e9  # float32 while generating
            raise DataError(
                f"data.synthetic_train, data.synthetic_test: {spec.synthetic_train} + {spec.synthetic_test} "
                f"images need about {gb:.3g} GB to generate, more than this machine can allocate"
            ) from None
    if spec.dataset in ("npz", "folder"):
        assert spec.path is not None  # the spec requires it for these datasets
        if spec.dataset == "npz":
            return load_npz(spec.path, spec.num_classes)
        return load_folder(spec.path, spec.resize, progress)
    return load_cifar10(resolve_data_root(data_root, spec.root), download=spec.download, progress=progress), None


def final_dataset(
    spec: DataSpec, data_root: Path | None, progress: ProgressFn | None, with_val: bool
) -> tuple[Dataset, Split | None]:
    """What `hpsearch final` trains on, and the test split it is scored on once (None when the data
    has none). `with_val`: the validation examples join the training set (and the preprocessing
    statistics are those of the union); the returned Dataset then has no validation examples."""
    raw, val = raw_splits(spec, data_root, progress)
    data = split_and_preprocess(raw, spec.val_examples(len(raw.y_train)), spec.train_subset, spec.preprocess, val)
    test = (raw.x_test, raw.y_test) if len(raw.y_test) else None
    if with_val:
        x = torch.cat([data.x_train, data.x_val])
        y = torch.cat([data.y_train, data.y_val])
        shift, scale = _statistics(x, Preprocess(spec.preprocess))
        data = Dataset(x, y, x[:0], y[:0], shift, scale, data.classes)
    return _with_warnings(data, spec, raw, own_val=val is not None), test
