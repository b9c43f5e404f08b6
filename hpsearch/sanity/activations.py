"""The activation-statistics check: the std of each hidden layer's output at init, the share of
saturated and dead units, and the first-over-last weight-gradient ratio, each graded against the
thresholds below. A user's network is measured at its activation modules (or, with none, at its
weighted layers' outputs)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.errors import SpecError
from hpsearch.sanity.base import first_batches, fresh_model
from hpsearch.sanity.results import CheckResult, CheckVerdict, LayerStats
from hpsearch.spec.schema import Spec
from hpsearch.training.models import Maxout, Net
from hpsearch.training.trial import training_loss

LARGE_STD = 10.0  # inputs are normalized to about unit scale; hidden activations far above it are suspect
GRAD_RATIO_WARN = 1e-3  # first-layer over last-layer weight-gradient norm
Problem = tuple[CheckVerdict, str]

# Modules whose outputs are hidden activations in a user's network, found by type.
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, Maxout)

# Activation statistics: std of the last hidden layer over the first; fractions of units per layer.
COLLAPSE_FAIL, COLLAPSE_WARN = 0.2, 0.5
GROWTH_WARN, GROWTH_FAIL = 5.0, 20.0
SATURATED_WARN, SATURATED_FAIL = 0.05, 0.20
DEAD_WARN, DEAD_FAIL = 0.10, 0.50


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
    (idx,) = first_batches(spec, data, 1, spec.sanity.activation_batch)
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
            CheckVerdict.WARN,
            "no activation modules, and no layer with weights before the scores",
            "nothing to measure: a linear classifier, or activations called as functions (F.relu) between "
            "layers that hold no weights of their own",
            {"depth": 0, "std_ratio": None, "max_saturated": None, "max_dead": 0.0},
        )
    kinds = _kinds(a.module for a in seen)
    judged = _judge_layers(layers, "this network", kinds)
    if judged.verdict is CheckVerdict.PASS:
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


def _graded(value: float, warn: float, fail: float, message: str, above: bool = True) -> list[Problem]:
    """[] when value is on the good side of `warn`; else WARN or FAIL with the message."""
    if (value < warn) if above else (value > warn):
        return []
    bad = (value >= fail) if above else (value <= fail)
    return [(CheckVerdict.FAIL if bad else CheckVerdict.WARN, message)]


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
        problems.append(
            (CheckVerdict.WARN, f"activations very large at init (std up to {largest:.3g}): weights too large")
        )
    if any(s.std == 0 for s in layers):
        problems.append((CheckVerdict.FAIL, "a layer's activations are all equal: nothing flows forward"))
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
        return [(CheckVerdict.FAIL, "non-finite gradients at init")]
    if len(grads) >= 2 and grads[-1] > 0 and grads[0] / grads[-1] < GRAD_RATIO_WARN:
        return [
            (CheckVerdict.WARN, f"gradients vanish toward the input (first/last layer norm {grads[0] / grads[-1]:.1e})")
        ]
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
            "activations", CheckVerdict.PASS, "no hidden layers", "a linear classifier: nothing to check", numbers
        )
    problems = _depth_problems(layers, activation) + _unit_problems(layers, saturating) + _gradient_problems(layers)
    if not problems:
        return CheckResult(
            "activations", CheckVerdict.PASS, measured, "activations nicely scaled in every layer", numbers
        )
    worst = CheckVerdict.FAIL if any(v is CheckVerdict.FAIL for v, _ in problems) else CheckVerdict.WARN
    return CheckResult("activations", worst, measured, "; ".join(msg for _, msg in problems), numbers)
