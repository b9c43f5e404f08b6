"""Settings that are valid but make no sense: each a one-line warning naming the key, the value and
what happens; and `split_note`, the one line saying what an automatic val_size chose. Pure functions
returning the lines; the caller prints each once. No torch: a spec is linted
before any data loads (`spec_warnings`); the size of a user's npz or folder is known, and trusted,
once it loaded and passed its checks (`data_warnings`, from hpsearch.data.training_set_size)."""

from __future__ import annotations

from typing import Any

from hpsearch.spec.choices import Init
from hpsearch.spec.schema import AUTO_VAL_CAP, AUTO_VAL_SHARE, Categorical, DataSize, DataSpec, NumericRange, Spec

CIFAR10_TRAIN = 50_000  # CIFAR-10's training images (5 files of 10,000), before the validation split

# The std each init draws its weights with, when it is not init_std (models.init_std).
_OWN_STD = {Init.XAVIER: "1/sqrt(fan_in)", Init.KAIMING: "sqrt(2/fan_in)"}


def training_examples(data: DataSpec, size: DataSize | None = None) -> int | None:
    """Examples the net trains on: the training set less its validation split (none when the data
    has its own), then the first `train_subset` of those. `size`: the data as counted (a user's npz or
    folder); without it, known for CIFAR-10 and synthetic data only. None when unknown, or when the
    validation split leaves none (the data loader refuses that)."""
    size = size or _known_size(data)
    if size is None:
        return None
    available = size.train if size.own_val else size.train - data.val_examples(size.train)
    if available < 1:
        return None
    return min(data.train_subset, available) if data.train_subset is not None else available


def spec_warnings(spec: Spec, n_train: int | None = None) -> list[str]:
    """The spec's settings that make no sense, before any data loads. `n_train`: the training
    examples once the data is loaded; without it they are computed from the spec's data section
    (CIFAR-10 and synthetic data; a user's npz or folder gets `data_warnings` once it loaded)."""
    if n_train is None:
        n_train = training_examples(spec.data)
    warnings = [*_validation_split(spec.data, None), *_init_std(spec)]
    if n_train is not None:
        warnings += _batch_size(spec, n_train)
    return warnings


def data_warnings(spec: Spec, size: DataSize) -> list[str]:
    """The settings that make no sense for data of this size: a validation split taking most of it,
    a batch above its training examples. For a user's npz or folder, which only its files can size."""
    n_train = training_examples(spec.data, size)
    return [*_validation_split(spec.data, size), *(_batch_size(spec, n_train) if n_train is not None else [])]


def split_note(data: DataSpec, size: DataSize | None = None) -> str | None:
    """One line saying the validation split an automatic val_size chose, when the set is small
    enough for it to differ from the 1,000 a large set holds out; None otherwise."""
    size = size or _known_size(data)
    if data.val_size is not None or size is None or size.own_val or size.train >= AUTO_VAL_SHARE * AUTO_VAL_CAP:
        return None
    held = data.val_examples(size.train)
    if held >= size.train:
        return None  # the data loader refuses a split that leaves nothing to train on
    return (
        f"data: validating on {held:,} of {size.train:,} training examples "
        f"({100 // AUTO_VAL_SHARE}%; set data.val_size to choose)"
    )


def execution_warnings(workers: int | None, cores: int | None) -> list[str]:
    """`--workers` above the machine's cores (os.cpu_count(); None when unknown)."""
    if workers is None or cores is None or workers <= cores:
        return []
    return [
        f"--workers {workers} is above the {cores} cores: the workers share cores and each trains slower; "
        f"use at most {cores}"
    ]


def _known_size(data: DataSpec) -> DataSize | None:
    """The training set's size where the spec alone says it; a user's npz or folder must be counted."""
    if data.dataset == "cifar10":
        return DataSize(CIFAR10_TRAIN, own_val=False)
    if data.dataset == "synthetic":
        return DataSize(data.synthetic_train, own_val=False)
    return None


def _validation_split(data: DataSpec, size: DataSize | None) -> list[str]:
    size = size or _known_size(data)
    if size is None or size.own_val:
        return []
    total, held = size.train, data.val_examples(size.train)
    left = total - held
    # More held out than trained on; val_size >= the whole set is the data loader's error, not a warning.
    if not 0 < left < held:
        return []
    return [
        f"data.val_size {held} holds out most of the {total} training examples: only {left} are left "
        f"to train on (the lecture holds out 1000 of {CIFAR10_TRAIN})"
    ]


def _batch_size(spec: Spec, n_train: int) -> list[str]:
    searched = spec.search.space.get("batch_size")
    if searched is None:
        batch = spec.train.batch_size
        shown = f"train.batch_size {batch}"
    else:
        # A searched batch size replaces train.batch_size in every trial: only the searched ones train.
        batch = _largest(searched)
        shown = f"search.space.batch_size {batch} (the largest searched)"
    if batch < n_train:
        return []
    relation = "is larger than" if batch > n_train else "equals"
    # The training loop steps through range(0, n, batch_size): one step, on every example, per epoch.
    return [f"{shown} {relation} the {n_train} training examples: every step sees the whole set, one step per epoch"]


def _largest(dom: NumericRange | Categorical) -> int:
    if isinstance(dom, Categorical):
        return max(int(v) for v in dom.values)
    return int(dom.high)


def _init_std(spec: Spec) -> list[str]:
    space = spec.search.space
    if "init_std" not in space or spec.model.kind == "python":  # a factory's own init_std argument
        return []
    searched_inits = space.get("init")
    if isinstance(searched_inits, Categorical):
        inits: tuple[Any, ...] = searched_inits.values
        if Init.SMALL_RANDOM in inits:
            return []
        which = f"search.space.init tries only {', '.join(i.value for i in inits)}, which ignore it"
    else:
        init = spec.model.init
        if init is Init.SMALL_RANDOM:
            return []
        which = f"model.init is {init.value}, which ignores it (its std is {_OWN_STD[init]})"
    return [
        f"search.space.init_std is searched but {which}: every trial trains the same init; "
        "search it with init: small_random"
    ]
