"""Refine: narrower around interior bests, outward past an edge, categorical values kept from the
top-k, nothing re-run, stages numbered; and the report's plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import ROOT, StopAfter, cli
from PIL import Image

from hpsearch.analysis.verdicts import Edge, RangeVerdict, Verdict, edges
from hpsearch.errors import SpecError, StageStopped, StoreError
from hpsearch.output.report import run_report
from hpsearch.runs.read import stages
from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.search.refine import plan_ranges
from hpsearch.spec.load import parse_spec
from hpsearch.spec.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.spec.schema import Categorical, NumericRange
from hpsearch.stages.coarse import run_coarse
from hpsearch.stages.refine import run_refine


def result(trial: int, val: float, **params: object) -> TrialResult:
    return TrialResult(trial=trial, state=TrialState.COMPLETE, params=dict(params), val_acc=val, train_loss=1.0)


def space(**entries: dict) -> dict:
    return parse_spec({"name": "x", "search": {"space": entries}}).search.space


def judged(sp: dict, top: list[TrialResult], **flags: str) -> list[Edge]:
    """The stage's range verdicts as the planner gets them: an edge past flags[name], else inside."""
    inside = RangeVerdict(Verdict.INSIDE, None, "")
    verdicts = {name: RangeVerdict(Verdict.EDGE, flags[name], "") if name in flags else inside for name in sp}
    return edges(sp, top[0], verdicts)


def log_width(dom: NumericRange) -> float:
    return math.log10(dom.high) - math.log10(dom.low)


def test_interior_best_gives_a_narrower_range_containing_it() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=5.8e-5), result(1, 0.52, lr=9.5e-5), result(2, 0.51, lr=3.1e-5)]
    (plan,) = plan_ranges(sp, top, judged(sp, top))
    new, old = plan.new, sp["lr"]
    assert isinstance(new, NumericRange)
    assert isinstance(old, NumericRange)
    assert new.log
    assert log_width(new) < log_width(old)
    assert new.low <= 3.1e-5  # spans the top-k
    assert new.high >= 9.5e-5
    assert old.low <= new.low  # stays inside: the best is interior
    assert new.high <= old.high
    assert "top-3 span 3.1e-05..9.5e-05" in plan.describe()


def test_an_edge_verdict_high_moves_the_range_above_the_old_high() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=9.6e-4), result(1, 0.50, lr=6.0e-4), result(2, 0.49, lr=3.0e-4)]
    (plan,) = plan_ranges(sp, top, judged(sp, top, lr="high"))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high > 1e-3
    assert plan.new.low <= 3.0e-4
    assert "accuracy points past the high edge: extended upward" in plan.describe()
    assert plan.describe().startswith("lr: [1e-06, 1e-03] → [")


def test_an_edge_verdict_low_moves_the_range_below_the_old_low() -> None:
    sp = space(weight_decay={"low": 1e-5, "high": 1e5, "log": True})
    top = [result(0, 0.5, weight_decay=1.5e-5), result(1, 0.4, weight_decay=1e-3)]
    (plan,) = plan_ranges(sp, top, judged(sp, top, weight_decay="low"))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.low < 1e-5
    assert plan.new.high >= 1e-3
    assert "extended downward" in plan.rule


def test_a_best_on_the_border_with_an_inside_verdict_narrows_inside() -> None:
    # One trial on the border is not an edge (verdicts.py): the range narrows, staying inside.
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=9.6e-4), result(1, 0.52, lr=5e-5), result(2, 0.51, lr=3e-5)]
    (plan,) = plan_ranges(sp, top, judged(sp, top))
    assert isinstance(plan.new, NumericRange)
    assert 1e-6 <= plan.new.low
    assert plan.new.high <= 1e-3
    assert "extended" not in plan.rule


