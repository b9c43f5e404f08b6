"""Reading a trial's learning curves the way the lecture does: one label per trial, and one line for a
stage whose learning rates were mostly too high or too low."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

from hpsearch.analysis.rank import fmt_value
from hpsearch.runs.records import TrialResult, TrialState

FLAT_DROP = 0.05  # the data loss fell by less than 5% of where it started: "lr too low"
# The data loss ended more than 10% above where it started. A trial that learns nothing ends within
# about 2% of its first minibatch's loss (ln 10 = 2.303 at a small init), so 10% is a rise, not noise.
RISE = 0.10
BLOW_UP = 3.0  # cs231n: "cost 3x the original: blow up", at any point of the curve
# The data loss ended more than 10% of its start above its lowest stretch (a tenth of the curve): it
# fell, then rose again. sanity's lr probe calls the same shape "fell then rose": lr too high. A net
# whose units die after a few large steps falls, then climbs back to ln C and stays there.
REBOUND = 0.10
# Validation accuracy within 2 binomial standard deviations of 1/C is chance: 10 classes on 1,000
# validation images give 0.100 +- 0.019.
CHANCE_SIGMAS = 2.0
ASSUMED_VAL_SIZE = 1000  # DataSpec's default val_size, for a caller that does not know it
OVERFIT_GAP = 0.10  # train accuracy above validation accuracy by more than 10 points
STILL_RISING = 0.005  # validation accuracy still rose by more than half a point in the last epoch


class CurveLabel(str, enum.Enum):
    DIVERGED = "diverged"  # the loss became NaN/inf: learning rate too high
    EXPLODING = "loss rose"  # the loss ended above where it started, or blew up to 3x: learning rate too high
    REBOUNDED = "fell then rose"  # the loss fell, then climbed back well above its lowest: learning rate too high
    CHANCE = "at chance"  # validation accuracy no better than guessing: lr too low, or the data/labels wrong
    FLAT = "flat"  # the data loss barely moved: learning rate too low
    OVERFITTING = "overfitting"  # big train-val gap: more regularization
    STILL_IMPROVING = "still improving"  # val accuracy rising at the last epoch: train longer


def curve_label(r: TrialResult, num_classes: int | None = None, val_size: int | None = None) -> CurveLabel | None:
    """The most important thing the curves say about a trial, or None when they look fine.

    The first that holds, most severe first: diverged, loss rose, fell then rose, at chance (only judged when
    `num_classes` is given; `val_size`, the validation images, sets the allowance for noise), flat,
    overfitting, still improving. A trial whose loss rose (or fell then rose) is often at chance too:
    "lr too high" is the advice that helps it.
    """
    if r.state is TrialState.DIVERGED:
        return CurveLabel.DIVERGED
    if r.state is not TrialState.COMPLETE:
        return None
    ends = _data_loss_ends(r)
    if ends and (ends.end > ends.start * (1 + RISE) or ends.peak > ends.start * BLOW_UP):
        return CurveLabel.EXPLODING
    if ends and ends.end - ends.lowest > REBOUND * ends.start:
        return CurveLabel.REBOUNDED
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
    lowest: float  # the lowest mean of a tenth of the curve, tenths counted back from the end


def _data_loss_ends(r: TrialResult) -> _Ends | None:
    """Where the data-loss curve started, ended and peaked; the loss curve's, in a record written
    before the data loss was kept. None without two finite points or a positive start."""
    finite = [v for v in (r.data_losses or r.losses) if math.isfinite(v)]
    if len(finite) < 2 or finite[0] <= 0:
        return None
    size = max(1, len(finite) // 10)
    means = [sum(w) / len(w) for w in (finite[max(0, i - size) : i] for i in range(len(finite), 0, -size))]
    return _Ends(finite[0], means[0], max(finite), min(means))


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
TOO_HIGH = {
    CurveLabel.DIVERGED: "diverged",
    CurveLabel.EXPLODING: "had a rising loss",
    CurveLabel.REBOUNDED: "fell then rose",
}
TOO_LOW = {CurveLabel.CHANCE: "stayed at chance accuracy", CurveLabel.FLAT: "had a flat loss"}
# A trial at chance or flat at a learning rate above one that learned was not starved of steps: a
# larger lr cannot be "too low" where a smaller one was enough. It counts on the high side.
ABOVE_A_LEARNER = "stayed at chance or flat above an lr that learned"


def stage_advice(
    results: Sequence[TrialResult],
    num_classes: int | None = None,
    val_size: int | None = None,
    lr_toward: str | None = None,
) -> str | None:
    """One line when most trials that ran (complete or diverged) had a learning rate too high (diverged,
    loss rose, fell then rose) or too low (at chance, flat), with the lecture's advice; None otherwise.

    e.g. "7 of 10 trials diverged or had a rising loss (lr 12 to 95): the learning rate is too high;
    lower search.space.lr". With trials failed on both sides it names both, and where the useful
    learning rates lie between them. `lr_toward` is the bound ("low" or "high") the lr range's verdict
    points toward: advice to move the other way would contradict it and is not given."""
    ran = [r for r in results if r.state in (TrialState.COMPLETE, TrialState.DIVERGED)]
    labels = [curve_label(r, num_classes, val_size) for r in ran]
    key = "search.space.lr" if any("lr" in r.params for r in ran) else "train.lr"
    learned = [_lr(r) for r, label in zip(ran, labels, strict=True) if label not in TOO_HIGH and label not in TOO_LOW]
    lowest_learner = min((v for v in learned if v is not None), default=math.inf)
    high: list[tuple[TrialResult, str]] = []
    low: list[tuple[TrialResult, str]] = []
    for r, label in zip(ran, labels, strict=True):
        if label in TOO_HIGH:
            high.append((r, TOO_HIGH[label]))
        elif label in TOO_LOW:
            lr = _lr(r)
            if lr is not None and lr > lowest_learner:
                high.append((r, ABOVE_A_LEARNER))
            else:
                low.append((r, TOO_LOW[label]))
    if 2 * (len(high) + len(low)) <= len(ran):
        return None
    n = len(ran)
    if high and low:
        return _both_sides(n, low, high, key)
    way = "low" if high else "high"  # the way the advice moves the range: lower it, or raise it
    if lr_toward is not None and lr_toward != way:  # the verdict reads the accuracies the other way
        return None
    bad = high or low
    if high:
        advice = f"the learning rate is too high; lower {key}"
    elif any(label is CurveLabel.CHANCE for label in labels if label in TOO_LOW):
        advice = f"the learning rate is too low, or the data or labels are wrong; raise {key}"
    else:
        advice = f"the learning rate is too low; raise {key}"
    return f"{len(bad)} of {n} trials {_did(bad)}{lr_span([r for r, _ in bad])}: {advice}"


def _both_sides(n: int, low: list[tuple[TrialResult, str]], high: list[tuple[TrialResult, str]], key: str) -> str:
    """Too low at some learning rates and too high at others: where the useful ones lie, if they do."""
    counts = (
        f"{len(low) + len(high)} of {n} trials learned nothing: {len(low)} {_did(low)}"
        f"{lr_span([r for r, _ in low])}, too low; {len(high)} {_did(high)}{lr_span([r for r, _ in high])}, too high"
    )
    below = [v for r, _ in low if (v := _lr(r)) is not None]
    above = [v for r, _ in high if (v := _lr(r)) is not None]
    if below and above and max(below) < min(above):
        lo, hi = fmt_value(max(below)), fmt_value(min(above))
        return f"{counts}: the useful learning rates lie between {lo} and {hi}; narrow {key} toward [{lo}, {hi}]"
    return f"{counts}: something besides the learning rate stops learning; check the other parameters and the data"


_PHRASES = [*TOO_HIGH.values(), *TOO_LOW.values(), ABOVE_A_LEARNER]


def _did(bad: list[tuple[TrialResult, str]]) -> str:
    """'diverged or fell then rose': what these trials did, each phrase once."""
    seen = {phrase for _, phrase in bad}
    return " or ".join(p for p in _PHRASES if p in seen)


def _lr(r: TrialResult) -> float | None:
    v = r.params.get("lr")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def lr_span(results: list[TrialResult]) -> str:
    """' (lr 0.01 to 1e+04)': the learning rates of these trials, when lr was searched."""
    lrs = [v for r in results if (v := _lr(r)) is not None]
    if not lrs:
        return ""
    lo, hi = min(lrs), max(lrs)
    return f" (lr {fmt_value(lo)})" if lo == hi else f" (lr {fmt_value(lo)} to {fmt_value(hi)})"
