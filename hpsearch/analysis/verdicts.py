"""Range verdicts: what a whole stage says about each searched numeric parameter's range.

The best trial alone cannot say it: when nothing learned, the best is noise, and one lucky trial on
a border says nothing about the trend. So every trial that trained counts:

- nothing learned: every trial flat, at chance or diverged (curves.curve_label). No accuracy trend
  can be read; the learning rate's side of the failures says which way to move (a stage verdict,
  said once, on lr).
- edge: accuracy points past a bound: a quadratic fit of accuracy against the parameter still
  rises at the outer 10% of the range, or the trials tied with the best (rank.tied_with_best) are
  all pressed against it.
- unsampled: the fit rises toward a part of the range that no trial sampled (its outer quarter
  holds none): a fit may not speak for where there are no trials, so the optimum may lie there,
  inside the range. Refine reaches to that bound, never past it.
- inside: neither: the optimum is inside the range, or there is no trend beyond noise.

rank.edges puts a verdict beside the best trial's position; results.json, the CLI's warnings and
the refine planner read it there.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from hpsearch.analysis.curves import ASSUMED_VAL_SIZE, CurveLabel, at_chance, curve_label, lr_span
from hpsearch.analysis.rank import EDGE_FRACTION, fmt_value, position_in_range, rank, tied_with_best
from hpsearch.runs.records import CurveData, TrialResult, TrialState
from hpsearch.spec.schema import Categorical, NumericRange, SearchSpec

# The fit is called an edge when its slope at the outer 10% (the fitted peak lies there or beyond)
# exceeds two standard errors of that slope, taken from the fit's residuals (so seed noise,
# validation noise and the other parameters' effects all count). Measured on accuracies that are
# pure noise: 4.3% of 20-trial stages get an edge (3.7% at 100 trials, 7% at 8); a monotone rise of
# 0.25 over the range with 2 points of noise is caught in 98% of 20-trial stages.
SLOPE_Z = 2.0
MIN_FIT_TRIALS = 8  # three coefficients need residual degrees of freedom for a standard error
# The tied set lies at an edge when the best is in the outer 10% and every tied trial in the outer
# quarter: the trials that noise cannot tell from the best crowd that bound. Two at least: one
# trial is one sample, however lucky.
TIED_ZONE = 0.25
MIN_TIED = 2
# A side of the range is unsampled when no trial lies in its outer quarter: n trials drawn uniformly
# leave a given quarter empty with chance 0.75^n (10% at 8 trials, 0.3% at 20), so at a realistic
# trial count an empty quarter is a fact about the draws, and a fit's slope there is extrapolation.
UNSAMPLED_GAP = 0.25


class Verdict(str, enum.Enum):
    NOTHING_LEARNED = "nothing_learned"  # every trial flat, at chance or diverged: no trend to read
    EDGE = "edge"  # accuracy points past a bound: widen the range there
    UNSAMPLED = "unsampled"  # accuracy rises toward a part of the range no trial sampled: search it
    INSIDE = "inside"  # the optimum is inside the range, or no trend beyond noise


@dataclass(frozen=True)
class RangeVerdict:
    verdict: Verdict
    # "low" or "high": the bound to widen the range past (edge), or to reach to (unsampled); None: neither
    flag: str | None
    reason: str  # one line, without the parameter's name
    warning: str | None = None  # the line to warn with; None: nothing to do, or said on another parameter


class _Side(str, enum.Enum):
    """Which way a trial that learned nothing failed."""

    LOW = "low"  # flat, or at chance: the learning rate too low (or the data wrong)
    HIGH = "high"  # diverged, or its loss rose (or fell then rose) and it stayed at chance: lr too high


def range_verdicts(
    results: Sequence[TrialResult], search: SearchSpec, data: CurveData | None = None
) -> dict[str, RangeVerdict]:
    """The verdict on each searched numeric parameter's range, from every trial of the stage.

    `data` (the classes and validation examples) lets chance accuracy be judged; without it only
    flat and diverged trials count as having learned nothing. With successive halving
    (`search.halving`) accuracies are compared at the first rung's epochs, which every trial
    reached, and the tied set at the top rung. Empty when no trial trained."""
    ran = [r for r in results if r.state in (TrialState.COMPLETE, TrialState.STOPPED, TrialState.DIVERGED)]
    numeric = {name: dom for name, dom in sorted(search.space.items()) if isinstance(dom, NumericRange)}
    if not ran or not numeric:
        return {}
    sides = [_failed_side(r, data) for r in ran]
    if all(side is not None for side in sides):
        return _nothing_learned(ran, [s for s in sides if s is not None], numeric)
    epochs = search.halving.min_epochs if search.halving is not None else None  # the first rung's
    floor = 1 / data.num_classes if data is not None and data.num_classes else None
    tied = tied_with_best(rank(list(results)), data.val_size if data is not None else ASSUMED_VAL_SIZE)
    return {name: _judge(name, dom, ran, tied, epochs, floor) for name, dom in numeric.items()}


def _failed_side(r: TrialResult, data: CurveData | None) -> _Side | None:
    """The side a trial that learned nothing failed on; None when it learned."""
    # A trial stopped by halving trained fine, only shorter: its curves read as a complete one's.
    labelled = replace(r, state=TrialState.COMPLETE) if r.state is TrialState.STOPPED else r
    classes, val_size = (data.num_classes, data.val_size) if data is not None else (None, None)
    label = curve_label(labelled, classes, val_size)
    if label is CurveLabel.DIVERGED:
        return _Side.HIGH
    if label in (CurveLabel.EXPLODING, CurveLabel.REBOUNDED):  # a rising loss can still have learned (0.26 at lr 0.26)
        return _Side.HIGH if classes and val_size and at_chance(labelled, classes, val_size) else None
    if label in (CurveLabel.FLAT, CurveLabel.CHANCE):
        return _Side.LOW
    return None


# --------------------------------------------------------------------------- nothing learned


def _nothing_learned(
    ran: list[TrialResult], sides: list[_Side], numeric: dict[str, NumericRange]
) -> dict[str, RangeVerdict]:
    """One stage verdict, said once: on lr when it is searched, else on the first parameter."""
    carrier = "lr" if "lr" in numeric else next(iter(numeric))
    flag, reason = _which_way(ran, sides, numeric.get("lr"))
    out = {}
    for name in numeric:
        if name == carrier:
            out[name] = RangeVerdict(Verdict.NOTHING_LEARNED, flag, reason, f"{name}: {reason}")
        else:
            note = f"nothing learned in this stage: no trend to read (see {carrier})"
            out[name] = RangeVerdict(Verdict.NOTHING_LEARNED, None, note)
    return out


_DID = {_Side.LOW: "had a flat loss or stayed at chance", _Side.HIGH: "diverged or had a rising loss at chance"}
_SOME_DID = {_Side.LOW: "were flat or at chance", _Side.HIGH: "diverged or rose"}


def _which_way(ran: list[TrialResult], sides: list[_Side], lr: NumericRange | None) -> tuple[str | None, str]:
    """(the bound to widen past, the reason): the lecture's reading of flat and diverged curves. When
    the trials left the part of the range they point to unsampled, searching it comes first."""
    n = len(ran)
    lr_searched = lr is not None
    for side, way, move, verb in ((_Side.LOW, "high", "upward", "raise"), (_Side.HIGH, "low", "downward", "lower")):
        if not all(s is side for s in sides):
            continue
        too = "too low (or the data or labels are wrong)" if side is _Side.LOW else "too high"
        said = f"nothing learned: all {n} trials {_DID[side]}{lr_span(ran)}: the learning rate is {too}"
        if lr is None:
            return None, f"{said}; {verb} train.lr"
        lrs = [float(r.params["lr"]) for r in ran]
        gap = unsampled_part(lr, lrs, way)
        if gap is not None:
            bound, to = ("low", max(lrs)) if way == "high" else ("high", min(lrs))
            return None, f"{said} there, but {gap}: search there first ({verb} its {bound} bound to {fmt_value(to)})"
        return way, f"{said}; widen the range {move}"
    low = [r for r, s in zip(ran, sides, strict=True) if s is _Side.LOW]
    high = [r for r, s in zip(ran, sides, strict=True) if s is _Side.HIGH]
    counts = f"{len(low)} of {n} trials {_SOME_DID[_Side.LOW]}, {len(high)} {_SOME_DID[_Side.HIGH]}"
    if lr_searched:
        below, above = max(float(r.params["lr"]) for r in low), min(float(r.params["lr"]) for r in high)
        if below < above:
            return None, (
                f"nothing learned: {counts}: too low up to lr {fmt_value(below)}, too high from "
                f"{fmt_value(above)}: the useful learning rates lie between; narrow the range to "
                f"[{fmt_value(below)}, {fmt_value(above)}]"
            )
        return None, (
            f"nothing learned: {counts}, at overlapping learning rates: something besides lr stops "
            "learning (weight decay, init, the data); check the other parameters"
        )
    return None, f"nothing learned: {counts} at the same train.lr: check the other parameters and the data"


def unsampled_part(dom: NumericRange, values: Sequence[float], side: str) -> str | None:
    """'the upper 2 decades of [1e-04, 1] (above 0.011) were not sampled' when no value lies in the
    range's outer quarter on `side` ("low" or "high"); None when one does."""
    positions = [position_in_range(v, dom) for v in values]
    if not positions:
        return None
    gap = 1 - max(positions) if side == "high" else min(positions)
    if gap <= UNSAMPLED_GAP:
        return None
    edge = max(values) if side == "high" else min(values)
    part = "upper" if side == "high" else "lower"
    beyond = "above" if side == "high" else "below"
    if dom.log:
        decades = round(gap * (math.log10(dom.high) - math.log10(dom.low)), 1)
        size, were = f"{decades:g} decade{'' if decades == 1 else 's'}", "was" if decades <= 1 else "were"
    else:
        size, were = f"{gap:.0%}", "was"
    bounds = f"[{fmt_value(dom.low)}, {fmt_value(dom.high)}]"
    return f"the {part} {size} of {bounds} ({beyond} {fmt_value(edge)}) {were} not sampled"


