"""MLP and convnet built from a ModelSpec: every activation and initialization in the lecture."""

from __future__ import annotations

import math

import torch
from torch import nn

from hpsearch.errors import SpecError
from hpsearch.spec.choices import Activation, Init
from hpsearch.spec.schema import ModelSpec

LEAKY_SLOPE = 0.01  # the lecture's max(0.01x, x)


class Maxout(nn.Module):
    """max(w1.x + b1, w2.x + b2): the layer before it produces 2 * width features, paired here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.unflatten(1, (-1, 2)).unbind(2)
        return torch.maximum(a, b)


def activation_layer(kind: Activation, width: int) -> nn.Module:
    if kind is Activation.RELU:
        return nn.ReLU()
    if kind is Activation.LEAKY_RELU:
        return nn.LeakyReLU(LEAKY_SLOPE)
    if kind is Activation.PRELU:
        return nn.PReLU(width)  # one learned slope per unit / channel
    if kind is Activation.ELU:
        return nn.ELU()
    if kind is Activation.SELU:
        return nn.SELU()
    if kind is Activation.GELU:
        return nn.GELU()
    if kind is Activation.TANH:
        return nn.Tanh()
    if kind is Activation.SIGMOID:
        return nn.Sigmoid()
    return Maxout()


def init_std(spec: ModelSpec, fan_in: int) -> float:
    """Weight std: 0.01-style small random, Xavier 1/sqrt(fan_in), Kaiming sqrt(2/fan_in)."""
    if spec.init is Init.SMALL_RANDOM:
        return spec.init_std
    if spec.init is Init.XAVIER:
        return 1 / math.sqrt(fan_in)
    return math.sqrt(2 / fan_in)


class Net(nn.Module):
    """A classifier whose weight matrices (the L2-regularized ones) are listed by `weights()`."""

    def __init__(self, body: nn.Sequential, hidden_layers: list[nn.Module]) -> None:
        super().__init__()
        self.body = body
        # The modules whose outputs are the hidden activations (sanity checks look at these).
        self.hidden_layers = hidden_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build and initialize the spec's model (a user's factory for kind python). Seed torch before
    calling for a reproducible init."""
    if spec.kind == "python":
        from hpsearch.training.factory import build_user_model

        return build_user_model(spec, input_shape, num_classes)
    return build_builtin(spec, input_shape, num_classes)


def build_builtin(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> Net:
    """hpsearch's own MLP or convnet, initialized as the spec says."""
    widen = 2 if spec.activation is Activation.MAXOUT else 1
    layers: list[nn.Module] = []
    hidden: list[nn.Module] = []
    if spec.kind == "mlp":
        layers.append(nn.Flatten())
        features = math.prod(input_shape)
        for width in spec.hidden:
            layers.append(nn.Linear(features, width * widen))
            hidden.append(activation_layer(spec.activation, width))
            layers.append(hidden[-1])
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            features = width
    else:
        if len(input_shape) != 3:
            raise SpecError(f"model.kind: convnet needs images (C, H, W); the data's examples are {tuple(input_shape)}")
        channels, h, w = input_shape
        for width in spec.hidden:
            layers.append(nn.Conv2d(channels, width * widen, kernel_size=3, padding=1))
            hidden.append(activation_layer(spec.activation, width))
            layers.append(hidden[-1])
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            channels = width
        layers.append(nn.Flatten())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        features = channels * h * w
    layers.append(nn.Linear(features, num_classes))
    net = Net(nn.Sequential(*layers), hidden)
    _initialize(net, spec)
    return net


def _initialize(net: Net, spec: ModelSpec) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()  # in_features, or in_channels * k * k for a conv
                m.weight.normal_(0.0, init_std(spec, fan_in))
                if m.bias is not None:
                    m.bias.fill_(spec.bias_init)


def regularized(net: nn.Module) -> list[torch.Tensor]:
    """The tensors L2 weight decay applies to: those with more than one dimension (weight matrices
    and kernels), never biases or normalization scales and shifts."""
    return [p for p in net.parameters() if p.ndim > 1]


def l2_penalty(net: nn.Module, weight_decay: float) -> torch.Tensor:
    """0.5 * wd * sum(W^2) over weight matrices and kernels; biases are not regularized."""
    return 0.5 * weight_decay * sum((w * w).sum() for w in regularized(net))  # type: ignore[return-value]
