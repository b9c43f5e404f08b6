"""The refine planner: the next stage's ranges from the last stage's best trials.

Around the top-k complete trials, with a margin, narrower than before when the best is interior;
moved outward past the edge when the best sits on it ("careful with best values on border")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import annotated_types

from hpsearch.rank import Edge, fmt_value, rank
from hpsearch.spec import SEARCHABLE, Categorical, ModelSpec, NumericRange, TrainSpec, is_int_param
from hpsearch.trial import TrialResult, TrialState, jsonable

MARGIN = 0.25  # the top-k span grows by this fraction of itself on each side
MIN_WIDTH = 0.1  # ... and is at least this fraction of the previous range wide
MAX_WIDTH = 0.5  # an interior refinement is at most this fraction of the previous range wide


@dataclass(frozen=True)
class RangePlan:
    """How one parameter's range changes from one stage to the next, and why."""

    name: str
    old: NumericRange | Categorical
    new: NumericRange | Categorical
    rule: str  # human-readable: the span of the top-k and what was done at an edge

    def describe(self) -> str:
        return f"{self.name}: {_show(self.old)} → {_show(self.new)} ({self.rule})"

    def to_dict(self) -> dict[str, Any]:
        return {"old": _dump(self.old), "new": _dump(self.new), "rule": self.rule}


def _show(dom: NumericRange | Categorical) -> str:
    if isinstance(dom, Categorical):
        return "{" + ", ".join(fmt_value(v) for v in dom.values) + "}"
    return f"[{fmt_value(dom.low)}, {fmt_value(dom.high)}]"


def _dump(dom: NumericRange | Categorical) -> dict[str, Any]:
    return dom.model_dump(mode="json", exclude_none=True)


def top_complete(results: list[TrialResult], k: int) -> list[TrialResult]:
    """The best k complete trials, in the ranking's order (ties broken as rank() breaks them)."""
    return [r for r in rank(results) if r.state is TrialState.COMPLETE and r.val_acc is not None][:k]


def plan_ranges(
    space: dict[str, NumericRange | Categorical], top: list[TrialResult], edges: list[Edge]
) -> list[RangePlan]:
    """The next stage's range for every searched parameter. `top` is best first."""
    flags = {e.name: e.flag for e in edges}
    plans = []
    for name, dom in sorted(space.items()):
        if isinstance(dom, Categorical):
            plans.append(_plan_categorical(name, dom, top))
        else:
            plans.append(_plan_numeric(name, dom, top, flags.get(name)))
    return plans


def _plan_categorical(name: str, dom: Categorical, top: list[TrialResult]) -> RangePlan:
    seen = [v for v in dom.values if any(_same(r.params.get(name), v) for r in top)]
    new = Categorical(values=tuple(seen)) if seen else dom
    return RangePlan(name, dom, new, f"values of the top-{len(top)}")


def _same(a: Any, b: Any) -> bool:
    return bool(jsonable(a) == jsonable(b))


def _plan_numeric(name: str, dom: NumericRange, top: list[TrialResult], flag: str | None) -> RangePlan:
    to, back = (math.log10, lambda u: 10.0**u) if dom.log else (float, float)
    values = [float(r.params[name]) for r in top]
    old_lo, old_hi = to(dom.low), to(dom.high)
    width = old_hi - old_lo
    span_lo, span_hi = to(min(values)), to(max(values))
    margin = max(MARGIN * (span_hi - span_lo), MIN_WIDTH * width / 2)
    lo, hi = span_lo - margin, span_hi + margin
    best = to(values[0])
    span = f"top-{len(top)} span {fmt_value(min(values))}..{fmt_value(max(values))}"
    if flag in ("high", "low"):
        # Centre the new range on the edge the best sits on, reaching as far inside as the top
        # trials (plus the margin), but never wider than MAX_WIDTH of the old range.
        edge = old_hi if flag == "high" else old_lo
        reach = (edge - lo) if flag == "high" else (hi - edge)
        half = min(max(reach, margin), MAX_WIDTH * width / 2)
        lo, hi = edge - half, edge + half
        rule = f"{span}; best at {flag} edge: extended {'upward' if flag == 'high' else 'downward'}"
    else:
        lo, hi = max(lo, old_lo), min(hi, old_hi)
        if hi - lo > MAX_WIDTH * width:
            # The top trials are spread out: zoom in around the best one instead.
            half = MAX_WIDTH * width / 2
            centre = min(max(best, old_lo + half), old_hi - half)
            lo, hi = centre - half, centre + half
            rule = f"{span} too wide; {MAX_WIDTH:.0%} of the range around the best"
        else:
            rule = span
    low, high = _clamp(name, back(lo), back(hi), dom)
    return RangePlan(name, dom, NumericRange(low=low, high=high, log=dom.log), rule)


def _clamp(name: str, low: float, high: float, dom: NumericRange) -> tuple[float, float]:
    """Keep the bounds inside what the field accepts (lr > 0, dropout < 1, ...), integers whole."""
    low, high = _round_sig(low), _round_sig(high)
    field = (TrainSpec if SEARCHABLE[name] == "train" else ModelSpec).model_fields[name]
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Gt):
            low = max(low, math.nextafter(float(bound.gt), math.inf))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Ge):
            low = max(low, float(bound.ge))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Lt):
            high = min(high, math.nextafter(float(bound.lt), -math.inf))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Le):
            high = min(high, float(bound.le))  # type: ignore[arg-type]
    if is_int_param(name):
        low, high = float(max(1, math.floor(low))), float(math.ceil(high))
    if high <= low:  # squeezed against a field limit: fall back to the old range
        return dom.low, dom.high
    return low, high


def _round_sig(v: float, digits: int = 3) -> float:
    """Ranges read better as 2.1e-04 than 2.0893e-04; three significant digits lose nothing useful."""
    if v == 0 or not math.isfinite(v):
        return v
    return float(f"{v:.{digits - 1}e}")
