"""The lecture's babysitting checks, run before a search: initial loss, activation statistics at
init, overfitting a small sample, and a learning-rate probe that recommends the coarse range.
May import: data, models, rank, records, spec, trial; torch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.errors import SpecError
from hpsearch.models import Maxout, Net, build_model, l2_penalty
from hpsearch.rank import position_in_range
from hpsearch.records import finite_or_none
from hpsearch.spec import NumericRange, Spec, TrainSpec
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
# LR probe. Its start is the first iteration's loss, its end the mean of the last 10. The lecture: a
# loss that "drops significantly" within ~100 iterations marks a good lr; one barely changing, an lr
# too low; one exploding or NaN, an lr too high. A drop of at least SIGNIFICANT_DROP is "fell".
SIGNIFICANT_DROP = 0.10
# A rise of more than ROSE_ABOVE x the start loss, above the start or above the lowest 10-iteration
# mean, is the lr's doing, not batch noise: with no training at all (lr 1e-9) start and end differed
# by at most 1.9% over 8 seeds (CIFAR-10, the two-layer kaiming net), and losses that fell steadily
# (CIFAR-10 at lr 0.01..0.1, synthetic MLPs) ended at most 2.4% of the start above their lowest
# 10-iteration mean, where lrs that were too high for a deep tanh net ended 8% to 34% above it.
ROSE_ABOVE = 0.05
EXPLODED = 1.5  # a loss that ends above 1.5x its start exploded
CLOSE_TO_BEST = 0.8  # probes within 80% of the best drop count as good too
# sanity-check says so when at least this share of the searched lr range lies outside the probe's.
OUTSIDE_HINT = 0.1


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
    grad_norm: float  # norm of dL/dW of the weights feeding the layer, after one backward pass
    name: str | None = None  # a user's network: the module's name in named_modules() and its class

    @property
    def label(self) -> str:
        """The layer column: `1`, or `1 (features.1: ReLU)` in a user's network."""
        return f"{self.layer} ({self.name})" if self.name else str(self.layer)


class ProbeStatus(str, enum.Enum):
    """What one probed lr's loss did (thresholds above), and so whether the lr is too low or high."""

    FELL = "fell"  # dropped by >= SIGNIFICANT_DROP: a usable lr
    BARELY_MOVED = "barely moved"  # lr too low
    REBOUNDED = "fell then rose"  # ended ROSE_ABOVE above its lowest: lr too high
    ROSE = "rose"  # ended ROSE_ABOVE above its start: lr too high
    EXPLODED = "exploded"  # ended above EXPLODED x its start: lr too high
    DIVERGED = "diverged"  # inf or NaN: lr too high

    @property
    def ok(self) -> bool:
        return self is ProbeStatus.FELL

    @property
    def too_high(self) -> bool:
        return self not in (ProbeStatus.FELL, ProbeStatus.BARELY_MOVED)

    @property
    def label(self) -> str:
        """The probe table's status cell: what the loss did and what it says of the lr."""
        if self is ProbeStatus.FELL:
            return "fell: ok"
        return f"{self.value}: lr too {'high' if self.too_high else 'low'}"


@dataclass(frozen=True)
class ProbeRow:
    lr: float
    start_loss: float
    end_loss: float  # mean over the last 10 iterations
    drop: float  # (start - end) / start; negative when the loss rose
    rebound: float  # (end - lowest 10-iteration mean) / start; 0 when the loss ended at its lowest
    status: ProbeStatus

    @property
    def diverged(self) -> bool:
        """Exploded or went to inf/NaN (what the field of this name meant before statuses)."""
        return self.status in (ProbeStatus.EXPLODED, ProbeStatus.DIVERGED)

    def to_dict(self) -> dict[str, Any]:
        # JSON has no inf: a diverged probe's end loss and drop are null.
        return {
            "lr": self.lr,
            "start_loss": finite_or_none(self.start_loss),
            "end_loss": finite_or_none(self.end_loss),
            "drop": finite_or_none(self.drop),
            "rebound": finite_or_none(self.rebound),
            "status": self.status.value,
            "diverged": self.diverged,
        }


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
            "lr_probe": [r.to_dict() for r in self.probe],
            "recommended_lr": list(self.recommended_lr) if self.recommended_lr else None,
        }


