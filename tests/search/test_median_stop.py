"""search.median_stop: each trial is held to the median of the complete trials' accuracies at each
epoch, from the trials finished when its population starts; stopping population members leaves the
others' training unchanged; a stop and resume decides the same; TPE is told stopped trials as pruned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import StopAfter, cli

from hpsearch.errors import SpecError, StageStopped
from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.search.median_stop import bars, failed_bar
from hpsearch.search.tpe import _distributions, _optuna_trial, optuna_module
from hpsearch.spec.load import parse_spec
from hpsearch.spec.options import ExecOptions, StageOptions
from hpsearch.spec.schema import MedianStopSpec, Spec
from hpsearch.stages.coarse import run_coarse

ONE_AT_A_TIME = ExecOptions(population=1)
EPOCHS = 4


def body(trials: int = 12, **search: Any) -> dict[str, Any]:
    """Trials of one shape whose lr spans slow to diverging: some fall behind the median early."""
    return {
        "name": "m",
        "data": {"dataset": "synthetic", "synthetic_train": 1200, "synthetic_test": 100, "val_size": 300},
        "model": {"hidden": [16]},
        "train": {"epochs": EPOCHS, "batch_size": 100, "device": "cpu"},
        "search": {
            "trials": trials,
            "seed": 3,
            "median_stop": {"startup_trials": 3},
            "space": {"lr": {"low": 1e-4, "high": 1.0, "log": True}},
            **search,
        },
    }


def spec(**search: Any) -> Spec:
    return parse_spec(body(**search))


def curve(trial: int, accs: list[float], state: TrialState = TrialState.COMPLETE) -> TrialResult:
    return TrialResult(trial=trial, state=state, params={}, val_acc_per_epoch=accs, epochs_done=len(accs))


def records(run: Path) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in (run / "coarse/trials.jsonl").read_text().splitlines()]
    return {r["trial"]: r for r in lines if r["state"] != "interrupted"}


def test_the_bars_are_the_complete_trials_median_at_each_epoch() -> None:
    rule = MedianStopSpec(startup_trials=3, warmup_epochs=1)
    done = [
        curve(0, [0.1, 0.2, 0.3, 0.4]),
        curve(1, [0.3, 0.5, 0.6, 0.7]),
        curve(2, [0.2, 0.4, 0.8, 0.9]),
        curve(3, [0.9, 0.9], TrialState.STOPPED),  # stopped, diverged and failed trials are not the bar
        curve(4, [0.0], TrialState.DIVERGED),
    ]
    assert bars(rule, done[:2] + done[3:], EPOCHS) is None  # 2 complete of the 3 needed
    # Epoch 1 is the warm-up; the last epoch is never judged (the trial is done anyway).
    assert bars(rule, done, EPOCHS) == (None, 0.4, 0.6)
    assert bars(MedianStopSpec(startup_trials=3, warmup_epochs=0), done, EPOCHS) == (0.2, 0.4, 0.6)
    # An even count: the mean of the middle two, as Optuna's median pruner (its 50th percentile) takes it.
    assert bars(rule, [*done, curve(5, [0.0, 0.9, 0.9, 0.9])], EPOCHS) == (None, (0.4 + 0.5) / 2, (0.6 + 0.8) / 2)
    # A trial's best accuracy so far is held to the bar: a dip below it after a good epoch does not stop it.
    assert failed_bar((None, 0.4, 0.6), [0.9, 0.1]) is None
    assert failed_bar((None, 0.4, 0.6), [0.3, 0.35]) == 0.4
    assert failed_bar((None, 0.4, 0.6), [0.1]) is None  # warm-up
    assert failed_bar((None, 0.4, 0.6), [0.5, 0.5, 0.55]) == 0.6
    assert failed_bar(None, [0.1, 0.1]) is None


def replayed(recs: dict[int, dict[str, Any]], trial: int, rule: MedianStopSpec) -> tuple[int, float | None]:
    """One at a time, trial k is held to the trials 0 .. k-1: where the rule stops it (epochs, bar)."""
    before = [TrialResult.from_dict(recs[t]) for t in range(trial)]
    bar = bars(rule, before, EPOCHS)
    accs = recs[trial]["val_acc_per_epoch"]
    for e in range(1, len(accs) + 1):
        hit = failed_bar(bar, accs[:e])
        if hit is not None:
            return e, hit
    return len(accs), None


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("whole") / "run"
    run_coarse(spec(), "m.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    return run


def test_one_at_a_time_each_trial_stops_where_the_rule_says(whole: Path) -> None:
    recs, rule = records(whole), MedianStopSpec(startup_trials=3)
    stopped = [t for t, r in recs.items() if r["state"] == "stopped"]
    judged_complete = [t for t, r in recs.items() if r["state"] == "complete" and t >= 3]
    # both outcomes happen, so the check below can fail
    assert stopped, recs
    assert judged_complete, recs
    for t, r in recs.items():
        epochs, bar = replayed(recs, t, rule)
        assert r["stopped_below"] == bar, t  # a diverged trial: not stopped before it blew up
        if r["state"] != "diverged":
            assert (r["state"], r["epochs_done"]) == ("stopped" if bar is not None else "complete", epochs), t
    doc = json.loads((whole / "coarse/results.json").read_text())
    assert {t["trial"] for t in doc["ranked"]} == set(range(12))
    md = (whole / "coarse/results.md").read_text()
    assert "then stopped by median_stop" in md
    assert f"{recs[stopped[0]]['epochs_done']}/{EPOCHS}" in md


def test_stopped_members_leave_their_population_unchanged(tmp_path: Path, whole: Path) -> None:
    """Populations of 4: the second and third are held to the complete trials of those before them.
    The trials that go on train exactly as they do with no rule; a stopped one's curve is their prefix."""
    populations = ExecOptions(population=4)
    ruled, free = tmp_path / "ruled", tmp_path / "free"
    run_coarse(spec(), "m.yaml", StageOptions(out=ruled, execution=populations))
    no_rule = body()
    del no_rule["search"]["median_stop"]
    run_coarse(parse_spec(no_rule), "m.yaml", StageOptions(out=free, execution=populations))
    a, b = records(ruled), records(free)
    stopped = [t for t, r in a.items() if r["state"] == "stopped"]
    assert stopped
    assert all(t >= 4 for t in stopped)  # the first population had nothing to be held to
    for t, r in a.items():
        n = r["epochs_done"]
        assert r["val_acc_per_epoch"] == b[t]["val_acc_per_epoch"][:n], t
        if r["state"] != "stopped":
            assert r["val_acc_per_epoch"] == b[t]["val_acc_per_epoch"]
            assert n == b[t]["epochs_done"]


