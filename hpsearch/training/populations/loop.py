"""The one loop every population trains by (`train_population`), and what it asks of a network type
(`Population`): the built-in PopulationNet (stacked.py, built in builtin.py) or a user's network
stacked for torch.func (funcpop.StackedNet). The loop owns the order: the batch order per epoch,
each step's losses, record, gradients and update, the epoch's accuracies, a halving rung's saved
states; the network type owns how its P trials' losses, gradients, logits and states are computed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.training.checkpoint import Snapshot, pack, start_snapshot
from hpsearch.training.populations.stacked import PopulationOptimizer, Stacked
from hpsearch.training.recorder import Accuracies, TrialRecorder
from hpsearch.training.trial import FLUSH_EVERY, batch_order, epoch_spans, train_accuracy_sample


class Population(Stacked, Protocol):
    """P trials of one shape as one network type: what train_population asks of it, besides the
    stacked parameters (`params`) that PopulationOptimizer updates."""

    p: int
    label_copies: int  # how many times BatchBuffers repeats a batch's labels for losses()
    eval_chunk: int  # examples per evaluation pass

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every trial's data loss (P,) on the shared batch, detached."""
        ...

    def backward(self, alive: torch.Tensor) -> None:
        """The last losses' gradients of the `alive` (P,) trials into each stacked tensor's .grad."""
        ...

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) shared by every trial -> (P, B, classes), in eval mode, without gradients."""
        ...

    def penalty(self, wd: torch.Tensor) -> torch.Tensor:
        """0.5 * wd_p * trial p's squared weights, per trial (P,): the L2 term run_trial's loss holds."""
        ...

    def trial_state(self, p: int) -> dict[str, torch.Tensor]:
        """Trial p's network state, as its own network's state_dict holds it."""
        ...


# Builds a network type's population from the configs, each trial starting from its snapshot (None:
# a fresh init, the same as run_trial's).
Stack = Callable[[list[TrialConfig], Dataset, list[Snapshot | None]], Population]


def train_population(
    configs: list[TrialConfig], data: Dataset, stack: Stack, on_epoch: EpochCallback | None = None
) -> list[TrialResult]:
    """Train `configs` (one group key) together on `data` as the network type `stack` builds; one
    TrialResult per config, in order, equal to run_trial's up to float rounding. Raises what the
    population's training raises (train_group falls back to one trial at a time)."""
    first, device, n = configs[0], data.x_train.device, len(data.x_train)
    recorder = TrialRecorder(configs, n, on_epoch)
    recorder.go_on_from(starts(configs))
    snaps = [start_snapshot(c, device) for c in configs]
    net = stack(configs, data, snaps)
    opt = PopulationOptimizer(net, configs, device)
    opt.load(snaps, recorder.iteration)
    if all(snap is not None for snap in snaps):
        recorder.go_on_inside_epoch([s.epoch_step for s in snaps if s], [s.epoch_loss_sum for s in snaps if s])
    x_acc, y_acc = train_accuracy_sample(data)
    batch = BatchBuffers(data, first.train.batch_size, net.label_copies)
    bs, spe = first.train.batch_size, recorder.steps_per_epoch
    accuracies = lambda: (accuracy(net, data, x_acc, y_acc), accuracy(net, data, data.x_val, data.y_val))  # noqa: E731
    for epoch, begin, end in epoch_spans(*first.steps(spe), spe):
        order = batch_order(n, first.seed, epoch, device)  # the search seed's: every trial sees it
        for s in range(begin * bs, end * bs, bs):
            x, y = batch.load(order[s : s + bs])
            train_step(net, opt, recorder, x, y)
        if end < spe:
            break  # a halving rung's end inside the epoch: no epoch's end
        if not close_epoch(recorder, opt, net.penalty, accuracies):
            break
    recorder.end_inside_epoch(accuracies)
    keep_states(recorder, opt, first, net.trial_state)
    return recorder.finish()


def train_step(
    net: Population, opt: PopulationOptimizer, recorder: TrialRecorder, x: torch.Tensor, y: torch.Tensor
) -> None:
    """One step of every trial on the shared batch: losses recorded, trials that blew up stopped,
    then gradients and the update."""
    data_loss = net.losses(x, y)
    watched = data_loss
    if recorder.curve_step:
        # The L2 term costs a pass over all weights, so it is added where the curve is sampled.
        watched = watched + net.penalty(opt.wd)
    it = recorder.iteration
    losses, data_losses = torch.stack([watched, data_loss]).tolist()
    dead = recorder.step(losses, data_losses)
    opt.stop(dead)
    net.backward(opt.alive)
    opt.step()
    if dead:
        # After the update, which still needed the weights as they were: the dead trials' weights and
        # state (NaN gradients went into their own slices only) are zeroed.
        opt.freeze()
    if it % FLUSH_EVERY == 0 and x.device.type == "cpu":
        opt.flush_tiny()


@torch.no_grad()
def accuracy(net: Population, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Each trial's accuracy on the raw images x with labels y."""
    correct = torch.zeros(net.p, dtype=torch.long, device=x.device)  # counts: exact, as run_trial's
    for i in range(0, len(x), net.eval_chunk):
        logits = net.logits(data.normalize(x[i : i + net.eval_chunk]))
        correct += (logits.argmax(2) == y[i : i + net.eval_chunk]).sum(1)
    return [c / max(1, len(x)) for c in correct.tolist()]


def load_starts(modules: Sequence[nn.Module], snaps: list[Snapshot | None]) -> None:
    """Each trial's weights from where an earlier rung left them, into its own network: before
    stacking, so that every network type stacks them as it stacks a fresh init."""
    for module, snap in zip(modules, snaps, strict=True):
        if snap is not None:
            module.load_state_dict(snap.model)


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
            recorder.keep_state(j, pack(Snapshot(model_state(j), optim, lr, *recorder.inside_epoch(j))))


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
