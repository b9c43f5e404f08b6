"""search.median_stop: the median stopping rule, decided trial by trial as each trains.

When a population starts training, each of its trials is given the bar it must clear after each
epoch: the median of the validation accuracies the stage's complete trials had at that epoch (once
`startup_trials` have completed; none during the first `warmup_epochs` epochs or at the last). A
trial whose best accuracy so far is below the bar stops there, STOPPED, with its record up to that
epoch. The bars travel with the trial's config, so worker processes and Ray tasks decide exactly as
this process would. In one process the trials finished before a population starts are the same on
every run of the same seed, a resumed one too, so the decisions are reproducible; with several
workers or on Ray they depend on which trials happened to finish first.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import replace

from hpsearch.runs.records import TrialConfig, TrialResult, TrialState
from hpsearch.spec.schema import MedianStopSpec


def bars(rule: MedianStopSpec, finished: Iterable[TrialResult], epochs: int) -> tuple[float | None, ...] | None:
    """The bar after each epoch 1 .. epochs - 1 (None: not judged there), or None while fewer than
    `startup_trials` trials have completed."""
    complete = [r.val_acc_per_epoch for r in finished if r.state is TrialState.COMPLETE]
    if len(complete) < rule.startup_trials:
        return None
    out: list[float | None] = []
    for e in range(1, epochs):
        at = [curve[e - 1] for curve in complete if len(curve) >= e]
        out.append(statistics.median(at) if e > rule.warmup_epochs and at else None)
    return tuple(out)


def with_bars(pop: list[TrialConfig], rule: MedianStopSpec | None, finished: list[TrialResult]) -> list[TrialConfig]:
    """The population as it trains: each trial with its bars from the trials finished by now."""
    if rule is None:
        return pop
    # A trial's bars depend on its epochs alone: computed once per distinct epochs count.
    by_epochs = {epochs: bars(rule, finished, epochs) for epochs in {c.train.epochs for c in pop}}
    return [replace(c, stop_below=by_epochs[c.train.epochs]) for c in pop]


def failed_bar(bar: Sequence[float | None] | None, curve: Sequence[float]) -> float | None:
    """After epoch len(curve): that epoch's bar if the trial's best accuracy so far is below it
    (the trial stops), else None."""
    e = len(curve)
    if bar is None or not curve or e > len(bar):
        return None
    at = bar[e - 1]
    return at if at is not None and max(curve) < at else None
