"""Models: the lecture's initializations give the stds they promise; every activation builds and runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hpsearch.spec.choices import Activation
from hpsearch.spec.schema import ModelSpec
from hpsearch.training.models import build_model, l2_penalty


def first_linear(net: nn.Module) -> nn.Linear:
    return next(m for m in net.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [("small_random", 0.01), ("xavier", 1 / math.sqrt(3072)), ("kaiming", math.sqrt(2 / 3072))],
)
def test_init_std_matches_the_lecture(init: str, expected_std: float) -> None:
    torch.manual_seed(0)
    net = build_model(ModelSpec(hidden=(200,), init=init), (3, 32, 32), 10)  # type: ignore[arg-type]
    w = first_linear(net).weight
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=expected_std * 0.02)


def test_conv_fan_in_is_kernel_area_times_channels() -> None:
    torch.manual_seed(0)
    net = build_model(ModelSpec(kind="convnet", hidden=(64,), init="kaiming"), (3, 32, 32), 10)  # type: ignore[arg-type]
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)


def test_bias_init() -> None:
    net = build_model(ModelSpec(hidden=(8,), bias_init=0.01), (3, 32, 32), 10)
    assert torch.all(first_linear(net).bias == 0.01)


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_every_activation_builds_and_backpropagates(activation: Activation, kind: str) -> None:
    torch.manual_seed(0)
    net = build_model(ModelSpec(kind=kind, hidden=(8, 6), activation=activation, dropout=0.2), (3, 32, 32), 10)  # type: ignore[arg-type]
    x = torch.randn(4, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert len(net.hidden_layers) == 2


def test_maxout_doubles_the_units_and_takes_the_max() -> None:
    net = build_model(ModelSpec(hidden=(5,), activation="maxout"), (3, 32, 32), 10)  # type: ignore[arg-type]
    assert first_linear(net).out_features == 10
    out = net.hidden_layers[0](torch.tensor([[1.0, 2.0, -3.0, -4.0]]))
    assert out.tolist() == [[2.0, -3.0]]


def test_l2_penalty_is_half_wd_sum_of_squared_weights_without_biases() -> None:
    net = build_model(ModelSpec(hidden=(4,), bias_init=5.0), (3, 32, 32), 10)
    expected = 0.5 * 0.1 * sum(float((m.weight.detach() ** 2).sum()) for m in net.modules() if isinstance(m, nn.Linear))
    assert float(l2_penalty(net, 0.1).detach()) == pytest.approx(expected, rel=1e-5)
