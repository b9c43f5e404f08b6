"""Sanity checks against the lecture's known cases: ln(C) at init, the 0.01/0.05-std tanh nets vs
Xavier, overfitting 20 examples, and a learning-rate probe whose range really trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, cli

from hpsearch.data import Dataset, load_data
from hpsearch.sanity import (
    Verdict,
    check_activations,
    check_initial_loss,
    check_overfit,
    probe_learning_rates,
    run_sanity_checks,
)
from hpsearch.spec import Spec, load_spec, parse_spec

SYNTHETIC = {"dataset": "synthetic", "synthetic_train": 1500, "synthetic_test": 100, "val_size": 300}


def spec_with(model: dict[str, Any] | None = None, **train: Any) -> Spec:
    return parse_spec(
        {
            "name": "t",
            "data": SYNTHETIC,
            "model": {"hidden": [32], **(model or {})},
            "train": {"device": "cpu", **train},
        }
    )


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_data(spec_with(), None, None)


def test_a_sane_spec_passes_all_four(data: Dataset) -> None:
    report = run_sanity_checks(spec_with(lr=0.05), data)
    assert [c.check for c in report.checks] == ["initial_loss", "activations", "overfit", "lr_probe"]
    assert [c.verdict for c in report.checks] == [Verdict.PASS] * 4, [c.diagnosis for c in report.checks]
    assert not report.failed
    doc = json.loads(json.dumps(report.to_dict()))  # valid JSON
    assert doc["passed"] is True
    assert len(doc["lr_probe"]) == 4


def test_initial_loss_is_ln_10_and_regularization_raises_it(data: Dataset) -> None:
    check = check_initial_loss(spec_with(), data)
    assert check.verdict is Verdict.PASS
    assert check.numbers["expected"] == pytest.approx(2.302585)
    assert check.numbers["loss"] == pytest.approx(2.3026, abs=0.15)
    # The regularized loss is the data loss plus exactly 0.5 * wd * sum(W^2).
    assert check.numbers["loss_with_reg"] == pytest.approx(check.numbers["loss"] + check.numbers["penalty"], rel=1e-4)


def test_init_std_10_fails_the_initial_loss(data: Dataset) -> None:
    check = check_initial_loss(spec_with({"init": "small_random", "init_std": 10}), data)
    assert check.verdict is Verdict.FAIL
    assert "≫ ln 10 = 2.30: initial weights too large, logits not near zero" in check.diagnosis
    assert check.numbers["loss"] > 10


# The lecture's experiment: 6 tanh layers of 4096 units (slow-ish: ~3 s each on 2 cores).
LECTURE_NET = {"hidden": [4096] * 6, "activation": "tanh"}


def test_deep_tanh_with_0_01_std_collapses(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "small_random", "init_std": 0.01}), data)
    assert check.verdict is Verdict.FAIL
    assert "collapse toward zero" in check.diagnosis
    assert len(layers) == 6
    assert all(b.std < a.std for a, b in zip(layers, layers[1:], strict=False))  # shrinks layer by layer
    assert layers[-1].std / layers[0].std < 0.2


def test_deep_tanh_with_0_05_std_saturates(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "small_random", "init_std": 0.05}), data)
    assert check.verdict is Verdict.FAIL
    assert "saturated" in check.diagnosis
    assert layers[-1].saturated is not None
    assert layers[-1].saturated > 0.2


def test_deep_tanh_with_xavier_is_nicely_scaled(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "xavier"}), data)
    assert check.verdict is Verdict.PASS, check.diagnosis
    assert 0.8 < layers[-1].std / layers[0].std < 1.2


def test_deep_relu_kaiming_passes_xavier_collapses(data: Dataset) -> None:
    deep = {"hidden": [1024] * 6, "activation": "relu"}
    kaiming, _ = check_activations(spec_with({**deep, "init": "kaiming"}), data)
    xavier, _ = check_activations(spec_with({**deep, "init": "xavier"}), data)
    assert kaiming.verdict is Verdict.PASS
    assert xavier.verdict is Verdict.FAIL
    assert "collapse" in xavier.diagnosis  # "Xavier assumes zero-centred"


def test_dead_relus_are_flagged(data: Dataset) -> None:
    check, layers = check_activations(spec_with({"hidden": [64], "bias_init": -100.0}), data)
    assert check.verdict is Verdict.FAIL
    assert "dead" in check.diagnosis
    assert layers[0].dead == 1.0


def test_overfit_passes_with_a_good_lr(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=0.05), data)
    assert check.verdict is Verdict.PASS
    assert check.numbers["train_acc"] == 1.0
    assert check.numbers["examples"] == 20


def test_overfit_lr_too_low(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=1e-9), data)
    assert check.verdict is Verdict.FAIL
    assert check.diagnosis == "loss not going down: learning rate too low or bad initialization"


def test_overfit_lr_too_high(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=1e3), data)
    assert check.verdict is Verdict.FAIL
    assert "learning rate too high or bad initialization" in check.diagnosis


def test_probe_flags_divergence_and_caps_the_range(data: Dataset) -> None:
    spec = spec_with(optimizer="sgd")
    spec = parse_spec({**spec.model_dump(mode="json"), "sanity": {"probe_lrs": [1e4, 1e-1, 1e-2, 1e-5]}})
    check, rows, recommended = probe_learning_rates(spec, data)
    by_lr = {r.lr: r for r in rows}
    assert by_lr[1e4].diverged
    assert not by_lr[1e-1].diverged
    assert by_lr[1e-5].drop < 0.05  # too small to move the loss in 100 iterations
    assert recommended is not None
    assert recommended[1] <= 1e4
    assert recommended[0] < check.numbers["best_lr"] < recommended[1]


def test_probe_fails_when_nothing_trains(data: Dataset) -> None:
    spec = parse_spec({**spec_with().model_dump(mode="json"), "sanity": {"probe_lrs": [1e-9, 1e-10]}})
    check, _, recommended = probe_learning_rates(spec, data)
    assert check.verdict is Verdict.FAIL
    assert recommended is None


@pytest.mark.slow
def test_probe_on_real_cifar10_recommends_a_range_that_trains(cifar10_root: Path) -> None:
    from hpsearch.records import TrialConfig
    from hpsearch.trial import run_trial

    spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    data = load_data(
        spec.model_copy(update={"train": spec.train.model_copy(update={"device": "cpu"})}), cifar10_root, None
    )
    check, _, recommended = probe_learning_rates(spec, data)
    assert check.verdict is Verdict.PASS
    assert recommended is not None
    low, high = recommended
    # Train the two-layer net for one epoch at the range's geometric middle and at its ends' insides.
    middle = (low * high) ** 0.5
    accs = {}
    for lr in (middle, low * 2):
        train = spec.train.model_copy(update={"lr": lr, "epochs": 1, "device": "cpu", "weight_decay": 1e-4})
        accs[lr] = run_trial(TrialConfig(0, {}, spec.model, train, 0), data).val_acc
    assert accs[middle] is not None, accs
    assert accs[middle] >= 0.38, accs  # trains well
    assert all(a is not None and a > 0.3 for a in accs.values()), accs


def test_cli_passes_writes_report_and_spec(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        (ROOT / "configs/smoke.yaml").read_text().replace("  lr_decay: 0.95", "  lr_decay: 0.95\n  lr: 0.05")
    )
    out_spec = tmp_path / "next.yaml"
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--write-spec", str(out_spec))
    assert res.returncode == 0, res.stderr
    for word in ("initial_loss", "activations", "overfit", "lr_probe", "PASS"):
        assert word in res.stdout
    assert "report:" in res.stderr
    assert "report:" not in res.stdout
    doc = json.loads((tmp_path / "run/sanity/report.json").read_text())
    assert doc["passed"] is True
    assert doc["recommended_lr"]
    written = load_spec(out_spec)
    low, high = doc["recommended_lr"]
    lr = written.search.space["lr"]
    assert (lr.low, lr.high, lr.log) == (pytest.approx(low), pytest.approx(high), True)  # type: ignore[union-attr]
    assert "weight_decay" in written.search.space  # the rest of the space is kept
    again = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--write-spec", str(out_spec))
    assert again.returncode == 1  # never overwrites a file
    assert "already exists" in again.stderr


def test_cli_json_and_exit_code_1_on_failure(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ndata: {dataset: synthetic, synthetic_train: 1200, val_size: 200}\n"
        "model: {hidden: [32], init: small_random, init_std: 10}\ntrain: {device: cpu}\n"
    )
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)  # stdout is pure JSON
    verdicts = {c["check"]: c["verdict"] for c in doc["checks"]}
    assert verdicts["initial_loss"] == "FAIL"
    assert doc["passed"] is False
