"""Range verdicts from the whole stage: nothing learned (and which way to move), an edge the
accuracy trend points past, or an optimum inside; a lone lucky trial on a border is not an edge."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, cli

from hpsearch.analysis.rank import fmt_value, rank
from hpsearch.analysis.verdicts import Verdict, edges, quadratic_fit, range_verdicts
from hpsearch.runs.records import CurveData, TrialResult, TrialState
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import SearchSpec

CIFAR = CurveData(num_classes=10, val_size=1000)
LR = (1e-5, 1.0)  # a log range, 5 decades

LOSSES = {
    "learned": [2.30, 2.0, 1.7, 1.5],
    "flat": [2.303, 2.302, 2.301, 2.300],  # fell by 0.1%: "flat"
    "rose": [2.30, 2.6, 2.9, 3.1],  # ended 35% above its start: "loss rose"
}


def trial(
    i: int,
    lr: float,
    acc: float | None,
    curve: str = "learned",
    state: TrialState = TrialState.COMPLETE,
    weight_decay: float = 1e-4,
    per_epoch: list[float] | None = None,
    rung: int | None = None,
) -> TrialResult:
    losses = LOSSES[curve]
    return TrialResult(
        trial=i,
        state=state,
        params={"lr": lr, "weight_decay": weight_decay},
        val_acc=acc,
        train_acc=acc,
        train_loss=losses[-1],
        losses=losses,
        data_losses=losses,
        val_acc_per_epoch=per_epoch if per_epoch is not None else ([acc, acc] if acc is not None else []),
        rung=rung,
    )


def search(
    lr: tuple[float, float] = LR, halving: dict | None = None, wd: tuple[float, float] = (1e-6, 1e-1)
) -> SearchSpec:
    raw: dict = {
        "lr": {"low": lr[0], "high": lr[1], "log": True},
        "weight_decay": {"low": wd[0], "high": wd[1], "log": True},
    }
    spec = {"name": "v", "train": {"epochs": 9}, "search": {"space": raw}}
    if halving is not None:
        spec["search"]["halving"] = halving
    return parse_spec(spec).search


def lr_at(position: float, lr: tuple[float, float] = LR) -> float:
    """The learning rate at a position in [0, 1] of a log range."""
    lo, hi = math.log10(lr[0]), math.log10(lr[1])
    return float(10 ** (lo + position * (hi - lo)))


def stage(accuracy: object, n: int = 24, noise: float = 0.015, seed: int = 0) -> list[TrialResult]:
    """n trials spread over the lr range, accuracy(position) + noise; weight decay drawn apart."""
    rng = np.random.default_rng(seed)
    positions = (np.arange(n) + rng.uniform(0, 1, n)) / n  # stratified: every part of the range seen
    wds = 10 ** rng.uniform(-6, -1, n)
    return [
        trial(i, lr_at(p), float(accuracy(p) + rng.normal(0, noise)), weight_decay=float(wd))  # type: ignore[operator]
        for i, (p, wd) in enumerate(zip(positions, wds, strict=True))
    ]


# --------------------------------------------------------------------------- edge or inside


def test_noise_only_is_inside_with_no_trend() -> None:
    # Accuracies ~0.3 everywhere: no edge to widen past. Inside (flag null) rather than a verdict of
    # its own: refine then narrows around the trials tied for best, which noise spreads over the range.
    verdicts = range_verdicts(stage(lambda p: 0.3), search(), CIFAR)
    lr = verdicts["lr"]
    assert lr.verdict is Verdict.INSIDE
    assert lr.flag is None
    assert "rises toward neither edge beyond noise" in lr.reason
    assert lr.warning is None


def test_accuracy_rising_with_the_parameter_is_an_edge_high() -> None:
    verdicts = range_verdicts(stage(lambda p: 0.15 + 0.3 * p), search(), CIFAR)
    lr = verdicts["lr"]
    assert lr.verdict is Verdict.EDGE
    assert lr.flag == "high"
    assert lr.reason.startswith("accuracy points past the high edge of [1e-05, 1]: a fit of 24 trials still rises")
    assert lr.warning is not None
    assert lr.warning.startswith("lr: accuracy points past the high edge")
    assert lr.warning.endswith("widen the range upward")
    assert verdicts["weight_decay"].verdict is Verdict.INSIDE  # it had no effect


def test_accuracy_falling_with_the_parameter_is_an_edge_low() -> None:
    verdicts = range_verdicts(stage(lambda p: 0.45 - 0.3 * p), search(), CIFAR)
    assert verdicts["lr"].verdict is Verdict.EDGE
    assert verdicts["lr"].flag == "low"
    assert verdicts["lr"].warning is not None
    assert verdicts["lr"].warning.endswith("widen the range downward")


def test_an_interior_peak_is_inside_and_says_where() -> None:
    verdicts = range_verdicts(stage(lambda p: 0.45 - 1.2 * (p - 0.6) ** 2), search(), CIFAR)
    lr = verdicts["lr"]
    assert lr.verdict is Verdict.INSIDE
    assert lr.flag is None
    assert "peaks inside, near lr" in lr.reason
    fit_peak = float(lr.reason.split("near lr ")[1].split(";")[0])
    assert 0.5 < math.log10(fit_peak / LR[0]) / 5 < 0.7  # at the true peak, 0.6 of the range


def test_a_single_lucky_trial_at_an_edge_among_an_interior_optimum_is_not_an_edge() -> None:
    trials = stage(lambda p: 0.45 - 1.2 * (p - 0.5) ** 2, n=20)
    peak = max(r.val_acc or 0.0 for r in trials)
    lucky = trial(99, lr_at(0.97), peak + 0.01)  # within noise of the interior best: tied with it
    trials.append(lucky)
    assert rank(trials)[0] is lucky  # the best trial is on the border: the old flag said "high"
    verdicts = range_verdicts(trials, search(), CIFAR)
    assert verdicts["lr"].verdict is Verdict.INSIDE
    assert verdicts["lr"].flag is None
    assert "peaks inside" in verdicts["lr"].reason
    (lr_edge, _) = edges(search().space, rank(trials)[0], verdicts)
    assert lr_edge.position is not None
    assert lr_edge.position > 0.9
    assert lr_edge.flag is None


def test_a_tied_set_crowding_an_edge_is_an_edge_even_with_too_few_trials_to_fit() -> None:
    # 5 trials: no fit (8 needed); the three best are within noise of each other, all in the outer quarter.
    trials = [trial(0, lr_at(0.95), 0.40), trial(1, lr_at(0.85), 0.39), trial(2, lr_at(0.8), 0.38)]
    trials += [trial(3, lr_at(0.3), 0.20), trial(4, lr_at(0.1), 0.15)]
    lr = range_verdicts(trials, search(), CIFAR)["lr"]
    assert lr.verdict is Verdict.EDGE
    assert lr.flag == "high"
    assert "the 3 trials tied with the best span lr" in lr.reason
    # The same best alone on the border, clearly ahead of the rest, is one sample: no verdict from it.
    alone = [trial(0, lr_at(0.95), 0.40), *[trial(i, lr_at(0.2 * i), 0.2) for i in range(1, 5)]]
    assert range_verdicts(alone, search(), CIFAR)["lr"].verdict is Verdict.INSIDE


def test_a_diverged_trial_counts_as_learning_nothing_where_it_diverged() -> None:
    # Rising up to 0.8 of the range, diverged above: the optimum is inside, not past the high edge.
    trials = stage(lambda p: 0.15 + 0.35 * p, n=16)
    trials = [r for r in trials if float(r.params["lr"]) < lr_at(0.8)]
    trials += [trial(50 + i, lr_at(p), None, state=TrialState.DIVERGED) for i, p in enumerate((0.82, 0.88, 0.93, 0.98))]
    assert range_verdicts(trials, search(), CIFAR)["lr"].verdict is Verdict.INSIDE


def test_the_fit_is_exact_on_a_parabola() -> None:
    positions = np.linspace(0, 1, 9)
    fit = quadratic_fit(positions, 0.4 - (positions - 0.3) ** 2)
    assert fit is not None
    assert fit.peak() == pytest.approx(0.3)
    assert quadratic_fit(positions[:7], positions[:7]) is None  # too few trials for a standard error


# The README's lecture example, measured: `hpsearch coarse` on CIFAR-10 with the lecture's lr range
# 1e-6..1e-3, 20 trials x 1 epoch (about 80 s on a shared 2-core CPU: too slow for a test; the
# README gives the command to rerun it). (lr, weight decay, validation accuracy, curve), best first.
LECTURE_RANGE = [
    (0.0005023, 0.0001566, 0.323, "learned"),
    (0.0004459, 0.0002353, 0.316, "learned"),
    (0.0004669, 0.02202, 0.310, "learned"),
    (0.0002173, 0.02699, 0.264, "learned"),
    (0.0001901, 0.4523, 0.245, "learned"),
    (8.145e-05, 0.0004156, 0.212, "flat"),
    (4.61e-05, 9.169e-05, 0.201, "learned"),
    (7.346e-05, 0.0005572, 0.195, "learned"),
    (5.027e-05, 8.136, 0.188, "flat"),
    (5.394e-05, 4.744e-05, 0.182, "learned"),
    (3.131e-05, 0.0001706, 0.164, "flat"),
    (3.628e-05, 0.0001153, 0.163, "flat"),
    (0.0004841, 1.454, 0.134, "flat"),
    (1.723e-05, 0.0001904, 0.130, "flat"),
    (1.748e-06, 0.002598, 0.124, "flat"),
    (1.401e-05, 0.01934, 0.120, "flat"),
    (1.866e-05, 0.06076, 0.114, "flat"),
    (1.308e-06, 0.46, 0.112, "flat"),
    (1.208e-05, 1.82, 0.110, "flat"),
    (2.684e-06, 0.0359, 0.087, "flat"),
]


def test_the_readme_lecture_example_is_an_edge_high_from_its_measured_accuracies() -> None:
    trials = [trial(i, lr, acc, curve, weight_decay=wd) for i, (lr, wd, acc, curve) in enumerate(LECTURE_RANGE)]
    verdicts = range_verdicts(trials, search((1e-6, 1e-3), wd=(1e-5, 10.0)), CIFAR)
    assert verdicts["lr"].verdict is Verdict.EDGE
    assert verdicts["lr"].warning == (
        "lr: accuracy points past the high edge of [1e-06, 1e-03]: a fit of 20 trials still rises there; "
        "the 3 trials tied with the best span lr 4.5e-04..5.0e-04, against it: widen the range upward"
    )
    assert verdicts["weight_decay"].verdict is Verdict.INSIDE


# --------------------------------------------------------------------------- nothing learned


def test_all_flat_at_chance_is_nothing_learned_widen_upward() -> None:
    lr = (1e-7, 1e-6)
    trials = [trial(i, lr_at(p, lr), 0.1 + 0.01 * (i % 3 - 1), "flat") for i, p in enumerate(np.linspace(0, 1, 10))]
    verdicts = range_verdicts(trials, search(lr), CIFAR)
    assert verdicts["lr"].verdict is Verdict.NOTHING_LEARNED
    assert verdicts["lr"].flag == "high"
    assert verdicts["lr"].warning == (
        "lr: nothing learned: all 10 trials had a flat loss or stayed at chance (lr 1e-07 to 1e-06): "
        "the learning rate is too low (or the data or labels are wrong); widen the range upward"
    )
    # A stage verdict, said once: weight decay has no trend to read either, and says nothing more.
    assert verdicts["weight_decay"].verdict is Verdict.NOTHING_LEARNED
    assert verdicts["weight_decay"].warning is None
    assert verdicts["weight_decay"].flag is None


def test_all_diverged_is_nothing_learned_too_high() -> None:
    trials = [trial(i, lr_at(p), None, state=TrialState.DIVERGED) for i, p in enumerate((0.2, 0.5, 0.9))]
    trials.append(trial(3, lr_at(0.1), 0.1, "rose"))  # its loss rose and it stayed at chance
    lr = range_verdicts(trials, search(), CIFAR)["lr"]
    assert lr.verdict is Verdict.NOTHING_LEARNED
    assert lr.flag == "low"
    assert "all 4 trials diverged or had a rising loss at chance" in lr.reason
    assert lr.reason.endswith("the learning rate is too high; widen the range downward")


def test_flat_below_and_diverged_above_means_the_useful_range_lies_between() -> None:
    flat = [trial(i, lr_at(p), 0.1, "flat") for i, p in enumerate((0.1, 0.2, 0.3))]
    blown = [trial(10 + i, lr_at(p), None, state=TrialState.DIVERGED) for i, p in enumerate((0.5, 0.7, 0.9))]
    lr = range_verdicts(flat + blown, search(), CIFAR)["lr"]
    assert lr.verdict is Verdict.NOTHING_LEARNED
    assert lr.flag is None
    assert "3 of 6 trials were flat or at chance, 3 diverged or rose" in lr.reason
    assert lr.reason.endswith(f"narrow the range to [{fmt_value(lr_at(0.3))}, {fmt_value(lr_at(0.5))}]")


def test_a_rising_loss_that_learned_something_is_not_nothing_learned() -> None:
    # 0.26 accuracy with a rising loss (the README's lr 0.26 trial): it learned, so the stage did.
    trials = [trial(i, lr_at(p), 0.1, "flat") for i, p in enumerate((0.1, 0.2, 0.3))]
    trials.append(trial(9, lr_at(0.9), 0.26, "rose"))
    assert range_verdicts(trials, search(), CIFAR)["lr"].verdict is not Verdict.NOTHING_LEARNED


def test_no_trial_trained_gives_no_verdicts() -> None:
    failed = TrialResult(trial=0, state=TrialState.FAILED, params={"lr": 1e-3, "weight_decay": 1e-4})
    assert range_verdicts([failed], search(), CIFAR) == {}


# --------------------------------------------------------------------------- successive halving


def test_halving_compares_accuracies_at_the_first_rung() -> None:
    # At the first rung (1 epoch) every trial scored 0.30 within noise. The four that trained on to
    # 9 epochs (promoted on that noise) reached far higher accuracy, and lie in the top quarter of
    # the range: their final accuracies make a rising trend; at the first rung there is none.
    rng = np.random.default_rng(1)
    trials = []
    for i, p in enumerate(np.linspace(0.02, 0.7, 12)):
        first = float(0.3 + rng.normal(0, 0.01))
        trials.append(trial(i, lr_at(p), first, state=TrialState.STOPPED, per_epoch=[first], rung=0))
    for i, (p, final) in enumerate(((0.76, 0.58), (0.84, 0.54), (0.92, 0.56), (0.99, 0.55))):
        curve = np.linspace(0.3 + rng.normal(0, 0.01), final, 9).tolist()
        trials.append(trial(20 + i, lr_at(p), final, per_epoch=curve, rung=1))
    halving = search(halving={"eta": 3, "min_epochs": 1})
    lr = range_verdicts(trials, halving, CIFAR)["lr"]
    assert lr.verdict is Verdict.INSIDE
    assert "a fit of 16 trials rises toward neither edge" in lr.reason
    # Compared at the epochs each trial reached, the promoted four make an edge that is not there.
    assert range_verdicts(trials, search(), CIFAR)["lr"].verdict is Verdict.EDGE


# --------------------------------------------------------------------------- results and the CLI


def test_edges_carry_the_verdict_into_results_json() -> None:
    trials = stage(lambda p: 0.15 + 0.3 * p)
    sp = search()
    (lr_edge, wd_edge) = edges(sp.space, rank(trials)[0], range_verdicts(trials, sp, CIFAR))
    doc = lr_edge.to_dict()
    assert set(doc) == {"low", "high", "log", "best", "position", "flag", "verdict", "reason"}
    assert doc["verdict"] == "edge"
    assert doc["flag"] == "high"
    assert wd_edge.to_dict()["verdict"] == "inside"
    assert wd_edge.to_dict()["flag"] is None


def test_smoke_search_with_a_far_too_low_lr_range_says_nothing_learned_widen_upward(tmp_path: Path) -> None:
    spec = tmp_path / "low.yaml"
    text = (ROOT / "configs/smoke.yaml").read_text()
    too_low = text.replace("lr: {low: 1.0e-4, high: 1.0, log: true}", "lr: {low: 1.0e-7, high: 1.0e-6, log: true}")
    assert too_low != text
    spec.write_text(too_low)
    res = cli("coarse", str(spec), "--trials", "4", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1  # said once: not again by weight decay, nor by the stage's lr advice
    assert warnings[0].startswith("warning: lr: nothing learned: all 4 trials had a flat loss or stayed at chance")
    assert warnings[0].endswith("too low (or the data or labels are wrong); widen the range upward")
    refine = cli("refine", str(tmp_path / "run"), "--dry-run")
    assert refine.returncode == 1
    assert "nothing learned" in refine.stderr
    assert "Refine would narrow around noise: change the range in the spec and run coarse again" in refine.stderr


# Fashion-MNIST as a new user searched it: lr in [1e-4, 1], 8 trials, and every draw fell below 0.011.
FASHION_LR = (1e-4, 1.0)
FASHION = [
    (0.02, 0.62),
    (0.09, 0.65),
    (0.16, 0.69),
    (0.24, 0.72),
    (0.31, 0.76),
    (0.38, 0.78),
    (0.45, 0.83),
    (0.51, 0.85),
]


def fashion_stage() -> list[TrialResult]:
    return [trial(i, lr_at(p, FASHION_LR), acc) for i, (p, acc) in enumerate(FASHION)]


def test_a_rise_toward_a_part_no_trial_sampled_is_unsampled_not_an_edge() -> None:
    verdicts = range_verdicts(fashion_stage(), search(FASHION_LR), CIFAR)
    v = verdicts["lr"]
    assert v.verdict is Verdict.UNSAMPLED  # it was "edge": the fit's slope at 0.5 is extrapolation
    assert v.flag == "high"
    assert v.reason.startswith("the upper 2 decades of [1e-04, 1] (above 0.011) were not sampled")
    assert v.warning is not None
    assert "widen the range upward" not in v.warning
    assert "refine reaches to the high edge (or run more trials)" in v.warning


def test_an_empty_outer_quarter_is_named_even_when_the_verdict_is_inside() -> None:
    peaked = [(p, 0.8 - 3 * (p - 0.3) ** 2) for p, _ in FASHION]
    trials = [trial(i, lr_at(p, FASHION_LR), acc) for i, (p, acc) in enumerate(peaked)]
    v = range_verdicts(trials, search(FASHION_LR), CIFAR)["lr"]
    assert v.verdict is Verdict.INSIDE
    assert v.reason.endswith("the upper 2 decades of [1e-04, 1] (above 0.011) were not sampled")


def test_nothing_learned_in_the_low_half_does_not_say_widen_upward_past_an_untried_top() -> None:
    positions = np.linspace(0.01, 0.5, 8)  # the image-folder variant: lr 1.1e-04 to 0.01 of a range up to 1
    trials = [trial(i, lr_at(p, FASHION_LR), 0.1, "flat") for i, p in enumerate(positions)]
    v = range_verdicts(trials, search(FASHION_LR), CIFAR)["lr"]
    assert v.verdict is Verdict.NOTHING_LEARNED
    assert v.flag is None  # not "widen past the high edge": the range already goes there
    assert v.warning == (
        "lr: nothing learned: all 8 trials had a flat loss or stayed at chance (lr 1.1e-04 to 0.01): the learning "
        "rate is too low (or the data or labels are wrong) there, but the upper 2 decades of [1e-04, 1] (above "
        "0.01) were not sampled: search there first (raise its low bound to 0.01)"
    )


def test_unsampled_part_in_decades_and_in_percent() -> None:
    from hpsearch.analysis.verdicts import unsampled_part
    from hpsearch.spec.schema import NumericRange

    log = NumericRange(low=1e-4, high=1.0, log=True)
    assert (
        unsampled_part(log, [1e-4, 1e-3], "high") == "the upper 3 decades of [1e-04, 1] (above 1e-03) were not sampled"
    )
    assert unsampled_part(log, [1e-3, 0.5], "low") is None  # 1e-3 lies in the lower quarter (one decade of four)
    assert unsampled_part(log, [1e-2, 0.5], "low") == "the lower 2 decades of [1e-04, 1] (below 0.01) were not sampled"
    linear = NumericRange(low=0.0, high=1.0)
    assert unsampled_part(linear, [0.1, 0.6], "high") == "the upper 40% of [0, 1] (above 0.6) was not sampled"
    assert unsampled_part(linear, [0.1, 0.8], "high") is None
