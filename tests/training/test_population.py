"""Population training equals one-at-a-time training, contains divergence, groups by shape. (That the
executor's worker processes give the same results, bit for bit, is tested in test_paths.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from helpers import configs, max_relative_difference

from hpsearch.data import DataRecipe, Dataset, build_dataset
from hpsearch.executors.local import auto_population
from hpsearch.runs.records import TrialConfig, TrialState
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import DataSpec, ModelSpec, TrainSpec
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.populations.group import train_group
from hpsearch.training.populations.plan import group_key, plan_populations
from hpsearch.training.trial import run_trial

# 1,000 training images in batches of 20: one epoch is exactly 50 steps.
DATA = DataSpec(dataset="synthetic", synthetic_train=1100, synthetic_test=100, val_size=100)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(DATA)


CASES = [
    (ModelSpec(hidden=(32,)), "momentum"),
    (ModelSpec(hidden=(32, 16), activation="tanh", init="xavier"), "nesterov"),
    (ModelSpec(hidden=(16,), activation="maxout"), "sgd"),
    (ModelSpec(hidden=(24,)), "adam"),
    (ModelSpec(kind="convnet", hidden=(8, 16)), "momentum"),
    (ModelSpec(kind="convnet", hidden=(6,), activation="elu"), "adam"),
]


@pytest.mark.parametrize(("model", "optimizer"), CASES, ids=[f"{m.kind}-{o}-{m.activation.value}" for m, o in CASES])
def test_population_equals_one_at_a_time_after_50_steps(data: Dataset, model: ModelSpec, optimizer: str) -> None:
    lrs = [1e-3, 3e-4, 2e-3, 5e-4] if optimizer == "adam" else [0.02, 0.01, 0.005, 0.002]
    cs = configs(model, optimizer, lrs, [1e-3, 0.0, 1e-2, 0.1], [0.9, 0.5, 0.8, 0.95])
    single = [run_trial(c, data) for c in cs]
    together = run_population(cs, data)
    assert all(r.iterations == 50 for r in single + together)
    assert max_relative_difference(single, together) <= 1e-4
    for s, t in zip(single, together, strict=True):
        assert t.val_acc == pytest.approx(s.val_acc, abs=0.011)  # at most one of 100 validation images
        assert t.val_acc is not None
        assert t.val_acc == round(t.val_acc * 100) / 100  # an exact count / 100
        assert t.train_loss == pytest.approx(s.train_loss, rel=1e-4)
        assert t.initial_loss == pytest.approx(s.initial_loss, rel=1e-6)


def test_fused_update_with_one_momentum_equals_one_at_a_time(data: Dataset) -> None:
    # Momentum fixed in the spec, lr and weight decay searched: the first layer's update is fused.
    cs = configs(ModelSpec(hidden=(32,)), "momentum", [0.02, 0.01, 0.005, 0.002], [1e-3, 0.0, 1e-2, 0.1], [0.9] * 4)
    single = [run_trial(c, data) for c in cs]
    together = run_population(cs, data)
    assert max_relative_difference(single, together) <= 1e-4


@pytest.mark.parametrize(("kind", "hidden"), [("mlp", (32, 16)), ("convnet", (8,))])
def test_trials_with_dropout_train_together_as_they_do_alone(data: Dataset, kind: str, hidden: tuple[int, ...]) -> None:
    """Rates 0, 0.2 and 0.5 in one population: each trial draws its masks from its own generator,
    as nn.Dropout draws them one at a time, so the population equals one-at-a-time training."""
    rates = [0.0, 0.2, 0.5, 0.5]
    base = configs(ModelSpec(kind=kind, hidden=hidden), "momentum", [0.02, 0.01, 0.02, 0.005], [1e-3, 0.0, 1e-3, 1e-2])
    cs = [replace(c, model=c.model.model_copy(update={"dropout": r})) for c, r in zip(base, rates, strict=True)]
    assert len(plan_populations(cs, size=4)) == 1  # one population, whatever the rates
    single = [run_trial(c, data) for c in cs]
    together = run_population(cs, data)
    assert max_relative_difference(single, together) <= 1e-4
    # The masks are in effect: trial 2 differs from trial 0 only in its dropout rate (and its init).
    without = run_trial(replace(cs[2], model=cs[0].model), data)
    assert max_relative_difference([single[2]], [replace(without, trial=2)]) > 1e-2


def test_a_diverged_trial_does_not_poison_the_others(data: Dataset) -> None:
    model = ModelSpec(hidden=(32,))
    cs = configs(model, "sgd", [0.02, 1e6, 0.01], [1e-3, 1e-3, 0.0], [0.0, 0.0, 0.0])
    together = run_population(cs, data)
    assert [r.state for r in together] == [TrialState.COMPLETE, TrialState.DIVERGED, TrialState.COMPLETE]
    alone = [run_trial(c, data) for c in (cs[0], cs[2])]
    assert max_relative_difference(alone, [together[0], together[2]]) <= 1e-4
    assert together[1].iterations == run_trial(cs[1], data).iterations  # stopped at the same step


def test_a_loss_that_blows_up_on_an_epochs_last_step_gives_the_same_record_in_a_population(data: Dataset) -> None:
    # One step per epoch (1,000 images, batches of 1,000): the weights leave float range on that step,
    # so only the epoch-end loss sees it. The population twin of test_trial's test of the same name.
    cs = [
        TrialConfig(
            i,
            {"lr": lr},
            ModelSpec(hidden=(16,)),
            TrainSpec(
                epochs=2,
                batch_size=1000,
                optimizer="sgd",
                lr=lr,
                weight_decay=1.0,
                device="cpu",  # type: ignore[arg-type]
            ),
            seed=7,
        )
        for i, lr in enumerate([0.01, 1e25])
    ]
    together = run_population(cs, data)
    alone = [run_trial(c, data) for c in cs]
    assert together[1].state is TrialState.DIVERGED
    assert together[1].epochs_done == 1
    assert together[0].state is TrialState.COMPLETE
    for t, s in zip(together, alone, strict=True):
        mine, theirs = t.to_dict(), s.to_dict()
        for d in (mine, theirs):
            d.pop("wall_time")
            d["losses"] = [round(v, 4) if v is not None else None for v in d["losses"]]
            d["data_losses"] = [round(v, 4) if v is not None else None for v in d["data_losses"]]
            d["train_loss_per_epoch"] = [round(v, 4) for v in d["train_loss_per_epoch"]]
            d["train_loss"] = None if d["train_loss"] is None else round(d["train_loss"], 4)
            d["initial_loss"] = round(d["initial_loss"], 5)
        assert mine == theirs


def test_a_population_that_raises_trains_again_one_at_a_time(data: Dataset) -> None:
    # Two channels where the model expects three: every trial fails, each with its own record.
    import dataclasses

    broken = dataclasses.replace(data, x_train=data.x_train[:, :2])
    cs = configs(ModelSpec(hidden=(8,)), "sgd", [0.01, 0.02], [0.0, 0.0], [0.0, 0.0])
    results = train_group(cs, broken)
    assert [r.trial for r in results] == [0, 1]
    assert all(r.state is TrialState.FAILED for r in results)
    assert all(r.error is not None and r.error.startswith("RuntimeError") for r in results)


def test_trials_of_different_shapes_train_in_separate_populations() -> None:
    base = TrainSpec(device="cpu")
    mk = lambda i, model, train=base: TrialConfig(i, {}, model, train, 0)  # noqa: E731
    cs = [
        mk(0, ModelSpec(hidden=(50,))),
        mk(1, ModelSpec(hidden=(100,))),
        mk(2, ModelSpec(hidden=(50,))),
        mk(3, ModelSpec(hidden=(50,)), TrainSpec(device="cpu", batch_size=64)),
        mk(4, ModelSpec(hidden=(50,), dropout=0.5)),  # dropout draws its own masks: it trains with the others
        mk(5, ModelSpec(hidden=(50,), activation="prelu")),  # a learned slope trains alone
        mk(6, ModelSpec(hidden=(50,))),
    ]
    pops = plan_populations(cs, size=2)
    assert [[c.trial_id for c in pop] for pop in pops] == [[0, 2], [1], [3], [4, 6], [5]]
    assert group_key(cs[4]) == group_key(cs[0])
    assert group_key(cs[5]) is None


def test_auto_population_fits_the_memory_budget(data: Dataset) -> None:
    small = TrialConfig(0, {}, ModelSpec(hidden=(16,)), TrainSpec(device="cpu"), 0)
    large = TrialConfig(0, {}, ModelSpec(hidden=(1024, 1024)), TrainSpec(device="cpu"), 0)
    assert auto_population(small, data) > auto_population(large, data) >= 1


def test_data_recipe_rebuilds_the_same_dataset(data: Dataset, tmp_path: Path) -> None:
    spec = parse_spec({"name": "w", "data": DATA.model_dump(mode="json"), "train": {"device": "cpu"}})
    again = DataRecipe(spec_to_yaml(spec), None)()
    assert bool((again.x_train == data.x_train).all())
    assert bool((again.shift == data.shift).all())


def test_population_keeps_the_same_data_loss_curve_as_one_at_a_time(data: Dataset) -> None:
    # Weight decay differs per trial, so the loss curve (with its L2 term) and the data loss curve differ.
    cs = configs(ModelSpec(hidden=(16,)), "momentum", [0.02, 0.005], [0.0, 0.5], [0.9, 0.8])
    single = [run_trial(c, data) for c in cs]
    together = run_population(cs, data)
    for s, t in zip(single, together, strict=True):
        assert len(t.data_losses) == len(s.data_losses) == len(t.losses) == 50
        assert t.data_losses == pytest.approx(s.data_losses, rel=1e-4)
        assert t.data_losses[0] == t.initial_loss
    assert together[0].data_losses == together[0].losses  # no weight decay: the two curves are one
    assert all(a > b for a, b in zip(together[1].losses, together[1].data_losses, strict=True))
