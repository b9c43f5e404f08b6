"""The initial-loss check: with regularization off the loss at init is ln(C) for C classes, and
switching the weight decay on raises it."""

from __future__ import annotations

import math

import torch

from hpsearch.data import Dataset
from hpsearch.sanity.base import first_batches, fresh_model
from hpsearch.sanity.results import CheckResult, CheckVerdict
from hpsearch.spec.schema import Spec
from hpsearch.training.models import l2_penalty
from hpsearch.training.trial import training_loss

# Initial loss / ln(C): inside PASS_BAND passes, inside WARN_BAND warns, outside fails.
INITIAL_PASS_BAND = (0.9, 1.25)


INITIAL_WARN_BAND = (0.5, 2.0)


REG_PROBE = 1.0  # weight decay used to check that the regularizer reaches the loss


@torch.no_grad()
def check_initial_loss(spec: Spec, data: Dataset) -> CheckResult:
    """Regularization off, the mean loss at init should be ln(C); turning it on must raise it.
    In training mode, as the first step sees it (BatchNorm normalizing by the batch), dropout off."""
    net = fresh_model(spec, data, dropout=False)
    batches = first_batches(spec, data, spec.sanity.initial_batches, spec.train.batch_size)
    losses, regularized = [], []
    for idx in batches:
        x, y = data.normalize(data.x_train[idx]), data.y_train[idx]
        losses.append(float(training_loss(net, x, y, 0.0)[0]))
        regularized.append(float(training_loss(net, x, y, REG_PROBE)[0]))
    loss = sum(losses) / len(losses)
    with_reg = sum(regularized) / len(regularized)
    expected = math.log(data.num_classes)
    penalty = float(l2_penalty(net, REG_PROBE))
    numbers = {
        "loss": loss,
        "expected": expected,
        "ratio": loss / expected,
        "loss_with_reg": with_reg,
        "penalty": penalty,
    }
    measured = f"loss {loss:.3f} vs ln {data.num_classes} = {expected:.3f} (pass within {_band(expected)})"
    measured += f"; with weight decay {REG_PROBE:g}: {with_reg:.3f}"
    if not math.isfinite(loss):
        return CheckResult(
            "initial_loss",
            CheckVerdict.FAIL,
            measured,
            "loss at init is not finite: initial weights far too large",
            numbers,
        )
    if not with_reg > loss:
        return CheckResult(
            "initial_loss",
            CheckVerdict.FAIL,
            measured,
            "the L2 penalty does not raise the loss: the regularizer is not wired in",
            numbers,
        )
    ratio = loss / expected
    verdict = _banded(ratio, INITIAL_PASS_BAND, INITIAL_WARN_BAND)
    if verdict is CheckVerdict.PASS:
        diagnosis = f"{loss:.2f} ≈ ln {data.num_classes} = {expected:.2f}: logits start near zero, as they should"
    elif ratio > 1:
        mark = "≫" if verdict is CheckVerdict.FAIL else ">"
        diagnosis = (
            f"{loss:.1f} {mark} ln {data.num_classes} = {expected:.2f}: initial weights too large, logits not near zero"
        )
    else:
        diagnosis = f"{loss:.2f} < ln {data.num_classes} = {expected:.2f}: better than chance before training"
    return CheckResult("initial_loss", verdict, measured, diagnosis, numbers)


def _band(expected: float) -> str:
    return f"{expected * INITIAL_PASS_BAND[0]:.2f}..{expected * INITIAL_PASS_BAND[1]:.2f}"


def _banded(ratio: float, pass_band: tuple[float, float], warn_band: tuple[float, float]) -> CheckVerdict:
    if pass_band[0] <= ratio <= pass_band[1]:
        return CheckVerdict.PASS
    return CheckVerdict.WARN if warn_band[0] <= ratio <= warn_band[1] else CheckVerdict.FAIL
