"""Settings that are valid but make no sense: each a one-line warning naming the key, the value and
what happens. Pure functions returning the lines; the caller prints each once. May import: spec.
No torch: a spec is linted before any data loads."""

from __future__ import annotations

from typing import Any

from hpsearch.spec import Categorical, DataSpec, Init, NumericRange, Spec

CIFAR10_TRAIN = 50_000  # CIFAR-10's training images (5 files of 10,000), before the validation split

# The std each init draws its weights with, when it is not init_std (models.init_std).
_OWN_STD = {Init.XAVIER: "1/sqrt(fan_in)", Init.KAIMING: "sqrt(2/fan_in)"}


def training_examples(data: DataSpec) -> int | None:
    """Examples the net trains on: the training set less the last `val_size`, then the first
    `train_subset` of those. None when val_size leaves none (the data loader refuses that), or
    when only the data knows (a user's npz or image folder)."""
    total = _training_set(data)
    if total is None:
        return None
    available = total - data.val_size
    if available < 1:
        return None
    return min(data.train_subset, available) if data.train_subset is not None else available


def spec_warnings(spec: Spec, n_train: int | None = None) -> list[str]:
    """The spec's settings that make no sense. `n_train`: the training examples once the data is
    loaded; without it they are computed from the spec's data section."""
    if n_train is None:
        n_train = training_examples(spec.data)
    warnings = [*_validation_split(spec.data), *_init_std(spec)]
    if n_train is not None:
        warnings += _batch_size(spec, n_train)
    return warnings


def execution_warnings(workers: int | None, cores: int | None) -> list[str]:
    """`--workers` above the machine's cores (os.cpu_count(); None when unknown)."""
    if workers is None or cores is None or workers <= cores:
        return []
    return [
        f"--workers {workers} is above the {cores} cores: the workers share cores and each trains slower; "
        f"use at most {cores}"
    ]


def _training_set(data: DataSpec) -> int | None:
    sizes = {"synthetic": data.synthetic_train, "cifar10": CIFAR10_TRAIN}
    return sizes.get(data.dataset)  # a user's npz or folder: known once loaded


def _validation_split(data: DataSpec) -> list[str]:
    total = _training_set(data)
    if total is None:
        return []
    left = total - data.val_size
    # More held out than trained on; val_size >= the whole set is the data loader's error, not a warning.
    if not 0 < left < data.val_size:
        return []
    return [
        f"data.val_size {data.val_size} holds out most of the {total} training examples: only {left} are left "
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
