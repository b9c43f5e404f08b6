"""Ranking trials and flagging best values on the border of their range.
May import: records, spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpsearch.records import TrialResult, TrialState
from hpsearch.spec import Categorical, NumericRange

EDGE_FRACTION = 0.1  # a best value in the outer 10% of its range is "on the border"

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


@dataclass(frozen=True)
class Edge:
    name: str
    low: float
    high: float
    log: bool
    best: float
    position: float  # 0 = low end, 1 = high end; measured in log10 space for log ranges
    flag: str | None  # "low", "high" or None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("low", "high", "log", "best", "position", "flag")}

    def advice(self) -> str:
        where = "high" if self.flag == "high" else "low"
        direction = "upward" if self.flag == "high" else "downward"
        return (
            f"{self.name}: best {fmt_value(self.best)} is at the {where} edge of "
            f"[{fmt_value(self.low)}, {fmt_value(self.high)}]: widen the range {direction}"
        )


def position_in_range(value: float, dom: NumericRange) -> float:
    if dom.log:
        return (math.log10(value) - math.log10(dom.low)) / (math.log10(dom.high) - math.log10(dom.low))
    return (value - dom.low) / (dom.high - dom.low)


def edges(space: dict[str, NumericRange | Categorical], best: TrialResult | None) -> list[Edge]:
    """For each searched numeric parameter, where the best complete trial's value sits in its range."""
    if best is None or best.state is not TrialState.COMPLETE:
        return []
    out = []
    for name, dom in sorted(space.items()):
        if not isinstance(dom, NumericRange):
            continue
        value = float(best.params[name])
        pos = position_in_range(value, dom)
        flag = "low" if pos < EDGE_FRACTION else "high" if pos > 1 - EDGE_FRACTION else None
        out.append(Edge(name, dom.low, dom.high, dom.log, value, pos, flag))
    return out


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
