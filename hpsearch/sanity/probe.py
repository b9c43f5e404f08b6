"""The learning-rate probe: ~100 iterations at each lr of sanity.probe_lrs, what each loss did
(fell, barely moved, rose, exploded, diverged), the range of lrs whose loss fell, and how much of
the searched lr range lies outside it."""

from __future__ import annotations

import math
from typing import Any

from hpsearch.analysis.rank import position_in_range
from hpsearch.data import Dataset
from hpsearch.sanity.base import fresh_model, train_spec
from hpsearch.sanity.results import CheckResult, CheckVerdict, ProbeRow, ProbeStatus
from hpsearch.spec.schema import NumericRange, Spec
from hpsearch.training.trial import batch_order, make_optimizer, training_loss

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
        return CheckResult("lr_probe", CheckVerdict.FAIL, measured, diagnosis, numbers), rows, None
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
        return CheckResult("lr_probe", CheckVerdict.PASS, measured, diagnosis, numbers), rows, (low, high)
    # As the coarse search's edge warning: the probe has not bracketed the best lr.
    diagnosis += f"; {_edge_advice(best.lr, edge)}"
    return CheckResult("lr_probe", CheckVerdict.WARN, measured, diagnosis, numbers), rows, (low, high)


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
    train = train_spec(spec.train, lr=lr, weight_decay=cfg.probe_weight_decay)
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
