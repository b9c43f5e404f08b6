"""Population training: P trials of one shape trained at once in one process.

Every trial sees the same minibatches (the batch order depends on the search seed alone). The MLP's
first layer is one matmul of the shared batch against all trials' weights side by side; later layers
are batched matmuls. The convnet's first conv is one conv with P x C output channels, later convs
are grouped convolutions (groups = P). Each trial keeps its own init (the same seed as one-at-a-time
training), learning rate, weight decay, momentum or Adam betas and lr decay, applied in one
vectorized update. A trial whose loss turns NaN/inf is frozen and masked out of the others' way.
Dropout (on a CPU) draws each trial's masks from the trial's own generator, left where its init left
the global one, in the shape and order nn.Dropout draws them one at a time: the same masks, so trials
of any dropout rate train together.
The results equal one-at-a-time training (`run_trial`) up to float rounding.
The loop is loop.train_population's; this module builds its network type, stacked.PopulationNet.
A user's network (model.kind python) trains as a torch.func population instead (populations.funcpop).
"""

from __future__ import annotations

import torch

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.training.checkpoint import Snapshot
from hpsearch.training.models import Net, build_builtin
from hpsearch.training.populations.loop import load_starts, train_population
from hpsearch.training.populations.stacked import PopulationNet
from hpsearch.training.trial import init_seed


def build_nets(configs: list[TrialConfig], data: Dataset) -> tuple[list[Net], list[torch.Generator]]:
    """Each trial's network, initialized as run_trial does, and a generator where the global one is
    after that init: run_trial's dropout masks come from there."""
    nets, generators = [], []
    for cfg in configs:
        torch.manual_seed(init_seed(cfg.seed, cfg.trial_id))  # the same init as run_trial
        nets.append(build_builtin(cfg.model, data.input_shape, data.num_classes).to(data.x_train.device))
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    return nets, generators


def stack_builtin(configs: list[TrialConfig], data: Dataset, snaps: list[Snapshot | None]) -> PopulationNet:
    """The built-in networks of `configs` as one PopulationNet (loop.Stack), each from its snapshot."""
    nets, generators = build_nets(configs, data)
    load_starts(nets, snaps)
    return PopulationNet(nets, configs[0].model.kind, generators, configs[0].train.precision)


def run_population(
    configs: list[TrialConfig], data: Dataset, on_epoch: EpochCallback | None = None
) -> list[TrialResult]:
    """Train `configs` (one group key, a built-in network) together on `data`; one TrialResult per
    config, in order. Raises what the population's training raises (train_group falls back)."""
    return train_population(configs, data, stack_builtin, on_epoch)
