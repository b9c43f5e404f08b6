"""train.precision: bf16 autocast in every training loop, close to fp32 but not equal to it; auto's
choice from the hardware's flags and timed steps, recorded once per stage; sanity checks in fp32."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import ROOT, cli, configs, max_relative_difference

from hpsearch.data import Dataset, build_dataset
from hpsearch.runs.records import TrialConfig
from hpsearch.spec.choices import Precision
from hpsearch.spec.schema import DataSpec, ModelSpec
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.populations.funcpop import run_func_population
from hpsearch.training.precision import FASTER, choose_precision, cpu_flags, native_bf16, with_precision
from hpsearch.training.trial import run_trial

# 1,000 training images in batches of 20: one epoch is exactly 50 steps.
DATA = DataSpec(dataset="synthetic", synthetic_train=1100, synthetic_test=100, val_size=100)
SMOKE = ROOT / "configs/smoke.yaml"
# bf16 keeps 8 bits of mantissa: a step's loss moves by ~1% of itself, and 50 steps compound it.
BF16_CLOSE = 0.05


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(DATA)


def in_precision(cs: list[TrialConfig], precision: Precision) -> list[TrialConfig]:
    return [with_precision(c, precision) for c in cs]


def lecture_trials(model: ModelSpec) -> list[TrialConfig]:
    return configs(model, "momentum", [0.02, 0.01, 0.005, 0.002], [1e-3, 0.0, 1e-2, 0.1], [0.9, 0.5, 0.8, 0.95])


def test_the_cpu_flags_come_from_the_flags_line() -> None:
    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16\n"
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_bf16"}


def test_a_cpu_without_the_flags_has_no_native_bf16() -> None:
    native, why = native_bf16(build_dataset(DATA).x_train.device, {"avx2", "avx512f"})
    assert not native
    assert "avx512_bf16" in why


def test_amx_alone_is_native_bf16() -> None:
    native, why = native_bf16(build_dataset(DATA).x_train.device, {"amx_bf16"})
    assert native
    assert "amx_bf16" in why


def test_auto_without_native_bf16_is_fp32_and_times_nothing(data: Dataset) -> None:
    cfg = with_precision(lecture_trials(ModelSpec(hidden=(32,)))[0], Precision.AUTO)
    choice = choose_precision(cfg, data, flags=set())
    assert choice.precision is Precision.FP32
    assert choice.speedup is None
    assert choice.reason.startswith("auto: this CPU has no native bf16")


def test_auto_with_native_bf16_takes_bf16_only_when_it_measured_faster(data: Dataset) -> None:
    cfg = with_precision(lecture_trials(ModelSpec(hidden=(32,)))[0], Precision.AUTO)
    choice = choose_precision(cfg, data, flags={"avx512_bf16"})
    assert choice.speedup is not None
    assert choice.speedup > 0
    assert (choice.precision is Precision.BF16) == (choice.speedup >= FASTER)


def test_a_set_precision_is_not_chosen(data: Dataset) -> None:
    cfg = lecture_trials(ModelSpec(hidden=(32,)))[0]
    choice = choose_precision(with_precision(cfg, Precision.BF16), data, flags=set())
    assert choice.precision is Precision.BF16
    assert choice.reason == "set in the spec"


def test_bf16_trains_close_to_fp32_but_in_bf16(data: Dataset) -> None:
    cs = lecture_trials(ModelSpec(hidden=(32,)))
    fp32 = [run_trial(c, data) for c in cs]
    bf16 = [run_trial(c, data) for c in in_precision(cs, Precision.BF16)]
    assert max_relative_difference(fp32, bf16) <= BF16_CLOSE
    assert max_relative_difference(fp32, bf16) > 1e-6  # the matmuls did run in bf16
    for a, b in zip(fp32, bf16, strict=True):
        assert b.val_acc == pytest.approx(a.val_acc, abs=0.05)
        assert b.initial_loss == pytest.approx(math.log(10), rel=0.05)


@pytest.mark.parametrize(
    "model",
    [ModelSpec(hidden=(32,)), ModelSpec(hidden=(32, 16), activation="tanh"), ModelSpec(kind="convnet", hidden=(8,))],
    ids=["mlp", "mlp-2-layers", "convnet"],
)
def test_a_bf16_population_equals_bf16_one_at_a_time_up_to_bf16_rounding(data: Dataset, model: ModelSpec) -> None:
    cs = in_precision(lecture_trials(model), Precision.BF16)
    single = [run_trial(c, data) for c in cs]
    together = run_population(cs, data)
    assert max_relative_difference(single, together) <= BF16_CLOSE
    for s, t in zip(single, together, strict=True):
        assert t.val_acc == pytest.approx(s.val_acc, abs=0.05)


USER_NET = """
from torch import nn


