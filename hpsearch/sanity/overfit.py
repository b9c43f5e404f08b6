"""The overfit check: the model trained on a small sample with regularization off must drive its
training loss down and its training accuracy to 100%."""

from __future__ import annotations

import math

import torch

from hpsearch.data import Dataset
from hpsearch.runs.records import finite_or_none
from hpsearch.sanity.base import fresh_model, train_spec
from hpsearch.sanity.probe import EXPLODED
from hpsearch.sanity.results import CheckResult, CheckVerdict
from hpsearch.spec.schema import Spec
from hpsearch.training.trial import make_optimizer, training_loss

# Overfit: "loss not going down" means it ended above this fraction of where it started.
FLAT_FRACTION = 0.9


def check_overfit(spec: Spec, data: Dataset) -> CheckResult:
    """Train on the first few examples, regularization off: a sound setup reaches 100% quickly."""
    cfg = spec.sanity
    n = min(cfg.overfit_examples, len(data.x_train))
    x, y = data.normalize(data.x_train[:n]), data.y_train[:n]
    net = fresh_model(spec, data, dropout=False)
    train = train_spec(
        spec.train, optimizer=cfg.overfit_optimizer, lr=cfg.overfit_lr or spec.train.lr, weight_decay=0.0
    )
    opt = make_optimizer(net, train)
    batch = min(train.batch_size, n)
    losses: list[float] = []
    acc = 0.0
    for epoch in range(1, cfg.overfit_epochs + 1):
        for start in range(0, n, batch):
            loss, _ = training_loss(net, x[start : start + batch], y[start : start + batch], 0.0)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                return _overfit_result(
                    CheckVerdict.FAIL,
                    train.lr,
                    n,
                    epoch,
                    losses,
                    acc,
                    "loss exploded to inf/NaN: learning rate too high or bad initialization",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(x).argmax(1) == y).float().mean())
        if acc == 1.0:
            return _overfit_result(
                CheckVerdict.PASS,
                train.lr,
                n,
                epoch,
                losses,
                acc,
                f"reached 100% training accuracy on {n} examples: the model can learn",
            )
    if losses[-1] > EXPLODED * losses[0]:
        diagnosis = "loss explodes: learning rate too high or bad initialization"
        return _overfit_result(CheckVerdict.FAIL, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)
    if losses[-1] > FLAT_FRACTION * losses[0]:
        diagnosis = "loss not going down: learning rate too low or bad initialization"
        return _overfit_result(CheckVerdict.FAIL, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)
    diagnosis = (
        f"loss falls but training accuracy is {acc:.0%} after {cfg.overfit_epochs} epochs: "
        "raise the learning rate or sanity.overfit_epochs"
    )
    return _overfit_result(CheckVerdict.WARN, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)


def _overfit_result(
    verdict: CheckVerdict, lr: float, n: int, epochs: int, losses: list[float], acc: float, diagnosis: str
) -> CheckResult:
    measured = (
        f"{n} examples, lr {lr:g}: loss {losses[0]:.3g} → {losses[-1]:.3g}, train acc {acc:.0%} after {epochs} epochs"
    )
    numbers = {
        "examples": n,
        "lr": lr,
        "epochs": epochs,
        "first_loss": finite_or_none(losses[0]),
        "last_loss": finite_or_none(losses[-1]),
        "train_acc": acc,
    }
    return CheckResult("overfit", verdict, measured, diagnosis, numbers)
