"""Parameter ranges and sampling: log-uniform random search and grids, deterministic per trial id; a grid
said in one line, and refused when it cannot give each free axis 3 points or when nothing is searched."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hpsearch.errors import SpecError
from hpsearch.runs.records import TrialConfig
from hpsearch.spec.choices import Sampler
from hpsearch.spec.schema import Categorical, NumericRange, SearchSpec, Spec, is_int_param


def sample_numeric(name: str, dom: NumericRange, rng: np.random.Generator) -> float | int:
    """One draw: uniform in log10 space when `log`, else uniform; integers cover [low, high] evenly."""
    integer = is_int_param(name, dom)
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
    if is_int_param(name, dom):
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
        """The trials planned up front: a grid's points, or search.trials; with sampler: tpe only its
        startup trials (the model proposes the rest as trials finish: hpsearch.search.tpe)."""
        if self._grid is not None:
            return len(self._grid)
        if self.search.proposed:
            return min(self.search.trials, self.search.tpe_settings.startup_trials)
        return self.search.trials

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


MIN_GRID_POINTS = 3  # fewer on an axis tries only its ends (or its middle): nothing inside to find


@dataclass(frozen=True)
class _GridAxis:
    """One axis of a grid: its values, and whether the spec set them or the trial budget did."""

    name: str
    values: list[Any]
    # values: a categorical's; set: `points: N`; free: what search.trials allows; every: all of an integer range
    kind: Literal["values", "set", "free", "every"]


def _grid_axes(search: SearchSpec) -> list[_GridAxis]:
    """The grid's axes, in name order. Free numeric axes (no `points:`) share the trial budget
    evenly; a budget that leaves one fewer than MIN_GRID_POINTS is a SpecError."""
    points = _free_points(search)
    wanted = {n: min(MIN_GRID_POINTS, _capacity(n, search.space[n])) for n in points}
    short = [n for n in points if points[n] < wanted[n]]
    if short:
        fewest = min(points[n] for n in short)
        needed = _fixed_size(search) * math.prod(wanted.values())
        raise SpecError(
            f"search.trials: {search.trials} trials leave {fewest} grid point{'s' if fewest > 1 else ''} "
            f"on {_and(short)}; {MIN_GRID_POINTS} points on each needs {needed} trials: raise search.trials to "
            f"{needed}, give a range points: to ask for fewer, or use sampler: random (the lecture prefers it)"
        )
    axes = []
    for n in sorted(search.space):
        dom = search.space[n]
        if isinstance(dom, Categorical):
            axes.append(_GridAxis(n, list(dom.values), "values"))
        elif dom.points is not None:
            axes.append(_GridAxis(n, grid_axis(n, dom, dom.points), "set"))
        else:
            values = grid_axis(n, dom, points[n])
            axes.append(_GridAxis(n, values, "every" if len(values) == _capacity(n, dom) else "free"))
    size = math.prod(len(a.values) for a in axes)
    if size > search.trials:
        raise SpecError(
            f"search.trials: the grid has {size} points but trials is {search.trials}; "
            "raise trials or lower the points/values"
        )
    return axes


def describe_grid(search: SearchSpec, spec_path: str | None = None) -> str | None:
    """One line saying what grid the grid sampler builds and why; None for random search.
    A grid the sampler refuses raises its SpecError, naming `spec_path`."""
    if search.sampler is not Sampler.GRID:
        return None
    with _naming(spec_path):
        axes = _grid_axes(search)
    size = math.prod(len(a.values) for a in axes)
    shape = " x ".join(f"{a.name} {_count(a)}" for a in axes) or "nothing searched"
    budget = f"search.trials {search.trials}"
    if size < search.trials:
        budget += f": {search.trials - size} unused"
        grown = [a for a in axes if a.kind == "free"]
        if grown:  # why not more: one more point on each axis that could take one would not fit
            more = _free_points(search)[grown[0].name] + 1
            need = math.prod(len(a.values) for a in axes if a.kind != "free") * more ** len(grown)
            budget += f"; {more} points on each of {', '.join(a.name for a in grown)} would need {need}"
    return f"grid: {shape} = {size} trial{'s' if size != 1 else ''} ({budget})"


def _count(axis: _GridAxis) -> str:
    n = len(axis.values)
    if axis.kind == "values":
        return f"{n} value{'s' if n != 1 else ''}"
    note = {"set": " (set)", "every": " (every integer)"}.get(axis.kind, "")
    return f"{n} point{'s' if n != 1 else ''}{note}"


def _fixed_size(search: SearchSpec) -> int:
    """Grid points the spec fixes: the product of the categorical values and the set points."""
    sizes = [len(d.values) if isinstance(d, Categorical) else d.points or 1 for d in search.space.values()]
    return math.prod(sizes)


def _free_points(search: SearchSpec) -> dict[str, int]:
    """Points per free numeric axis (no `points:`): as many as the trial budget allows, the same on
    every axis, except that an integer range holding fewer integers gets them all and leaves the
    rest of the budget to the others."""
    free = [n for n, d in search.space.items() if isinstance(d, NumericRange) and d.points is None]
    budget = search.trials / _fixed_size(search)
    out: dict[str, int] = {}
    remaining = sorted(free, key=lambda n: _capacity(n, search.space[n]))
    while remaining:
        # 1e-9: (27 ** (1/3)) is 2.9999999999999996 in floating point
        per_axis = max(1, int(math.floor(budget ** (1 / len(remaining)) + 1e-9)))
        name = remaining[0]
        capacity = _capacity(name, search.space[name])
        if capacity > per_axis:
            out.update({n: per_axis for n in remaining})
            break
        out[name] = int(capacity)
        budget /= capacity
        remaining.pop(0)
    return out


def _capacity(name: str, dom: Any) -> float:
    """How many distinct values a range holds: its integers, or (floats) any number."""
    return int(dom.high) - int(dom.low) + 1 if isinstance(dom, NumericRange) and is_int_param(name, dom) else math.inf


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _make_grid(search: SearchSpec) -> list[dict[str, Any]]:
    axes = _grid_axes(search)
    names = [a.name for a in axes]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(a.values for a in axes))]


def _check_searches_something(search: SearchSpec) -> None:
    """A search of nothing trains search.trials copies of one configuration: refused, but one trial
    of it is a baseline. (A range with low == high is already refused by the spec.)"""
    if search.trials == 1:
        return
    if not search.space:
        raise SpecError(
            f"search.space: nothing is searched, so the {search.trials} trials would train one configuration "
            f"{search.trials} times; add a range (e.g. lr: {{low: 1.0e-5, high: 1.0, log: true}}) or set "
            "search.trials: 1 for one baseline"
        )
    if all(isinstance(d, Categorical) and len(set(map(repr, d.values))) == 1 for d in search.space.values()):
        raise SpecError(
            f"search.space: every searched parameter has one value ({', '.join(sorted(search.space))}), so the "
            f"{search.trials} trials would train one configuration {search.trials} times; give one of them "
            "more values or a range, or set search.trials: 1 for one baseline"
        )


@contextmanager
def _naming(spec_path: str | None) -> Iterator[None]:
    """A SpecError raised inside names the spec file, as the spec's own errors do."""
    try:
        yield
    except SpecError as e:
        raise SpecError(f"{spec_path}: {e}" if spec_path else str(e)) from None


def trial_configs(spec: Spec, spec_path: str | None = None, *, one_config_ok: bool = False) -> list[TrialConfig]:
    """Every trial of the spec's search planned up front, in trial order (sampler: tpe: its
    startup trials, which are random search's). A sampler error names `spec_path`.
    A search of nothing with several trials is refused unless `one_config_ok` (a planner that
    trains each configuration once however often it is drawn, as refine does)."""
    with _naming(spec_path):
        if not one_config_ok:
            _check_searches_something(spec.search)
        sampler = TrialSampler(spec.search)
    return [trial_config(spec, i, sampler.params(i)) for i in range(sampler.n_trials)]


def planned_trials(search: SearchSpec, configs: Sequence[TrialConfig]) -> int:
    """The trials a stage trains: its planned configs; with sampler: tpe, search.trials (all but
    the startup trials proposed as others finish)."""
    return search.trials if search.proposed else len(configs)


def trial_config(spec: Spec, trial_id: int, params: dict[str, Any]) -> TrialConfig:
    """Trial `trial_id` of `spec`'s search, with these values of the searched parameters."""
    trial_spec = spec.resolved(params)
    return TrialConfig(trial_id, params, trial_spec.model, trial_spec.train, spec.search.seed)
