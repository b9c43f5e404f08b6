"""Trial records: failures keep where they were raised and are summed up in one line; a stage in
which no trial completed exits 3, with its results still written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import cli

from hpsearch.cli.exits import NO_TRIAL_COMPLETED
from hpsearch.runs.records import TrialResult, TrialState, as_epochs, epochs_text, failure_summary, rung_steps

# Two trials on a grid: hidden [16] trains, hidden [1e9] cannot allocate its 12 TB first layer.
SPEC = """\
name: fails
data: {dataset: synthetic, synthetic_train: 600, synthetic_test: 100, val_size: 100}
train: {epochs: 1, batch_size: 50, device: cpu}
search:
  sampler: grid
  space:
    lr: {low: 1.0e-2, high: 1.0e-1, log: true, points: 1}
    hidden: {values: [HIDDEN]}
"""


def failed(trial: int, error: str, where: str | None) -> TrialResult:
    return TrialResult(trial=trial, state=TrialState.FAILED, params={}, error=error, error_at=where)


def test_failure_summary_names_the_count_and_the_first_failure() -> None:
    results = [
        TrialResult(trial=0, state=TrialState.COMPLETE, params={}),
        failed(9, "KeyError: 'x'", "nets.py:3"),
        failed(7, "ValueError: bad shape\nmore detail", "models.py:88"),
        TrialResult(trial=8, state=TrialState.DIVERGED, params={}),
    ]
    assert failure_summary(results) == "2 of 4 trials failed (first: trial 7, ValueError: bad shape at models.py:88)"


def test_failure_summary_is_none_without_failures_and_copes_with_no_message() -> None:
    assert failure_summary([TrialResult(trial=0, state=TrialState.DIVERGED, params={})]) is None
    assert failure_summary([failed(0, "", None)]) == "1 of 1 trials failed (first: trial 0, no message)"


def test_a_long_message_is_cut_to_one_short_line() -> None:
    summary = failure_summary([failed(0, "RuntimeError: " + "x" * 1000, "a.py:1")])
    assert summary is not None
    assert len(summary) < 250
    assert summary.endswith("... at a.py:1)")


def test_a_record_without_the_new_fields_still_reads() -> None:
    old = {"trial": 3, "state": "failed", "params": {"lr": 0.1}, "error": "ValueError: x"}
    r = TrialResult.from_dict(old)
    assert r.error_at is None
    assert r.traceback is None


@pytest.mark.parametrize(
    "bad",
    [
        {"trial": True, "state": "complete", "params": {}},
        {"trial": 1, "state": "complete", "params": []},
        {"trial": 1, "state": "complete", "params": {}, "val_acc": "0.5"},
        {"trial": 1, "state": "complete", "params": {}, "val_acc": True},
        {"trial": 1, "state": "complete", "params": {}, "epochs_done": "1.5"},
        {"trial": 1, "state": "complete", "params": {}, "epochs_done": True},
        {"trial": 1, "state": "complete", "params": {}, "losses": [1.0, "x"]},
        {"trial": 1, "state": "complete", "params": {}, "attempts": {}},
        {"trial": 1, "state": "done", "params": {}},
        {"trial": 1, "state": "complete", "params": {}, "traceback": 3},
    ],
)
def test_a_record_with_a_wrong_type_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrialResult.from_dict(bad)


def test_epochs_read_back_whole_as_an_int_and_a_rung_inside_an_epoch_as_a_float() -> None:
    whole = TrialResult.from_dict({"trial": 1, "state": "complete", "params": {}, "epochs_done": 3})
    quarter = TrialResult.from_dict({"trial": 1, "state": "complete", "params": {}, "epochs_done": 0.25})
    assert type(whole.epochs_done) is int  # printed "3", as whole epochs always were
    assert quarter.epochs_done == 0.25


@pytest.mark.parametrize(("epochs", "text"), [(3, "3"), (0.25, "0.25"), (2 / 7, "0.286"), (2.25, "2.25")])
def test_epochs_are_shown_whole_or_as_a_fraction(epochs: float, text: str) -> None:
    assert epochs_text(epochs) == text


@pytest.mark.parametrize(("steps", "epochs"), [(80, 2), (10, 0.25), (50, 1.25)])
def test_steps_as_epochs(steps: int, epochs: float) -> None:
    assert as_epochs(steps, 40) == epochs


def test_a_rung_of_a_fraction_of_an_epoch_ends_at_the_nearest_step_and_trains_at_least_one() -> None:
    assert [rung_steps(e, 40) for e in (0.25, 0.3, 2, 0.001)] == [10, 12, 80, 1]


def run_spec(tmp_path: Path, hidden: str) -> tuple[int, str, str]:
    spec = tmp_path / "fails.yaml"
    spec.write_text(SPEC.replace("HIDDEN", hidden))
    result = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    return result.returncode, result.stdout, result.stderr


def test_a_stage_with_failed_trials_says_so_on_stderr_and_keeps_the_traceback(tmp_path: Path) -> None:
    code, stdout, stderr = run_spec(tmp_path, "[16], [1000000000]")
    assert code == 0  # one trial completed
    line = next(li for li in stderr.splitlines() if "trials failed" in li)
    assert line.startswith("warning: 1 of 2 trials failed (first: trial 1, RuntimeError: ")
    assert "at models.py:" in line
    assert "tracebacks in" in line
    assert "failed" in stdout  # the table shows the failed trial
    records = [json.loads(x) for x in (tmp_path / "run/coarse/trials.jsonl").read_text().splitlines()]
    bad = next(r for r in records if r["state"] == "failed")
    assert bad["error_at"].startswith("models.py:")
    assert bad["traceback"].startswith("Traceback (most recent call last):")
    assert "build_model" in bad["traceback"]
    assert "During handling" not in bad["traceback"]  # the trial's own error, not the population's before it


def test_a_stage_in_which_no_trial_completed_exits_3_with_its_results_written(tmp_path: Path) -> None:
    code, _, stderr = run_spec(tmp_path, "[1000000000]")
    assert code == NO_TRIAL_COMPLETED == 3
    assert "1 of 1 trials failed" in stderr
    assert "error: no trial of coarse completed (1 failed)" in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "run/coarse/results.json").is_file()  # nothing written is lost


def test_the_data_loss_curve_survives_a_json_round_trip_with_non_finite_values_as_null() -> None:
    r = TrialResult(trial=0, state=TrialState.DIVERGED, params={}, losses=[2.5, math.inf], data_losses=[2.3, math.nan])
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["data_losses"] == [2.3, None]
    back = TrialResult.from_dict(d)
    assert back.data_losses[0] == 2.3
    assert math.isnan(back.data_losses[1])


def test_a_record_written_before_the_data_loss_curve_was_kept_reads_with_none() -> None:
    r = TrialResult.from_dict({"trial": 3, "state": "complete", "params": {}, "losses": [2.3, 2.2]})
    assert r.data_losses == []
    with pytest.raises(ValueError):
        TrialResult.from_dict({"trial": 3, "state": "complete", "params": {}, "data_losses": ["x"]})
