"""How a trial executes changes its numbers only by float rounding, and the same execution options
give the same numbers bit for bit: twice in this process, and in a worker process that uses as many
torch threads as this one. Near divergence a rounding difference grows to percent level within an
epoch (measured on CIFAR-10, see the README), so only bit-for-bit equality proves that two paths
start from the same init, data, batch order and settings."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from hpsearch.data import DataRecipe, Dataset, build_dataset
from hpsearch.executors.local import execute
from hpsearch.runs.records import TrialConfig, TrialEvents, TrialResult, TrialState
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import parse_spec
from hpsearch.spec.options import ExecOptions
from hpsearch.spec.schema import DataSpec, ModelSpec, TrainSpec
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.trial import run_trial

# 1,000 training images in batches of 20: one epoch is exactly 50 steps.
DATA = DataSpec(dataset="synthetic", synthetic_train=1100, synthetic_test=100, val_size=100)
# From a stable lr to one where rounding differences grow fastest (lr 1.0 here, as lr 0.28 on CIFAR-10).
LRS = [0.01, 0.1, 0.3, 1.0]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(DATA)


def configs(epochs: int = 1) -> list[TrialConfig]:
    model = ModelSpec(hidden=(16,))
    out = []
    for i, lr in enumerate(LRS):
        train = TrainSpec(epochs=epochs, batch_size=20, lr=lr, weight_decay=1e-3, momentum=0.9, device="cpu")
        out.append(TrialConfig(i, {"lr": lr}, model, train, seed=3))
    return out


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def numbers(results: list[TrialResult]) -> dict[int, tuple[object, ...]]:
    return {r.trial: (r.state, r.losses, r.train_loss, r.val_acc, r.train_acc) for r in results}


def test_the_same_options_give_the_same_numbers_bit_for_bit(data: Dataset) -> None:
    cs = configs()
    assert numbers(run_population(cs, data)) == numbers(run_population(cs, data))
    assert numbers([run_trial(cs[-1], data)]) == numbers([run_trial(cs[-1], data)])


def test_a_worker_process_gives_this_process_numbers_bit_for_bit_at_the_same_thread_count(data: Dataset) -> None:
    # Two workers each get cores // 2 torch threads (executor._execute_in_workers): this process uses as many.
    # What the stage prepares for a population as it starts (median_stop's bars) reaches the workers
    # too: trials 1 and 3 get a bar after epoch 1 that no accuracy clears, so they stop there.
    spec = parse_spec({"name": "w", "data": DATA.model_dump(mode="json"), "train": {"device": "cpu"}})
    cs = configs(epochs=2)
    bars = {1: (1.01,), 3: (1.01,)}
    prepare = lambda pop: [replace(c, stop_below=bars.get(c.trial_id)) for c in pop]  # noqa: E731
    here: list[TrialResult] = []
    with torch_threads(max(1, (os.cpu_count() or 1) // 2)):
        execute(cs, data, ExecOptions(population=2, workers=1), TrialEvents(on_result=here.append, on_prepare=prepare))
    there: list[TrialResult] = []
    execute(
        cs,
        data,
        ExecOptions(population=2, workers=2),
        TrialEvents(on_result=there.append, on_prepare=prepare),
        worker_data=DataRecipe(spec_to_yaml(spec), None),
    )
    assert sorted(r.trial for r in there) == [0, 1, 2, 3]  # each trial once
    assert all(math.isfinite(r.val_acc or math.nan) for r in there)  # trained and scored, not failed
    assert numbers(there) == numbers(here)
    stopped = {r.trial: (r.epochs_done, r.stopped_below) for r in there if r.state is TrialState.STOPPED}
    assert stopped == {1: (1, 1.01), 3: (1, 1.01)}
