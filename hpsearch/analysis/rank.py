"""Ranking trials, their noise (Wilson intervals, the tied set), and each range's Edge: the best
trial's position beside the stage's verdict (computed by verdicts.py, which imports this module)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.spec.schema import NumericRange

if TYPE_CHECKING:
    pass

EDGE_FRACTION = 0.1  # the outer 10% of a range is its "border"

# Stopped trials (successive halving) trained fine, only shorter: they rank with the complete ones,
# below every trial that reached a higher rung.
_STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.STOPPED: 0, TrialState.DIVERGED: 1, TrialState.FAILED: 2}


def rank(results: list[TrialResult]) -> list[TrialResult]:
    """Best first: trials that trained (complete, or stopped by halving) by the rung they reached,
    then validation accuracy (ties: lower train loss); then diverged, failed and the rest."""
    return sorted(results, key=rank_key)


def rank_key(r: TrialResult) -> tuple[Any, ...]:
    order = _STATE_ORDER.get(r.state, 3)
    acc = -(r.val_acc if r.val_acc is not None else -1.0)
    loss = r.train_loss if r.train_loss is not None and math.isfinite(r.train_loss) else math.inf
    return (order, -(r.rung or 0), acc, loss, r.trial)


Z95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(acc: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on n examples: (low, high) within [0, 1].
    Unlike acc +- 1.96 s.e. it stays inside [0, 1] and is right near 0 and 1 (Wilson, 1927)."""
    if n <= 0:
        return (0.0, 1.0)
    z2 = z * z
    centre = (acc + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# What results.json says its `ties` are; the overlap of two 95% intervals is a stricter test than
# one 95% test of their difference, so "tied" errs toward calling a real lead noise.
TIE_RULE = (
    "tied for best: the complete trials at the best's rung whose 95% Wilson interval of validation "
    "accuracy overlaps the best's"
)


def tied_with_best(ranked: list[TrialResult], val_size: int) -> list[TrialResult]:
    """The complete trials whose validation accuracy's 95% interval overlaps the best's, the best
    first (best first as `ranked` is): with this many validation examples, noise could have picked
    any of them. Only trials at the best's rung compare (halving: shorter trials are not rivals)."""
    best = next((r for r in ranked if r.state is TrialState.COMPLETE and r.val_acc is not None), None)
    if best is None or best.val_acc is None:
        return []
    low = wilson_interval(best.val_acc, val_size)[0]
    return [
        r
        for r in ranked
        if r.state is TrialState.COMPLETE
        and r.val_acc is not None
        and r.rung == best.rung
        and wilson_interval(r.val_acc, val_size)[1] >= low
    ]


def position_in_range(value: float, dom: NumericRange) -> float:
    if dom.log:
        return (math.log10(value) - math.log10(dom.low)) / (math.log10(dom.high) - math.log10(dom.low))
    return (value - dom.low) / (dom.high - dom.low)


def fmt_value(v: Any) -> str:
    """One value as a person reads it: `1e-04`, `9.6e-04`, `0.5`, `100`; layer widths as `256x128`
    whether they are a tuple (a fresh run) or a list (read back from JSON)."""
    if isinstance(v, (list, tuple)):
        return "x".join(fmt_value(x) for x in v) if v else "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(getattr(v, "value", v))
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if abs(v) < 1e-2 or abs(v) >= 1e4:
        short = f"{v:.0e}"
        return short if float(short) == v else f"{v:.1e}"
    return f"{v:.3g}"