# --------------------------------------------------------------------------- edge or inside


class QuadraticFit(NamedTuple):
    """Least squares acc = a + b u + c u^2 over u = position - 1/2, with the coefficients' covariance."""

    n: int
    coef: np.ndarray
    cov: np.ndarray

    def slope(self, position: float) -> tuple[float, float]:
        """The fitted slope at a position in [0, 1], and its standard error."""
        g = np.array([0.0, 1.0, 2 * (position - 0.5)])
        return float(g @ self.coef), math.sqrt(max(float(g @ self.cov @ g), 0.0))

    def trend(self, position: float) -> int:
        """+1 where the fit rises by more than SLOPE_Z standard errors, -1 where it falls so, else 0."""
        slope, se = self.slope(position)
        return 1 if slope > SLOPE_Z * se else -1 if slope < -SLOPE_Z * se else 0

    def rises_past(self, side: str) -> bool:
        """Still rising toward a bound at its outer 10%, beyond noise: the fitted peak lies in the
        outer 10% or beyond the bound."""
        return self.trend(1 - EDGE_FRACTION) > 0 if side == "high" else self.trend(EDGE_FRACTION) < 0

    def peak(self) -> float | None:
        """Where the fitted parabola peaks (a position, possibly outside [0, 1]); None if it opens upward."""
        _, b, c = self.coef
        return 0.5 - b / (2 * c) if c < 0 else None


