"""Sanity checks against the lecture's known cases: ln(C) at init, the 0.01/0.05-std tanh nets vs
Xavier, overfitting 20 examples, and a learning-rate probe whose range really trains."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import ROOT, cli

from hpsearch.data import Dataset, load_data
from hpsearch.errors import SpecError
from hpsearch.sanity import base, initial, probe
from hpsearch.sanity.activations import check_activations
from hpsearch.sanity.checks import run_sanity_checks
from hpsearch.sanity.initial import check_initial_loss
from hpsearch.sanity.overfit import check_overfit
from hpsearch.sanity.probe import (
    ProbeOutcome,
    judge_probe,
    lr_range_hint,
    probe_learning_rates,
    probe_row,
    share_outside,
    spec_with_lr_range,
    written_lr_range,
)
from hpsearch.sanity.results import CheckVerdict, ProbeStatus
from hpsearch.spec.load import load_spec, parse_spec
from hpsearch.spec.schema import NumericRange, Spec
from hpsearch.training.trial import batch_order

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
    # Probed lrs on both sides of the best (0.1 on this easy data), so the probe brackets it.
    spec = spec_with(lr=0.05)
    spec = parse_spec({**spec.model_dump(mode="json"), "sanity": {"probe_lrs": [1, 0.1, 0.01, 1e-4]}})
    report = run_sanity_checks(spec, data)
    assert [c.check for c in report.checks] == ["initial_loss", "activations", "overfit", "lr_probe"]
    assert [c.verdict for c in report.checks] == [CheckVerdict.PASS] * 4, [c.diagnosis for c in report.checks]
    assert not report.failed
    doc = json.loads(json.dumps(report.to_dict()))  # valid JSON
    assert doc["passed"] is True
    assert [(r["lr"], r["status"]) for r in doc["lr_probe"]] == [
        (1, "exploded"),
        (0.1, "fell"),
        (0.01, "fell"),
        (1e-4, "barely moved"),
    ]


def test_initial_loss_is_ln_10_and_regularization_raises_it(data: Dataset) -> None:
    check = check_initial_loss(spec_with(), data)
    assert check.verdict is CheckVerdict.PASS
    assert check.numbers["expected"] == pytest.approx(2.302585)
    assert check.numbers["loss"] == pytest.approx(2.3026, abs=0.15)
    # The regularized loss is the data loss plus exactly 0.5 * wd * sum(W^2).
    assert check.numbers["loss_with_reg"] == pytest.approx(check.numbers["loss"] + check.numbers["penalty"], rel=1e-4)


def test_init_std_10_fails_the_initial_loss(data: Dataset) -> None:
    check = check_initial_loss(spec_with({"init": "small_random", "init_std": 10}), data)
    assert check.verdict is CheckVerdict.FAIL
    assert "≫ ln 10 = 2.30: initial weights too large, logits not near zero" in check.diagnosis
    assert check.numbers["loss"] > 10


# The lecture's experiment: 6 tanh layers of 4096 units (slow-ish: ~3 s each on 2 cores).
LECTURE_NET = {"hidden": [4096] * 6, "activation": "tanh"}


def test_deep_tanh_with_0_01_std_collapses(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "small_random", "init_std": 0.01}), data)
    assert check.verdict is CheckVerdict.FAIL
    assert "collapse toward zero" in check.diagnosis
    assert len(layers) == 6
    assert all(b.std < a.std for a, b in zip(layers, layers[1:], strict=False))  # shrinks layer by layer
    assert layers[-1].std / layers[0].std < 0.2


def test_deep_tanh_with_0_05_std_saturates(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "small_random", "init_std": 0.05}), data)
    assert check.verdict is CheckVerdict.FAIL
    assert "saturated" in check.diagnosis
    assert layers[-1].saturated is not None
    assert layers[-1].saturated > 0.2


def test_deep_tanh_with_xavier_is_nicely_scaled(data: Dataset) -> None:
    check, layers = check_activations(spec_with({**LECTURE_NET, "init": "xavier"}), data)
    assert check.verdict is CheckVerdict.PASS, check.diagnosis
    assert 0.8 < layers[-1].std / layers[0].std < 1.2


def test_deep_relu_kaiming_passes_xavier_collapses(data: Dataset) -> None:
    deep = {"hidden": [1024] * 6, "activation": "relu"}
    kaiming, _ = check_activations(spec_with({**deep, "init": "kaiming"}), data)
    xavier, _ = check_activations(spec_with({**deep, "init": "xavier"}), data)
    assert kaiming.verdict is CheckVerdict.PASS
    assert xavier.verdict is CheckVerdict.FAIL
    assert "collapse" in xavier.diagnosis  # "Xavier assumes zero-centred"


def test_dead_relus_are_flagged(data: Dataset) -> None:
    check, layers = check_activations(spec_with({"hidden": [64], "bias_init": -100.0}), data)
    assert check.verdict is CheckVerdict.FAIL
    assert "dead" in check.diagnosis
    assert layers[0].dead == 1.0


def test_overfit_passes_with_a_good_lr(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=0.05), data)
    assert check.verdict is CheckVerdict.PASS
    assert check.numbers["train_acc"] == 1.0
    assert check.numbers["examples"] == 20


def test_overfit_lr_too_low(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=1e-9), data)
    assert check.verdict is CheckVerdict.FAIL
    assert check.diagnosis == "loss not going down: learning rate too low or bad initialization"


def test_overfit_lr_too_high(data: Dataset) -> None:
    check = check_overfit(spec_with(lr=1e3), data)
    assert check.verdict is CheckVerdict.FAIL
    assert "learning rate too high or bad initialization" in check.diagnosis


def test_probe_flags_divergence_and_caps_the_range(data: Dataset) -> None:
    spec = spec_with(optimizer="sgd")
    spec = parse_spec({**spec.model_dump(mode="json"), "sanity": {"probe_lrs": [1e4, 1e-1, 1e-2, 1e-5]}})
    check, rows, recommended = probe_learning_rates(spec, data)
    by_lr = {r.lr: r for r in rows}
    assert by_lr[1e4].diverged
    assert by_lr[1e4].status is ProbeStatus.DIVERGED
    assert not by_lr[1e-1].diverged
    assert by_lr[1e-1].status is ProbeStatus.FELL
    assert by_lr[1e-5].drop < 0.05  # too small to move the loss in 100 iterations
    assert by_lr[1e-5].status is ProbeStatus.BARELY_MOVED
    assert recommended is not None
    assert recommended[1] <= 1e4
    assert recommended[0] < check.numbers["best_lr"] < recommended[1]


def test_probe_fails_when_nothing_trains(data: Dataset) -> None:
    spec = parse_spec({**spec_with().model_dump(mode="json"), "sanity": {"probe_lrs": [1e-9, 1e-10]}})
    check, _, recommended = probe_learning_rates(spec, data)
    assert check.verdict is CheckVerdict.FAIL
    assert recommended is None


def test_probe_calls_the_deep_tanh_nets_rising_loss_rose_not_ok(data: Dataset) -> None:
    # On a deep tanh net a loss that rose ("0.01: -13.6%") was shown as ok. Here vanilla
    # SGD at lr 3 makes this 4-layer tanh net's loss rise ~20% in 100 iterations; lr 1 trains it.
    spec = spec_with({"hidden": [32] * 4, "activation": "tanh", "init": "xavier"}, optimizer="sgd")
    spec = parse_spec({**spec.model_dump(mode="json"), "sanity": {"probe_lrs": [3, 1, 1e-4]}})
    check, rows, recommended = probe_learning_rates(spec, data)
    assert "3: -" in check.measured, check.measured
    assert "% rose" in check.measured, check.measured
    by_lr = {r.lr: r for r in rows}
    assert by_lr[3].drop < -0.05
    assert [r.status for r in rows] == [ProbeStatus.ROSE, ProbeStatus.FELL, ProbeStatus.BARELY_MOVED]
    assert check.verdict is CheckVerdict.PASS
    assert check.numbers["best_lr"] == 1
    assert recommended == pytest.approx((0.1, 3))  # a decade below the best, capped where the loss rose


def fake_probe(monkeypatch: pytest.MonkeyPatch, data: Dataset, curves: dict[float, list[float]]) -> ProbeOutcome:
    """probe_learning_rates with each lr's per-iteration losses given instead of trained."""
    monkeypatch.setattr(probe, "_probe_losses", lambda _spec, _data, lr: curves[lr])
    spec = parse_spec({**spec_with().model_dump(mode="json"), "sanity": {"probe_lrs": list(curves)}})
    return probe_learning_rates(spec, data)


