"""One record keeping for every training loop: the loops do the maths, this keeps the books.

`TrialRecorder` follows P trials trained in lockstep on the same minibatches (P = 1 for `run_trial`,
P > 1 for `populations.loop.train_population`): the curve stride and the loss and data-loss curves,
the initial loss, divergence (on any step, or in the weights after an epoch's last step), per-epoch
losses and accuracies, and wall time.
Both loops feed it the same numbers, so their records agree by construction, not by two copies kept
in step. No torch here: the loops hand over Python floats.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult, TrialState, as_epochs
from hpsearch.search.median_stop import failed_bar

MAX_CURVE_POINTS = 250  # per-iteration losses kept in a record (evenly strided)

Accuracies = Callable[[], tuple[Sequence[float], Sequence[float]]]  # () -> (train accs, val accs), one per trial


class TrialRecorder:
    """The records of trials trained together. A loop calls `step` once per iteration (before the
    update), `end_epoch` after each epoch, and `end_inside_epoch` when a halving rung stops it inside
    one; a trial that diverged is out of the books from then on."""

    def __init__(self, configs: Sequence[TrialConfig], n_train: int, on_epoch: EpochCallback | None = None) -> None:
        train = configs[0].train  # trials trained together share batch size and epochs
        self.results = [
            TrialResult(trial=c.trial_id, state=TrialState.COMPLETE, params=dict(c.params)) for c in configs
        ]
        self.steps_per_epoch = math.ceil(n_train / train.batch_size)
        self.every = max(1, math.ceil(train.epochs * self.steps_per_epoch / MAX_CURVE_POINTS))
        for r in self.results:
            r.loss_every = self.every
        self._bars = [c.stop_below for c in configs]  # search.median_stop's, per trial
        self.iteration = 0  # steps taken so far
        self.epoch = 0  # epochs finished so far
        self._epoch_sums = [0.0] * len(configs)  # data loss summed over the epoch's steps
        self._on_epoch = on_epoch
        self._counted = 0  # the iteration up to which on_epoch was told of the trial-epochs trained
        self._start = time.perf_counter()
        self._earlier_time = [0.0] * len(configs)  # wall time of earlier rungs (go_on_from)

    def go_on_from(self, records: Sequence[TrialResult] | None) -> None:
        """Successive halving: the trials go on from their records at an earlier rung's end (all at
        the same step): their curves grow from there, their wall time adds up. A rung that ended
        inside an epoch also needs `go_on_inside_epoch`."""
        if records is None:
            return
        self.results = [copy.deepcopy(r) for r in records]
        for r in self.results:
            r.state, r.checkpoint = TrialState.COMPLETE, None
        self.iteration = self._counted = records[0].iterations
        self.epoch = self.iteration // self.steps_per_epoch
        self._earlier_time = [r.wall_time for r in records]

    def go_on_inside_epoch(self, epoch_steps: Sequence[int], loss_sums: Sequence[float]) -> None:
        """After go_on_from, each trial's place inside the unfinished epoch as its checkpoint kept it
        (checkpoint.Snapshot's epoch_step and epoch_loss_sum): the epoch's mean loss goes on from the
        sums. A checkpoint at another step than its record is not that record's: ValueError."""
        if any(s != self.epoch_step for s in epoch_steps):
            raise ValueError(f"checkpoints at steps {list(epoch_steps)} of their epoch, records at {self.epoch_step}")
        self._epoch_sums = list(loss_sums)

    @property
    def epoch_step(self) -> int:
        """Steps of the current epoch taken: 0 at an epoch's end."""
        return self.iteration - self.epoch * self.steps_per_epoch

    def inside_epoch(self, j: int) -> tuple[int, float]:
        """Trial j's place inside the current epoch, for its checkpoint: (steps taken, their data losses summed)."""
        return self.epoch_step, self._epoch_sums[j]

    def keep_state(self, j: int, checkpoint: bytes) -> None:
        """Trial j's trained state at the end (checkpoint.pack), if it is still training."""
        if self.results[j].state is TrialState.COMPLETE:
            self.results[j].checkpoint = checkpoint

    @property
    def training(self) -> list[bool]:
        """Per trial: still training (not diverged or failed)."""
        return [r.state is TrialState.COMPLETE for r in self.results]

    @property
    def any_training(self) -> bool:
        return any(self.training)

    @property
    def curve_step(self) -> bool:
        """This iteration's loss goes into the curve: loops whose L2 term costs a pass over the weights
        add it only then."""
        return self.iteration % self.every == 0

    def step(self, losses: Sequence[float], data_losses: Sequence[float]) -> list[int]:
        """One iteration, before its update: each trial's loss (with the L2 term at least on curve
        steps) and data loss, both kept on curve steps. Returns the trials that diverged on this step;
        they train no further."""
        dead = []
        first, curve = self.iteration == 0, self.curve_step
        for j, r in enumerate(self.results):
            if r.state is not TrialState.COMPLETE:
                continue
            if first:
                r.initial_loss = data_losses[j]
            if curve:
                r.losses.append(losses[j])
                r.data_losses.append(data_losses[j])
            if not math.isfinite(losses[j]):
                r.state, r.iterations = TrialState.DIVERGED, self.iteration + 1
                dead.append(j)
                continue
            self._epoch_sums[j] += data_losses[j]
        self.iteration += 1
        return dead

    def end_epoch(self, penalties: Sequence[float], accuracies: Accuracies) -> list[int]:
        """After an epoch's last update: each trial's L2 penalty at the epoch's end, and how to measure
        its accuracies (measured only if a trial is left to use them). Returns the trials that train no
        further: those whose weights blew up on the epoch's last step (the epoch counts as done, its
        loss is non-finite: null), and those below their median_stop bar (STOPPED)."""
        dead = []
        for j, r in enumerate(self.results):
            if r.state is not TrialState.COMPLETE:
                continue
            r.iterations, r.epochs_done = self.iteration, self.epoch + 1
            r.train_loss = self._epoch_sums[j] / self.steps_per_epoch + penalties[j]
            self._epoch_sums[j] = 0.0
            if not math.isfinite(r.train_loss):
                r.state = TrialState.DIVERGED
                dead.append(j)
        self.epoch += 1
        if self.any_training:
            train_acc, val_acc = accuracies()
            for j, r in enumerate(self.results):
                if r.state is TrialState.COMPLETE and r.train_loss is not None:
                    r.train_loss_per_epoch.append(r.train_loss)
                    r.train_acc_per_epoch.append(train_acc[j])
                    r.val_acc_per_epoch.append(val_acc[j])
                    r.train_acc, r.val_acc = train_acc[j], val_acc[j]
                    r.stopped_below = failed_bar(self._bars[j], r.val_acc_per_epoch)
                    if r.stopped_below is not None:
                        r.state = TrialState.STOPPED
                        dead.append(j)
            self._count_trial_epochs()
        return dead

    def end_inside_epoch(self, accuracies: Accuracies) -> None:
        """A halving rung's end inside an epoch (min_epochs 0.25): no epoch's end (no lr decay, no
        epoch loss or curve point), but the accuracies at this step, which the rung ranks its
        trials by, and the epochs trained as a fraction (0.25). Nothing at an epoch's end."""
        if self.epoch_step == 0 or not self.any_training:
            return
        train_acc, val_acc = accuracies()
        for j, r in enumerate(self.results):
            if r.state is TrialState.COMPLETE:
                r.iterations, r.epochs_done = self.iteration, as_epochs(self.iteration, self.steps_per_epoch)
                r.train_acc, r.val_acc = train_acc[j], val_acc[j]
        self._count_trial_epochs()

    def _count_trial_epochs(self) -> None:
        """on_epoch told the trial-epochs trained since it was last told: the trials times one epoch,
        or a fraction of one where a halving rung started or ended inside an epoch."""
        if self._on_epoch:
            self._on_epoch(len(self.results) * as_epochs(self.iteration - self._counted, self.steps_per_epoch))
        self._counted = self.iteration

    def fail(self, e: BaseException) -> None:
        """The loop raised: every trial still training is FAILED with the exception."""
        for r in self.results:
            if r.state is TrialState.COMPLETE:
                r.fail(e)

    def finish(self) -> list[TrialResult]:
        """The records, with wall time: the group's time shared evenly among its trials."""
        elapsed = time.perf_counter() - self._start
        for r, earlier in zip(self.results, self._earlier_time, strict=True):
            r.wall_time = earlier + elapsed / len(self.results)
        return self.results
