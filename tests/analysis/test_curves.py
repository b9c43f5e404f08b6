"""Curve labels on constructed curves: each label for the curve that should get it, and none for a good one."""

from __future__ import annotations

import math

from hpsearch.analysis.curves import CurveLabel, curve_label, stage_advice
from hpsearch.runs.records import TrialResult, TrialState


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


# What was seen: a loss that rose to 142 (and one that ended at 4.6e23) was labelled flat, "lr too low".
RISING = [2.3 * 1.05**i for i in range(100)]  # 2.3 -> 290


def test_a_rising_loss_is_loss_rose_not_flat() -> None:
    assert curve_label(trial(RISING, [0.10, 0.10], [0.10, 0.10])) is CurveLabel.EXPLODING


def test_a_loss_that_ends_astronomical_but_finite_is_loss_rose() -> None:
    assert curve_label(trial([2.3, 204.8, 4.5e16, 4.6e23], [0.101], [0.088])) is CurveLabel.EXPLODING


def test_a_loss_that_blew_up_to_3x_and_came_back_down_is_loss_rose() -> None:
    # cs231n: "cost 3x the original: blow up", whatever the loss did after.
    spike = [2.3, 2.2, 7.5, 2.4, *FALLING[40:]]
    assert curve_label(trial(spike, [0.40, 0.45, 0.45], [0.42, 0.47, 0.48])) is CurveLabel.EXPLODING


def test_a_loss_that_wobbles_up_by_noise_is_flat_not_loss_rose() -> None:
    wobble = [2.303 + 0.01 * (i % 3) for i in range(100)]  # ends about 0.4% above where it started
    assert curve_label(trial(wobble, [0.13, 0.14], [0.13, 0.14])) is CurveLabel.FLAT


def test_loss_rose_is_not_diverged_and_diverged_wins() -> None:
    assert CurveLabel.EXPLODING.value not in (CurveLabel.DIVERGED.value, CurveLabel.FLAT.value)
    assert curve_label(trial(RISING, [], [], TrialState.DIVERGED)) is CurveLabel.DIVERGED


def test_chance_accuracy_is_said_to_be_so() -> None:
    # The loss fell (from a large init) to ln 10 and stayed: not flat, but nothing was learnt.
    fell = [8.0 - 0.06 * i for i in range(95)] + [2.303] * 5
    assert curve_label(trial(fell, [0.10, 0.10], [0.10, 0.10]), num_classes=10, val_size=1000) is CurveLabel.CHANCE


def test_chance_allows_for_noise_on_the_validation_size() -> None:
    # 10 classes, 1,000 validation images: one binomial std is 0.95 points, so 0.115 is still chance...
    r = trial(FALLING, [0.115, 0.115], [0.11, 0.11])
    assert curve_label(r, num_classes=10, val_size=1000) is CurveLabel.CHANCE
    # ...but not on 50,000 images (std 0.13 points), nor 0.13 on 1,000 (over three std above 0.1).
    assert curve_label(r, num_classes=10, val_size=50_000) is None
    assert curve_label(trial(FALLING, [0.13, 0.13], [0.13, 0.13]), num_classes=10, val_size=1000) is None


def test_chance_is_judged_against_one_over_the_number_of_classes() -> None:
    r = trial(FALLING, [0.51, 0.51], [0.50, 0.51])  # chance for 2 classes, far above it for 10
    assert curve_label(r, num_classes=2, val_size=1000) is CurveLabel.CHANCE
    assert curve_label(r, num_classes=10, val_size=1000) is None


def test_without_the_number_of_classes_chance_is_not_judged() -> None:
    assert curve_label(trial(FALLING, [0.10, 0.10], [0.10, 0.10])) is None


def test_val_at_chance_with_train_far_above_is_overfitting_not_chance() -> None:
    r = trial(FALLING, [0.10, 0.10], [0.60, 0.90])
    assert curve_label(r, num_classes=10, val_size=1000) is CurveLabel.OVERFITTING