@pytest.mark.parametrize("n", [2, 7])
def test_a_stop_and_resume_decide_as_an_unstopped_run(tmp_path: Path, whole: Path, n: int) -> None:
    run = tmp_path / "cut"
    with pytest.raises(StageStopped):
        run_coarse(spec(), "m.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopAfter(n))  # type: ignore[arg-type]
    run_coarse(spec(), "m.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    fate = {t: (r["state"], r["epochs_done"], r["val_acc"]) for t, r in records(run).items()}
    assert fate == {t: (r["state"], r["epochs_done"], r["val_acc"]) for t, r in records(whole).items()}


def test_tpe_is_told_a_stopped_trial_as_pruned_with_its_curve(tmp_path: Path) -> None:
    optuna = optuna_module()
    search = spec(sampler="tpe").search
    stopped = TrialResult(
        trial=5, state=TrialState.STOPPED, params={"lr": 0.01}, val_acc=0.3, val_acc_per_epoch=[0.2, 0.3]
    )
    told = _optuna_trial(optuna, search, stopped, _distributions(search))
    assert told.state == optuna.trial.TrialState.PRUNED
    assert told.intermediate_values == {0: 0.2, 1: 0.3}
    complete = TrialResult(trial=6, state=TrialState.COMPLETE, params={"lr": 0.01}, val_acc=0.5)
    assert _optuna_trial(optuna, search, complete, _distributions(search)).value == 0.5
    # A tpe stage under the rule: trials stop, and every wave was told every trial finished before it.
    run = tmp_path / "tpe"
    run_coarse(spec(sampler="tpe", tpe={"startup_trials": 4, "wave": 2}), "m.yaml", StageOptions(out=run))
    recs = records(run)
    assert any(r["state"] == "stopped" for r in recs.values())
    waves = [json.loads(line) for line in (run / "coarse/proposals.jsonl").read_text().splitlines()]
    assert [w["told"] for w in waves] == [4, 6, 8, 10]


def test_one_population_is_judged_by_nothing_and_the_cli_says_so(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(body(trials=6)))
    r = cli("coarse", str(path), "--out", str(tmp_path / "run"))  # 6 trials of one shape: one population
    assert r.returncode == 0, r.stderr
    assert "search.median_stop judged no trial: every trial started training before 3 had completed" in r.stderr
    assert all(rec["state"] == "complete" for rec in records(tmp_path / "run").values())
    r = cli("coarse", str(path), "--out", str(tmp_path / "one"), "--population", "1")
    assert r.returncode == 0
    assert "judged no trial" not in r.stderr
    assert "epochs" in r.stdout.splitlines()[2]  # the table shows how far each trial got


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"halving": {"eta": 3}},
            "search.median_stop: give search.median_stop or search.halving, not both: each decides which "
            "trials stop early",
        ),
        ({"median_stop": {"warmup_epochs": 3}}, "search.median_stop.warmup_epochs: must be below train.epochs - 1 (3)"),
        ({"median_stop": {"startup": 3}}, "search.median_stop.startup"),
        ({"median_stop": {"startup_trials": 0}}, "search.median_stop.startup_trials: input should be greater than"),
    ],
)
def test_median_stop_mistakes_are_one_line_errors(tmp_path: Path, search: dict[str, Any], message: str) -> None:
    b = body()
    b["search"] = {**b["search"], **search}
    with pytest.raises(SpecError):
        parse_spec(b)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(b))
    r = cli("coarse", str(path), "--out", str(tmp_path / "run"))
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()
