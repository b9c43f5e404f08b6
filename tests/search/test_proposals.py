"""sampler: tpe: random search's startup trials, then waves of TPE proposals that are recorded
before they train, concentrate where the told trials did best, come out the same for the same seed
one trial at a time, and are re-told on resume (a stop anywhere, a wave's line torn by a crash)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import StopAfter, cli

from hpsearch.errors import SpecError, StageStopped
from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.runs.store import read_json_lines
from hpsearch.search.refine import plan_refine
from hpsearch.search.space import trial_configs
from hpsearch.search.tpe import PROPOSALS, propose
from hpsearch.spec.load import parse_spec
from hpsearch.spec.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.coarse import run_coarse
from hpsearch.stages.refine import run_refine

ONE_AT_A_TIME = ExecOptions(population=1)


def tpe_body(trials: int = 9, startup: int = 5, wave: int = 2, **search: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "data": {"dataset": "synthetic", "synthetic_train": 500, "synthetic_test": 100, "val_size": 100},
        "model": {"hidden": [16]},
        "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
        "search": {
            "trials": trials,
            "seed": 4,
            "sampler": "tpe",
            "tpe": {"startup_trials": startup, "wave": wave},
            "space": {
                "lr": {"low": 1e-4, "high": 3.0, "log": True},
                "hidden": {"values": [[8], [16, 8]]},
            },
            **search,
        },
    }


def tpe_spec(**kw: Any) -> Spec:
    return parse_spec(tpe_body(**kw))


def waves(run: Path) -> list[dict[str, Any]]:
    """The waves recorded, a line torn by a crash left out."""
    return read_json_lines(run / "coarse" / PROPOSALS)[0]


def records(run: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for line in (run / "coarse/trials.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["state"] != "interrupted":
            out[r["trial"]] = r
    return out


def test_the_startup_trials_are_random_searchs_trials() -> None:
    random_body = tpe_body()
    random_body["search"] = {**random_body["search"], "sampler": "random"}
    del random_body["search"]["tpe"]
    tpe, rnd = trial_configs(tpe_spec()), trial_configs(parse_spec(random_body))
    assert [c.trial_id for c in tpe] == [0, 1, 2, 3, 4]
    assert [c.params for c in tpe] == [c.params for c in rnd[:5]]


def told(lr: float, trial: int) -> TrialResult:
    """A trial whose accuracy peaks at lr = 1e-2: 0.9 there, falling with the distance in log10."""
    acc = 0.9 - 0.2 * abs(math.log10(lr) + 2)
    return TrialResult(trial=trial, state=TrialState.COMPLETE, params={"lr": lr, "hidden": (8,)}, val_acc=acc)


def test_proposals_concentrate_where_the_told_trials_did_best() -> None:
    """Told 20 trials spread evenly over lr in [1e-4, 3] (log10 -4 to 0.47) that did best at 1e-2,
    TPE's proposals (4 waves of 8) lie nearer it than uniform draws over the range, which lie
    (2**2 + 2.47**2) / (2 * 4.47) = 1.13 decades from it on average; TPE's lie 0.86 away."""
    search = tpe_spec().search
    history = [told(10 ** (-4 + 4.47 * i / 19), i) for i in range(20)]
    proposals = [p for first in (20, 28, 36, 44) for p in propose(search, history, first, 8)]
    distance = sum(abs(math.log10(p["lr"]) + 2) for p in proposals) / len(proposals)
    assert distance < 1.0, [p["lr"] for p in proposals]
    assert all(p["hidden"] in ((8,), (16, 8)) for p in proposals)  # a categorical's own values, as tuples
    assert propose(search, history, 20, 8) == proposals[:8]  # the same told trials and seed: the same proposals


def test_same_shape_waves_share_their_firsts_shape_and_train_as_one_population(tmp_path: Path) -> None:
    search = tpe_spec().search
    history = [told(10 ** (-4 + 4.47 * i / 19), i) for i in range(20)]
    free = propose(search, history, 20, 8)
    assert len({p["hidden"] for p in free}) == 2  # left alone, TPE proposes both shapes in a wave of 8
    shaped = propose(search, history, 20, 8, shared=["hidden"])
    assert shaped[0] == free[0]
    assert {p["hidden"] for p in shaped} == {free[0]["hidden"]}
    assert len({p["lr"] for p in shaped}) == 8  # the rest is still TPE's to propose
    shaped_body = tpe_body(trials=11, startup=5, wave=3)
    shaped_body["search"]["tpe"]["same_shape"] = True
    spec = parse_spec(shaped_body)
    run = tmp_path / "run"
    run_coarse(spec, "t.yaml", StageOptions(out=run))
    recorded = records(run)
    for w in waves(run):
        trials = [t["trial"] for t in w["trials"]]
        assert len({json.dumps(recorded[t]["params"]["hidden"]) for t in trials}) == 1
        # One population: its trials share their wall time evenly (a lone trial has its own).
        assert len({recorded[t]["wall_time"] for t in trials}) == 1, [recorded[t]["wall_time"] for t in trials]


