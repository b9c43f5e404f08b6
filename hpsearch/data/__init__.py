"""The data trials train on: CIFAR-10 (found, downloaded, verified, extracted) or synthetic, split and preprocessed.

Submodules, each importing only those listed before it: `download` streams a file with its md5 verified and
extracts a tar archive without writing outside its target (`download_file`, `file_md5`, `safe_extract`,
`ProgressFn`); `cifar10` knows the release (where the data root is, the binary and python readers, the safe
unpickler, `load_cifar10`, `RawSplits`); `synthetic` makes CIFAR-shaped random data (`make_synthetic`); `npz`
reads a user's named arrays (`load_npz`); `folder` decodes and caches a user's image folder (`load_folder`);
`dataset` holds the in-memory `Dataset`, the validation split and preprocessing statistics, and `build_dataset`,
which turns a spec's `data:` section into a `Dataset`, and `training_set_size`, which counts it without loading it;
`load` puts a spec's dataset on its device (`load_data`, and `DataRecipe`, its picklable form for worker processes)
and fills in an automatic val_size (`resolve_val_size`). This package re-exports the public names other
modules and tests use.
"""

from __future__ import annotations

from hpsearch.data.cifar10 import (
    CIFAR10_CLASSES,
    DATA_ROOT_ENV,
    RawSplits,
    default_data_root,
    load_cifar10,
    read_cifar10_bin,
    read_cifar10_py,
    resolve_data_root,
)
from hpsearch.data.dataset import Dataset, build_dataset, final_dataset, split_and_preprocess, training_set_size
from hpsearch.data.download import ProgressFn, download_file, safe_extract
from hpsearch.data.folder import load_folder
from hpsearch.data.load import DataRecipe, load_data, load_final_data, resolve_device, resolve_val_size
from hpsearch.data.npz import load_npz
from hpsearch.data.synthetic import make_synthetic

__all__ = [
    "CIFAR10_CLASSES",
    "DATA_ROOT_ENV",
    "DataRecipe",
    "Dataset",
    "ProgressFn",
    "RawSplits",
    "build_dataset",
    "default_data_root",
    "download_file",
    "final_dataset",
    "load_cifar10",
    "load_data",
    "load_final_data",
    "load_folder",
    "load_npz",
    "make_synthetic",
    "read_cifar10_bin",
    "read_cifar10_py",
    "resolve_data_root",
    "resolve_device",
    "resolve_val_size",
    "safe_extract",
    "split_and_preprocess",
    "training_set_size",
]