StepCallback = Callable[[str, int, int], None]  # (name of the check about to run, checks done, checks in all)


def run_sanity_checks(spec: Spec, data: Dataset, on_step: StepCallback | None = None) -> SanityReport:
    """All four checks in the lecture's order, each on a freshly initialized model."""
    if spec.model.watch:  # a class name in model.watch that matches no module: refused before any check
        activation_modules(fresh_model(spec, data), spec.model.watch)
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


# Dropout modules of a user's network, switched off (p = 0) when the lecture turns regularization off.
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def fresh_model(spec: Spec, data: Dataset, dropout: bool = True) -> nn.Module:
    """The spec's model as trial 0 initializes it; `dropout=False`: with every dropout switched off.
    A user's network keeps its dropout modules with p set to 0, rather than in eval mode: eval mode
    would also switch BatchNorm to its running statistics, which is no regularization, and the
    next net.train() would turn dropout back on. Dropout called as a function in forward
    (F.dropout) cannot be reached and stays on."""
    model = spec.model if dropout else spec.model.model_copy(update={"dropout": 0.0})
    torch.manual_seed(init_seed(spec.search.seed, 0))
    net = build_model(model, data.input_shape, data.num_classes).to(data.x_train.device)
    if not dropout:
        for m in net.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.p = 0.0
    return net


def _first_batches(spec: Spec, data: Dataset, count: int, size: int) -> list[torch.Tensor]:
    order = batch_order(len(data.x_train), spec.search.seed, 0, data.x_train.device)
    return [order[i * size : (i + 1) * size] for i in range(count) if i * size < len(order)]


# --------------------------------------------------------------------------- 1. initial loss


@torch.no_grad()
def check_initial_loss(spec: Spec, data: Dataset) -> CheckResult:
    """Regularization off, the mean loss at init should be ln(C); turning it on must raise it.
    In training mode, as the first step sees it (BatchNorm normalizing by the batch), dropout off."""
    net = fresh_model(spec, data, dropout=False)
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


# Modules whose outputs are hidden activations in a user's network, found by type.
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, Maxout)


