"""What every sanity check starts from: a freshly initialized model (dropout off when regularization
is), the first batches of the training set, and a train section with a setting changed."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.spec.schema import Spec, TrainSpec
from hpsearch.training.models import build_model
from hpsearch.training.trial import batch_order, init_seed

# Dropout modules of a user's network, switched off (p = 0) when the lecture turns regularization off.
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def fresh_model(spec: Spec, data: Dataset, dropout: bool = True) -> nn.Module:
    """The spec's model as trial 0 initializes it; `dropout=False`: with every dropout switched off.
    A user's network keeps its dropout modules with p set to 0, rather than in eval mode: eval mode
    would also switch BatchNorm to its running statistics, which is no regularization, and the
    next net.train() would turn dropout back on. Dropout called as a function in forward
    (F.dropout) cannot be reached and stays on."""
    model = spec.model if dropout else spec.model.model_copy(update={"dropout": 0.0})
    torch.manual_seed(init_seed(spec.search.seed, 0))
    net = build_model(model, data.input_shape, data.num_classes).to(data.x_train.device)
    if not dropout:
        for m in net.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.p = 0.0
    return net


def first_batches(spec: Spec, data: Dataset, count: int, size: int) -> list[torch.Tensor]:
    order = batch_order(len(data.x_train), spec.search.seed, 0, data.x_train.device)
    return [order[i * size : (i + 1) * size] for i in range(count) if i * size < len(order)]


def train_spec(train: TrainSpec, **update: Any) -> TrainSpec:
    return TrainSpec.model_validate({**train.model_dump(), **update})