def line(start: float, end: float, n: int = 100) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)]


def step(start: float, end: float, n: int = 100) -> list[float]:
    """A loss that moves at once and stays: its drop is exactly (start - end) / start."""
    return [start] + [end] * (n - 1)


def fell_then_rose(start: float, lowest: float, end: float) -> list[float]:
    return line(start, lowest, 50) + line(lowest, end, 50)


@pytest.mark.parametrize(
    ("losses", "status"),
    [
        (line(2.3, 1.8), ProbeStatus.FELL),  # -22% at the end
        (line(2.3, 2.2), ProbeStatus.BARELY_MOVED),  # -4%: lr too low
        (line(2.3, 2.35), ProbeStatus.BARELY_MOVED),  # +2%: batch noise, not a rise
        (line(2.3, 2.62), ProbeStatus.ROSE),  # the "-13.6%" once shown as ok
        (line(2.3, 6.0), ProbeStatus.EXPLODED),
        ([2.3, 5.0, float("nan")], ProbeStatus.DIVERGED),
        (fell_then_rose(2.3, 1.0, 1.9), ProbeStatus.REBOUNDED),  # ends 17% below its start, far above its lowest
        (fell_then_rose(2.3, 0.5, 0.52), ProbeStatus.FELL),  # noise at the bottom is not a rebound
    ],
)
def test_probe_status_says_what_the_loss_did(losses: list[float], status: ProbeStatus) -> None:
    row = probe.probe_row(0.1, losses)
    assert row.status is status
    assert row.status.too_high == (status not in {ProbeStatus.FELL, ProbeStatus.BARELY_MOVED})


