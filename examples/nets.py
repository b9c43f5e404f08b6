"""Networks for `model.kind: python` specs: a factory is called as
`factory(input_shape, num_classes, **args)` and returns an nn.Module mapping a batch to logits.

hpsearch seeds torch before calling it, so the init below is reproducible per trial.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def three_layer_convnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: int = 32,
    hidden: int = 100,
    kernel: int = 7,
) -> nn.Module:
    """cs231n's three-layer convnet: conv (kernel x kernel, `filters` channels, same padding) - relu -
    2x2 max pool - affine (`hidden` units) - relu - affine (`num_classes` scores)."""
    channels, height, width = input_shape
    scores = nn.Linear(hidden, num_classes)
    net = nn.Sequential(
        nn.Conv2d(channels, filters, kernel, padding=kernel // 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(filters * (height // 2) * (width // 2), hidden),
        nn.ReLU(),
        scores,
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # Kaiming: std sqrt(2 / fan_in) keeps the activations' scale through each ReLU.
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.zero_()
        # Small scores at init, so that the initial loss is ln(num_classes) (sanity-check's first check).
        scores.weight.normal_(0.0, 0.01)
    return net