def test_a_rising_loss_at_chance_is_loss_rose() -> None:
    # Both are true; "lr too high" is the advice that helps, "lr too low" would be the opposite.
    assert curve_label(trial(RISING, [0.10], [0.10]), num_classes=10, val_size=1000) is CurveLabel.EXPLODING


def test_flat_is_judged_on_the_data_loss_not_data_plus_l2() -> None:
    # A big L2 term falls as the weights shrink while the data loss stays at ln 10: a dead trial.
    data = [2.303] * 100
    total = [2.303 + 20.0 * 0.97**i for i in range(100)]  # 22.3 -> 2.4
    r = trial(total, [0.13, 0.14], [0.13, 0.14])
    r.data_losses = data
    assert curve_label(r) is CurveLabel.FLAT


def test_a_record_without_the_data_loss_curve_is_judged_on_its_loss_curve() -> None:
    flat = [2.303 - 0.0005 * i for i in range(100)]
    r = trial(flat, [0.13, 0.14], [0.13, 0.14])
    assert r.data_losses == []  # a record written before the data loss was kept
    assert curve_label(r) is CurveLabel.FLAT


def stage(labels: dict[str, int]) -> list[TrialResult]:
    """Trials with the given curves: 'diverged', 'rose', 'chance', 'flat', 'good', 'failed'; lr = trial id."""
    curves = {
        "diverged": (RISING[:10] + [math.nan], [], TrialState.DIVERGED),
        "rose": (RISING, [0.10, 0.10], TrialState.COMPLETE),
        "chance": (FALLING, [0.10, 0.10], TrialState.COMPLETE),
        "flat": ([2.303 - 0.0005 * i for i in range(100)], [0.20, 0.20], TrialState.COMPLETE),
        "good": (FALLING, [0.45, 0.45], TrialState.COMPLETE),
        "failed": ([], [], TrialState.FAILED),
    }
    out = []
    for kind, count in labels.items():
        losses, val, state = curves[kind]
        for _ in range(count):
            r = trial(losses, val, val, state)
            r.trial = len(out)
            r.params = {"lr": 10.0 ** (len(out) - 5)}
            out.append(r)
    return out


def test_stage_where_most_trials_diverged_or_rose_says_lr_too_high() -> None:
    results = stage({"good": 3, "diverged": 4, "rose": 3})  # lr 1e-5..1e-3 good, 1e-2..1e4 bad
    assert stage_advice(results, num_classes=10, val_size=1000) == (
        "7 of 10 trials diverged or had a rising loss (lr 0.01 to 10000): the learning rate is too high; "
        "lower search.space.lr"
    )


def test_stage_where_most_trials_stayed_at_chance_says_lr_too_low() -> None:
    results = stage({"chance": 5, "flat": 1, "good": 4})
    assert stage_advice(results, num_classes=10, val_size=1000) == (
        "6 of 10 trials stayed at chance accuracy or had a flat loss (lr 1e-05 to 1): the learning rate is too "
        "low, or the data or labels are wrong; raise search.space.lr"
    )


def test_stage_advice_names_only_what_happened() -> None:
    line = stage_advice(stage({"diverged": 2, "good": 1}), num_classes=10)
    assert line is not None
    assert line.startswith("2 of 3 trials diverged (lr")
    line = stage_advice(stage({"flat": 2, "good": 1}), num_classes=10)
    assert line is not None
    assert line.startswith("2 of 3 trials had a flat loss (lr")
    assert "the learning rate is too low; raise search.space.lr" in line


