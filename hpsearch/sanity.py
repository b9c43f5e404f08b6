"""The lecture's babysitting checks, run before a search: initial loss, activation statistics at
init, overfitting a small sample, and a learning-rate probe that recommends the coarse range.
May import: data, models, records, spec, trial; torch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.models import Net, build_model, l2_penalty
from hpsearch.records import finite_or_none
from hpsearch.spec import Activation, Spec, TrainSpec
from hpsearch.trial import batch_order, init_seed, make_optimizer, training_loss

# Initial loss / ln(C): inside PASS_BAND passes, inside WARN_BAND warns, outside fails.
INITIAL_PASS_BAND = (0.9, 1.25)
INITIAL_WARN_BAND = (0.5, 2.0)
REG_PROBE = 1.0  # weight decay used to check that the regularizer reaches the loss
# Activation statistics: std of the last hidden layer over the first; fractions of units per layer.
COLLAPSE_FAIL, COLLAPSE_WARN = 0.2, 0.5
GROWTH_WARN, GROWTH_FAIL = 5.0, 20.0
SATURATED_WARN, SATURATED_FAIL = 0.05, 0.20
DEAD_WARN, DEAD_FAIL = 0.10, 0.50
LARGE_STD = 10.0  # inputs are normalized to about unit scale; hidden activations far above it are suspect
GRAD_RATIO_WARN = 1e-3  # first-layer over last-layer weight-gradient norm
# Overfit: "loss not going down" means it ended above this fraction of where it started.
FLAT_FRACTION = 0.9
# LR probe: a loss drop of at least this fraction within the probe counts as "drops significantly".
SIGNIFICANT_DROP = 0.10
EXPLODED = 1.5  # a probe whose loss ends above 1.5x its start diverged
CLOSE_TO_BEST = 0.8  # probes within 80% of the best drop count as good too


CHECK_NAMES = ("initial loss", "activation statistics", "overfit a small sample", "learning-rate probe")


class Verdict(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass
class CheckResult:
    check: str  # initial_loss | activations | overfit | lr_probe
    verdict: Verdict
    measured: str  # the numbers, one line
    diagnosis: str  # what it means, one line
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True)
class LayerStats:
    layer: int  # 1 = first hidden layer
    mean: float
    std: float
    dead: float  # fraction of units that are zero for the whole batch
    saturated: float | None  # fraction of outputs saturated (tanh, sigmoid); None for others
    grad_norm: float  # norm of dL/dW of the layer's weights after one backward pass


@dataclass(frozen=True)
class ProbeRow:
    lr: float
    start_loss: float
    end_loss: float  # mean over the last 10 iterations
    drop: float  # (start - end) / start; negative when the loss rose
    diverged: bool


@dataclass
class SanityReport:
    checks: list[CheckResult]
    layers: list[LayerStats]
    probe: list[ProbeRow]
    recommended_lr: tuple[float, float] | None

    @property
    def failed(self) -> bool:
        return any(c.verdict is Verdict.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": not self.failed,
            "checks": [c.to_dict() for c in self.checks],
            "layers": [asdict(s) for s in self.layers],
            # JSON has no inf: a diverged probe's end loss and drop are null.
            "lr_probe": [
                {k: finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in self.probe
            ],
            "recommended_lr": list(self.recommended_lr) if self.recommended_lr else None,
        }


StepCallback = Callable[[str, int, int], None]  # (name of the check about to run, checks done, checks in all)


def run_sanity_checks(spec: Spec, data: Dataset, on_step: StepCallback | None = None) -> SanityReport:
    """All four checks in the lecture's order, each on a freshly initialized model."""
    steps: list[Callable[[], Any]] = [
        lambda: check_initial_loss(spec, data),
        lambda: check_activations(spec, data),
        lambda: check_overfit(spec, data),
        lambda: probe_learning_rates(spec, data),
    ]
    out = []
    for i, (name, step) in enumerate(zip(CHECK_NAMES, steps, strict=True)):
        if on_step:
            on_step(name, i, len(CHECK_NAMES))
        out.append(step())
    (initial, (activations, layers), overfit, (probe_check, probe, recommended)) = out
    return SanityReport([initial, activations, overfit, probe_check], layers, probe, recommended)


def fresh_model(spec: Spec, data: Dataset, dropout: bool = True) -> Net:
    model = spec.model if dropout else spec.model.model_copy(update={"dropout": 0.0})
    torch.manual_seed(init_seed(spec.search.seed, 0))
    return build_model(model, data.input_shape, data.num_classes).to(data.x_train.device)