def activation_modules(net: nn.Module, watch: tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs the activation statistics look at, with their names in
    named_modules(): hpsearch's own nets list theirs; in a user's network, every activation module
    (by type) and every module whose class model.watch names. A name in model.watch that matches no
    module's class is a SpecError (a typo would otherwise leave its layers out unseen)."""
    if isinstance(net, Net):
        hidden = {id(m) for m in net.hidden_layers}
        return [(name, m) for name, m in net.named_modules() if id(m) in hidden]
    classes = {type(m).__name__ for m in net.modules()}
    for name in watch:
        if name not in classes:
            raise SpecError(f"model.watch: no module of class '{name}' in the network")
    return [(n, m) for n, m in net.named_modules() if isinstance(m, ACTIVATION_TYPES) or type(m).__name__ in watch]


@dataclass(frozen=True)
class _Activation:
    """One watched module's output in one forward pass, and the module with weights that ran last
    before it: the layer whose weight gradient the statistics report beside it."""

    name: str
    module: nn.Module
    output: torch.Tensor
    feeding: nn.Module | None


def check_activations(spec: Spec, data: Dataset) -> tuple[CheckResult, list[LayerStats]]:
    """One forward and backward pass at init: per hidden layer, activation mean/std, dead and
    saturated units, and weight-gradient norms (the lecture's "activation statistics"). Layers are
    listed in the order forward calls them, which a user's network need not define them in."""
    net = fresh_model(spec, data, dropout=False)
    (idx,) = _first_batches(spec, data, 1, spec.sanity.activation_batch)
    user = not isinstance(net, Net)
    watched = activation_modules(net, spec.model.watch)
    # A user's network with no activation module calls its activations as functions (F.relu), which
    # no hook reaches: its layers with weights are measured instead, their outputs being what each
    # activation is applied to. The last of them called computes the scores, not a hidden layer.
    outputs = user and not watched
    if outputs:
        watched = weighted_modules(net)
    seen = _forward_backward(net, watched, data, idx)
    if outputs:
        seen = seen[:-1]
    calls: dict[int, int] = {}
    layers = []
    for i, a in enumerate(seen):
        calls[id(a.module)] = calls.get(id(a.module), 0) + 1
        name = None
        if user:
            call = f", call {calls[id(a.module)]}" if calls[id(a.module)] > 1 else ""  # a module used twice
            name = f"{a.name}: {type(a.module).__name__}{' output' if outputs else ''}{call}"
        layers.append(_layer_stats(i + 1, a.output, a.module, _weight_grad_norm(a.feeding), name))
    if outputs:
        return _layer_outputs_judged(layers, seen), layers
    if user:
        kinds = _kinds(a.module for a in seen)
        saturating = _kinds(a.module for a in seen if isinstance(a.module, SATURATING)) or kinds
    else:
        kinds = saturating = spec.model.activation.value
    return _judge_layers(layers, kinds, saturating), layers


def weighted_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules holding weights of their own (Linear, Conv2d, ...: a parameter of 2 or more
    dimensions; not BatchNorm's per-channel scales), with their names in named_modules()."""
    return [(n, m) for n, m in net.named_modules() if any(p.ndim > 1 for p in m.parameters(recurse=False))]


def _forward_backward(
    net: nn.Module, watched: list[tuple[str, nn.Module]], data: Dataset, idx: torch.Tensor
) -> list[_Activation]:
    """One training forward and backward pass on the batch `idx`; what each watched module output."""
    seen: list[_Activation] = []
    feeding: list[nn.Module | None] = [None]  # the module with weights that ran last
    names = {id(m): name for name, m in watched}

    def on_weights(m: nn.Module, _i: Any, _o: Any) -> None:
        feeding[0] = m

    def on_activation(m: nn.Module, _i: Any, o: Any) -> None:
        if isinstance(o, torch.Tensor) and o.ndim >= 1:
            # A copy: an in-place op later in forward (ReLU(inplace=True)) must not change what was seen.
            seen.append(_Activation(names[id(m)], m, o.detach().clone(), feeding[0]))

    weighted = [m for m in net.modules() if any(p.ndim > 1 for p in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(on_weights) for m in weighted]
    hooks += [m.register_forward_hook(on_activation) for _, m in watched]
    try:
        loss, _ = training_loss(net, data.normalize(data.x_train[idx]), data.y_train[idx], 0.0)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _weight_grad_norm(module: nn.Module | None) -> float:
    """Norm of the gradient of the module's own weights (the regularized tensors: not biases)."""
    if module is None:
        return 0.0
    grads = [p.grad for p in module.parameters(recurse=False) if p.ndim > 1 and p.grad is not None]
    return math.sqrt(sum(float(g.square().sum()) for g in grads))


SATURATING = (nn.Tanh, nn.Sigmoid)


def _kinds(modules: Iterable[nn.Module]) -> str:
    """The activation classes of a user's network, as its messages name them: `Tanh`, `ReLU/Tanh`."""
    return "/".join(dict.fromkeys(type(m).__name__ for m in modules))


# Why a user's network was measured at its layers' outputs, and how to measure its activations.
NO_ACTIVATION_MODULES = (
    "no module of a known activation class (ReLU, Tanh, GELU, ...): measured the outputs of the layers "
    "before their activation instead (an activation called as a function, F.relu, cannot be hooked; "
    "nn.ReLU modules, or your own class named in model.watch, show the activations themselves)"
)


def _layer_outputs_judged(layers: list[LayerStats], seen: list[_Activation]) -> CheckResult:
    """The check of a user's network without activation modules, judged on its layers' outputs
    (dead: a unit always 0; none saturates), saying plainly that these, not activations, were measured."""
    if not layers:
        return CheckResult(
            "activations",
            Verdict.WARN,
            "no activation modules, and no layer with weights before the scores",
            "nothing to measure: a linear classifier, or activations called as functions (F.relu) between "
            "layers that hold no weights of their own",
            {"depth": 0, "std_ratio": None, "max_saturated": None, "max_dead": 0.0},
        )
    kinds = _kinds(a.module for a in seen)
    judged = _judge_layers(layers, "this network", kinds)
    if judged.verdict is Verdict.PASS:
        judged = replace(judged, diagnosis="every layer's outputs nicely scaled")
    stds = ", ".join(f"{s.std:.3g}" for s in layers)
    plural = "s" if len(layers) != 1 else ""
    measured = f"no activation modules: outputs of {len(layers)} {kinds} layer{plural} before the scores, std {stds}"
    return replace(judged, measured=measured, diagnosis=f"{judged.diagnosis}; {NO_ACTIVATION_MODULES}")


def _layer_stats(layer: int, h: torch.Tensor, module: nn.Module, grad_norm: float, name: str | None) -> LayerStats:
    h = h.float().unsqueeze(1) if h.ndim == 1 else h.float()  # one feature per example
    units = h.transpose(0, 1).reshape(h.shape[1], -1)  # (units or channels, batch * positions)
    dead = float((units == 0).all(dim=1).float().mean())
    saturated: float | None = None
    if isinstance(module, nn.Tanh):
        saturated = float((h.abs() > 0.99).float().mean())
    elif isinstance(module, nn.Sigmoid):
        saturated = float(((h < 0.01) | (h > 0.99)).float().mean())
    return LayerStats(layer, float(h.mean()), float(h.std()), dead, saturated, grad_norm, name)


Problem = tuple[Verdict, str]


def _graded(value: float, warn: float, fail: float, message: str, above: bool = True) -> list[Problem]:
    """[] when value is on the good side of `warn`; else WARN or FAIL with the message."""
    if (value < warn) if above else (value > warn):
        return []
    bad = (value >= fail) if above else (value <= fail)
    return [(Verdict.FAIL if bad else Verdict.WARN, message)]


def _depth_problems(layers: list[LayerStats], activation: str) -> list[Problem]:
    if len(layers) < 2 or layers[0].std == 0:
        return []
    first, last = layers[0].std, layers[-1].std
    trend = f"std {first:.3g} → {last:.3g}"
    return _graded(
        last / first,
        COLLAPSE_WARN,
        COLLAPSE_FAIL,
        f"activations collapse toward zero across depth ({trend}): initial weights too small for "
        f"{activation}, no learning in deep layers",
        above=False,
    ) + _graded(last / first, GROWTH_WARN, GROWTH_FAIL, f"activations grow across depth ({trend}): weights too large")


def _unit_problems(layers: list[LayerStats], saturating: str) -> list[Problem]:
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
            f"{worst:.0%} of {saturating} outputs saturated: local gradients near zero, weights too large",
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


def _judge_layers(layers: list[LayerStats], activation: str, saturating: str) -> CheckResult:
    """`activation` names the layers' activation in messages, `saturating` the saturating ones."""
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
    problems = _depth_problems(layers, activation) + _unit_problems(layers, saturating) + _gradient_problems(layers)
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


# The check, the rows (largest lr first) and the recommended range, None unless some lr's loss fell.
ProbeOutcome = tuple[CheckResult, list[ProbeRow], tuple[float, float] | None]


def probe_learning_rates(spec: Spec, data: Dataset) -> ProbeOutcome:
    """~100 iterations on all training data with a small weight decay for each candidate lr; each
    gets a status from what its loss did, and the range is recommended from those whose loss fell:
    about a decade either side of the best, capped at the smallest larger lr whose loss rose."""
    rows = [probe_row(lr, _probe_losses(spec, data, lr)) for lr in sorted(spec.sanity.probe_lrs, reverse=True)]
    return judge_probe(rows, spec.sanity.probe_iterations)


def probe_status(start: float, end: float, lowest: float) -> ProbeStatus:
    """What a loss did that went from `start` (first iteration) to `end` (mean of the last 10),
    `lowest` being its lowest 10-iteration mean on the way."""
    if not math.isfinite(end):
        return ProbeStatus.DIVERGED
    if end > EXPLODED * start:
        return ProbeStatus.EXPLODED
    if end - start > ROSE_ABOVE * start:
        return ProbeStatus.ROSE
    if end - lowest > ROSE_ABOVE * start:
        return ProbeStatus.REBOUNDED
    return ProbeStatus.FELL if (start - end) / start >= SIGNIFICANT_DROP else ProbeStatus.BARELY_MOVED


def probe_row(lr: float, losses: list[float]) -> ProbeRow:
    """One probed lr from its per-iteration losses; a non-finite last loss means it diverged."""
    start = losses[0]
    if not math.isfinite(losses[-1]):
        return ProbeRow(lr, start, math.inf, -math.inf, math.inf, ProbeStatus.DIVERGED)
    # Means of consecutive windows counted back from the last iteration: the last one is the end.
    size = min(10, max(1, len(losses) // 2))
    means = [sum(w) / len(w) for w in (losses[max(0, i - size) : i] for i in range(len(losses), 0, -size))]
    end, lowest = means[0], min(means)
    return ProbeRow(lr, start, end, (start - end) / start, (end - lowest) / start, probe_status(start, end, lowest))


def judge_probe(rows: list[ProbeRow], iterations: int) -> ProbeOutcome:
    """The check and the recommended range from the probed lrs (any order)."""
    rows = sorted(rows, key=lambda r: r.lr, reverse=True)
    summary = ", ".join(f"{r.lr:g}: {_drop_text(r)}" for r in rows)
    measured = f"loss drop in {iterations} iterations: {summary}"
    too_high = sorted(r.lr for r in rows if r.status.too_high)
    numbers: dict[str, Any] = {"diverged": sorted(r.lr for r in rows if r.diverged), "too_high": too_high}
    fell = [r for r in rows if r.status is ProbeStatus.FELL]
    if not fell:
        diagnosis = _nothing_fell(rows, iterations)
        return CheckResult("lr_probe", Verdict.FAIL, measured, diagnosis, numbers), rows, None
    best = max(fell, key=lambda r: r.drop)
    # Learning rates whose loss fell nearly as far as the best one's are as good as the probe can
    # tell: centre the range on their geometric mean, a decade either side.
    good = [r.lr for r in fell if r.drop >= CLOSE_TO_BEST * best.drop]
    centre = math.exp(sum(math.log(lr) for lr in good) / len(good))
    low, high = centre / 10, centre * 10
    above = [lr for lr in too_high if lr > centre]
    if above:
        high = min(high, above[0])  # no point searching where the loss already rose or blew up
    edge = _probe_edge(best.lr, [r.lr for r in rows])
    numbers.update({"best_lr": best.lr, "good_lrs": good, "recommended": [low, high], "edge": edge})
    close = f", {', '.join(f'{lr:g}' for lr in good if lr != best.lr)} close" if len(good) > 1 else ""
    diagnosis = (
        f"best lr {best.lr:g} (loss {best.start_loss:.3g} → {best.end_loss:.3g}{close}); "
        f"coarse range lr {low:.1e}..{high:.1e}"
    )
    if edge is None:
        return CheckResult("lr_probe", Verdict.PASS, measured, diagnosis, numbers), rows, (low, high)
    # As the coarse search's edge warning: the probe has not bracketed the best lr.
    diagnosis += f"; {_edge_advice(best.lr, edge)}"
    return CheckResult("lr_probe", Verdict.WARN, measured, diagnosis, numbers), rows, (low, high)


def _drop_text(r: ProbeRow) -> str:
    if r.status is ProbeStatus.DIVERGED:
        return "diverged"
    if r.status is ProbeStatus.EXPLODED:  # the factor: a "drop" of -5.7e+22% says less
        return f"x{r.end_loss / r.start_loss:.2g} exploded"
    drop = r.drop if abs(r.drop) >= 0.005 else 0.0  # a rise that rounds to 0% reads "+0%", not "-0%"
    return f"{drop:+.0%} {r.status.value}"


def _probe_edge(best: float, lrs: list[float]) -> str | None:
    if len(lrs) == 1:
        return "only"
    if best == max(lrs):
        return "high"
    return "low" if best == min(lrs) else None


def _edge_advice(best: float, edge: str) -> str:
    if edge == "only":
        return f"best lr {best:g} is the only one probed: the best may lie either side; add lrs to sanity.probe_lrs"
    if edge == "high":
        return f"best lr {best:g} is the largest probed: the best may lie above; probe higher (sanity.probe_lrs)"
    return f"best lr {best:g} is the smallest probed: the best may lie below; probe lower (sanity.probe_lrs)"


def _nothing_fell(rows: list[ProbeRow], iterations: int) -> str:
    """The FAIL diagnosis when no probed lr made the loss fall, in the lecture's words: a loss that
    barely changes means the lr is too low, one that rises or explodes means it is too high."""
    low = [r.lr for r in rows if r.status is ProbeStatus.BARELY_MOVED]
    high = [r.lr for r in rows if r.status.too_high]
    if not low:
        verb = "diverged" if all(r.status is ProbeStatus.DIVERGED for r in rows) else "rose or diverged"
        return f"the loss {verb} at every lr probed: learning rate too high; try ones below {min(high):g}"
    if not high:
        return (
            f"the loss barely moved (fell < {SIGNIFICANT_DROP:.0%} in {iterations} iterations) at every lr "
            f"probed: learning rate too low; try ones above {max(low):g}, or check the model and data"
        )
    if max(low) < min(high):
        return (
            f"the loss barely moved at lr ≤ {max(low):g} and rose at lr ≥ {min(high):g}: probe between them, "
            "or check the initialization (see activation statistics)"
        )
    return "no lr made the loss fall, and too-low and too-high lrs interleave: check the model, data and initialization"


def _probe_losses(spec: Spec, data: Dataset, lr: float) -> list[float]:
    """The training loss of each of the probe's iterations at `lr`; stops at the first non-finite one."""
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
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return losses


def written_lr_range(low: float, high: float) -> tuple[float, float]:
    """The recommended range as --write-spec writes it: each end to 3 significant digits, 0.01 rather
    than the 0.010000000000000002 that a decade below a geometric mean leaves (report.json keeps the
    full floats). Rounded to nearest, not outward: an end that is a probed lr stays that lr (0.1 is
    stored as 0.1000000000000000055, which rounded up becomes 0.101, above the lr whose loss rose),
    and moving an end by at most 0.5% changes nothing in a range more than a decade wide."""
    return float(f"{low:.3g}"), float(f"{high:.3g}")


def spec_with_lr_range(spec: Spec, low: float, high: float) -> Spec:
    """A copy of the spec whose search space has lr log-uniform over [low, high] (the keys its file
    set still the only ones set, for spec.rewritten_spec's fallback: spec_to_yaml(as_written=True))."""
    space = {**spec.search.space, "lr": NumericRange(low=low, high=high, log=True)}
    return spec.model_copy(update={"search": spec.search.model_copy(update={"space": space})})


def share_outside(dom: NumericRange, low: float, high: float) -> float:
    """The share of a searched range's draws (uniform, or log-uniform when dom.log) outside [low, high]."""
    start, end = (min(1.0, max(0.0, position_in_range(v, dom))) for v in (low, high))
    return 1.0 - (end - start)


def lr_range_hint(spec: Spec, recommended: tuple[float, float] | None) -> str | None:
    """One line when much of the spec's searched lr range lies outside the probe's recommended range
    (each trial drawn there is likely wasted); None when lr is not a searched range or it fits."""
    dom = spec.search.space.get("lr")
    if recommended is None or not isinstance(dom, NumericRange):
        return None
    share = share_outside(dom, *recommended)
    if share < OUTSIDE_HINT:
        return None
    low, high = recommended
    return (
        f"search.space.lr {dom.low:g}..{dom.high:g} puts {share:.0%} of its trials outside the probe's range "
        f"{low:.1e}..{high:.1e}; --write-spec FILE writes this spec with the probe's range"
    )
