"""Ranking and edge flags: a best value in the outer 10% of its range is flagged, an interior one is not."""

from __future__ import annotations

import math

import pytest

from hpsearch.rank import edges, fmt_value, position_in_range, rank
from hpsearch.records import TrialResult, TrialState
from hpsearch.spec import NumericRange, parse_spec


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


def test_best_at_high_edge_is_flagged_interior_is_not() -> None:
    best = result(0, val=0.5, lr=9.6e-4, weight_decay=1.0, activation="relu")  # type: ignore[arg-type]
    found = {e.name: e for e in edges(space(), best)}
    assert set(found) == {"lr", "weight_decay"}  # categorical parameters have no edge
    assert found["lr"].flag == "high"
    assert found["lr"].position > 0.9
    assert found["weight_decay"].flag is None
    assert found["weight_decay"].position == pytest.approx(0.5)
    assert found["lr"].advice() == "lr: best 9.6e-04 is at the high edge of [1e-06, 1e-03]: widen the range upward"


def test_best_at_low_edge_is_flagged() -> None:
    best = result(0, lr=1.2e-6, weight_decay=2e-5)
    found = {e.name: e for e in edges(space(), best)}
    assert found["lr"].flag == "low"
    assert found["weight_decay"].flag == "low"
    assert "widen the range downward" in found["weight_decay"].advice()


def test_no_edges_without_a_complete_trial() -> None:
    assert edges(space(), None) == []
    assert edges(space(), result(0, TrialState.DIVERGED, val=None, lr=1e-3, weight_decay=1.0)) == []


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
