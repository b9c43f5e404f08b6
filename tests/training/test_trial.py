"""One trial: initial loss is ln(C), the loss falls on learnable data, NaN is contained, errors recorded."""

from __future__ import annotations

import dataclasses
import math

import pytest

from hpsearch.data import Dataset, build_dataset
from hpsearch.runs.records import TrialConfig, TrialResult, TrialState
from hpsearch.spec.schema import DataSpec, ModelSpec, TrainSpec
from hpsearch.training.trial import run_trial


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return build_dataset(DataSpec(dataset="synthetic", synthetic_train=2000, synthetic_test=100, val_size=400))


def config(trial_id: int = 0, seed: int = 0, model: ModelSpec | None = None, **train: object) -> TrialConfig:
    train_spec = TrainSpec.model_validate({"epochs": 2, "batch_size": 50, "lr": 0.01, "device": "cpu", **train})
    return TrialConfig(trial_id, {"lr": train_spec.lr}, model or ModelSpec(hidden=(32,)), train_spec, seed)


def test_initial_loss_is_ln_num_classes_with_small_init(synthetic: Dataset) -> None:
    result = run_trial(config(model=ModelSpec(hidden=(32,), init="small_random", init_std=1e-3)), synthetic)  # type: ignore[arg-type]
    assert result.initial_loss == pytest.approx(math.log(10), abs=0.01)


def test_a_good_trial_learns(synthetic: Dataset) -> None:
    result = run_trial(config(), synthetic)
    assert result.state is TrialState.COMPLETE
    assert result.epochs_done == 2
    assert len(result.val_acc_per_epoch) == 2
    assert result.iterations == 2 * 1600 // 50
    assert result.val_acc is not None
    assert result.val_acc > 0.5  # chance is 0.1
    assert result.train_loss is not None
    assert result.train_loss < result.losses[0]
    assert result.wall_time > 0


def test_same_config_same_result_other_trial_other_init(synthetic: Dataset) -> None:
    a, b = run_trial(config(trial_id=3), synthetic), run_trial(config(trial_id=3), synthetic)
    assert a.losses == b.losses
    assert a.val_acc == b.val_acc
    c = run_trial(config(trial_id=4), synthetic)
    assert c.losses != a.losses


def test_nan_loss_is_diverged_not_a_crash(synthetic: Dataset) -> None:
    result = run_trial(config(lr=1e6, optimizer="sgd"), synthetic)
    assert result.state is TrialState.DIVERGED
    assert result.iterations < 2 * 1600 // 50  # stopped early
    assert not math.isfinite(result.losses[-1]) or result.losses
    again = TrialResult.from_dict(result.to_dict())  # NaN survives a JSON round trip as null
    assert again.state is TrialState.DIVERGED


def test_unexpected_exception_is_failed_with_message(synthetic: Dataset) -> None:
    # Images with 2 channels where the model and the preprocessing expect 3: a shape error mid-trial.
    broken = dataclasses.replace(synthetic, x_train=synthetic.x_train[:, :2])
    result = run_trial(config(), broken)
    assert result.state is TrialState.FAILED
    assert result.error
    assert result.error.startswith("RuntimeError")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_every_optimizer_reduces_the_loss(synthetic: Dataset, optimizer: str) -> None:
    lr = 1e-3 if optimizer == "adam" else 0.05
    result = run_trial(config(optimizer=optimizer, lr=lr), synthetic)
    assert result.state is TrialState.COMPLETE
    assert result.train_loss_per_epoch[-1] < result.losses[0] * 0.8


def test_lr_decay_and_weight_decay_change_training(synthetic: Dataset) -> None:
    base = run_trial(config(), synthetic)
    decayed = run_trial(config(lr_decay=0.1), synthetic)
    regularized = run_trial(config(weight_decay=1.0), synthetic)
    assert base.losses[:10] == decayed.losses[:10]  # the first epoch is the same...
    assert base.losses[-1] != decayed.losses[-1]  # ...the second is not
    assert regularized.train_loss is not None
    assert base.train_loss is not None
    assert regularized.train_loss > base.train_loss  # the L2 term is in the loss


def test_flush_tiny_zeroes_only_values_below_tiny() -> None:
    import torch

    from hpsearch.training.models import build_model
    from hpsearch.training.trial import TINY, flush_tiny_, make_optimizer

    net = build_model(ModelSpec(hidden=(4,)), (3, 32, 32), 10)
    opt = make_optimizer(net, TrainSpec(optimizer="momentum"))
    w = next(net.parameters())
    w.sum().backward()
    opt.step()  # creates the momentum buffers
    with torch.no_grad():
        w[0, :3] = torch.tensor([1e-38, TINY / 2, TINY * 2])  # a denormal, tiny, and small but kept
        opt.state[w]["momentum_buffer"][0, 0] = 1e-39
    kept = w.detach().clone()
    flush_tiny_(net, opt)
    assert w[0, 0].item() == 0.0
    assert w[0, 1].item() == 0.0
    assert w[0, 2].item() != 0.0
    assert opt.state[w]["momentum_buffer"][0, 0].item() == 0.0
    assert torch.count_nonzero(w[1:]) == torch.count_nonzero(kept[1:])  # the rest untouched


