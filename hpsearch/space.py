"""Parameter ranges and sampling: log-uniform random search and grids, deterministic per trial id.
May import: errors, records, spec; numpy."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from hpsearch.errors import SpecError
from hpsearch.records import TrialConfig
from hpsearch.spec import Categorical, NumericRange, Sampler, SearchSpec, Spec, is_int_param


def sample_numeric(name: str, dom: NumericRange, rng: np.random.Generator) -> float | int:
    """One draw: uniform in log10 space when `log`, else uniform; integers cover [low, high] evenly."""
    integer = is_int_param(name)
    # For integers draw from [low, high + 1) and floor, so both ends are as likely as any inner value.
    low, high = dom.low, dom.high + (1 if integer else 0)
    u = rng.uniform(math.log10(low), math.log10(high)) if dom.log else rng.uniform(low, high)
    value = 10.0**u if dom.log else u
    if integer:
        return int(min(math.floor(value), dom.high))
    return float(value)


def grid_axis(name: str, dom: NumericRange, points: int) -> list[float | int]:
    """`points` values from low to high inclusive, evenly spaced in log10 space when `log`."""
    if points == 1:
        ends = [math.sqrt(dom.low * dom.high) if dom.log else (dom.low + dom.high) / 2]
    elif dom.log:
        ends = list(np.logspace(math.log10(dom.low), math.log10(dom.high), points))
    else:
        ends = list(np.linspace(dom.low, dom.high, points))
    if is_int_param(name):
        return sorted({int(round(v)) for v in ends})
    return [float(v) for v in ends]


class TrialSampler:
    """Maps a trial id to its parameters. Trial i's parameters depend only on (seed, i)."""

    def __init__(self, search: SearchSpec) -> None:
        self.search = search
        self.seed = search.seed
        self._grid = _make_grid(search) if search.sampler is Sampler.GRID else None

    @property
    def n_trials(self) -> int:
        return len(self._grid) if self._grid is not None else self.search.trials

    def params(self, trial_id: int) -> dict[str, Any]:
        if self._grid is not None:
            return dict(self._grid[trial_id])
        # A generator per trial keyed by (seed, trial id): resuming or distributing trials
        # never shifts which values a trial gets.
        rng = np.random.default_rng([self.seed, trial_id])
        out: dict[str, Any] = {}
        for name in sorted(self.search.space):
            dom = self.search.space[name]
            if isinstance(dom, Categorical):
                out[name] = dom.values[int(rng.integers(len(dom.values)))]
            else:
                out[name] = sample_numeric(name, dom, rng)
        return out

    def all_params(self) -> list[dict[str, Any]]:
        return [self.params(i) for i in range(self.n_trials)]


def _make_grid(search: SearchSpec) -> list[dict[str, Any]]:
    names = sorted(search.space)
    numeric = [n for n in names if isinstance(search.space[n], NumericRange)]
    combos = math.prod(len(d.values) for d in search.space.values() if isinstance(d, Categorical))
    free = [n for n in numeric if _points(search.space[n]) is None]
    fixed = math.prod(p for n in numeric if (p := _points(search.space[n])) is not None)
    # Points per free numeric axis: as many as the trial budget allows, the same on every axis.
    per_axis = max(1, int(math.floor((search.trials / (combos * fixed)) ** (1 / len(free)) + 1e-9))) if free else 1
    axes: list[list[Any]] = []
    for n in names:
        dom = search.space[n]
        if isinstance(dom, Categorical):
            axes.append(list(dom.values))
        else:
            axes.append(grid_axis(n, dom, _points(dom) or per_axis))
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]
    if len(grid) > search.trials:
        raise SpecError(
            f"search.trials: the grid has {len(grid)} points but trials is {search.trials}; "
            "raise trials or lower the points/values"
        )
    return grid


def _points(dom: Any) -> int | None:
    return dom.points if isinstance(dom, NumericRange) else None


def trial_configs(spec: Spec, spec_path: str | None = None) -> list[TrialConfig]:
    """Every trial of the spec's search, in trial order. A sampler error names `spec_path`."""
    try:
        sampler = TrialSampler(spec.search)
    except SpecError as e:
        raise SpecError(f"{spec_path}: {e}" if spec_path else str(e)) from None
    configs = []
    for i in range(sampler.n_trials):
        params = sampler.params(i)
        trial_spec = spec.resolved(params)
        configs.append(TrialConfig(i, params, trial_spec.model, trial_spec.train, spec.search.seed))
    return configs
