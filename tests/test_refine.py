"""Refine: narrower around interior bests, outward past an edge, categorical values kept from the
top-k, nothing re-run, stages numbered; and the report's plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import ROOT, StopAfter, cli
from PIL import Image

from hpsearch.errors import SpecError, StageStopped, StoreError
from hpsearch.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.rank import edges
from hpsearch.records import TrialResult, TrialState
from hpsearch.refine import plan_ranges, stages
from hpsearch.report import run_report
from hpsearch.search import run_coarse, run_refine
from hpsearch.spec import Categorical, NumericRange, parse_spec


def result(trial: int, val: float, **params: object) -> TrialResult:
    return TrialResult(trial=trial, state=TrialState.COMPLETE, params=dict(params), val_acc=val, train_loss=1.0)


def space(**entries: dict) -> dict:
    return parse_spec({"name": "x", "search": {"space": entries}}).search.space


def log_width(dom: NumericRange) -> float:
    return math.log10(dom.high) - math.log10(dom.low)


def test_interior_best_gives_a_narrower_range_containing_it() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=5.8e-5), result(1, 0.52, lr=9.5e-5), result(2, 0.51, lr=3.1e-5)]
    (plan,) = plan_ranges(sp, top, edges(sp, top[0]))
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


def test_best_at_high_edge_moves_the_range_above_the_old_high() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.53, lr=9.6e-4), result(1, 0.50, lr=6.0e-4), result(2, 0.49, lr=3.0e-4)]
    (edge,) = edges(sp, top[0])
    assert edge.flag == "high"
    (plan,) = plan_ranges(sp, top, [edge])
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high > 1e-3
    assert plan.new.low <= 3.0e-4
    assert "best at high edge: extended upward" in plan.describe()
    assert plan.describe().startswith("lr: [1e-06, 1e-03] → [")


def test_best_at_low_edge_moves_the_range_below_the_old_low() -> None:
    sp = space(weight_decay={"low": 1e-5, "high": 1e5, "log": True})
    top = [result(0, 0.5, weight_decay=1.5e-5), result(1, 0.4, weight_decay=1e-3)]
    (plan,) = plan_ranges(sp, top, edges(sp, top[0]))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.low < 1e-5
    assert plan.new.high >= 1e-3
    assert "extended downward" in plan.rule


def test_spread_out_top_trials_still_narrow_around_the_best() -> None:
    sp = space(lr={"low": 1e-6, "high": 1e-3, "log": True})
    top = [result(0, 0.5, lr=1e-4), result(1, 0.4, lr=2e-6), result(2, 0.4, lr=8e-4)]
    (plan,) = plan_ranges(sp, top, edges(sp, top[0]))
    assert isinstance(plan.new, NumericRange)
    assert log_width(plan.new) <= 0.5 * 3 + 1e-9
    assert plan.new.low < 1e-4 < plan.new.high


def test_linear_and_bounded_and_integer_parameters() -> None:
    sp = space(dropout={"low": 0.0, "high": 0.9}, batch_size={"low": 16, "high": 512, "log": True})
    top = [result(0, 0.5, dropout=0.89, batch_size=64), result(1, 0.4, dropout=0.7, batch_size=100)]
    plans = {p.name: p for p in plan_ranges(sp, top, edges(sp, top[0]))}
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
    res = cli("refine", str(run), "--trials", "2", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    assert "lr: [1e-04, 1] → [" in res.stderr
    # What it is about to train, said before it trains (issue 12 item 14).
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
    (plan,) = plan_ranges(sp, top, edges(sp, top[0]))
    assert isinstance(plan.new, NumericRange)
    assert plan.new.high > 1.0  # outward
    assert log_width(plan.new) <= 0.5 * 5 + 0.01  # no wider than half (+ rounding)
    assert math.sqrt(plan.new.low * plan.new.high) == pytest.approx(1.0, rel=0.05)  # centred on the edge


def test_refine_and_rank_agree_on_the_best_trial_when_accuracies_tie() -> None:
    from hpsearch.rank import rank
    from hpsearch.refine import top_complete

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
    from hpsearch.refine import plan_refine

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
    result = cli("refine", str(run), "--trials", "3", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "refine-1: 3 trials x 2 epochs" in result.stdout
    assert not (run / "refine-1").exists()
    missing = cli("refine", str(tmp_path / "nope"), "--dry-run")
    assert missing.returncode == 1
    assert "no finished stage to refine" in missing.stderr


def test_searched_epochs_print_record_and_train_the_same_range(tmp_path: Path) -> None:
    """Issue 12 item 3: `epochs: [1, 3] -> [2, 4]` was printed and recorded while the spec said 6..12."""
    from hpsearch.refine import plan_refine

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
