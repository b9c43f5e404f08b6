"""The lecture's babysitting checks, run before a search: initial loss, activation statistics at
init, overfitting a small sample, and a learning-rate probe that recommends the coarse range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpsearch.data import Dataset
from hpsearch.sanity.activations import activation_modules, check_activations
from hpsearch.sanity.base import fresh_model
from hpsearch.sanity.initial import check_initial_loss
from hpsearch.sanity.overfit import check_overfit
from hpsearch.sanity.probe import probe_learning_rates
from hpsearch.sanity.results import CHECK_NAMES, SanityReport
from hpsearch.spec.schema import Spec

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


# --------------------------------------------------------------------------- 1. initial loss


# --------------------------------------------------------------------------- 2. activation statistics


# --------------------------------------------------------------------------- 3. overfit a small sample


# --------------------------------------------------------------------------- 4. learning-rate probe
