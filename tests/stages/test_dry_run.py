"""`coarse --dry-run`: the plan (trials, populations, epochs or rungs, sampler) is what the stage
would train, its time is the timed step scaled by the planned trial-epochs, and nothing is written,
trained or downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, cli

from hpsearch.spec.load import parse_spec
from hpsearch.stages import plan as stage_plan
from hpsearch.stages.plan import StagePlan, Timing

SMOKE = (ROOT / "configs/smoke.yaml").read_text()


def smoke(tmp_path: Path, trials: int = 10, extra: str = "") -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(SMOKE.replace("trials: 8", f"trials: {trials}") + extra)
    return spec


def test_a_halving_plan_counts_each_rungs_trial_epochs_and_scales_the_timed_step() -> None:
    spec = parse_spec(
        {"name": "h", "train": {"epochs": 9}, "search": {"trials": 27, "halving": {"eta": 3, "min_epochs": 1}}}
    )
    plan = StagePlan("coarse", spec, 27, [9] * 27, "sampler random", [16, 11], "in 1 process")
    assert plan.rungs == [1, 3, 9]
    assert plan.trial_epochs == 27 * 1 + 9 * (3 - 1) + 3 * (9 - 3)  # 63: each rung from the last one's end
    timed = StagePlan(
        "coarse", spec, 27, [9] * 27, "sampler random", [16, 11], "in 1 process", Timing(0.02, 10, 16, 0, 490)
    )
    assert timed.estimate_seconds == pytest.approx(0.02 * 490 / 16 * 63)
    lines = timed.describe()
    assert "successive halving (eta 3): 27 to epoch 1, 9 to epoch 3, 3 to epoch 9 (63 trial-epochs at most)" in lines
    assert "rung 0's populations: 1 of 16, 1 of 11 trials, trained in 1 process" in lines
    assert any(line.startswith("estimated time: at most ~39 s of training (from 10 timed steps") for line in lines)


def test_coarse_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One step of the population of 4 "takes" 0.4 s: 2,500 training examples in batches of 100 are
    # 25 steps an epoch, so a trial-epoch is 0.4 x 25 / 4 = 2.5 s, and 10 trials x 2 epochs are 50 s.
    timed: list[list[int]] = []

    def step_seconds(pop: list, data: object) -> tuple[float, int]:  # type: ignore[type-arg]
        timed.append([c.trial_id for c in pop])
        return 0.4, 10

    monkeypatch.setattr(stage_plan, "step_seconds", step_seconds)
    spec = smoke(tmp_path)
    res = cli("coarse", str(spec), "--population", "4", "--out", str(tmp_path / "run"), "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:3] == [
        "coarse: 10 trials x 2 epochs, sampler random, seed 0",
        "20 trial-epochs to train",
        "populations: 2 of 4, 1 of 2 trials, trained in 1 process",  # trials 0-3, 4-7, 8-9
    ]
    assert lines[3].startswith(
        "estimated time: ~50 s of training (from 10 timed steps of trial 0's population of 4: 0.4 s a step x 25 "
        "steps an epoch / 4 = 2.5 s a trial-epoch, x 20;"
    )
    assert timed == [[0, 1, 2, 3]]  # the first population is the one timed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no run directory, no runs/


def test_coarse_dry_run_times_real_steps(tmp_path: Path) -> None:
    res = cli("coarse", str(smoke(tmp_path, trials=3)), "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    estimate = next(line for line in res.stdout.splitlines() if line.startswith("estimated time: "))
    assert "of trial 0's population of 3:" in estimate, estimate
    step = float(estimate.split("population of 3: ")[1].split(" s a step")[0])
    assert 0 < step < 5
    assert not (tmp_path / "runs").exists()


def test_coarse_dry_run_without_the_data_downloads_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(
        "name: c\ndata: {dataset: cifar10}\ntrain: {epochs: 1, device: cpu}\n"
        "search: {trials: 4, space: {lr: {low: 1.0e-3, high: 1.0, log: true}}}\n"
    )
    root = tmp_path / "empty"
    root.mkdir()
    res = cli("coarse", str(spec), "--data-root", str(root), "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "populations: sized from memory once the data is loaded" in res.stdout
    assert (
        "estimated time: not estimated: a dry run downloads nothing (training will): CIFAR-10 not found" in res.stdout
    )
    assert list(root.iterdir()) == []
    assert not (tmp_path / "runs").exists()


def test_coarse_dry_run_with_resume_is_a_usage_error(tmp_path: Path) -> None:
    res = cli("coarse", str(smoke(tmp_path)), "--dry-run", "--resume", cwd=tmp_path)
    assert res.returncode == 2
    assert "--dry-run plans a new stage: leave out --resume" in res.stderr