def test_a_tpe_stage_proposes_in_waves_recorded_before_they_train(tmp_path: Path) -> None:
    run = tmp_path / "run"
    outcome = run_coarse(tpe_spec(), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    assert sorted(r.trial for r in outcome.ranked) == list(range(9))
    lines = waves(run)
    assert [(w["wave"], w["told"], [t["trial"] for t in w["trials"]]) for w in lines] == [
        (1, 5, [5, 6]),
        (2, 7, [7, 8]),
    ]
    recorded = records(run)
    for w in lines:  # every trial trained what was proposed for it
        for t in w["trials"]:
            assert recorded[t["trial"]]["params"] == t["params"]
    doc = json.loads((run / "coarse/results.json").read_text())
    assert doc["trials_planned"] == 9
    assert "partial" not in doc
    # Refine plans from a tpe stage as from any other (random search in the narrowed ranges).
    plan = plan_refine(run, RefineOptions(trials=4))
    assert len(plan.configs) == 4
    assert plan.spec.search.sampler.value == "random"


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tpe stage run without a stop, one trial at a time (the same bits on every run)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    run_coarse(tpe_spec(), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    return run


def same_trials(a: Path, b: Path) -> None:
    assert [w["trials"] for w in waves(a)] == [w["trials"] for w in waves(b)]
    ra, rb = records(a), records(b)
    assert sorted(ra) == sorted(rb) == list(range(9))
    for t in ra:
        assert (ra[t]["params"], ra[t]["val_acc"]) == (rb[t]["params"], rb[t]["val_acc"])


def test_the_same_seed_gives_the_same_trials(tmp_path: Path, whole: Path) -> None:
    run = tmp_path / "again"
    run_coarse(tpe_spec(), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    same_trials(run, whole)
    other = tmp_path / "other"
    run_coarse(tpe_spec(seed=5), "t.yaml", StageOptions(out=other, execution=ONE_AT_A_TIME))
    assert [w["trials"] for w in waves(other)] != [w["trials"] for w in waves(whole)]


@pytest.mark.parametrize("n", [6, 7], ids=["inside-a-wave", "before-a-wave"])
def test_a_stopped_tpe_stage_resumes_to_the_same_trials(tmp_path: Path, whole: Path, n: int) -> None:
    """Stopped with trial 6 of wave 1 unfinished (6), or once wave 1 finished and before wave 2 was
    asked (7): the resume trains the recorded proposals, tells every finished trial and asks the
    rest, and ends where the run without a stop did."""
    spec = tpe_spec()
    run = tmp_path / "cut"
    with pytest.raises(StageStopped):
        run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopAfter(n))  # type: ignore[arg-type]
    assert len(waves(run)) == 1
    assert json.loads((run / "coarse/results.json").read_text())["partial"] is True
    resumed = run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert resumed.resumed == n
    same_trials(run, whole)


def test_a_wave_torn_by_a_crash_is_asked_again(tmp_path: Path, whole: Path) -> None:
    spec = tpe_spec()
    run = tmp_path / "cut"
    with pytest.raises(StageStopped):
        run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopAfter(7))  # type: ignore[arg-type]
    line = json.dumps(waves(whole)[1])
    with (run / "coarse" / PROPOSALS).open("a") as f:
        f.write(line[: len(line) // 2])  # the crash cut the write of wave 2's line: none of it trained
    run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert [w["trials"] for w in waves(run)] == [w["trials"] for w in waves(whole)]
    same_trials(run, whole)


def test_a_tpe_stage_grows_on_resume(tmp_path: Path, whole: Path) -> None:
    """More trials on a finished stage: the trials it has are kept, the model proposes the rest."""
    run = tmp_path / "grown"
    run_coarse(tpe_spec(), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    grown = run_coarse(tpe_spec(trials=11), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert grown.resumed == 9
    assert len(grown.ranked) == 11
    assert [w["told"] for w in waves(run)] == [5, 7, 9]


def test_refine_can_keep_the_model(tmp_path: Path) -> None:
    """refine.sampler: tpe: the refine stage's first trial is random search's in the narrowed ranges,
    then TPE proposes, told first every earlier trial inside those ranges (refine.sampler random,
    the default, restarts from nothing: test_a_tpe_stage_proposes_in_waves_recorded_before_they_train)."""
    body = tpe_body()
    body["refine"] = {"sampler": "tpe", "top_k": 3}
    run = tmp_path / "run"
    coarse = run_coarse(parse_spec(body), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    plan = plan_refine(run, RefineOptions(trials=5))
    assert plan.spec.search.sampler.value == "tpe"
    assert len(plan.configs) == 1
    space = plan.spec.search.space
    low, high = space["lr"].low, space["lr"].high  # type: ignore[union-attr]
    hidden = space["hidden"].values if "hidden" in space else ((8,), (16, 8))  # type: ignore[union-attr]
    inside = sorted(r.trial for r in coarse.ranked if low <= r.params["lr"] <= high and r.params["hidden"] in hidden)
    assert 3 <= len(inside) < 9  # narrowed around the top 3: some of the 9 fall outside
    assert sorted(r.trial for r in plan.prior) == inside
    assert plan.history[-1]["told_earlier_trials"] == len(inside)
    outcome = run_refine(run, RefineOptions(trials=5, execution=ONE_AT_A_TIME))
    assert outcome.outcome is not None
    assert len(outcome.outcome.ranked) == 5
    stage_waves = read_json_lines(run / "refine-1" / PROPOSALS)[0]
    assert [w["told"] for w in stage_waves] == [len(inside) + 1, len(inside) + 3]  # earlier trials, then its own
    for w in stage_waves:
        for t in w["trials"]:
            assert low <= t["params"]["lr"] <= high
    assert plan.spec.refine.sampler.value == "tpe"  # the stage's refine settings carry on to the next refine


# --------------------------------------------------------------------------- with successive halving


def halving_tpe(**kw: Any) -> Spec:
    """9 trials, rungs at 1 and 3 epochs (eta 3): the 5 startup trials and 2 waves of 2 proposals
    train the first rung, told the first-rung results; the best 3 of the 9 go on to 3 epochs."""
    body = tpe_body(halving={"eta": 3, "min_epochs": 1}, **kw)
    body["train"] = {**body["train"], "epochs": 3}
    return parse_spec(body)


def fates(run: Path) -> dict[int, tuple[str, int | None, int, float | None]]:
    """Each trial's last final record: (state, rung, epochs, val_acc)."""
    out = {}
    for line in (run / "coarse/trials.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["state"] != "interrupted":
            out[r["trial"]] = (r["state"], r.get("rung"), r["epochs_done"], r["val_acc"])
    return out


@pytest.fixture(scope="module")
def whole_halving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("whole_halving") / "run"
    run_coarse(halving_tpe(), "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    return run


def test_with_halving_the_first_rung_is_proposed_and_the_best_third_go_on(whole_halving: Path) -> None:
    lines = waves(whole_halving)
    assert [(w["told"], [t["trial"] for t in w["trials"]]) for w in lines] == [(5, [5, 6]), (7, [7, 8])]
    by_trial = fates(whole_halving)
    assert sorted(by_trial) == list(range(9))
    went_on = [t for t, f in by_trial.items() if f[1] == 1]
    assert len(went_on) == 3
    assert all(by_trial[t][2] == 3 for t in went_on)
    first_rung = [f for t, f in by_trial.items() if t not in went_on]
    assert all(f[1] == 0 and f[2] == 1 for f in first_rung)
    assert not (whole_halving / "coarse/checkpoints").exists()


@pytest.mark.parametrize("n", [6, 10], ids=["while-proposing", "in-the-last-rung"])
def test_a_stopped_halving_tpe_stage_resumes_to_the_same_decisions(tmp_path: Path, whole_halving: Path, n: int) -> None:
    run = tmp_path / "cut"
    spec = halving_tpe()
    with pytest.raises(StageStopped):
        run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopAfter(n))  # type: ignore[arg-type]
    partial = json.loads((run / "coarse/results.json").read_text())
    assert partial["partial"] is True
    assert all(t["state"] != "stopped" for t in partial["ranked"]) or n == 10  # nothing decided while proposing
    run_coarse(spec, "t.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert fates(run) == fates(whole_halving)
    assert [w["trials"] for w in waves(run)] == [w["trials"] for w in waves(whole_halving)]


def test_the_cli_says_how_a_tpe_search_goes(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(tpe_body(trials=7)))
    r = cli("coarse", str(path), "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "tpe: 5 random startup trials, then 2 proposed by TPE (Optuna), 2 at a time" in r.stderr
    assert "coarse: 7 trials, ranked by validation accuracy" in r.stdout


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"sampler": "tpee"}, "search.sampler: must be one of 'random', 'grid' or 'tpe' (got 'tpee')"),
        ({"sampler": "random"}, "search.tpe: applies to sampler: tpe only (this search's sampler is random)"),
        ({"tpe": {"wave": 0}}, "search.tpe.wave: input should be greater than or equal to 1 (got 0)"),
        ({"tpe": {"waves": 2}}, "search.tpe.waves"),
    ],
)
def test_tpe_spec_mistakes_are_one_line_errors(tmp_path: Path, search: dict[str, Any], message: str) -> None:
    body = tpe_body()
    body["search"] = {**body["search"], **search}
    with pytest.raises(SpecError, match="^" + r".*" + _escaped(message)):
        parse_spec(body)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(body))
    r = cli("coarse", str(path), "--out", str(tmp_path / "run"))
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_without_optuna_tpe_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError, as if not installed
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(tpe_body()))
    r = cli("coarse", str(path), "--out", str(tmp_path / "run"))
    assert r.returncode == 1
    assert r.stderr.strip().endswith(
        "search.sampler: tpe needs Optuna, which is not installed: pip install 'hpsearch[tpe]' (or use sampler: random)"
    ), r.stderr
    assert not (tmp_path / "run").exists()