def test_spread_out_top_trials_still_narrow_around_the_best() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.5, lr=1e-4), result(1, 0.4, lr=2e-6), result(2, 0.4, lr=8e-4)]
    (plan,) = plan_ranges(sp, top, judged(sp, top))
    assert isinstance(plan.new, NumericRange)
    assert log_width(plan.new) <= 0.5 * 3 + 1e-9
    assert plan.new.low < 1e-4 < plan.new.high


def test_linear_and_bounded_and_integer_parameters() -> None:
    sp = space(dropout={"low": 0.0, "high": 0.9}, batch_size={"low": 16, "high": 512, "log": True})
    top = [result(0, 0.5, dropout=0.89, batch_size=64), result(1, 0.4, dropout=0.7, batch_size=100)]
    plans = {p.name: p for p in plan_ranges(sp, top, judged(sp, top, dropout="high"))}
    dropout, batch = plans["dropout"].new, plans["batch_size"].new
    assert isinstance(dropout, NumericRange)
    assert isinstance(batch, NumericRange)
    assert 0.9 < dropout.high < 1.0  # extended past the old high, but dropout must stay below 1
    assert batch.low == int(batch.low)
    assert batch.high == int(batch.high)
    assert batch.low <= 64 <= batch.high


def test_categorical_keeps_the_values_seen_in_the_top_k() -> None:
    sp = space(activation={"values": ["relu", "tanh", "elu", "sigmoid"]})
    a = sp["activation"].values  # type: ignore[union-attr]
    top = [result(0, 0.5, activation=a[1]), result(1, 0.45, activation=a[0]), result(2, 0.4, activation=a[1])]
    (plan,) = plan_ranges(sp, top, [])
    assert isinstance(plan.new, Categorical)
    assert [v.value for v in plan.new.values] == ["relu", "tanh"]


def smoke_spec(space: dict, trials: int = 6) -> object:
    return parse_spec(
        {
            "name": "r",
            "data": {"dataset": "synthetic", "synthetic_train": 1200, "synthetic_test": 100, "val_size": 200},
            "model": {"hidden": [16]},
            "train": {"epochs": 1, "batch_size": 50, "device": "cpu", "lr_decay": 0.9},
            "search": {"trials": trials, "seed": 2, "space": space},
            "refine": {"top_k": 3, "epochs_factor": 2},
        }
    )


def test_refine_stages_are_numbered_train_longer_without_decay(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_coarse(smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}), "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    first = run_refine(run, RefineOptions(trials=3))
    second = run_refine(run, RefineOptions(trials=2))
    assert stages(run) == ["coarse", "refine-1", "refine-2"]
    assert (first.plan.previous, second.plan.previous) == ("coarse", "refine-1")
    doc = json.loads((run / "refine-2/results.json").read_text())
    assert [h["stage"] for h in doc["history"]] == ["coarse", "refine-1", "refine-2"]
    assert doc["history"][1]["ranges"]["lr"]["old"] == {"low": 1e-3, "high": 1.0, "log": True}
    assert doc["history"][1]["epochs"] == 2  # 2x each time
    assert doc["history"][2]["epochs"] == 4
    assert second.outcome is not None
    assert all(r.epochs_done == 4 for r in second.outcome.ranked if r.state is TrialState.COMPLETE)
    spec_text = (run / "refine-1/spec.yaml").read_text()
    assert "lr_decay: 1.0" in spec_text  # "without learning rate decay"


