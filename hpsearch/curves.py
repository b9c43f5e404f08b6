"""Reading a trial's learning curves the way the lecture does: one label per trial.
May import: records."""

from __future__ import annotations

import enum
import math

from hpsearch.records import TrialResult, TrialState

FLAT_DROP = 0.05  # the loss fell by less than 5% of where it started: "lr too low"
OVERFIT_GAP = 0.10  # train accuracy above validation accuracy by more than 10 points
STILL_RISING = 0.005  # validation accuracy still rose by more than half a point in the last epoch


class CurveLabel(str, enum.Enum):
    DIVERGED = "diverged"  # the loss became NaN/inf
    FLAT = "flat"  # the loss barely moved: learning rate too low
    OVERFITTING = "overfitting"  # big train-val gap: more regularization
    STILL_IMPROVING = "still improving"  # val accuracy rising at the last epoch: train longer


def curve_label(r: TrialResult) -> CurveLabel | None:
    """The most important thing the curves say about a trial, or None when they look fine."""
    if r.state is TrialState.DIVERGED:
        return CurveLabel.DIVERGED
    if r.state is not TrialState.COMPLETE:
        return None
    finite = [v for v in r.losses if math.isfinite(v)]
    if len(finite) >= 2:
        tail = finite[-max(1, len(finite) // 10) :]
        end = sum(tail) / len(tail)
        if finite[0] > 0 and (finite[0] - end) / finite[0] < FLAT_DROP:
            return CurveLabel.FLAT
    if r.train_acc is not None and r.val_acc is not None and r.train_acc - r.val_acc > OVERFIT_GAP:
        return CurveLabel.OVERFITTING
    val = r.val_acc_per_epoch
    if len(val) >= 2 and val[-1] - val[-2] > STILL_RISING:
        return CurveLabel.STILL_IMPROVING
    return None
