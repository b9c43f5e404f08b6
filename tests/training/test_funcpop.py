"""A user's network (model.kind python) trained as a torch.func population equals one-at-a-time
training; a network that cannot be vmapped trains one at a time, with the reason."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import configs, max_relative_difference

from hpsearch.data import Dataset, build_dataset
from hpsearch.runs.records import TrialConfig, TrialState
from hpsearch.spec.schema import DataSpec, ModelSpec, TrainSpec
from hpsearch.training.populations.funcpop import faster_together, population_support, run_func_population
from hpsearch.training.populations.group import train_group
from hpsearch.training.populations.plan import group_key, plan_populations
from hpsearch.training.trial import run_trial

# 1,000 training images in batches of 20: one epoch is exactly 50 steps.
DATA = DataSpec(dataset="synthetic", synthetic_train=1100, synthetic_test=100, val_size=100)

NETS = '''
import torch
from torch import nn


def mlp(input_shape, num_classes, hidden=16):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def convnet(input_shape, num_classes, channels=4):
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * (h // 4) * (w // 4), num_classes),
    )


def batchnorm_net(input_shape, num_classes):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(16, num_classes),
    )


def dropout_net(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, num_classes))


def frozen_net(input_shape, num_classes):
    """A fixed random first layer: its weight is not trained but still counts in the L2 term."""
    net = mlp(input_shape, num_classes)
    net[1].weight.requires_grad_(False)
    return net


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        raise ValueError("a bug in the user's forward")


def broken_net(input_shape, num_classes):
    return Broken()


class Projected(nn.Module):
    """Python-side state: a random projection kept as a plain attribute, not a parameter or buffer,
    so each trial has its own that functional_call cannot swap in."""

    def __init__(self, num_classes):
        super().__init__()
        self.proj = torch.randn(3072, 32) / 3072**0.5
        self.lin = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.lin(x.flatten(1) @ self.proj)


def projected_net(input_shape, num_classes):
    return Projected(num_classes)
'''


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(DATA)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "nets.py"
    path.write_text(NETS)
    return path


def user_model(nets: Path, fn: str, **args: object) -> ModelSpec:
    return ModelSpec(kind="python", factory=f"{nets}:{fn}", args=args)


CASES = [
    ("mlp", "sgd"),
    ("mlp", "momentum"),
    ("mlp", "nesterov"),
    ("mlp", "adam"),
    ("convnet", "momentum"),
    ("convnet", "adam"),
    ("frozen_net", "momentum"),
]


@pytest.mark.parametrize(("net", "optimizer"), CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_user_population_equals_one_at_a_time_after_50_steps(
    data: Dataset, nets: Path, net: str, optimizer: str
) -> None:
    lrs = [1e-3, 3e-4, 2e-3, 5e-4] if optimizer == "adam" else [0.02, 0.01, 0.005, 0.002]
    cs = configs(user_model(nets, net), optimizer, lrs, [1e-3, 0.0, 1e-2, 0.1], [0.9, 0.5, 0.8, 0.95])
    single = [run_trial(c, data) for c in cs]
    together = run_func_population(cs, data)
    assert all(r.iterations == 50 for r in single + together)
    assert all(r.state is TrialState.COMPLETE for r in single)
    assert max_relative_difference(single, together) <= 1e-4
    for s, t in zip(single, together, strict=True):
        assert t.val_acc == pytest.approx(s.val_acc, abs=0.011)  # at most one of 100 validation images
        assert t.train_acc == pytest.approx(s.train_acc, abs=0.0011)
        assert t.train_loss == pytest.approx(s.train_loss, rel=1e-4)
        assert t.initial_loss == pytest.approx(s.initial_loss, rel=1e-6)
        assert t.data_losses == pytest.approx(s.data_losses, rel=1e-4)


def test_a_diverged_user_trial_is_frozen_without_poisoning_the_others(data: Dataset, nets: Path) -> None:
    cs = configs(user_model(nets, "mlp"), "momentum", [0.02, 1e6, 0.01], [1e-3, 1e-3, 0.0])
    together = run_func_population(cs, data)
    assert [r.state for r in together] == [TrialState.COMPLETE, TrialState.DIVERGED, TrialState.COMPLETE]
    alone = [run_trial(c, data) for c in cs]
    assert max_relative_difference([alone[0], alone[2]], [together[0], together[2]]) <= 1e-4
    assert together[1].iterations == alone[1].iterations  # stopped at the same step
    assert all(math.isfinite(v) for r in (together[0], together[2]) for v in r.losses)


def test_a_supported_network_trains_as_one_population(data: Dataset, nets: Path) -> None:
    cs = configs(user_model(nets, "mlp"), "momentum", [0.02, 0.01, 0.005], [1e-3, 0.0, 1e-2])
    assert population_support(cs[0], data) is None
    results = train_group(cs, data)
    # A population's wall time is shared evenly among its trials; one at a time each has its own.
    assert len({r.wall_time for r in results}) == 1
    assert max_relative_difference([run_trial(c, data) for c in cs], results) <= 1e-4


@pytest.mark.parametrize(
    ("net", "words"),
    [
        ("dropout_net", "random"),  # dropout draws a different mask per trial
        ("batchnorm_net", "running_mean"),  # running statistics are buffers changed in training
        ("projected_net", "plain attribute"),  # a tensor outside the parameters and buffers
    ],
)
def test_a_network_that_cannot_be_vmapped_trains_one_at_a_time_with_the_reason(
    data: Dataset, nets: Path, net: str, words: str
) -> None:
    cs = configs(user_model(nets, net), "momentum", [0.02, 0.01], [1e-3, 0.0])
    reason = population_support(cs[0], data)
    assert reason is not None
    assert words in reason
    assert "\n" not in reason
    results = train_group(cs, data)
    assert len({r.wall_time for r in results}) == 2  # trained one at a time
    alone = [run_trial(c, data) for c in cs]
    assert [r.losses for r in results] == [r.losses for r in alone]  # the same loop, bit for bit


def test_user_trials_group_by_factory_args_and_training_shape(nets: Path) -> None:
    base = TrainSpec(device="cpu")
    mk = lambda i, model, train=base: TrialConfig(i, {}, model, train, 0)  # noqa: E731
    cs = [
        mk(0, user_model(nets, "mlp", hidden=16)),
        mk(1, user_model(nets, "mlp", hidden=32)),  # other args: other shapes
        mk(2, user_model(nets, "mlp", hidden=16)),
        mk(3, user_model(nets, "convnet")),
        mk(4, user_model(nets, "mlp", hidden=16), TrainSpec(device="cpu", optimizer="adam")),  # type: ignore[arg-type]
        mk(5, user_model(nets, "mlp", hidden=16), TrainSpec(device="cpu", lr=0.5, weight_decay=0.1)),
    ]
    assert [[c.trial_id for c in pop] for pop in plan_populations(cs, size=4)] == [[0, 2, 5], [1], [3], [4]]
    assert group_key(cs[0]) is not None


def test_auto_keeps_a_population_only_when_it_measured_faster() -> None:
    # Seconds per step: 8 trials together against one trial alone.
    assert faster_together(together_s=0.04, size=8, alone_s=0.01)
    assert not faster_together(together_s=0.09, size=8, alone_s=0.01)


def test_a_network_that_raises_fails_each_trial_with_its_own_error(data: Dataset, nets: Path) -> None:
    cs = configs(user_model(nets, "broken_net"), "momentum", [0.02, 0.01], [1e-3, 0.0])
    reason = population_support(cs[0], data)
    assert reason is not None
    assert "a bug in the user's forward" in reason
    results = train_group(cs, data)
    assert [r.state for r in results] == [TrialState.FAILED, TrialState.FAILED]
    assert all(r.error is not None and "a bug in the user's forward" in r.error for r in results)
