"""hpsearch: the cs231n hyperparameter-search recipe as a command-line tool."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hpsearch.training.saved_model import Preprocessor

from hpsearch.version import __version__ as __version__


def load_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocessor]:
    """The network `hpsearch final` kept in RUN, in eval mode, and the preprocessing it expects:
    `model, preprocess = load_model("runs/demo"); logits = model(preprocess(uint8_images))`.
    (hpsearch.training.saved_model.load_model; imported here only when called: `import hpsearch` stays light.)"""
    from hpsearch.training.saved_model import load_model as load

    return load(run, device)