def test_probe_summary_gives_an_exploded_loss_as_a_factor() -> None:
    rows = [probe_row(1.0, [2.3] * 10 + [2.3e20] * 10), probe_row(0.1, [2.3] * 10 + [1.5] * 10)]
    check, _, _ = judge_probe(rows, 20)
    assert "1: x1e+20 exploded, 0.1: +35% fell" in check.measured


def test_probe_status_labels_say_too_low_or_too_high() -> None:
    assert [s.label for s in ProbeStatus] == [
        "fell: ok",
        "barely moved: lr too low",
        "fell then rose: lr too high",
        "rose: lr too high",
        "exploded: lr too high",
        "diverged: lr too high",
    ]


def test_probe_range_comes_only_from_lrs_whose_loss_fell(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    # 0.01 moved the loss 9.9%, within 80% of the best's 12% but short of "fell" (10%): it is not
    # "as good as the best", so the range centres on 0.1 alone and stops at 1, where the loss rose.
    curves = {1.0: step(2.3, 2.62), 0.1: step(2.3, 2.3 * 0.88), 0.01: step(2.3, 2.3 * 0.901), 0.001: step(2.3, 2.3)}
    check, rows, recommended = fake_probe(monkeypatch, data, curves)
    assert recommended == pytest.approx((0.01, 1.0))
    assert check.numbers["good_lrs"] == [0.1]
    assert [r.status.value for r in rows] == ["rose", "fell", "barely moved", "barely moved"]
    assert check.verdict is CheckVerdict.PASS
    assert check.numbers["too_high"] == [1.0]
    assert check.measured == (
        "loss drop in 100 iterations: 1: -14% rose, 0.1: +12% fell, 0.01: +10% barely moved, 0.001: +0% barely moved"
    )


def test_probe_never_says_try_larger_when_a_larger_lr_rose(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    curves = {
        1.0: [2.3, float("inf")],
        0.1: fell_then_rose(2.3, 2.0, 2.5),
        0.01: line(2.3, 2.25),
        0.001: line(2.3, 2.3),
    }
    check, _, recommended = fake_probe(monkeypatch, data, curves)
    assert check.verdict is CheckVerdict.FAIL
    assert recommended is None
    assert check.diagnosis == (
        "the loss barely moved at lr ≤ 0.01 and rose at lr ≥ 0.1: probe between them, "
        "or check the initialization (see activation statistics)"
    )


def test_probe_failure_advice_points_away_from_the_bad_side(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    flat = {0.1: line(2.3, 2.28), 0.01: line(2.3, 2.3)}
    check, _, _ = fake_probe(monkeypatch, data, flat)
    assert check.diagnosis == (
        "the loss barely moved (fell < 10% in 100 iterations) at every lr probed: learning rate too low; "
        "try ones above 0.1, or check the model and data"
    )
    high = {0.1: [2.3, float("nan")], 0.01: line(2.3, 2.9)}
    check, _, _ = fake_probe(monkeypatch, data, high)
    assert (
        check.diagnosis == "the loss rose or diverged at every lr probed: learning rate too high; try ones below 0.01"
    )


def test_probe_warns_when_the_best_is_the_largest_probed(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    curves = {0.1: line(2.3, 1.6), 0.01: line(2.3, 2.0), 0.001: line(2.3, 2.28)}
    check, _, recommended = fake_probe(monkeypatch, data, curves)
    assert check.verdict is CheckVerdict.WARN  # as the coarse search warns of a best value on its range's edge
    assert check.numbers["edge"] == "high"
    assert check.diagnosis.endswith(
        "; best lr 0.1 is the largest probed: the best may lie above; probe higher (sanity.probe_lrs)"
    )
    assert recommended == pytest.approx((0.01, 1.0))  # still a range to search (and for --write-spec)


def test_probe_warns_when_the_best_is_the_smallest_probed(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    curves = {0.1: line(2.3, 9.0), 0.01: line(2.3, 2.6), 0.001: line(2.3, 1.8)}
    check, _, recommended = fake_probe(monkeypatch, data, curves)
    assert check.verdict is CheckVerdict.WARN
    assert check.numbers["edge"] == "low"
    assert check.diagnosis.endswith(
        "; best lr 0.001 is the smallest probed: the best may lie below; probe lower (sanity.probe_lrs)"
    )
    assert recommended == pytest.approx((1e-4, 0.01))  # capped at 0.01, where the loss rose


def test_probe_of_one_lr_warns_that_it_brackets_nothing(monkeypatch: pytest.MonkeyPatch, data: Dataset) -> None:
    check, _, recommended = fake_probe(monkeypatch, data, {0.01: step(2.3, 1.8)})
    assert check.verdict is CheckVerdict.WARN
    assert check.diagnosis.endswith(
        "; best lr 0.01 is the only one probed: the best may lie either side; add lrs to sanity.probe_lrs"
    )
    assert recommended == pytest.approx((1e-3, 0.1))


@pytest.mark.slow
def test_probe_on_real_cifar10_recommends_a_range_that_trains(cifar10_root: Path) -> None:
    from hpsearch.runs.records import TrialConfig
    from hpsearch.training.trial import run_trial

    spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    # The default lrs' best, 0.1, is the largest of them (a WARN); 1, where the loss explodes, brackets it.
    spec = parse_spec({**spec.model_dump(mode="json"), "sanity": {"probe_lrs": [1, 0.1, 0.01, 1e-3, 1e-4]}})
    data = load_data(
        spec.model_copy(update={"train": spec.train.model_copy(update={"device": "cpu"})}), cifar10_root, None
    )
    check, rows, recommended = probe_learning_rates(spec, data)
    assert check.verdict is CheckVerdict.PASS, check.diagnosis
    assert rows[0].status is ProbeStatus.EXPLODED
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
    written_low, written_high = written_lr_range(low, high)  # 3 significant digits
    assert (lr.low, lr.high, lr.log) == (written_low, written_high, True)  # type: ignore[union-attr]
    assert "weight_decay" in written.search.space  # the rest of the space is kept
    assert written == spec_with_lr_range(load_spec(spec), written_low, written_high)  # and everything else
    text = out_spec.read_text()
    # the user's keys, not every default
    assert "null" not in text
    assert "probe_lrs" not in text
    assert "lr_decay: 0.95" in text

    # The user's file line for line (its comments too), the searched lr range the one line changed.
    def others(lines: list[str]) -> list[str]:
        return [line for line in lines if not line.startswith("    lr: {")]

    assert text.startswith("# Written by hpsearch sanity-check from ")
    assert others(text.splitlines()[1:]) == others(spec.read_text().splitlines())
    assert "# images, of which the last val_size are the validation split" in text
    again = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--write-spec", str(out_spec))
    assert again.returncode == 1  # never overwrites a file
    assert "already exists" in again.stderr


def test_cli_json_and_exit_code_1_on_failure(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ndata: {dataset: synthetic, synthetic_train: 1200, val_size: 200}\n"
        "model: {hidden: [32], init: small_random, init_std: 10}\ntrain: {device: cpu}\n"
        "sanity: {overfit_epochs: 5, probe_iterations: 5}\n"  # the failure is seen at init: no need to train long
    )
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)  # stdout is pure JSON
    verdicts = {c["check"]: c["verdict"] for c in doc["checks"]}
    assert verdicts["initial_loss"] == "FAIL"
    assert doc["passed"] is False


def test_the_written_lr_range_has_3_significant_digits_and_keeps_a_probed_lr() -> None:
    assert written_lr_range(0.010000000000000002, 1.0000000000000002) == (0.01, 1.0)  # exp(log(0.1)) / 10, x 10
    assert written_lr_range(0.00316227766016838, 0.316227766016838) == (0.00316, 0.316)  # sqrt(10) decades
    assert written_lr_range(0.017320508075688773, 0.1) == (0.0173, 0.1)  # a capped end stays the probed lr


def test_share_outside_a_range_is_measured_in_its_own_scale() -> None:
    four_decades = NumericRange(low=1e-4, high=1.0, log=True)
    assert share_outside(four_decades, 10**-2.5, 10**-0.5) == pytest.approx(0.5)  # two decades of four inside
    assert share_outside(four_decades, 1e-5, 10.0) == pytest.approx(0.0)  # all inside
    assert share_outside(four_decades, 1e-3, 10.0) == pytest.approx(0.25)  # only the bottom decade out
    assert share_outside(four_decades, 10.0, 100.0) == pytest.approx(1.0)  # disjoint
    assert share_outside(NumericRange(low=0.0, high=1.0), 0.25, 0.5) == pytest.approx(0.75)  # linear


def test_lr_range_hint_only_when_much_of_a_searched_range_is_outside() -> None:
    def spec(space: str) -> Spec:
        return parse_spec({"name": "s", "search": {"space": yaml.safe_load(f"{{{space}}}")}})

    wide = spec("lr: {low: 1.0e-4, high: 1.0, log: true}")
    assert lr_range_hint(wide, None) is None  # the probe recommended nothing
    assert "75% of its trials" in (lr_range_hint(wide, (1e-3, 1e-2)) or "")
    assert lr_range_hint(wide, (1.5e-4, 1.0)) is None  # 4% outside: close enough
    assert lr_range_hint(spec("lr: {values: [0.1, 0.01]}"), (1e-3, 1e-2)) is None  # not a range
    assert lr_range_hint(spec("weight_decay: {low: 1.0e-5, high: 1.0e-1, log: true}"), (1e-3, 1e-2)) is None


def test_cli_writes_a_spec_whose_lr_range_comes_from_lrs_that_fell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --write-spec searches what the probe recommends: centred on 0.1 (the one lr whose loss fell),
    # capped at 1, where the loss rose; 0.01 (9.9%, barely moved) does not pull it down.
    curves = {1.0: step(2.3, 2.62), 0.1: step(2.3, 2.3 * 0.88), 0.01: step(2.3, 2.3 * 0.901), 0.001: step(2.3, 2.3)}
    monkeypatch.setattr(probe, "_probe_losses", lambda _spec, _data, lr: curves[lr])
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {dataset: synthetic, synthetic_train: 1200, val_size: 200}\n"
        "model: {hidden: [32]}\ntrain: {device: cpu, lr: 0.05}\n"
        "search: {space: {lr: {low: 1.0e-4, high: 1.0, log: true}}}\n"
        "sanity: {probe_lrs: [1, 0.1, 0.01, 0.001]}\n"
    )
    # Without --write-spec: a hint that half the searched decades (1e-4..1e-2 of 1e-4..1) lie outside.
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "first"))
    assert res.returncode == 0, res.stderr
    hint = "hint: search.space.lr 0.0001..1 puts 50% of its trials outside the probe's range 1.0e-02..1.0e+00"
    assert hint in " ".join(res.stderr.split()), res.stderr
    assert "hint" not in res.stdout
    out_spec = tmp_path / "next.yaml"
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--write-spec", str(out_spec))
    assert res.returncode == 0, res.stderr
    assert "hint:" not in res.stderr  # the written spec has the probe's range
    doc = json.loads((tmp_path / "run/sanity/report.json").read_text())
    assert doc["recommended_lr"] == pytest.approx([0.01, 1.0])
    assert [r["status"] for r in doc["lr_probe"]] == ["rose", "fell", "barely moved", "barely moved"]
    # The range is written to 3 significant digits; report.json keeps the probe's floats.
    assert doc["recommended_lr"][0] == 0.010000000000000002  # exp(log(0.1)) / 10
    lr = load_spec(out_spec).search.space["lr"]
    assert (lr.low, lr.high) == (0.01, 1.0)  # type: ignore[union-attr]
    assert "lr: {low: 0.01, high: 1.0, log: true}" in out_spec.read_text()


def test_the_suggested_coarse_command_is_shell_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder with a space: the command printed after --write-spec must paste into a shell as one path.
    curves = {1.0: step(2.3, 2.62), 0.1: step(2.3, 2.0), 0.01: step(2.3, 2.3)}
    monkeypatch.setattr(probe, "_probe_losses", lambda _spec, _data, lr: curves[lr])
    folder = tmp_path / "my specs"
    folder.mkdir()
    spec = folder / "s.yaml"
    spec.write_text(
        "name: s\ndata: {dataset: synthetic, synthetic_train: 600, val_size: 100}\n"
        "model: {hidden: [16]}\ntrain: {device: cpu, lr: 0.05}\n"
        "sanity: {probe_lrs: [1, 0.1, 0.01], overfit_epochs: 2}\n"
    )
    out_spec = folder / "next spec.yaml"
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--write-spec", str(out_spec))
    assert out_spec.is_file(), res.stderr
    suggested = next(line for line in res.stderr.splitlines() if line.startswith("wrote "))
    command = suggested.split(": run ", 1)[1]
    assert shlex.split(command) == ["hpsearch", "coarse", str(out_spec)]


# --------------------------------------------------------------------------- user networks (model.kind python)

# Factories a user might write: a conv stack whose init the test chooses. Biases start at zero, so
# the weights' std alone sets the activations' scale.
USER_NETS = '''
import math

import torch
from torch import nn


class Swish(nn.Module):
    """An activation hpsearch does not know by type: watched only when model.watch names it."""

    def forward(self, x):
        return x * torch.sigmoid(x)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "swish": Swish}


def conv_stack(input_shape, num_classes, act="relu", init="kaiming", depth=6, width=8, head_std=0.01, dropout=0.0):
    channels, size = input_shape[0], input_shape[1]
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), ACTIVATIONS[act]()]
        channels = width
        if i % 2 == 0 and size >= 8:  # pooling keeps the test fast
            layers.append(nn.MaxPool2d(2))
            size //= 2
    head = nn.Linear(width * size * size, num_classes)
    net = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout), head)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                std = {"kaiming": math.sqrt(2 / fan_in), "xavier": 1 / math.sqrt(fan_in)}.get(init, init)
                m.weight.normal_(0.0, float(std))
                m.bias.zero_()
        head.weight.normal_(0.0, head_std)
    return net


class Unordered(nn.Module):
    """Defines its activations in the opposite order to the one its forward uses them in."""

    def __init__(self, num_classes):
        super().__init__()
        self.second = nn.Tanh()
        self.first = nn.ReLU()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.second(self.fc(self.first(self.conv(x)).flatten(1))))


def unordered(input_shape, num_classes):
    return Unordered(num_classes)


def functional_relu(input_shape, num_classes):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(math.prod(input_shape), 32)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.head(torch.relu(self.fc(x.flatten(1))))

    return Net()
'''

USER_DATA = {"dataset": "synthetic", "synthetic_train": 600, "synthetic_test": 100, "val_size": 100}


@pytest.fixture(scope="module")
def user_nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "user_nets.py"
    path.write_text(USER_NETS)
    return path


def user_spec(nets: Path, factory: str = "conv_stack", watch: tuple[str, ...] = (), **args: Any) -> Spec:
    return parse_spec(
        {
            "name": "user",
            "data": USER_DATA,
            "model": {"kind": "python", "factory": f"{nets}:{factory}", "args": args, "watch": list(watch)},
            "train": {"device": "cpu", "lr": 0.05},
        }
    )


@pytest.fixture(scope="module")
def user_data(user_nets: Path) -> Dataset:
    return load_data(user_spec(user_nets), None, None)


def test_user_convnet_initial_loss_is_ln_10_and_l2_counts_only_weights(user_nets: Path, user_data: Dataset) -> None:
    spec = user_spec(user_nets)
    check = check_initial_loss(spec, user_data)
    assert check.verdict is CheckVerdict.PASS, check.diagnosis
    assert check.numbers["loss"] == pytest.approx(2.3026, abs=0.05)
    net = base.fresh_model(spec, user_data)
    weights = sum(float((p * p).sum().detach()) for n, p in net.named_parameters() if n.endswith("weight"))
    assert check.numbers["penalty"] == pytest.approx(0.5 * initial.REG_PROBE * weights, rel=1e-5)  # biases left out
    assert check.numbers["loss_with_reg"] > check.numbers["loss"]


def test_user_convnet_with_huge_scores_fails_the_initial_loss(user_nets: Path, user_data: Dataset) -> None:
    check = check_initial_loss(user_spec(user_nets, head_std=10.0), user_data)
    assert check.verdict is CheckVerdict.FAIL
    assert "initial weights too large" in check.diagnosis


def test_user_tanh_convnet_with_tiny_weights_collapses(user_nets: Path, user_data: Dataset) -> None:
    # The lecture's experiment on the user's own net: weights N(0, 1e-4) in 6 tanh conv layers.
    check, layers = check_activations(user_spec(user_nets, act="tanh", init=1e-4), user_data)
    assert check.verdict is CheckVerdict.FAIL
    assert "collapse toward zero" in check.diagnosis
    assert "Tanh" in check.diagnosis  # names the network's own activation, not the spec's default relu
    assert len(layers) == 6
    assert all(b.std < a.std for a, b in zip(layers, layers[1:], strict=False))
    assert [s.name for s in layers] == [f"{i}: Tanh" for i in (1, 4, 6, 9, 11, 14)]  # named_modules() names
    assert layers[0].label == "1 (1: Tanh)"
    assert all(s.grad_norm > 0 for s in layers[:1])


def test_user_tanh_convnet_with_large_weights_saturates(user_nets: Path, user_data: Dataset) -> None:
    check, layers = check_activations(user_spec(user_nets, act="tanh", init=1.0), user_data)
    assert check.verdict is CheckVerdict.FAIL
    assert "of Tanh outputs saturated" in check.diagnosis
    assert layers[-1].saturated is not None
    assert layers[-1].saturated > 0.2


def test_user_relu_convnet_with_kaiming_is_nicely_scaled(user_nets: Path, user_data: Dataset) -> None:
    check, layers = check_activations(user_spec(user_nets, act="relu", init="kaiming"), user_data)
    assert check.verdict is CheckVerdict.PASS, check.diagnosis
    assert len(layers) == 6
    assert all(s.saturated is None for s in layers)  # ReLU does not saturate
    # Each layer's gradient norm is that of the conv feeding it: all six convs get a gradient.
    assert all(s.grad_norm > 0 for s in layers)
    net = base.fresh_model(user_spec(user_nets, act="relu", init="kaiming"), user_data)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(layers)


def test_user_layers_are_listed_in_forward_order(user_nets: Path, user_data: Dataset) -> None:
    _, layers = check_activations(user_spec(user_nets, "unordered"), user_data)
    assert [s.name for s in layers] == ["first: ReLU", "second: Tanh"]
    assert [s.saturated is None for s in layers] == [True, False]  # tanh can saturate, relu cannot


def test_model_watch_adds_module_classes(user_nets: Path, user_data: Dataset) -> None:
    _, unwatched = check_activations(user_spec(user_nets, act="swish", depth=2), user_data)
    assert [s.name for s in unwatched] == ["0: Conv2d output", "3: Conv2d output"]  # no Swish seen: its inputs
    check, layers = check_activations(user_spec(user_nets, watch=("Swish",), act="swish", depth=2), user_data)
    assert [s.name for s in layers] == ["1: Swish", "4: Swish"]
    assert all(s.grad_norm > 0 for s in layers)  # the conv feeding each Swish
    assert check.numbers["depth"] == 2


def test_model_watch_naming_no_module_is_a_spec_error(user_nets: Path, user_data: Dataset) -> None:
    with pytest.raises(SpecError, match="model.watch: no module of class 'Swishh' in the network"):
        check_activations(user_spec(user_nets, watch=("Swishh",), act="swish", depth=2), user_data)


def test_model_watch_typo_is_refused_before_any_check_runs(user_nets: Path, user_data: Dataset) -> None:
    steps: list[str] = []
    with pytest.raises(SpecError, match="model.watch: no module of class 'Swishh'"):
        run_sanity_checks(
            user_spec(user_nets, watch=("Swishh",), act="swish", depth=2),
            user_data,
            lambda name, *_: steps.append(name),
        )
    assert steps == []


def test_user_net_with_functional_relu_is_measured_at_its_layers_outputs(user_nets: Path, user_data: Dataset) -> None:
    # torch.relu in forward has no module to hook: the hidden Linear's output (its pre-activation) is
    # measured instead, and the check says so; the scores' Linear is not a hidden layer.
    spec = user_spec(user_nets, "functional_relu")
    check, layers = check_activations(spec, user_data)
    assert [s.name for s in layers] == ["fc: Linear output"]
    assert check.measured.startswith("no activation modules: outputs of 1 Linear layer before the scores, std ")
    assert "F.relu" in check.diagnosis
    assert "model.watch" in check.diagnosis
    assert check.verdict is CheckVerdict.PASS, check.diagnosis
    # The numbers are fc's output's, and its own weight gradient's.
    net = base.fresh_model(spec, user_data, dropout=False)
    idx = batch_order(len(user_data.x_train), spec.search.seed, 0, torch.device("cpu"))[: spec.sanity.activation_batch]
    x = user_data.normalize(user_data.x_train[idx])
    with torch.no_grad():
        fc = net.fc(x.flatten(1))  # type: ignore[operator]
    assert layers[0].std == pytest.approx(float(fc.std()), rel=1e-5)
    assert layers[0].mean == pytest.approx(float(fc.mean()), abs=1e-6)
    assert layers[0].grad_norm > 0


def test_user_net_with_functional_relu_and_tiny_weights_collapses(user_nets: Path, tmp_path: Path) -> None:
    # Three hidden Linears, torch.relu between them, weights N(0, 1e-4): the outputs shrink layer by layer.
    nets = tmp_path / "deep.py"
    nets.write_text(
        "import math, torch\nfrom torch import nn\n\n"
        "class Deep(nn.Module):\n"
        "    def __init__(self, d, c):\n"
        "        super().__init__()\n"
        "        self.layers = nn.ModuleList([nn.Linear(d, 64), nn.Linear(64, 64), nn.Linear(64, 64)])\n"
        "        self.head = nn.Linear(64, c)\n"
        "        for m in self.layers:\n"
        "            nn.init.normal_(m.weight, 0.0, 1e-4)\n"
        "            nn.init.zeros_(m.bias)\n"
        "    def forward(self, x):\n"
        "        h = x.flatten(1)\n"
        "        for m in self.layers:\n"
        "            h = torch.relu(m(h))\n"
        "        return self.head(h)\n\n"
        "def deep(input_shape, num_classes):\n"
        "    return Deep(math.prod(input_shape), num_classes)\n"
    )
    spec = user_spec(nets, "deep")
    check, layers = check_activations(spec, load_data(spec, None, None))
    assert [s.name for s in layers] == [f"layers.{i}: Linear output" for i in range(3)]
    assert check.verdict is CheckVerdict.FAIL
    assert "collapse toward zero" in check.diagnosis


def test_user_dropout_is_switched_off_for_the_overfit_test(user_nets: Path, user_data: Dataset) -> None:
    spec = user_spec(user_nets, dropout=0.9)
    net = base.fresh_model(spec, user_data, dropout=False)
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert [m.p for m in dropouts] == [0.0]
    x = user_data.normalize(user_data.x_train[:8])
    assert net.training
    assert torch.equal(net(x), net(x))  # deterministic in training mode
    assert [m.p for m in base.fresh_model(spec, user_data).modules() if isinstance(m, torch.nn.Dropout)] == [0.9]
    check = check_overfit(spec, user_data)
    assert check.verdict is CheckVerdict.PASS, check.diagnosis


def test_user_tanh_convnet_with_tiny_weights_cannot_overfit(user_nets: Path, user_data: Dataset) -> None:
    # Only the scores' biases learn (the class frequencies of the 20): the loss falls ~10%, no further.
    check = check_overfit(user_spec(user_nets, act="tanh", init=1e-4), user_data)
    assert check.verdict is not CheckVerdict.PASS
    assert check.numbers["train_acc"] <= 0.3


def _write_user_spec(tmp_path: Path, nets: Path, args: str, budget: str = "probe_iterations: 40") -> Path:
    (tmp_path / "nets.py").write_text(nets.read_text())
    spec = tmp_path / "user.yaml"
    spec.write_text(
        "name: user\n"
        "data: {dataset: synthetic, synthetic_train: 600, synthetic_test: 100, val_size: 100}\n"
        f"model: {{kind: python, factory: nets.py:conv_stack, args: {args}}}\n"
        "train: {device: cpu, lr: 0.05}\n"
        f"sanity: {{probe_lrs: [0.3, 0.1, 0.01, 0.0001], {budget}}}\n"
    )
    return spec


def test_cli_sanity_check_passes_a_good_user_convnet(tmp_path: Path, user_nets: Path) -> None:
    spec = _write_user_spec(tmp_path, user_nets, "{act: relu, init: kaiming}")
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0, (res.stderr, [(c["check"], c["verdict"], c["diagnosis"]) for c in doc["checks"]])
    assert {c["check"]: c["verdict"] for c in doc["checks"]}["activations"] == "PASS"
    assert [layer["name"] for layer in doc["layers"]] == [f"{i}: ReLU" for i in (1, 4, 6, 9, 11, 14)]


def test_cli_sanity_check_fails_a_badly_initialized_user_convnet(tmp_path: Path, user_nets: Path) -> None:
    # What fails is seen at init: a short overfit and probe suffice (this net cannot overfit: tested above).
    spec = _write_user_spec(tmp_path, user_nets, "{act: tanh, init: 1.0e-4}", "overfit_epochs: 5, probe_iterations: 5")
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1
    assert "collapse toward zero" in res.stdout
    assert "FAIL" in res.stdout
    doc = json.loads((tmp_path / "run/sanity/report.json").read_text())
    verdicts = {c["check"]: c["verdict"] for c in doc["checks"]}
    assert verdicts["activations"] == "FAIL"
    assert verdicts["initial_loss"] == "PASS"  # tiny weights: logits near zero, loss = ln 10
