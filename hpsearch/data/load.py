"""A spec's dataset on the spec's device: what the stage driver and every worker process load.

`load_data` is the one entry point; `DataRecipe` is its picklable form, so a worker process (local
or Ray) builds the same dataset as the driver without the tensors crossing a pipe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from hpsearch.data.dataset import Dataset, build_dataset, final_dataset, training_set_size
from hpsearch.data.download import ProgressFn
from hpsearch.data.npz import Split
from hpsearch.errors import DataError, SpecError
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import Spec


def resolve_device(name: str) -> torch.device:
    """train.device as a torch device: auto is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("train.device: 'cuda' was asked for but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def load_data(spec: Spec, data_root: Path | None, progress: ProgressFn | None, spec_path: str | None = None) -> Dataset:
    """The spec's dataset on the spec's device. Errors about the spec's own keys name its file."""
    with _naming(spec_path):
        data = build_dataset(spec.data, data_root, progress)
        return data.to(resolve_device(spec.train.device))


def load_final_data(
    spec: Spec, data_root: Path | None, progress: ProgressFn | None, with_val: bool, spec_path: str | None = None
) -> tuple[Dataset, Split | None]:
    """`hpsearch final`'s training data on the spec's device (with the validation examples when
    `with_val`), and the test split, on the CPU (None when the data has none)."""
    with _naming(spec_path):
        data, test = final_dataset(spec.data, data_root, progress, with_val)
        return data.to(resolve_device(spec.train.device)), test


def resolve_val_size(spec: Spec) -> Spec:
    """`spec` with a left-out data.val_size replaced by the count it stands for on this data (a tenth
    of the training set, at most 1,000: DataSpec.val_examples), so that a run's spec.yaml says the split
    it trained on and a resume compares like with like (a run recorded before val_size could be left
    out says 1000, which CIFAR-10's 50,000 still give). Unchanged when val_size is set, or when the
    data has its own validation split and val_size is unused."""
    if spec.data.val_size is not None:
        return spec
    size = training_set_size(spec.data)
    if size is None or size.own_val:
        return spec
    data = spec.data.model_copy(update={"val_size": spec.data.val_examples(size.train)})
    return spec.model_copy(update={"data": data})


@contextmanager
def _naming(spec_path: str | None) -> Iterator[None]:
    try:
        yield
    except (DataError, SpecError) as e:
        if spec_path and str(e).startswith(("data.", "train.")):
            raise type(e)(f"{spec_path}: {e}") from None
        raise


@dataclass(frozen=True)
class DataRecipe:
    """A picklable way for a worker process to build the same dataset as the driver."""

    spec_yaml: str
    data_root: Path | None
    with_val: bool | None = None  # `hpsearch final`'s data: None for a search's; True to train on train + val

    def __call__(self) -> Dataset:
        spec = parse_spec(yaml.safe_load(self.spec_yaml))
        if self.with_val is not None:
            return load_final_data(spec, self.data_root, None, self.with_val)[0]
        return load_data(spec, self.data_root, None)
