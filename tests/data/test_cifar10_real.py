"""Training on the real CIFAR-10 (rebuilt from ../shared): the two-layer net learns as it should."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT

from hpsearch.data import build_dataset
from hpsearch.runs.records import TrialConfig, TrialState
from hpsearch.spec.load import load_spec, with_overrides
from hpsearch.spec.options import StageOptions
from hpsearch.spec.schema import Spec, TrainSpec
from hpsearch.stages.coarse import run_coarse
from hpsearch.training.trial import run_trial

pytestmark = pytest.mark.slow


def test_one_epoch_of_the_two_layer_net_reaches_35_percent(cifar10_root: Path) -> None:
    spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    data = build_dataset(spec.data, cifar10_root)
    assert (len(data.x_train), len(data.x_val)) == (49_000, 1_000)
    train = TrainSpec.model_validate(
        {**spec.train.model_dump(), "epochs": 1, "lr": 0.01, "weight_decay": 1e-3, "device": "cpu"}
    )
    result = run_trial(TrialConfig(0, {}, spec.model, train, seed=0), data)
    assert result.state is TrialState.COMPLETE
    assert result.initial_loss == pytest.approx(2.303, abs=0.25)  # ln 10 for a 10-class softmax
    assert result.val_acc is not None
    assert result.val_acc >= 0.35, result.val_acc


def test_short_coarse_search_ranks_sensibly(cifar10_root: Path, tmp_path: Path) -> None:
    # A 6-point lr grid, one decade apart: 1e-5 barely moves in one epoch, 1e-2 trains well.
    raw = with_overrides(load_spec(ROOT / "configs/cifar10_coarse.yaml"), epochs=1).model_dump(mode="json")
    raw["search"] = {"trials": 6, "sampler": "grid", "space": {"lr": {"low": 1e-5, "high": 1.0, "log": True}}}
    spec = Spec.model_validate(raw)
    outcome = run_coarse(spec, "cifar10_coarse.yaml", StageOptions(out=tmp_path / "run", data_root=cifar10_root))
    by_lr = {round(r.params["lr"], 8): r for r in outcome.ranked}
    best = outcome.ranked[0]
    assert best.params["lr"] == pytest.approx(1e-2)  # the lecture-scale sweet spot for [0, 1] pixels
    assert best.val_acc is not None
    assert best.val_acc > 0.35
    assert by_lr[1e-5].val_acc is not None
    assert by_lr[1e-5].val_acc < 0.3  # too low: barely learns
    assert outcome.edges[0].flag is None  # the best is interior
    doc = json.loads((tmp_path / "run/coarse/results.json").read_text())
    assert doc["ranked"][0]["trial"] == best.trial