def _first_batches(spec: Spec, data: Dataset, count: int, size: int) -> list[torch.Tensor]:
    order = batch_order(len(data.x_train), spec.search.seed, 0, data.x_train.device)
    return [order[i * size : (i + 1) * size] for i in range(count) if i * size < len(order)]


# --------------------------------------------------------------------------- 1. initial loss


@torch.no_grad()
def check_initial_loss(spec: Spec, data: Dataset) -> CheckResult:
    """Regularization off, the mean loss at init should be ln(C); turning it on must raise it."""
    net = fresh_model(spec, data).eval()
    batches = _first_batches(spec, data, spec.sanity.initial_batches, spec.train.batch_size)
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
            "initial_loss", Verdict.FAIL, measured, "loss at init is not finite: initial weights far too large", numbers
        )
    if not with_reg > loss:
        return CheckResult(
            "initial_loss",
            Verdict.FAIL,
            measured,
            "the L2 penalty does not raise the loss: the regularizer is not wired in",
            numbers,
        )
    ratio = loss / expected
    verdict = _banded(ratio, INITIAL_PASS_BAND, INITIAL_WARN_BAND)
    if verdict is Verdict.PASS:
        diagnosis = f"{loss:.2f} ≈ ln {data.num_classes} = {expected:.2f}: logits start near zero, as they should"
    elif ratio > 1:
        mark = "≫" if verdict is Verdict.FAIL else ">"
        diagnosis = (
            f"{loss:.1f} {mark} ln {data.num_classes} = {expected:.2f}: initial weights too large, logits not near zero"
        )
    else:
        diagnosis = f"{loss:.2f} < ln {data.num_classes} = {expected:.2f}: better than chance before training"
    return CheckResult("initial_loss", verdict, measured, diagnosis, numbers)


def _band(expected: float) -> str:
    return f"{expected * INITIAL_PASS_BAND[0]:.2f}..{expected * INITIAL_PASS_BAND[1]:.2f}"


def _banded(ratio: float, pass_band: tuple[float, float], warn_band: tuple[float, float]) -> Verdict:
    if pass_band[0] <= ratio <= pass_band[1]:
        return Verdict.PASS
    return Verdict.WARN if warn_band[0] <= ratio <= warn_band[1] else Verdict.FAIL


# --------------------------------------------------------------------------- 2. activation statistics


def check_activations(spec: Spec, data: Dataset) -> tuple[CheckResult, list[LayerStats]]:
    """One forward and backward pass at init: per hidden layer, activation mean/std, dead and
    saturated units, and weight-gradient norms (the lecture's "activation statistics")."""
    net = fresh_model(spec, data, dropout=False)
    (idx,) = _first_batches(spec, data, 1, spec.sanity.activation_batch)
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o.detach())) for m in net.hidden_layers]
    try:
        loss, _ = training_loss(net, data.normalize(data.x_train[idx]), data.y_train[idx], 0.0)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    layers = [_layer_stats(i + 1, h, spec.model.activation, weights[i].grad) for i, h in enumerate(outputs)]
    return _judge_layers(layers, spec.model.activation), layers


def _layer_stats(layer: int, h: torch.Tensor, activation: Activation, grad: torch.Tensor | None) -> LayerStats:
    units = h.transpose(0, 1).reshape(h.shape[1], -1)  # (units or channels, batch * positions)
    dead = float((units == 0).all(dim=1).float().mean())
    saturated: float | None = None
    if activation is Activation.TANH:
        saturated = float((h.abs() > 0.99).float().mean())
    elif activation is Activation.SIGMOID:
        saturated = float(((h < 0.01) | (h > 0.99)).float().mean())
    grad_norm = float(grad.norm()) if grad is not None else 0.0
    return LayerStats(layer, float(h.mean()), float(h.std()), dead, saturated, grad_norm)


Problem = tuple[Verdict, str]


def _graded(value: float, warn: float, fail: float, message: str, above: bool = True) -> list[Problem]:
    """[] when value is on the good side of `warn`; else WARN or FAIL with the message."""
    if (value < warn) if above else (value > warn):
        return []
    bad = (value >= fail) if above else (value <= fail)
    return [(Verdict.FAIL if bad else Verdict.WARN, message)]