def test_non_finite_numbers_are_written_as_null() -> None:
    import json

    r = TrialResult(
        trial=0,
        state=TrialState.DIVERGED,
        params={},
        train_loss=math.inf,
        initial_loss=math.nan,
        train_loss_per_epoch=[1.0, math.inf],
        losses=[2.3, math.nan],
    )
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["train_loss"] is None
    assert d["initial_loss"] is None
    assert d["train_loss_per_epoch"] == [1.0, None]
    assert d["losses"] == [2.3, None]


def test_loss_that_blows_up_on_an_epochs_last_step_is_diverged(synthetic: Dataset) -> None:
    # One step per epoch: the weights leave float range on that step, so only the epoch-end loss sees it.
    result = run_trial(config(batch_size=5000, lr=1e25, weight_decay=1.0, optimizer="sgd"), synthetic)
    assert result.state is TrialState.DIVERGED
    # The epoch's one step ran, so the epoch counts as done; its loss is not a number, and no
    # accuracy was measured on the blown-up weights.
    assert result.epochs_done == 1
    assert result.iterations == 1
    assert result.to_dict()["train_loss"] is None
    assert result.train_loss_per_epoch == []
    assert result.val_acc is None
    assert result.val_acc_per_epoch == []


def test_a_trial_that_raises_keeps_where_and_a_short_traceback(synthetic: Dataset) -> None:
    broken = dataclasses.replace(synthetic, x_train=synthetic.x_train[:, :2])
    result = run_trial(config(), broken)
    assert result.error_at is not None
    file, _, line = result.error_at.partition(":")
    assert file.endswith(".py")
    assert "torch" not in file  # the innermost frame outside torch: where our (or the user's) code called it
    assert int(line) > 0
    assert result.traceback is not None
    assert result.traceback.startswith("Traceback (most recent call last):")
    assert result.traceback.splitlines()[-1] == result.error
    assert TrialResult.from_dict(result.to_dict()).traceback == result.traceback  # kept in the record


def test_zero_tiny_keeps_nan_inf_and_sign() -> None:
    import torch

    from hpsearch.training.trial import TINY, zero_tiny_

    t = torch.tensor([float("nan"), float("inf"), -float("inf"), -TINY / 2, TINY / 2, -2 * TINY, 0.5, 1e-45])
    zero_tiny_(t)
    assert torch.isnan(t[0])  # a blow-up stays visible
    assert t[1] == float("inf")
    assert t[2] == -float("inf")
    assert t[3:5].tolist() == [0.0, 0.0]
    assert t[7].item() == 0.0
    assert t[5].item() == pytest.approx(-2 * TINY)  # float32 rounding of 2e-30
    assert t[6].item() == 0.5


def test_a_loss_that_rises_without_overflowing_is_labelled_loss_rose_not_flat(synthetic: Dataset) -> None:
    # lr 3 with momentum: the loss climbs to ~1e8 but stays finite, so the trial completes. It was `flat`.
    from hpsearch.analysis.curves import CurveLabel, curve_label

    result = run_trial(config(epochs=1, lr=3.0), synthetic)
    assert result.state is TrialState.COMPLETE
    assert result.losses[-1] > 1e3 * result.losses[0]
    assert curve_label(result, synthetic.num_classes, len(synthetic.x_val)) is CurveLabel.EXPLODING


def test_a_trial_that_learns_nothing_is_labelled_at_chance(synthetic: Dataset) -> None:
    from hpsearch.analysis.curves import CurveLabel, curve_label

    result = run_trial(config(epochs=1, lr=1e-6, optimizer="sgd"), synthetic)
    assert result.state is TrialState.COMPLETE
    assert curve_label(result, synthetic.num_classes, len(synthetic.x_val)) is CurveLabel.CHANCE


def test_the_data_loss_curve_is_kept_beside_the_loss_with_its_l2_term(synthetic: Dataset) -> None:
    result = run_trial(config(epochs=1, batch_size=400, weight_decay=0.5), synthetic)
    assert len(result.data_losses) == len(result.losses) == 1600 // 400
    assert result.data_losses[0] == result.initial_loss
    # The L2 term 0.5 * wd * sum(w^2) of a Kaiming-initialized net is far above float noise.
    assert all(total > data + 0.01 for total, data in zip(result.losses, result.data_losses, strict=True))