def quadratic_fit(positions: Sequence[float], accs: Sequence[float]) -> QuadraticFit | None:
    """Accuracy against position in the range, fitted by a parabola; None with too few trials.

    A parabola, not a smoother: it is the simplest curve with a peak, its slope at the outer 10%
    has a standard error, and no bandwidth needs choosing. A lone trial moves it little."""
    x, y = np.asarray(positions, dtype=float), np.asarray(accs, dtype=float)
    if len(x) < MIN_FIT_TRIALS or len(np.unique(x)) < 4:
        return None
    u = x - 0.5
    design = np.stack([np.ones_like(u), u, u * u], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    s2 = float(resid @ resid) / (len(y) - 3)
    return QuadraticFit(len(y), coef, s2 * np.linalg.pinv(design.T @ design))


def _judge(
    name: str,
    dom: NumericRange,
    ran: list[TrialResult],
    tied: list[TrialResult],
    epochs: float | None,
    floor: float | None,
) -> RangeVerdict:
    points = _accuracy_points(ran, name, dom, epochs, floor)
    fit = quadratic_fit([p for p, _ in points], [a for _, a in points])
    tied_pos = [position_in_range(float(r.params[name]), dom) for r in tied]
    fit_sides = [s for s in ("high", "low") if fit is not None and fit.rises_past(s)]
    tied_side = _tied_side(tied_pos)
    bounds = f"[{fmt_value(dom.low)}, {fmt_value(dom.high)}]"
    tied_text = _tied_text(name, tied)
    if len(set(fit_sides) | ({tied_side} - {None})) > 1:  # a U-shaped fit, or fit and tied set disagree
        return RangeVerdict(Verdict.INSIDE, None, f"no clear trend: accuracy points at both edges; {tied_text}")
    fit_side = fit_sides[0] if fit_sides else None
    values = [float(r.params[name]) for r in ran]
    if fit_side is not None and tied_side is None and fit is not None:
        gap = unsampled_part(dom, values, fit_side)
        if gap is not None:  # the fit's slope out there is extrapolation: no trial says what lies there
            toward = "upward" if fit_side == "high" else "downward"
            reason = f"{gap}, and a fit of {fit.n} trials rises toward that part: the optimum may lie there"
            how = f"search it before widening {toward}: refine reaches to the {fit_side} edge (or run more trials)"
            return RangeVerdict(Verdict.UNSAMPLED, fit_side, reason, f"{name}: {reason}; {how}")
    side = fit_side or tied_side
    if side is not None:
        why = [_fit_text(name, dom, fit)] if fit is not None and fit_side else []
        why += [f"{tied_text}, against it"] if tied_side else []
        reason = f"accuracy points past the {side} edge of {bounds}: {'; '.join(why)}"
        direction = "upward" if side == "high" else "downward"
        return RangeVerdict(Verdict.EDGE, side, reason, f"{name}: {reason}: widen the range {direction}")
    if fit is None:
        return RangeVerdict(Verdict.INSIDE, None, f"too few trials ({len(points)}) for a fit; {tied_text}")
    peak = fit.peak()
    if peak is not None and fit.trend(EDGE_FRACTION) > 0 and fit.trend(1 - EDGE_FRACTION) < 0:
        trend = f"a fit of {fit.n} trials peaks inside, near {name} {fmt_value(_value_at(peak, dom))}"
    else:
        trend = f"a fit of {fit.n} trials rises toward neither edge beyond noise"
    gaps = [g for side in ("low", "high") if (g := unsampled_part(dom, values, side)) is not None]
    return RangeVerdict(Verdict.INSIDE, None, "; ".join([trend, tied_text, *gaps]))


def _accuracy_points(
    ran: list[TrialResult], name: str, dom: NumericRange, epochs: float | None, floor: float | None
) -> list[tuple[float, float]]:
    """(position, comparable accuracy) per trial: the final accuracy, or with halving the one at
    the first rung's epochs (inside an epoch: the rung's own, rung_val_accs); a trial that diverged
    before then learned nothing: chance (the lowest accuracy seen when chance is unknown)."""
    points: list[tuple[float, float | None]] = []
    for r in ran:
        if isinstance(epochs, float):  # a fraction (HalvingSpec makes a whole min_epochs an int)
            acc = r.rung_val_accs[0] if r.rung_val_accs else None
        elif epochs is not None:
            acc = r.val_acc_per_epoch[epochs - 1] if len(r.val_acc_per_epoch) >= epochs else None
        else:
            acc = r.val_acc if r.state is not TrialState.DIVERGED else None
        points.append((position_in_range(float(r.params[name]), dom), acc))
    seen = [a for _, a in points if a is not None]
    low = floor if floor is not None else min(seen, default=0.0)
    return [(p, a if a is not None else low) for p, a in points]


def _tied_side(positions: list[float]) -> str | None:
    """The edge the tied set crowds: the best (first) in the outer 10%, every tied trial in the
    outer quarter on that side, and two trials at least."""
    if len(positions) < MIN_TIED:
        return None
    if positions[0] > 1 - EDGE_FRACTION and min(positions) >= 1 - TIED_ZONE:
        return "high"
    if positions[0] < EDGE_FRACTION and max(positions) <= TIED_ZONE:
        return "low"
    return None


def _tied_text(name: str, tied: list[TrialResult]) -> str:
    if not tied:
        return "no complete trial to tie with"
    values = [float(r.params[name]) for r in tied]
    if len(tied) == 1:
        return f"no trial ties with the best ({name} {fmt_value(values[0])})"
    return f"the {len(tied)} trials tied with the best span {name} {fmt_value(min(values))}..{fmt_value(max(values))}"


def _fit_text(name: str, dom: NumericRange, fit: QuadraticFit) -> str:
    peak = fit.peak()
    if peak is None or not 0 < peak < 1:
        return f"a fit of {fit.n} trials still rises there"
    where = fmt_value(_value_at(peak, dom))
    return f"a fit of {fit.n} trials peaks at {name} {where}, in the outer {EDGE_FRACTION:.0%}"


def _value_at(position: float, dom: NumericRange) -> float:
    """position_in_range's inverse."""
    if dom.log:
        return float(10 ** (math.log10(dom.low) + position * (math.log10(dom.high) - math.log10(dom.low))))
    return dom.low + position * (dom.high - dom.low)


@dataclass(frozen=True)
class Edge:
    """A searched numeric parameter's range as its stage left it: where the best trial sits, and
    the verdict of all the stage's trials on the range (verdicts.range_verdicts)."""

    name: str
    low: float
    high: float
    log: bool
    best: float | None  # the best complete trial's value; None when no trial completed
    position: float | None  # 0 = low end, 1 = high end; measured in log10 space for log ranges
    flag: str | None  # "low" or "high": the verdict says to widen the range past this bound
    verdict: Verdict
    reason: str  # the verdict's why, one line
    warning: str | None  # what to warn about it; None when there is nothing to do (or it is said on another parameter)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("low", "high", "log", "best", "position", "flag")}
        return {**out, "verdict": self.verdict.value, "reason": self.reason}


def edges(
    space: dict[str, NumericRange | Categorical], best: TrialResult | None, verdicts: Mapping[str, RangeVerdict]
) -> list[Edge]:
    """For each searched numeric parameter with a verdict: where the best complete trial's value
    sits in its range, and the verdict."""
    out = []
    for name, dom in sorted(space.items()):
        if not isinstance(dom, NumericRange) or name not in verdicts:
            continue
        v = verdicts[name]
        value = float(best.params[name]) if best is not None and best.state is TrialState.COMPLETE else None
        pos = position_in_range(value, dom) if value is not None else None
        out.append(Edge(name, dom.low, dom.high, dom.log, value, pos, v.flag, v.verdict, v.reason, v.warning))
    return out
