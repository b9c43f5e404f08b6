"""hpsearch: the cs231n hyperparameter-search recipe as a command-line tool."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hpsearch.saved_model import Preprocess

__version__ = "0.1.0"


def load_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocess]:
    """The network `hpsearch final` kept in RUN, in eval mode, and the preprocessing it expects:
    `model, preprocess = load_model("runs/demo"); logits = model(preprocess(uint8_images))`.
    (hpsearch.saved_model.load_model; imported here only when called: `import hpsearch` stays light.)"""
    from hpsearch.saved_model import load_model as load

    return load(run, device)