def test_refine_never_reruns_a_configuration_trained_at_the_same_budget(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = smoke_spec({"activation": {"values": ["relu", "tanh"]}}, trials=4)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"lr_decay": 1.0})})  # type: ignore[attr-defined]
    run_coarse(spec, "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    # The same epochs and schedule: both configurations are already trained; nothing runs again.
    same = run_refine(run, RefineOptions(epochs=1, trials=6))
    assert same.outcome is None
    assert len(same.plan.skipped) == 6
    assert stages(run) == ["coarse"]  # no empty stage is left behind
    # Longer: a new budget, so each trains, once, however often it is drawn.
    longer = run_refine(run, RefineOptions(epochs=2, trials=5))
    assert longer.outcome is not None
    kept = longer.plan.ranges[0].new.values  # type: ignore[union-attr]
    trained = [r.params["activation"] for r in longer.outcome.ranked]
    assert sorted(trained) == sorted(set(trained))
    assert set(trained) <= set(kept)
    assert len(trained) + len(longer.plan.skipped) == 5


def test_refine_without_a_stage_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no finished stage to refine"):
        run_refine(tmp_path, RefineOptions())


def test_report_plots_render_headless_and_rank_across_stages(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = smoke_spec(
        {"lr": {"low": 1e-3, "high": 1.0, "log": True}, "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True}}
    )
    run_coarse(spec, "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    run_refine(run, RefineOptions(trials=3))
    outcome = run_report(run)
    names = sorted(p.name for p in outcome.plots)
    assert names == ["accuracy_curves.png", "loss_curves.png", "lr_weight_decay.png", "val_acc_vs_params.png"]
    for path in outcome.plots:
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.width >= 600
            assert img.height >= 400
            assert len(set(img.convert("L").get_flattened_data())) > 20  # something is drawn, not a blank canvas
    doc = json.loads(outcome.results_path.read_text())
    assert sorted({r["stage"] for r in doc["ranked"]}) == ["coarse", "refine-1"]
    assert len(doc["ranked"]) == 9
    assert all("curve" in r for r in doc["ranked"])


def test_cli_refine_and_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = tmp_path / "s.yaml"
    spec.write_text((ROOT / "configs/smoke.yaml").read_text().replace("trials: 8", "trials: 4"))
    coarse = cli("coarse", str(spec), "--out", str(run))
    assert coarse.returncode == 0, coarse.stderr
    # Noise at the top, said on stderr once the table is out: tied trials, or a lead beyond noise (500 examples).
    (noise,) = [line for line in coarse.stderr.splitlines() if "500 validation examples" in line]
    assert "tied for best" in noise or "leads beyond noise" in noise
    assert "95% CI" in coarse.stdout
    res = cli("refine", str(run), "--trials", "2", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    assert "lr: [1e-04, 1] → [" in res.stderr
    # What it is about to train, said before it trains.
    assert "refine-1: 2 trials x 1 epochs (lr decay 1), planned from coarse's top" in res.stderr
    assert "refine-1" in res.stdout
    rep = cli("report", str(run))
    assert rep.returncode == 0, rep.stderr
    assert "stage" in rep.stdout
    header = next(line for line in rep.stdout.splitlines() if "rank" in line)
    assert "epochs" in header  # epochs are part of every comparison across stages
    assert rep.stderr.count("plot: ") == 4
    missing = cli("refine", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert "no finished stage to refine" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_edge_extension_is_bounded_even_when_the_top_trials_are_spread_out() -> None:
    sp = space(lr={"low": 1e-5, "high": 1.0, "log": True})
    top = [result(0, 0.5, lr=0.9), result(1, 0.4, lr=1e-4), result(2, 0.4, lr=1e-3), result(3, 0.3, lr=2e-5)]
    (plan,) = plan_ranges(sp, top, judged(sp, top, lr="high"))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high > 1.0  # outward
    assert log_width(plan.new) <= 0.5 * 5 + 0.01  # no wider than half (+ rounding)
    assert math.sqrt(plan.new.low * plan.new.high) == pytest.approx(1.0, rel=0.05)  # centred on the edge


def test_refine_and_rank_agree_on_the_best_trial_when_accuracies_tie() -> None:
    from hpsearch.analysis.rank import rank
    from hpsearch.search.refine import top_complete

    a = TrialResult(trial=0, state=TrialState.COMPLETE, params={}, val_acc=0.5, train_loss=2.0)
    b = TrialResult(trial=1, state=TrialState.COMPLETE, params={}, val_acc=0.5, train_loss=1.0)
    assert top_complete([a, b], 1)[0] is rank([a, b])[0] is b


def test_interrupted_refine_stage_is_refused_then_resumed_and_data_root_is_remembered(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=3)
    run_coarse(spec, "s.yaml", StageOptions(out=run, data_root=tmp_path / "data"))  # type: ignore[arg-type]
    run_refine(run, RefineOptions(trials=2))
    assert json.loads((run / "refine-1/run.json").read_text())["data_root"] == str(tmp_path / "data")
    one = ExecOptions(population=1, workers=1)
    with pytest.raises(StageStopped) as stopped:
        run_refine(run, RefineOptions(trials=3, execution=one), progress=StopAfter(1))  # type: ignore[arg-type]
    assert stopped.value.code == 130
    assert stopped.value.finished == 1
    with pytest.raises(StoreError, match="did not finish; finish it with hpsearch refine .* --resume"):
        run_refine(run, RefineOptions(trials=3))
    with pytest.raises(SpecError, match=r"the spec changed since this stage started \(search.trials: 3 -> 4\)"):
        run_refine(run, RefineOptions(trials=4, resume=True))
    resumed = run_refine(run, RefineOptions(trials=3, resume=True, execution=one))
    assert resumed.outcome is not None
    assert resumed.outcome.stage == "refine-2"
    assert resumed.outcome.resumed == 1
    assert sorted(r.trial for r in resumed.outcome.ranked) == [0, 1, 2]
    assert json.loads((run / "refine-2/run.json").read_text())["data_root"] == str(tmp_path / "data")


def test_searched_epochs_still_train_longer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}, "epochs": {"low": 1, "high": 2}}, trials=3)
    run_coarse(spec, "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    longer = run_refine(run, RefineOptions(trials=2))
    assert longer.outcome is not None
    assert all(r.epochs_done >= 2 for r in longer.outcome.ranked)  # epochs_factor 2 on a 1..2 range
    fixed = run_refine(run, RefineOptions(trials=2, epochs=1))
    assert fixed.outcome is not None
    assert all(r.epochs_done == 1 for r in fixed.outcome.ranked)


def test_the_refine_plan_is_pure_and_is_what_refine_then_trains(tmp_path: Path) -> None:
    from hpsearch.search.refine import plan_refine

    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=4)
    run_coarse(spec, "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    plan = plan_refine(run, RefineOptions(trials=3))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    assert plan.stage == "refine-1"
    assert plan.previous == "coarse"
    assert len(plan.configs) == 3
    lines = plan.describe()
    assert lines[0].startswith("lr: [1e-03, 1] → [")
    assert lines[-1].startswith("refine-1: 3 trials x 2 epochs (lr decay 1), planned from coarse's top 3")
    done = run_refine(run, RefineOptions(trials=3))
    assert done.outcome is not None
    assert sorted(r.params["lr"] for r in done.outcome.ranked) == sorted(c.params["lr"] for c in plan.configs)


def test_refine_dry_run_prints_the_plan_and_trains_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_coarse(smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}}, trials=4), "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    result = cli("refine", str(run), "--trials", "3", "--population", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "refine-1: 3 trials x 2 epochs" in result.stdout
    # What it would train, as coarse --dry-run says it: populations of --population 2, and a time.
    lines = result.stdout.splitlines()
    assert "6 trial-epochs to train" in lines
    assert "populations: 1 of 2, 1 of 1 trials, trained in 1 process" in lines
    assert any(line.startswith("estimated time: ~") and "population of 2:" in line for line in lines), lines
    assert not (run / "refine-1").exists()
    missing = cli("refine", str(tmp_path / "nope"), "--dry-run")
    assert missing.returncode == 1
    assert "no finished stage to refine" in missing.stderr


def test_searched_epochs_print_record_and_train_the_same_range(tmp_path: Path) -> None:
    """`epochs: [1, 3] -> [2, 4]` was once printed and recorded while the spec said 6..12."""
    from hpsearch.search.refine import plan_refine

    run = tmp_path / "run"
    spec = smoke_spec({"lr": {"low": 1e-3, "high": 1.0, "log": True}, "epochs": {"low": 1, "high": 3}}, trials=4)
    spec = spec.model_copy(update={"refine": spec.refine.model_copy(update={"epochs_factor": 3.0})})
    run_coarse(spec, "s.yaml", StageOptions(out=run))  # type: ignore[arg-type]
    plan = plan_refine(run, RefineOptions(trials=4))
    (epochs_plan,) = [p for p in plan.ranges if p.name == "epochs"]
    trained = plan.spec.search.space["epochs"]
    assert epochs_plan.new == trained  # what is printed is what the spec searches
    assert isinstance(trained, NumericRange)
    assert trained.low >= 3  # x3: longer training than the coarse stage's 1..3
    assert all(trained.low <= c.train.epochs <= trained.high for c in plan.configs)
    assert plan.history[-1]["ranges"]["epochs"]["new"] == {"low": trained.low, "high": trained.high, "log": False}
    shown = f"epochs: [1, 3] → [{trained.low:g}, {trained.high:g}]"
    assert any(line.startswith(shown) for line in plan.describe()), plan.describe()
    low, high = min(c.train.epochs for c in plan.configs), max(c.train.epochs for c in plan.configs)
    assert f"4 trials x {low}-{high} epochs" in plan.describe()[-1] or f"4 trials x {low} epochs" in plan.describe()[-1]
    fixed = plan_refine(run, RefineOptions(trials=4, epochs=2))
    (fixed_plan,) = [p for p in fixed.ranges if p.name == "epochs"]
    assert "epochs" not in fixed.spec.search.space
    assert fixed_plan.new is None
    assert "fixed at 2" in fixed_plan.describe()


# --------------------------------------------------------------------------- planning from the trials tied for best


# Six trials within noise of each other at 1000 validation examples (the best's interval is
# 0.469..0.531), then two clearly behind. By rank: lr 1e-2, 2e-2, 5e-3, then 3e-2, 8e-3, 1.5e-2.
NOISY = [(0.500, 1e-2), (0.499, 2e-2), (0.497, 5e-3), (0.495, 3e-2), (0.490, 8e-3), (0.485, 1.5e-2)]
BEHIND = [(0.30, 1e-3), (0.20, 0.3)]


def finished_coarse(run: Path, val_size: int | None = None, extra: Sequence[TrialResult] = ()) -> list[TrialResult]:
    """A finished coarse stage written by hand (no training): its spec, records, results and run.json."""
    from hpsearch.output.report import results_document
    from hpsearch.runs.store import StageStore
    from hpsearch.spec.edit import spec_to_yaml

    spec = parse_spec({"name": "t", "search": {"trials": 10, "space": {"lr": {"low": 1e-4, "high": 1.0, "log": True}}}})
    results = [result(i, acc, lr=lr) for i, (acc, lr) in enumerate(NOISY + BEHIND)] + list(extra)
    store = StageStore(run / "coarse")
    store.make_dir()
    store.write_text("spec.yaml", spec_to_yaml(spec))
    for r in results:
        store.append_trial(r)
    store.write_json("results.json", results_document("coarse", results, [], {}))
    if val_size is not None:
        store.write_json("run.json", {"num_classes": 10, "val_size": val_size})
    return results


def test_refine_plans_from_the_tied_set_when_it_is_larger_than_top_k(tmp_path: Path) -> None:
    from hpsearch.search.refine import plan_refine

    run = tmp_path / "run"
    finished_coarse(run)
    plan = plan_refine(run, RefineOptions(top_k=3, trials=4))
    assert plan.from_tied
    assert [r.trial for r in plan.top] == [0, 1, 2, 3, 4, 5]
    (lr,) = plan.ranges
    assert lr.rule.startswith("top-6 span 5e-03..0.03")  # the top 3 alone span 5e-03..0.02
    assert isinstance(lr.new, NumericRange)
    assert lr.new.low <= 5e-3
    assert lr.new.high >= 3e-2
    assert plan.describe()[-1].endswith(
        "planned from coarse's 6 trials tied for best, more than its top 3 "
        "(trials 0, 1, 2, 3, 4, 5: their 95% intervals overlap, 1000 validation examples)"
    )
    entry = plan.history[-1]
    assert (entry["top_k"], entry["top_trials"], entry["tied_trials"]) == (3, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
    assert entry["planned_from_tied"] is True
    assert entry["val_size"] == 1000

    # A top-k larger than the tied set wins, and the line says top-k as before.
    wide = plan_refine(run, RefineOptions(top_k=7, trials=4))
    assert not wide.from_tied
    assert [r.trial for r in wide.top] == [0, 1, 2, 3, 4, 5, 6]
    assert wide.describe()[-1].endswith("planned from coarse's top 7 (trials 0, 1, 2, 3, 4, 5, 6)")


def test_the_tied_set_is_judged_by_the_validation_count_run_json_recorded(tmp_path: Path) -> None:
    from hpsearch.search.refine import plan_refine

    run = tmp_path / "run"
    # 400,000 validation examples (an npz's own x_val: the spec's val_size says 1000): intervals of
    # +-0.15 points, and only 0.499 and 0.497 are within noise of 0.500.
    finished_coarse(run, val_size=400_000)
    plan = plan_refine(run, RefineOptions(top_k=3, trials=4))
    assert [r.trial for r in plan.tied] == [0, 1, 2]
    assert not plan.from_tied
    assert plan.describe()[-1].endswith("planned from coarse's top 3 (trials 0, 1, 2)")
    assert plan.history[-1]["val_size"] == 400_000


def test_a_trial_stopped_by_halving_was_not_trained_at_its_planned_budget(tmp_path: Path) -> None:
    from hpsearch.search.refine import trained_configs
    from hpsearch.spec.load import load_spec

    run = tmp_path / "run"
    stopped = TrialResult(trial=8, state=TrialState.STOPPED, params={"lr": 0.1}, val_acc=0.3, epochs_done=1, rung=0)
    results = finished_coarse(run, extra=[stopped])
    spec = load_spec(run / "coarse/spec.yaml")
    assert sorted(c.trial_id for c in trained_configs(spec, results)) == list(range(8))  # not trial 8


def test_an_unsampled_verdict_reaches_to_the_old_edge_and_keeps_the_top_trials() -> None:
    # Every trial drew lr below 0.011 of [1e-4, 1], and the fit rises toward the untried top: the
    # next stage searches up to 1 (was planned [0.1, 10], holding none of the top 5).
    sp = space(lr={"low": 1e-4, "high": 1.0, "log": True})
    top = [
        result(i, acc, lr=lr) for i, (lr, acc) in enumerate([(0.011, 0.85), (6e-3, 0.83), (8e-3, 0.82), (3e-3, 0.80)])
    ]
    verdicts = {"lr": RangeVerdict(Verdict.UNSAMPLED, "high", "")}
    (plan,) = plan_ranges(sp, top, edges(sp, top[0], verdicts))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high == 1.0  # reaches the old edge, not past it
    assert plan.new.low <= 3e-3  # holds every top trial
    assert "the upper part was not sampled: reaching to the old high edge" in plan.describe()


def test_an_edge_plan_never_leaves_out_the_trials_tied_with_the_best() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=9.6e-4), result(1, 0.52, lr=8.0e-4), result(2, 0.52, lr=2.1234e-6)]
    (plan,) = plan_ranges(sp, top, judged(sp, top, lr="high"), keep=top)
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high > 1e-3  # still moved past the edge the verdict points past...
    assert plan.new.low <= 2.1234e-6  # ...but rounded outward so the tied trial stays in
    assert plan.new.low == 2.12e-6
    assert "widened to hold the best and its ties (2.1e-06..9.6e-04)" in plan.describe()