def _depth_problems(layers: list[LayerStats], activation: Activation) -> list[Problem]:
    if len(layers) < 2 or layers[0].std == 0:
        return []
    first, last = layers[0].std, layers[-1].std
    trend = f"std {first:.3g} → {last:.3g}"
    return _graded(
        last / first,
        COLLAPSE_WARN,
        COLLAPSE_FAIL,
        f"activations collapse toward zero across depth ({trend}): initial weights too small for "
        f"{activation.value}, no learning in deep layers",
        above=False,
    ) + _graded(last / first, GROWTH_WARN, GROWTH_FAIL, f"activations grow across depth ({trend}): weights too large")


def _unit_problems(layers: list[LayerStats], activation: Activation) -> list[Problem]:
    problems: list[Problem] = []
    largest = max(s.std for s in layers)
    if largest > LARGE_STD:
        problems.append((Verdict.WARN, f"activations very large at init (std up to {largest:.3g}): weights too large"))
    if any(s.std == 0 for s in layers):
        problems.append((Verdict.FAIL, "a layer's activations are all equal: nothing flows forward"))
    saturated = [s.saturated for s in layers if s.saturated is not None]
    if saturated:
        worst = max(saturated)
        problems += _graded(
            worst,
            SATURATED_WARN,
            SATURATED_FAIL,
            f"{worst:.0%} of {activation.value} outputs saturated: local gradients near zero, weights too large",
        )
    dead = max(s.dead for s in layers)
    problems += _graded(dead, DEAD_WARN, DEAD_FAIL, f"{dead:.0%} of units dead (zero for the whole batch)")
    return problems


def _gradient_problems(layers: list[LayerStats]) -> list[Problem]:
    grads = [s.grad_norm for s in layers]
    if any(not math.isfinite(g) for g in grads):
        return [(Verdict.FAIL, "non-finite gradients at init")]
    if len(grads) >= 2 and grads[-1] > 0 and grads[0] / grads[-1] < GRAD_RATIO_WARN:
        return [(Verdict.WARN, f"gradients vanish toward the input (first/last layer norm {grads[0] / grads[-1]:.1e})")]
    return []


def _judge_layers(layers: list[LayerStats], activation: Activation) -> CheckResult:
    numbers: dict[str, Any] = {
        "depth": len(layers),
        "std_ratio": layers[-1].std / layers[0].std if len(layers) >= 2 and layers[0].std > 0 else None,
        "max_saturated": max((s.saturated for s in layers if s.saturated is not None), default=None),
        "max_dead": max((s.dead for s in layers), default=0.0),
    }
    stds = ", ".join(f"{s.std:.3g}" for s in layers)
    measured = f"{len(layers)} hidden layer{'s' if len(layers) != 1 else ''}, std {stds}"
    if not layers:
        return CheckResult(
            "activations", Verdict.PASS, "no hidden layers", "a linear classifier: nothing to check", numbers
        )
    problems = _depth_problems(layers, activation) + _unit_problems(layers, activation) + _gradient_problems(layers)
    if not problems:
        return CheckResult("activations", Verdict.PASS, measured, "activations nicely scaled in every layer", numbers)
    worst = Verdict.FAIL if any(v is Verdict.FAIL for v, _ in problems) else Verdict.WARN
    return CheckResult("activations", worst, measured, "; ".join(msg for _, msg in problems), numbers)


# --------------------------------------------------------------------------- 3. overfit a small sample


def check_overfit(spec: Spec, data: Dataset) -> CheckResult:
    """Train on the first few examples, regularization off: a sound setup reaches 100% quickly."""
    cfg = spec.sanity
    n = min(cfg.overfit_examples, len(data.x_train))
    x, y = data.normalize(data.x_train[:n]), data.y_train[:n]
    net = fresh_model(spec, data, dropout=False)
    train = _train_spec(
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
                    Verdict.FAIL,
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
                Verdict.PASS,
                train.lr,
                n,
                epoch,
                losses,
                acc,
                f"reached 100% training accuracy on {n} examples: the model can learn",
            )
    if losses[-1] > EXPLODED * losses[0]:
        diagnosis = "loss explodes: learning rate too high or bad initialization"
        return _overfit_result(Verdict.FAIL, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)
    if losses[-1] > FLAT_FRACTION * losses[0]:
        diagnosis = "loss not going down: learning rate too low or bad initialization"
        return _overfit_result(Verdict.FAIL, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)
    diagnosis = (
        f"loss falls but training accuracy is {acc:.0%} after {cfg.overfit_epochs} epochs: "
        "raise the learning rate or sanity.overfit_epochs"
    )
    return _overfit_result(Verdict.WARN, train.lr, n, cfg.overfit_epochs, losses, acc, diagnosis)


