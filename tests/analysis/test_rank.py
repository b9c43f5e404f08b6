"""Ranking and edges: the best trial's position beside the stage's range verdict;
accuracies' 95% intervals, and the trials tied for best."""

from __future__ import annotations

import math

import pytest

from hpsearch.analysis.rank import fmt_value, position_in_range, rank, tied_with_best, wilson_interval
from hpsearch.analysis.verdicts import RangeVerdict, Verdict, edges
from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import NumericRange


def result(
    trial: int, state: TrialState = TrialState.COMPLETE, val: float | None = 0.5, **params: float
) -> TrialResult:
    return TrialResult(trial=trial, state=state, params=params, val_acc=val, train_loss=1.0 if val else None)


def test_rank_puts_best_complete_first_and_failures_last() -> None:
    ranked = rank(
        [
            result(0, val=0.30),
            result(1, TrialState.DIVERGED, val=None),
            result(2, val=0.45),
            result(3, TrialState.FAILED, val=None),
            result(4, val=0.41),
        ]
    )
    assert [r.trial for r in ranked] == [2, 4, 0, 1, 3]


def test_diverged_trial_with_an_accuracy_still_ranks_after_complete() -> None:
    ranked = rank([result(0, val=0.10), result(1, TrialState.DIVERGED, val=0.90)])
    assert [r.trial for r in ranked] == [0, 1]


def test_position_is_measured_in_log_space_for_log_ranges() -> None:
    dom = NumericRange(low=1e-6, high=1e-3, log=True)
    assert position_in_range(1e-6, dom) == pytest.approx(0.0)
    assert position_in_range(1e-4, dom) == pytest.approx(2 / 3)
    assert position_in_range(10**-3.15, dom) == pytest.approx(0.95)
    assert position_in_range(0.5, NumericRange(low=0, high=1)) == pytest.approx(0.5)


def space() -> dict:
    spec = parse_spec(
        {
            "name": "x",
            "search": {
                "space": {
                    "lr": {"low": 1e-6, "high": 1e-3, "log": True},
                    "weight_decay": {"low": 1e-5, "high": 1e5, "log": True},
                    "activation": {"values": ["relu", "tanh"]},
                }
            },
        }
    )
    return spec.search.space


def test_an_edge_puts_the_best_trials_position_beside_the_stages_verdict() -> None:
    # The verdict comes from all the stage's trials (verdicts.py); the position from the best alone.
    best = result(0, val=0.5, lr=9.6e-4, weight_decay=1.0, activation="relu")  # type: ignore[arg-type]
    verdicts = {
        "lr": RangeVerdict(Verdict.EDGE, "high", "a fit still rises there", "lr: ...: widen the range upward"),
        "weight_decay": RangeVerdict(Verdict.INSIDE, None, "a fit peaks inside"),
    }
    found = {e.name: e for e in edges(space(), best, verdicts)}
    assert set(found) == {"lr", "weight_decay"}  # categorical parameters have no edge
    assert found["lr"].position is not None
    assert found["lr"].position > 0.9
    assert found["weight_decay"].position == pytest.approx(0.5)
    assert found["lr"].to_dict() == {
        "low": 1e-6,
        "high": 1e-3,
        "log": True,
        "best": 9.6e-4,
        "position": found["lr"].position,
        "flag": "high",
        "verdict": "edge",
        "reason": "a fit still rises there",
    }
    assert found["lr"].warning == "lr: ...: widen the range upward"
    assert found["weight_decay"].flag is None
    assert found["weight_decay"].warning is None


def test_without_a_complete_trial_an_edge_has_a_verdict_but_no_position() -> None:
    # Every trial diverged: no best, but the stage still says which way to move.
    verdicts = {"lr": RangeVerdict(Verdict.NOTHING_LEARNED, "low", "nothing learned: ... too high", "lr: ...")}
    diverged = result(0, TrialState.DIVERGED, val=None, lr=1e-3, weight_decay=1.0)
    (lr,) = edges(space(), diverged, verdicts)
    assert (lr.best, lr.position, lr.flag, lr.verdict) == (None, None, "low", Verdict.NOTHING_LEARNED)
    assert edges(space(), None, {}) == []  # nothing trained: no verdicts, no edges


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-6, "1e-06"), (9.6e-4, "9.6e-04"), (0.5, "0.5"), (100, "100"), (1e5, "100000"), (math.pi, "3.14")],
)
def test_fmt_value(value: float, text: str) -> None:
    assert fmt_value(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [((128,), "128"), ([128], "128"), ([256, 128], "256x128"), ("relu", "relu")]
)
def test_layer_widths_read_the_same_from_a_tuple_or_a_list(value: object, text: str) -> None:
    assert fmt_value(value) == text


# --------------------------------------------------------------------------- noise


def test_wilson_interval_matches_a_hand_computation_and_published_values() -> None:
    # acc 0.5 of 1000: centre 0.5, half-width 1.96 sqrt(0.25/1000 + 1.96^2/4e6) / (1 + 1.96^2/1000) = 0.0309.
    assert wilson_interval(0.5, 1000) == pytest.approx((0.4691, 0.5309), abs=1e-4)
    # 0 of 10: the Wilson interval is 0 to 0.2775 (Newcombe 1998, table I), not the Wald interval's 0 to 0.
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    low, high = wilson_interval(1.0, 10)
    assert low == pytest.approx(0.7225, abs=1e-4)
    assert high == pytest.approx(1.0)
    assert wilson_interval(0.497, 1000) == pytest.approx((0.466, 0.528), abs=5e-4)
    # Four times the examples, half the width.
    width = [h - lo for lo, h in (wilson_interval(0.6, n) for n in (1000, 4000))]
    assert width[1] == pytest.approx(width[0] / 2, rel=0.01)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)  # nothing measured: nothing known


def test_trials_whose_intervals_overlap_the_best_are_tied_with_it() -> None:
    ranked = rank([result(0, val=0.488), result(1, val=0.40), result(2, val=0.497), result(3, val=0.495)])
    # At n=1000: the best's interval is 0.466..0.528; 0.488 reaches up to 0.519, 0.40 only to 0.431.
    assert [r.trial for r in tied_with_best(ranked, 1000)] == [2, 3, 0]
    # A hundred times the examples: 0.488 (up to 0.491) no longer reaches 0.497's low, 0.494; 0.495 still does.
    assert [r.trial for r in tied_with_best(ranked, 100_000)] == [2, 3]


def test_only_complete_trials_at_the_best_rung_are_tied() -> None:
    top = TrialResult(trial=0, state=TrialState.COMPLETE, params={}, val_acc=0.50, rung=2)
    peer = TrialResult(trial=1, state=TrialState.COMPLETE, params={}, val_acc=0.49, rung=2)
    # Stopped lower by halving, higher accuracy at fewer epochs: not a rival at the best's rung.
    stopped = TrialResult(trial=2, state=TrialState.STOPPED, params={}, val_acc=0.51, rung=1)
    diverged = TrialResult(trial=3, state=TrialState.DIVERGED, params={}, val_acc=0.50, rung=2)
    ranked = rank([stopped, diverged, peer, top])
    assert [r.trial for r in ranked] == [0, 1, 2, 3]
    assert [r.trial for r in tied_with_best(ranked, 1000)] == [0, 1]
    assert tied_with_best(rank([diverged, stopped]), 1000) == []  # no complete trial: no best
