"""Curve labels on constructed curves: each label for the curve that should get it, and none for a good one."""

from __future__ import annotations

import math

from hpsearch.curves import CurveLabel, curve_label
from hpsearch.records import TrialResult, TrialState


def trial(
    losses: list[float],
    val: list[float],
    train: list[float],
    state: TrialState = TrialState.COMPLETE,
) -> TrialResult:
    return TrialResult(
        trial=0,
        state=state,
        params={},
        val_acc=val[-1] if val else None,
        train_acc=train[-1] if train else None,
        losses=losses,
        val_acc_per_epoch=val,
        train_acc_per_epoch=train,
    )


FALLING = [2.3 - 0.01 * i for i in range(100)]  # 2.3 -> 1.3


def test_good_curve_has_no_label() -> None:
    assert curve_label(trial(FALLING, [0.40, 0.45, 0.45], [0.42, 0.47, 0.48])) is None


def test_diverged() -> None:
    assert curve_label(trial([2.3, 5.0, math.nan], [], [], TrialState.DIVERGED)) is CurveLabel.DIVERGED


def test_flat_loss_means_lr_too_low() -> None:
    flat = [2.303 - 0.0005 * i for i in range(100)]  # 2.303 -> 2.253: a 2% drop
    assert curve_label(trial(flat, [0.10, 0.11, 0.12], [0.10, 0.11, 0.12])) is CurveLabel.FLAT


def test_train_val_gap_is_overfitting() -> None:
    assert curve_label(trial(FALLING, [0.45, 0.46, 0.46], [0.60, 0.70, 0.80])) is CurveLabel.OVERFITTING


def test_rising_val_accuracy_is_still_improving() -> None:
    assert curve_label(trial(FALLING, [0.30, 0.36, 0.41], [0.31, 0.37, 0.42])) is CurveLabel.STILL_IMPROVING


def test_one_epoch_cannot_be_still_improving() -> None:
    assert curve_label(trial(FALLING, [0.41], [0.42])) is None


def test_failed_trial_has_no_curve_label() -> None:
    assert curve_label(trial([], [], [], TrialState.FAILED)) is None