def mlp(input_shape, num_classes, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_a_bf16_user_population_equals_bf16_one_at_a_time_up_to_bf16_rounding(data: Dataset, tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(USER_NET)
    model = ModelSpec(kind="python", factory=f"{tmp_path / 'nets.py'}:mlp")
    cs = in_precision(lecture_trials(model), Precision.BF16)
    single = [run_trial(c, data) for c in cs]
    together = run_func_population(cs, data)
    assert max_relative_difference(single, together) <= BF16_CLOSE
    assert max_relative_difference(single, [run_trial(c, data) for c in lecture_trials(model)]) > 1e-6


def with_train(tmp_path: Path, train: str, search: str = "") -> Path:
    """configs/smoke.yaml with extra train keys (and search keys) appended to its sections."""
    text = SMOKE.read_text().replace("train:\n", f"train:\n  {train}\n", 1)
    if search:
        text = text.replace("  space:\n", f"  space:\n    {search}\n", 1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def test_auto_is_chosen_once_said_and_recorded(tmp_path: Path) -> None:
    spec = with_train(tmp_path, "precision: auto")
    result = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "run/coarse/run.json").read_text())
    chosen = info["precision"]["precision"]
    assert info["precision"]["asked"] == "auto"
    assert f"precision: {chosen} (auto: " in result.stderr
    assert f"trained in {chosen}" in (tmp_path / "run/coarse/results.md").read_text().splitlines()[0]


def test_plain_fp32_is_recorded_but_goes_unsaid(tmp_path: Path) -> None:
    result = cli("coarse", str(SMOKE), "--out", str(tmp_path / "run"))
    info = json.loads((tmp_path / "run/coarse/run.json").read_text())
    expected = {"precision": "fp32", "asked": "fp32", "reason": "set in the spec", "bf16_speedup": None}
    assert info["precision"] == expected
    assert "precision:" not in result.stderr
    assert "trained in" not in (tmp_path / "run/coarse/results.md").read_text()


def test_a_searched_precision_is_each_trials_own(tmp_path: Path) -> None:
    spec = with_train(tmp_path, "beta1: 0.9", search="precision: {values: [fp32, bf16]}")
    result = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    ranked = json.loads((tmp_path / "run/coarse/results.json").read_text())["ranked"]
    assert {r["params"]["precision"] for r in ranked} == {"fp32", "bf16"}
    assert "precision" not in json.loads((tmp_path / "run/coarse/run.json").read_text())


def test_sanity_checks_run_in_fp32_whatever_the_spec_trains_in(tmp_path: Path) -> None:
    reports = []
    for precision in ("fp32", "bf16"):
        folder = tmp_path / precision
        folder.mkdir()
        spec = with_train(folder, f"precision: {precision}")
        assert cli("sanity-check", str(spec), "--out", str(folder / "run")).returncode in (0, 1)
        report = json.loads((folder / "run/sanity/report.json").read_text())
        reports.append([c["measured"] for c in report["checks"]])
    assert reports[0] == reports[1]


def test_final_trains_as_its_stage_chose(tmp_path: Path) -> None:
    spec = with_train(tmp_path, "precision: bf16")
    run = tmp_path / "run"
    assert cli("coarse", str(spec), "--out", str(run)).returncode == 0
    result = cli("final", str(run), "--top", "1", "--seeds", "1")
    assert result.returncode == 0, result.stderr
    assert "precision: bf16 (as coarse trained: set in the spec)" in result.stderr
