"""The coarse stage end to end on synthetic data: files on disk, ranking, range verdicts, NaN containment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import StopAfter

from hpsearch.analysis.verdicts import Verdict
from hpsearch.errors import SpecError, StageStopped, StoreError
from hpsearch.runs.records import TrialState
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import load_spec, parse_spec, with_overrides
from hpsearch.spec.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.coarse import run_coarse


def smoke_spec(space: dict, trials: int = 6, sampler: str = "random", **train: object) -> Spec:
    return parse_spec(
        {
            "name": "t",
            "data": {"dataset": "synthetic", "synthetic_train": 1200, "synthetic_test": 100, "val_size": 200},
            "model": {"hidden": [16]},
            "train": {"epochs": 1, "batch_size": 50, "device": "cpu", **train},
            "search": {"trials": trials, "seed": 1, "sampler": sampler, "space": space},
        }
    )


def test_stage_writes_every_file_and_ranks(tmp_path: Path) -> None:
    spec = smoke_spec(
        {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True}}
    )
    outcome = run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "run"))
    stage = tmp_path / "run" / "coarse"
    assert outcome.stage_dir == stage
    for name in ("spec.yaml", "run.json", "trials.jsonl", "results.json", "results.csv", "results.md"):
        assert (stage / name).is_file(), name
    records = [json.loads(line) for line in (stage / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in records) == list(range(6))
    doc = json.loads((stage / "results.json").read_text())
    assert doc["stage"] == "coarse"
    accs = [r["val_acc"] for r in doc["ranked"] if r["state"] == "complete"]
    assert accs == sorted(accs, reverse=True)
    assert [r["rank"] for r in doc["ranked"]] == list(range(1, 7))
    assert set(doc["edges"]) == {"lr", "weight_decay"}
    for e in doc["edges"].values():
        assert set(e) == {"low", "high", "log", "best", "position", "flag", "verdict", "reason"}
    rows = list(csv.DictReader((stage / "results.csv").open()))
    assert [int(r["trial"]) for r in rows] == [r["trial"] for r in doc["ranked"]]
    run = json.loads((stage / "run.json").read_text())
    assert run["seed"] == 1
    assert run["end_time"]
    assert run["torch"]


def test_a_range_below_the_useful_lrs_learns_nothing_an_interior_one_is_inside(tmp_path: Path) -> None:
    # lr in [1e-6, 1e-3]: every value is too small for one epoch; the best trial is the one with the
    # largest lr, on the high edge, but it learned nothing either: the stage says so, and which way.
    spec = smoke_spec({"lr": {"low": 1e-6, "high": 1e-3, "log": True, "points": 4}}, trials=4, sampler="grid")
    outcome = run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "edge"))
    (lr_edge,) = outcome.edges
    assert outcome.best is not None
    assert outcome.best.params["lr"] == pytest.approx(1e-3)
    assert lr_edge.verdict is Verdict.NOTHING_LEARNED
    assert lr_edge.flag == "high"
    assert lr_edge.reason.endswith("widen the range upward")
    assert outcome.advice is None  # the verdict said it: the stage's lr advice does not say it again
    # lr in [1e-3, 1e1]: the good values (~1e-2..1e-1) are inside, the largest diverge.
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e1, "log": True, "points": 9}}, trials=9, sampler="grid")
    outcome = run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "interior"))
    (lr_edge,) = outcome.edges
    assert lr_edge.verdict is Verdict.INSIDE
    assert lr_edge.flag is None
    assert lr_edge.position is not None
    assert 0.1 < lr_edge.position < 0.9


def test_diverged_trials_are_contained_and_ranked_last(tmp_path: Path) -> None:
    spec = smoke_spec({"lr": {"values": [0.05, 1e7, 0.01]}}, trials=3, sampler="grid", optimizer="sgd")
    outcome = run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "nan"))
    states = [r.state for r in outcome.ranked]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.DIVERGED]
    assert outcome.ranked[-1].params["lr"] == 1e7
    doc = json.loads((tmp_path / "nan" / "coarse" / "results.json").read_text())  # valid JSON, no NaN
    assert doc["ranked"][-1]["state"] == "diverged"


def test_integer_and_categorical_parameters_reach_the_trials(tmp_path: Path) -> None:
    spec = smoke_spec(
        {"batch_size": {"low": 20, "high": 200, "log": True}, "activation": {"values": ["tanh", "relu"]}}, trials=4
    )
    outcome = run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "mixed"))
    for r in outcome.ranked:
        assert isinstance(r.params["batch_size"], int)
        assert r.iterations == -(-1000 // r.params["batch_size"])  # ceil: the batch size was used
    assert {r.params["activation"].value for r in outcome.ranked} <= {"tanh", "relu"}


def test_existing_stage_is_never_overwritten(tmp_path: Path) -> None:
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, trials=1)
    run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "r"))
    before = (tmp_path / "r" / "coarse" / "trials.jsonl").read_bytes()
    with pytest.raises(StoreError, match="already holds a search"):
        run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "r"))
    assert (tmp_path / "r" / "coarse" / "trials.jsonl").read_bytes() == before


def test_overrides() -> None:
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e-1, "log": True}})
    over = with_overrides(spec, trials=3, epochs=7, seed=9)
    assert (over.search.trials, over.train.epochs, over.search.seed) == (3, 7, 9)
    assert with_overrides(spec) == spec


def test_epochs_override_fixes_searched_epochs_too() -> None:
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e-1, "log": True}, "epochs": {"values": [2, 5]}})
    over = with_overrides(spec, epochs=1)
    assert over.train.epochs == 1
    assert list(over.search.space) == ["lr"]
    assert list(with_overrides(spec, trials=3).search.space) == ["lr", "epochs"]


def test_unreadable_trial_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    from hpsearch.runs.store import StageStore

    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, trials=2)
    run_coarse(spec, "spec.yaml", StageOptions(out=tmp_path / "r"))
    path = tmp_path / "r/coarse/trials.jsonl"
    with path.open("ab") as f:
        f.write(b'\xff\xfe x\n5\n{"trial": 9, "sta')  # bad bytes, not a record, a line cut mid-write
    store = StageStore(tmp_path / "r/coarse")
    assert [r.trial for r in store.read_trials()] == [0, 1]
    assert store.unreadable == [3, 4, 5]  # by line number, from 1, as an editor shows them


def test_data_errors_about_the_spec_name_its_file(tmp_path: Path) -> None:
    from hpsearch.errors import DataError

    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, trials=1)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"val_size": 10**9})})
    with pytest.raises(DataError, match=r"^configs/s\.yaml: data\.val_size: 1000000000 must be"):
        run_coarse(spec, "configs/s.yaml", StageOptions(out=tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_synthetic_data_has_its_own_seed_not_the_searchs() -> None:
    # A refine stage uses search.seed + 1 and `coarse --seed` changes search.seed: neither may change
    # the data, or stages would be trained and ranked on different datasets.
    from hpsearch.data import load_data
    from hpsearch.spec.load import parse_spec, with_overrides

    base = parse_spec(
        {
            "name": "s",
            "data": {"dataset": "synthetic", "synthetic_train": 200, "synthetic_test": 10, "val_size": 50},
            "train": {"device": "cpu"},
        }
    )
    a = load_data(base, None, None)
    b = load_data(with_overrides(base, seed=5), None, None)
    assert bool((a.x_train == b.x_train).all())
    assert bool((a.x_val == b.x_val).all())
    other = load_data(
        parse_spec({**base.model_dump(mode="json"), "data": {**base.data.model_dump(mode="json"), "seed": 1}}),
        None,
        None,
    )
    assert not bool((a.x_train == other.x_train).all())


ONE_AT_A_TIME = ExecOptions(population=1, workers=1)


def test_ctrl_c_writes_the_finished_trials_ranked_and_marked_partial(tmp_path: Path) -> None:
    """An interrupted stage shows what finished; hints name the spec it ran."""
    from hpsearch.search.refine import plan_refine, stages

    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=5)
    with pytest.raises(StageStopped):
        run_coarse(spec, "my specs/s.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopAfter(2))  # type: ignore[arg-type]
    doc = json.loads((run / "coarse/results.json").read_text())
    assert doc["partial"] is True
    assert doc["trials_planned"] == 5
    assert len(doc["ranked"]) == 2
    assert {r["state"] for r in doc["ranked"]} <= {"complete", "diverged", "failed"}
    assert "partial: 2 of 5 trials" in (run / "coarse/results.md").read_text().splitlines()[0]
    assert len((run / "coarse/results.csv").read_text().splitlines()) == 3
    assert stages(run) == []  # not a finished stage: refine must not plan from it
    with pytest.raises(StoreError, match=r"did not finish: hpsearch coarse 'my specs/s.yaml' --out .* --resume"):
        plan_refine(run, RefineOptions())
    done = run_coarse(spec, "my specs/s.yaml", StageOptions(out=run, resume=True, execution=ONE_AT_A_TIME))
    assert len(done.ranked) == 5
    assert "partial" not in json.loads((run / "coarse/results.json").read_text())
    assert stages(run) == ["coarse"]


def test_a_finished_stage_grows_with_resume_and_more_trials(tmp_path: Path) -> None:
    """Trial i depends only on the seed and i, so --resume --trials 6 on a finished
    4-trial stage trains trials 4 and 5 and keeps 0-3 as they were."""
    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=4)
    first = run_coarse(spec, "s.yaml", StageOptions(out=run))
    before = (run / "coarse/trials.jsonl").read_text()
    grown = run_coarse(with_overrides(spec, trials=6), "s.yaml", StageOptions(out=run, resume=True))
    assert grown.resumed == 4
    assert sorted(r.trial for r in grown.ranked) == list(range(6))
    assert (run / "coarse/trials.jsonl").read_text().startswith(before)  # appended, nothing rewritten
    old = {r.trial: r.params for r in first.ranked}
    assert {r.trial: r.params for r in grown.ranked if r.trial < 4} == old
    assert load_spec(run / "coarse/spec.yaml").search.trials == 6
    fresh = run_coarse(with_overrides(spec, trials=6), "s.yaml", StageOptions(out=tmp_path / "fresh"))
    assert {r.trial: r.params for r in fresh.ranked} == {r.trial: r.params for r in grown.ranked}
    # What would change a recorded trial is still refused.
    with pytest.raises(SpecError, match=r"search.trials: 6 -> 3"):
        run_coarse(with_overrides(spec, trials=3), "s.yaml", StageOptions(out=run, resume=True))
    with pytest.raises(SpecError, match=r"train.epochs: 1 -> 2"):
        run_coarse(with_overrides(spec, trials=6, epochs=2), "s.yaml", StageOptions(out=run, resume=True))


def test_a_resume_with_nothing_to_do_neither_loads_data_nor_rewrites_the_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpsearch.stages.coarse

    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=3)
    run_coarse(spec, "s.yaml", StageOptions(out=run))
    files = {p.name: p.read_bytes() for p in (run / "coarse").iterdir() if p.is_file()}
    loads: list[object] = []
    real_load = hpsearch.stages.coarse.load_data
    monkeypatch.setattr(hpsearch.stages.coarse, "load_data", lambda *a: loads.append(a) or real_load(*a))
    again = run_coarse(spec, "s.yaml", StageOptions(out=run, resume=True))
    assert again.resumed == 3
    assert len(again.ranked) == 3
    assert loads == []
    assert {p.name: p.read_bytes() for p in (run / "coarse").iterdir() if p.is_file()} == files


def test_a_stage_whose_learning_rates_are_too_high_says_so_in_one_line(tmp_path: Path) -> None:
    """The loss of lr 10..100 explodes; the stage says lower the lr range."""
    from helpers import cli

    spec = smoke_spec({"lr": {"low": 10.0, "high": 100.0, "log": True}}, trials=4)
    outcome = run_coarse(spec, "s.yaml", StageOptions(out=tmp_path / "run"))
    assert outcome.advice is not None
    assert "4 of 4 trials" in outcome.advice
    assert "the learning rate is too high" in outcome.advice
    assert "lower search.space.lr" in outcome.advice
    path = tmp_path / "spec.yaml"
    path.write_text(spec_to_yaml(spec))
    res = cli("coarse", str(path), "--out", str(tmp_path / "cli"))
    assert f"warning: {outcome.advice}" in res.stderr.splitlines()
