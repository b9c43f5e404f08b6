"""What both population loops share: where each trial starts (fresh or from a snapshot), keeping
each trial's state for a checkpoint, closing an epoch (lr decay, the recorder's epoch, blown-up
trials frozen), and the batch buffers reused across steps."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpsearch.data import Dataset
from hpsearch.runs.records import TrialConfig, TrialResult
from hpsearch.training.checkpoint import Snapshot, pack
from hpsearch.training.populations.stacked import PopulationOptimizer
from hpsearch.training.recorder import Accuracies, TrialRecorder


def starts(configs: list[TrialConfig]) -> list[TrialResult] | None:
    """The records a population goes on from (successive halving), or None when it starts afresh."""
    records = [c.start.record for c in configs if c.start is not None]
    return records if len(records) == len(configs) else None


def keep_states(
    recorder: TrialRecorder,
    opt: PopulationOptimizer,
    cfg: TrialConfig,
    model_state: Callable[[int], dict[str, torch.Tensor]],
) -> None:
    """At a halving rung's end, each trial still training keeps its weights, optimizer buffers and
    learning rate in its result (checkpoint.pack), to go on from at the next rung."""
    if not cfg.keeps_state:
        return
    for j, training in enumerate(recorder.training):
        if training:
            optim, lr = opt.snapshot(j)
            recorder.keep_state(j, pack(Snapshot(model_state(j), optim, lr)))


def close_epoch(
    recorder: TrialRecorder,
    opt: PopulationOptimizer,
    penalty: Callable[[torch.Tensor], torch.Tensor],
    accuracies: Accuracies,
) -> bool:
    """A population's epoch end, whatever computed its steps: lr decay, the recorder's epoch (its
    penalty and accuracies), trials that blew up in the weights frozen. False when none trains on."""
    opt.end_epoch()
    blown = recorder.end_epoch(penalty(opt.wd).tolist(), accuracies)
    if blown:
        opt.stop(blown)
        opt.freeze()
    return recorder.any_training


class BatchBuffers:
    """The minibatch gathered and normalized into buffers kept across steps: fresh megabyte-sized
    tensors each step cost page faults that showed up as much as the conversion itself."""

    def __init__(self, data: Dataset, batch_size: int, p: int) -> None:
        self.data, self.p = data, p
        rows = min(batch_size, len(data.x_train))  # a batch larger than the data is the whole data
        self.raw = torch.empty((rows, *data.x_train.shape[1:]), dtype=torch.uint8, device=data.x_train.device)
        self.x = torch.empty(self.raw.shape, dtype=torch.float32, device=data.x_train.device)
        self.y = torch.empty(p * rows, dtype=torch.long, device=data.x_train.device)

    def load(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(idx)
        raw, x = self.raw[:b], self.x[:b]
        torch.index_select(self.data.x_train, 0, idx, out=raw)
        x.copy_(raw)
        gain, offset = self.data.affine
        torch.addcmul(offset, x, gain, out=x)  # the same arithmetic as Dataset.normalize
        y = self.y[: self.p * b]
        y.view(self.p, b).copy_(self.data.y_train[idx].expand(self.p, b))
        return x, y
