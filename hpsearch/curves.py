"""Reading a trial's learning curves the way the lecture does: one label per trial, and one line for a
stage whose learning rates were mostly too high or too low.
May import: rank, records."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

from hpsearch.rank import fmt_value
from hpsearch.records import TrialResult, TrialState

FLAT_DROP = 0.05  # the data loss fell by less than 5% of where it started: "lr too low"
# The data loss ended more than 10% above where it started. A trial that learns nothing ends within
# about 2% of its first minibatch's loss (ln 10 = 2.303 at a small init), so 10% is a rise, not noise.
RISE = 0.10
BLOW_UP = 3.0  # cs231n: "cost 3x the original: blow up", at any point of the curve
# Validation accuracy within 2 binomial standard deviations of 1/C is chance: 10 classes on 1,000
# validation images give 0.100 +- 0.019.
CHANCE_SIGMAS = 2.0
ASSUMED_VAL_SIZE = 1000  # DataSpec's default val_size, for a caller that does not know it
OVERFIT_GAP = 0.10  # train accuracy above validation accuracy by more than 10 points
STILL_RISING = 0.005  # validation accuracy still rose by more than half a point in the last epoch


class CurveLabel(str, enum.Enum):
    DIVERGED = "diverged"  # the loss became NaN/inf: learning rate too high
    EXPLODING = "loss rose"  # the loss ended above where it started, or blew up to 3x: learning rate too high
    CHANCE = "at chance"  # validation accuracy no better than guessing: lr too low, or the data/labels wrong
    FLAT = "flat"  # the data loss barely moved: learning rate too low
    OVERFITTING = "overfitting"  # big train-val gap: more regularization
    STILL_IMPROVING = "still improving"  # val accuracy rising at the last epoch: train longer


def curve_label(r: TrialResult, num_classes: int | None = None, val_size: int | None = None) -> CurveLabel | None:
    """The most important thing the curves say about a trial, or None when they look fine.

    The first that holds, most severe first: diverged, loss rose, at chance (only judged when
    `num_classes` is given; `val_size`, the validation images, sets the allowance for noise), flat,
    overfitting, still improving. A trial whose loss rose is often at chance too: "lr too high" is
    the advice that helps it.
    """
    if r.state is TrialState.DIVERGED:
        return CurveLabel.DIVERGED
    if r.state is not TrialState.COMPLETE:
        return None
    ends = _data_loss_ends(r)
    if ends and (ends.end > ends.start * (1 + RISE) or ends.peak > ends.start * BLOW_UP):
        return CurveLabel.EXPLODING
    if num_classes and at_chance(r, num_classes, val_size or ASSUMED_VAL_SIZE):
        return CurveLabel.CHANCE
    if ends and (ends.start - ends.end) / ends.start < FLAT_DROP:
        return CurveLabel.FLAT
    if _train_val_gap(r) > OVERFIT_GAP:
        return CurveLabel.OVERFITTING
    val = r.val_acc_per_epoch
    if len(val) >= 2 and val[-1] - val[-2] > STILL_RISING:
        return CurveLabel.STILL_IMPROVING
    return None


class _Ends(NamedTuple):
    start: float  # the first point: the loss at init, on the first minibatch
    end: float  # the mean of the last tenth of the curve
    peak: float


def _data_loss_ends(r: TrialResult) -> _Ends | None:
    """Where the data-loss curve started, ended and peaked; the loss curve's, in a record written
    before the data loss was kept. None without two finite points or a positive start."""
    finite = [v for v in (r.data_losses or r.losses) if math.isfinite(v)]
    if len(finite) < 2 or finite[0] <= 0:
        return None
    tail = finite[-max(1, len(finite) // 10) :]
    return _Ends(finite[0], sum(tail) / len(tail), max(finite))


def _train_val_gap(r: TrialResult) -> float:
    if r.train_acc is None or r.val_acc is None:
        return 0.0
    return r.train_acc - r.val_acc


def at_chance(r: TrialResult, num_classes: int, val_size: int) -> bool:
    """Validation accuracy within noise of 1/C, and training accuracy not far above it (that is
    overfitting: the net learnt its training set and nothing else)."""
    if r.val_acc is None:
        return False
    chance = 1 / num_classes
    noise = CHANCE_SIGMAS * math.sqrt(chance * (1 - chance) / val_size)
    return r.val_acc <= chance + noise and _train_val_gap(r) <= OVERFIT_GAP


# What "k of N trials ..." did, for each label that says the learning rate was too high, or too low.
TOO_HIGH = {CurveLabel.DIVERGED: "diverged", CurveLabel.EXPLODING: "had a rising loss"}
TOO_LOW = {CurveLabel.CHANCE: "stayed at chance accuracy", CurveLabel.FLAT: "had a flat loss"}


def stage_advice(
    results: Sequence[TrialResult], num_classes: int | None = None, val_size: int | None = None
) -> str | None:
    """One line when most trials that ran (complete or diverged) had a learning rate too high (diverged,
    loss rose) or too low (at chance, flat), with the lecture's advice; None otherwise.

    e.g. "7 of 10 trials diverged or had a rising loss (lr 12 to 95): the learning rate is too high;
    lower search.space.lr"."""
    ran = [r for r in results if r.state in (TrialState.COMPLETE, TrialState.DIVERGED)]
    labels = [curve_label(r, num_classes, val_size) for r in ran]
    key = "search.space.lr" if any("lr" in r.params for r in ran) else "train.lr"
    for kinds in (TOO_HIGH, TOO_LOW):
        bad = [(r, label) for r, label in zip(ran, labels, strict=True) if label in kinds]
        if 2 * len(bad) <= len(ran):
            continue
        seen = {label for _, label in bad}
        did = " or ".join(phrase for label, phrase in kinds.items() if label in seen)
        if kinds is TOO_HIGH:
            advice = f"the learning rate is too high; lower {key}"
        elif CurveLabel.CHANCE in seen:
            advice = f"the learning rate is too low, or the data or labels are wrong; raise {key}"
        else:
            advice = f"the learning rate is too low; raise {key}"
        return f"{len(bad)} of {len(ran)} trials {did}{lr_span([r for r, _ in bad])}: {advice}"
    return None


def lr_span(results: list[TrialResult]) -> str:
    """' (lr 0.01 to 1e+04)': the learning rates of these trials, when lr was searched."""
    lrs = [v for r in results if isinstance(v := r.params.get("lr"), (int, float))]
    if not lrs:
        return ""
    lo, hi = min(lrs), max(lrs)
    return f" (lr {fmt_value(lo)})" if lo == hi else f" (lr {fmt_value(lo)} to {fmt_value(hi)})"