def _train_spec(train: TrainSpec, **update: Any) -> TrainSpec:
    return TrainSpec.model_validate({**train.model_dump(), **update})


def _overfit_result(
    verdict: Verdict, lr: float, n: int, epochs: int, losses: list[float], acc: float, diagnosis: str
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


# --------------------------------------------------------------------------- 4. learning-rate probe


def probe_learning_rates(spec: Spec, data: Dataset) -> tuple[CheckResult, list[ProbeRow], tuple[float, float] | None]:
    """~100 iterations on all training data with a small weight decay for each candidate lr;
    recommend about a decade either side of the lr whose loss drops the most."""
    rows = [_probe(spec, data, lr) for lr in sorted(spec.sanity.probe_lrs, reverse=True)]
    usable = [r for r in rows if not r.diverged]
    best = max(usable, key=lambda r: r.drop, default=None)
    diverged = sorted(r.lr for r in rows if r.diverged)
    summary = ", ".join(f"{r.lr:g}: {'diverged' if r.diverged else f'{r.drop:+.0%}'}" for r in rows)
    measured = f"loss drop in {spec.sanity.probe_iterations} iterations: {summary}"
    numbers: dict[str, Any] = {"diverged": diverged}
    if best is None or best.drop < SIGNIFICANT_DROP:
        what = (
            "every learning rate diverged"
            if best is None
            else f"no learning rate dropped the loss by {SIGNIFICANT_DROP:.0%}"
        )
        hint = "try smaller ones" if best is None else "try larger ones or check the model and data"
        return CheckResult("lr_probe", Verdict.FAIL, measured, f"{what}: {hint}", numbers), rows, None
    # Learning rates whose drop comes close to the best one are as good as the probe can tell:
    # centre the range on their geometric mean, a decade either side.
    good = [r.lr for r in usable if r.drop >= CLOSE_TO_BEST * best.drop]
    centre = math.exp(sum(math.log(lr) for lr in good) / len(good))
    low, high = centre / 10, centre * 10
    above = [lr for lr in diverged if lr > centre]
    if above:
        high = min(high, above[0])  # no point searching where the loss already blew up
    numbers.update({"best_lr": best.lr, "good_lrs": good, "recommended": [low, high]})
    close = f", {', '.join(f'{lr:g}' for lr in good if lr != best.lr)} close" if len(good) > 1 else ""
    diagnosis = (
        f"best lr {best.lr:g} (loss {best.start_loss:.3g} → {best.end_loss:.3g}{close}); "
        f"coarse range lr {low:.1e}..{high:.1e}"
    )
    return CheckResult("lr_probe", Verdict.PASS, measured, diagnosis, numbers), rows, (low, high)


def _probe(spec: Spec, data: Dataset, lr: float) -> ProbeRow:
    cfg = spec.sanity
    net = fresh_model(spec, data)
    train = _train_spec(spec.train, lr=lr, weight_decay=cfg.probe_weight_decay)
    opt = make_optimizer(net, train)
    n, batch = len(data.x_train), train.batch_size
    losses: list[float] = []
    epoch, order, pos = 0, batch_order(n, spec.search.seed, 0, data.x_train.device), 0
    while len(losses) < cfg.probe_iterations:
        if pos >= n:
            epoch, pos = epoch + 1, 0
            order = batch_order(n, spec.search.seed, epoch, data.x_train.device)
        idx = order[pos : pos + batch]
        pos += batch
        loss, _ = training_loss(net, data.normalize(data.x_train[idx]), data.y_train[idx], train.weight_decay)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            return ProbeRow(lr, losses[0], math.inf, -math.inf, True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tail = losses[-min(10, len(losses) // 2) :]
    start, end = losses[0], sum(tail) / len(tail)
    return ProbeRow(lr, start, end, (start - end) / start, end > EXPLODED * start)


def spec_with_lr_range(spec: Spec, low: float, high: float) -> Spec:
    """A copy of the spec whose search space has lr log-uniform over [low, high]."""
    data = spec.model_dump()
    data["search"]["space"] = {**data["search"]["space"], "lr": {"low": low, "high": high, "log": True}}
    return Spec.model_validate(data)