def test_stage_advice_counts_only_trials_that_ran_and_needs_a_majority() -> None:
    assert stage_advice(stage({"diverged": 5, "good": 5}), num_classes=10) is None  # half is not most
    # Two thirds failed, but diverged at lower learning rates than those at chance: not lr's doing.
    assert stage_advice(stage({"diverged": 3, "chance": 3, "good": 3}), num_classes=10) == (
        "6 of 9 trials learned nothing: 3 stayed at chance accuracy (lr 0.01 to 1), too low; 3 diverged "
        "(lr 1e-05 to 1e-03), too high: something besides the learning rate stops learning; check the other "
        "parameters and the data"
    )
    line = stage_advice(stage({"diverged": 3, "good": 2, "failed": 5}), num_classes=10)
    assert line is not None
    assert line.startswith("3 of 5 trials diverged")  # failed trials did not run: not counted
    assert stage_advice(stage({"failed": 3}), num_classes=10) is None
    assert stage_advice([], num_classes=10) is None


def test_stage_advice_when_lr_is_not_searched_names_train_lr() -> None:
    results = stage({"diverged": 3})
    for r in results:
        r.params = {"weight_decay": 0.1}
    assert stage_advice(results) == "3 of 3 trials diverged: the learning rate is too high; lower train.lr"


# The loss of a net whose units die after a few large steps: it falls, then climbs back to ln 10.
REBOUND = [2.303 - 0.0134 * i for i in range(30)] + [1.9 + 0.02 * i for i in range(20)] + [2.303] * 50


def test_a_loss_that_fell_then_rose_back_is_said_to_have_done_so() -> None:
    r = trial(REBOUND, [0.10, 0.10], [0.10, 0.10])
    assert curve_label(r, num_classes=10, val_size=1000) is CurveLabel.REBOUNDED
    assert curve_label(r) is CurveLabel.REBOUNDED  # a loss shape: judged without the classes too


def test_a_noisy_falling_loss_did_not_fall_then_rise() -> None:
    noisy = [2.3 - 0.01 * i + 0.08 * (-1) ** i for i in range(100)]  # +-0.08 per step around 2.3 -> 1.3
    assert curve_label(trial(noisy, [0.45, 0.45], [0.46, 0.47])) is None


def lenet_stage() -> list[TrialResult]:
    """LeNet on CIFAR-10 as a new user saw it, lr 0.012-0.617: at chance below 0.06, one learned at
    0.0854, and the loss of those near 0.6 fell then rose back to ln 10."""
    out = []
    for lr, (losses, val) in [
        (0.012, (FALLING, 0.10)),
        (0.02, (FALLING, 0.10)),
        (0.03, (FALLING, 0.10)),
        (0.05, (FALLING, 0.11)),
        (0.0854, (FALLING, 0.34)),
        (0.3, (REBOUND, 0.10)),
        (0.45, (REBOUND, 0.10)),
        (0.617, (REBOUND, 0.09)),
    ]:
        r = trial(losses, [val, val], [val, val])
        r.trial, r.params = len(out), {"lr": lr}
        out.append(r)
    return out


def test_trials_that_fell_then_rose_count_as_too_high_never_too_low() -> None:
    assert stage_advice(lenet_stage(), num_classes=10, val_size=1000) == (
        "7 of 8 trials learned nothing: 4 stayed at chance accuracy (lr 0.012 to 0.05), too low; 3 fell then "
        "rose (lr 0.3 to 0.617), too high: the useful learning rates lie between 0.05 and 0.3; narrow "
        "search.space.lr toward [0.05, 0.3]"
    )


def test_at_chance_above_an_lr_that_learned_is_not_too_low() -> None:
    results = lenet_stage()
    for r in results[5:]:  # dead from the first steps: a loss at ln 10 throughout, not a rebound
        r.losses = [2.303] * 100
    line = stage_advice(results, num_classes=10, val_size=1000)
    assert line is not None
    assert "3 stayed at chance or flat above an lr that learned (lr 0.3 to 0.617), too high" in line
    assert "raise search.space.lr" not in line


def test_advice_against_the_lr_verdict_is_not_given() -> None:
    results = stage({"chance": 5, "flat": 1, "good": 4})  # too low below the good ones: "raise"
    assert stage_advice(results, num_classes=10, val_size=1000, lr_toward="high") is not None
    assert stage_advice(results, num_classes=10, val_size=1000, lr_toward="low") is None
