"""The pictures of `hpsearch report`: loss curves, accuracy curves, the random-search picture and the
lr x weight-decay map. A diverged trial's loss curve ends at its last finite loss, in a red cross; a
trial stopped at a rung by successive halving ends, fainter, where it stopped, and the pictures of
accuracy against the hyperparameters size each trial's marker by the rung it reached.
PNG files drawn headless on `matplotlib.figure.Figure` objects: no pyplot, and the backend of a
program that imports hpsearch is left alone (`Figure.savefig` renders with Agg for PNG).

Each picture is drawn from plain data computed first (panels, series, the colour parameter, axis limits,
ticks, the message for a stage with nothing to show): those functions are pure and tested without
drawing; the `*_figure` functions only draw them.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from hpsearch.analysis.rank import fmt_value, rank
from hpsearch.runs.read import StageData
from hpsearch.runs.records import TrialResult, TrialState, epochs_text, jsonable
from hpsearch.runs.store import atomic_write_bytes
from hpsearch.spec.schema import Categorical, NumericRange

STAGE_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
STAGE_MARKERS = ["o", "s", "^", "D", "v", "P"]
CATEGORY_COLORS = "tab10"
DPI = 120
CIFAR10_TRAIN = 50_000  # training images of CIFAR-10, before data.val_size is held out
MOST_LOG_TICKS = 6  # more labels than this on a 4-5 inch log axis start to touch
LOG_PAD = 0.04  # fraction of the log width added on each side of a range, so edge points are whole
MESSAGE_COLOR = "darkred"  # the line that says why a picture is empty
FAILED_Y = 0.03  # axes fraction: where trials without an accuracy are marked, along a panel's bottom
POINT_SIZE = 18  # points^2: a trial's marker in the accuracy pictures, without halving
RUNG_SIZES = [8, 22, 44, 72, 104]  # points^2 by rung reached: the few trials that trained longest stand out
LR_WD_SCALE = 2  # the lr x weight decay map's markers are twice the area: their colour is the accuracy
RUNG_ALPHA = [0.45, 0.7, 0.9]  # by rung: the many trials stopped at the first rung drawn fainter

Domain = NumericRange | Categorical


# --------------------------------------------------------------------------- what is drawn


@dataclass(frozen=True)
class CategoryAccuracy:
    """One value of a categorical parameter: its trials and the best validation accuracy among them."""

    value: Any
    label: str
    trials: int
    measured: int  # trials with an accuracy: complete, or stopped at a rung by halving
    best: float | None  # None: no trial with this value has an accuracy


@dataclass(frozen=True)
class Panel:
    """One panel of the random-search picture: accuracy against one searched parameter."""

    name: str
    domain: Domain  # the union of the stages' ranges (or values), for the axis
    categories: tuple[CategoryAccuracy, ...] = ()  # categorical panels only

    @property
    def categorical(self) -> bool:
        return isinstance(self.domain, Categorical)


@dataclass(frozen=True)
class LossSeries:
    stage: str
    trial: int
    x: np.ndarray  # epochs (fractional): iteration * loss_every / steps per epoch
    y: np.ndarray  # training loss; a diverged trial's ends at its last finite loss
    color_value: Any  # the trial's value of the colour parameter, None if it has none
    diverged: bool
    stopped: bool = False  # successive halving stopped it at a rung: its curve ends where it stopped


@dataclass(frozen=True)
class AccuracySeries:
    stage: str
    trial: int
    label: str
    epochs: np.ndarray  # 1, 2, ...: accuracies are measured after each epoch
    val: np.ndarray
    train: np.ndarray


def searched(stages: Sequence[StageData]) -> dict[str, Domain]:
    """Every parameter any stage searched, with one domain covering all stages: numeric ranges joined
    (log if any stage searched it on a log scale), categorical values in the order they first appear."""
    out: dict[str, Domain] = {}
    for s in stages:
        for name, dom in s.spec.search.space.items():
            before = out.get(name)
            if before is None:
                out[name] = dom
            elif isinstance(before, NumericRange) and isinstance(dom, NumericRange):
                out[name] = NumericRange(
                    low=min(before.low, dom.low), high=max(before.high, dom.high), log=before.log or dom.log
                )
            elif isinstance(before, Categorical) and isinstance(dom, Categorical):
                known = [jsonable(v) for v in before.values]
                extra = tuple(v for v in dom.values if jsonable(v) not in known)
                out[name] = Categorical(values=before.values + extra)
    return out


def has_accuracy(r: TrialResult) -> bool:
    """Trained to a validation accuracy: complete, or stopped at a rung by successive halving. A
    diverged trial's accuracy from before it blew up does not count."""
    return r.state in (TrialState.COMPLETE, TrialState.STOPPED) and r.val_acc is not None


def category_accuracy(stages: Sequence[StageData], name: str, dom: Categorical) -> list[CategoryAccuracy]:
    """One entry per value of a categorical parameter, in the spec's order: how many trials tried it,
    how many have an accuracy, and the best validation accuracy among them."""
    results = [r for s in stages for r in s.results if name in r.params]
    out = []
    for value in dom.values:
        mine = [r for r in results if jsonable(r.params[name]) == jsonable(value)]
        accs = [r.val_acc for r in mine if has_accuracy(r) and r.val_acc is not None]
        out.append(CategoryAccuracy(value, fmt_value(value), len(mine), len(accs), max(accs) if accs else None))
    return out


def param_panels(stages: Sequence[StageData]) -> list[Panel]:
    """The random-search picture's panels: numeric parameters first, then categorical ones (each with
    its accuracy per value), by name within each."""
    space = searched(stages)
    numeric = [Panel(n, d) for n, d in sorted(space.items()) if isinstance(d, NumericRange)]
    categorical = [
        Panel(n, d, tuple(category_accuracy(stages, n, d)))
        for n, d in sorted(space.items())
        if isinstance(d, Categorical)
    ]
    return numeric + categorical


def color_param(stages: Sequence[StageData]) -> str | None:
    """What the loss curves are coloured by: the learning rate when it is searched, else the first
    searched numeric parameter, else the first categorical one; None when nothing is searched."""
    space = searched(stages)
    if "lr" in space:
        return "lr"
    numeric = sorted(n for n, d in space.items() if isinstance(d, NumericRange))
    candidates = numeric or sorted(space)
    return candidates[0] if candidates else None


def no_complete_message(stages: Sequence[StageData]) -> str | None:
    """The message drawn instead of an empty accuracy axis: None while any trial has an accuracy
    (complete, or stopped at a rung by halving)."""
    results = [r for s in stages for r in s.results]
    if any(has_accuracy(r) for r in results):
        return None
    names = ", ".join(s.name for s in stages) or "this run"
    if not results:
        return f"No trial of {names} has finished yet: nothing to plot"
    counts = Counter(r.state for r in results)
    parts = ", ".join(f"{n} {state.value}" for state, n in counts.most_common())
    head = f"No trial of {names} completed ({parts})"
    if counts.most_common(1)[0][0] is TrialState.DIVERGED:
        # The lecture: "cost: NaN almost always means high learning rate".
        fix = "search smaller learning rates" if "lr" in searched(stages) else "lower train.lr"
        return f"{head}.\nA loss that becomes NaN or inf almost always means the learning rate is too high:\n{fix}."
    if counts.most_common(1)[0][0] is TrialState.FAILED:
        return f"{head}.\nEach failure's error is in the stage's results.csv and trials.jsonl."
    return f"{head}.\nResume the stage with --resume to finish its trials."


def steps_per_epoch(stage: StageData, r: TrialResult) -> float:
    """Iterations in one of the trial's epochs: its own count when it trained whole epochs (complete,
    or stopped at a rung), else from its stage's data and batch size (a diverged trial stopped
    mid-epoch)."""
    if r.state in (TrialState.COMPLETE, TrialState.STOPPED) and r.epochs_done:
        return r.iterations / r.epochs_done
    data = stage.spec.data
    total = data.synthetic_train if data.dataset == "synthetic" else CIFAR10_TRAIN
    n = total - data.val_examples(total)
    if data.train_subset is not None:
        n = min(n, data.train_subset)
    batch = int(r.params.get("batch_size", stage.spec.train.batch_size))
    return max(1, math.ceil(n / batch))


def loss_series(stages: Sequence[StageData], color_by: str | None) -> list[LossSeries]:
    """Each trial's loss curve, in epochs. A record keeps the non-finite loss of the step a trial
    diverged on (as NaN): the curve ends on the finite loss before it, where its cross is drawn."""
    out = []
    for s in stages:
        for r in s.results:
            x = np.arange(len(r.losses)) * r.loss_every / steps_per_epoch(s, r)
            y = np.asarray([v if v is not None and math.isfinite(v) else np.nan for v in r.losses], dtype=float)
            finite = np.flatnonzero(np.isfinite(y))
            if len(finite) == 0:
                continue  # diverged on its first step: no loss to draw
            end = finite[-1] + 1
            value = r.params.get(color_by) if color_by else None
            diverged, stopped = r.state is TrialState.DIVERGED, r.state is TrialState.STOPPED
            out.append(LossSeries(s.name, r.trial, x[:end], y[:end], value, diverged, stopped))
    return out


def epoch_xlim(series: Sequence[LossSeries]) -> tuple[float, float]:
    """From 0 to the whole epochs trained: a 1-epoch run spans [0, 1], not [-0.05, 0.96]."""
    last = max((float(s.x[-1]) for s in series if len(s.x)), default=0.0)
    return 0.0, float(max(1, math.ceil(last - 1e-9)))


def loss_top(series: Sequence[LossSeries]) -> float:
    """Losses above this are drawn at the top edge: twice the median first loss keeps ln(10) = 2.3
    and the fall from it readable when one trial explodes to 1e23."""
    starts = [float(s.y[0]) for s in series if len(s.y) and math.isfinite(s.y[0])]
    return 2.0 * float(np.median(starts)) if starts else 5.0


def accuracy_series(stages: Sequence[StageData], top: int = 5) -> list[AccuracySeries]:
    """Train and validation accuracy per epoch of the best `top` trials with an accuracy across stages
    (halving: those that reached the highest rung first, as the table ranks them)."""
    out = []
    for stage, r in _ranked_across(stages)[:top]:
        n = min(len(r.val_acc_per_epoch), len(r.train_acc_per_epoch))
        if n == 0:
            continue
        out.append(
            AccuracySeries(
                stage,
                r.trial,
                f"{stage} #{r.trial}: {_params_text(r)}",
                np.arange(1, n + 1),
                np.asarray(r.val_acc_per_epoch[:n], dtype=float),
                np.asarray(r.train_acc_per_epoch[:n], dtype=float),
            )
        )
    return out


def accuracy_xlim(series: Sequence[AccuracySeries]) -> tuple[float, float]:
    """From epoch 0 (the start of training) to the last epoch measured, with room for its markers."""
    last = max((int(s.epochs[-1]) for s in series), default=1)
    return 0.0, last + max(0.15, 0.03 * last)


def rung_labels(stages: Sequence[StageData]) -> dict[int, str]:
    """The legend of the rungs that trials with an accuracy reached, lowest first: 'rung 0 (1 epoch)',
    with the epochs its trials trained (two stages of different halving may differ: '1 or 2 epochs').
    Empty without halving."""
    epochs: dict[int, set[float]] = {}
    for s in stages:
        for r in s.results:
            if r.rung is not None and has_accuracy(r):
                epochs.setdefault(r.rung, set()).add(r.epochs_done)
    out = {}
    for rung in sorted(epochs):
        done = sorted(epochs[rung])
        unit = "epoch" if done == [1] else "epochs"
        out[rung] = f"rung {rung} ({' or '.join(epochs_text(e) for e in done)} {unit})"
    return out


def rung_size(rung: int | None) -> float:
    """A trial's marker area (points^2) in the accuracy pictures: larger for a higher rung."""
    return POINT_SIZE if rung is None else RUNG_SIZES[min(rung, len(RUNG_SIZES) - 1)]


def rung_alpha(rung: int | None) -> float:
    return 0.8 if rung is None else RUNG_ALPHA[min(rung, len(RUNG_ALPHA) - 1)]


def padded_range(dom: NumericRange) -> tuple[float, float]:
    """The axis limits of a searched range: the range and a little more, so points on its edge show whole."""
    if dom.log:
        lo, hi = math.log10(dom.low), math.log10(dom.high)
        pad = LOG_PAD * (hi - lo)
        return 10 ** (lo - pad), 10 ** (hi + pad)
    pad = LOG_PAD * (dom.high - dom.low)
    return dom.low - pad, dom.high + pad


def log_ticks(low: float, high: float, most: int = MOST_LOG_TICKS) -> list[float]:
    """At most `most` tick positions within [low, high] on a log axis, as many as fit: decades (every
    k-th when there are many), else 1-2-5 or 1-3 steps, else evenly spaced round numbers for a range
    narrower than a few steps. Matplotlib's default labels every minor tick of a one-decade range
    (2x10^-2, 3x10^-2, ...), and those labels run into each other on a panel 4 inches wide."""
    lo, hi = math.log10(low), math.log10(high)
    decades = [10.0**d for d in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    if len(decades) > most:
        step = math.ceil(len(decades) / most)
        return decades[::step]
    for subs in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1, 3), (1,)):
        ticks = [
            float(f"{m}e{d}")  # exact decimals: 0.3, not 0.30000000000000004
            for d in range(math.floor(lo) - 1, math.ceil(hi) + 1)
            for m in subs
            if low * (1 - 1e-9) <= m * 10.0**d <= high * (1 + 1e-9)
        ]
        if len(ticks) <= most:
            break
    if len(ticks) >= 3:
        return ticks
    linear = [float(t) for t in MaxNLocator(nbins=most - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)]
    inside = [t for t in linear if low <= t <= high]
    return inside if len(inside) > len(ticks) else ticks


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """Decades as powers of ten (10^-3); any other tick as the tables write numbers (2e-03, 0.05)."""
    if all(_is_decade(t) for t in ticks):
        return f"$10^{{{round(math.log10(value))}}}$"
    return fmt_value(value)


def _is_decade(v: float) -> bool:
    return v > 0 and abs(math.log10(v) - round(math.log10(v))) < 1e-9


# --------------------------------------------------------------------------- drawing


def _set_log_axis(axis: Any, low: float, high: float) -> None:
    """A log axis between low and high, labelled by log_ticks: no minor labels, none touching."""
    ticks = log_ticks(low, high)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: tick_label(v, ticks)))
    axis.set_minor_formatter(NullFormatter())


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color=MESSAGE_COLOR)


def _ranked_across(stages: Sequence[StageData]) -> list[tuple[str, TrialResult]]:
    owner = {id(r): s.name for s in stages for r in s.results}
    ranked = rank([r for s in stages for r in s.results])
    return [(owner[id(r)], r) for r in ranked if has_accuracy(r)]


def _params_text(r: TrialResult) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(r.params.items()))


def _new_figure(width: float, height: float) -> Figure:
    # Constrained layout makes room for legends placed outside the axes ("outside ..." locations).
    return Figure(figsize=(width, height), layout="constrained")


def loss_line(s: LossSeries) -> tuple[np.ndarray, np.ndarray]:
    """The line drawn for a trial: a moving average of its finite losses; a diverged trial's ends on
    its last finite loss itself, where it blew up, not on an average that hides the climb."""
    ok = np.isfinite(s.y)
    x, y = s.x[ok], moving_average(s.y[ok], max(3, len(s.y) // 25))
    if s.diverged and len(y):
        y[-1] = s.y[ok][-1]
    return x, y


def loss_figure(stages: Sequence[StageData]) -> Figure:
    """Every trial's loss: faint per-iteration points plus a moving average, coloured by the learning
    rate (or by what was searched when it was not); a diverged trial ends at its last finite loss in a
    red cross, a trial stopped by halving is fainter and ends in a small dot where it stopped."""
    color_by = color_param(stages)
    series = loss_series(stages, color_by)
    fig = _new_figure(9, 5.5)
    ax = fig.subplots()
    top = loss_top(series)
    color_of, legend = _curve_colors(fig, ax, stages, color_by, series)
    clipped = 0
    # Stopped trials first, so that the few that trained on are drawn over the many that did not.
    for s in sorted(series, key=lambda s: not s.stopped):
        color = color_of(s.color_value)
        ok = np.isfinite(s.y)
        clipped += bool(np.any(s.y[ok] > top)) or s.diverged
        ax.scatter(s.x[ok], np.minimum(s.y[ok], top), s=2, color=color, alpha=0.12, linewidths=0)
        x, y = loss_line(s)
        alpha, lw = (0.45, 0.8) if s.stopped else (1.0, 1.2)
        if len(x) >= 2:
            ax.plot(x, np.minimum(y, top), color=color, lw=lw, alpha=alpha)
        if s.diverged:
            ax.plot(x[-1:], np.minimum(y[-1:], top), marker="x", color="red", ms=7, mew=1.5, clip_on=False, zorder=5)
        elif s.stopped:
            ax.plot(x[-1:], np.minimum(y[-1:], top), marker="o", ms=2.5, color=color, alpha=0.8, clip_on=False)
    if any(s.diverged for s in series):
        legend.append(Line2D([], [], ls="", marker="x", color="red", mew=1.5, label="diverged: its last finite loss"))
    stopped = sum(s.stopped for s in series)
    if stopped:
        legend.append(
            Line2D([], [], color="gray", lw=0.8, alpha=0.6, marker="o", ms=2.5, label=f"{stopped} stopped by halving")
        )
    ax.set_xlim(*epoch_xlim(series))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 2.5, 5, 10]))
    ax.set_ylim(0, top * 1.02)  # a loss drawn at the top edge stays whole, not cut in half
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (data + L2)")
    title = f"Loss curves of all {len(series)} trials (points: per iteration; lines: moving average)"
    if clipped:
        title += f"\n{clipped} of them went above {top:.2f}: drawn along the top edge"
    ax.set_title(title, fontsize=11)
    if legend:
        fig.legend(handles=legend, loc="outside lower center", ncol=min(4, len(legend)), fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _curve_colors(
    fig: Figure, ax: Axes, stages: Sequence[StageData], color_by: str | None, series: Sequence[LossSeries]
) -> tuple[Any, list[Line2D]]:
    """How a value of the colour parameter maps to a colour, drawing its colour bar (numeric) or
    returning its legend entries (categorical)."""
    dom = searched(stages).get(color_by) if color_by else None
    values = [s.color_value for s in series if s.color_value is not None]
    if isinstance(dom, Categorical):
        cmap = matplotlib.colormaps[CATEGORY_COLORS]
        keys = [jsonable(v) for v in dom.values]
        handles = [
            Line2D([], [], color=cmap(i % 10), lw=2, label=f"{color_by}={fmt_value(v)}")
            for i, v in enumerate(dom.values)
        ]

        def by_category(v: Any) -> Any:
            return cmap(keys.index(jsonable(v)) % 10) if jsonable(v) in keys else "tab:gray"

        return by_category, handles
    nums = [float(v) for v in values]
    if not isinstance(dom, NumericRange) or not nums or min(nums) == max(nums):
        return (lambda _v: "tab:gray"), []
    cmap = matplotlib.colormaps["viridis"]
    lo, hi = min(nums), max(nums)
    norm: Normalize = LogNorm(lo, hi) if dom.log and lo > 0 else Normalize(lo, hi)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("learning rate" if color_by == "lr" else str(color_by))
    if isinstance(norm, LogNorm):
        _set_log_axis(bar.ax.yaxis, lo, hi)
        bar.ax.yaxis.set_minor_locator(NullLocator())
    return (lambda v: cmap(norm(float(v))) if v is not None else "tab:gray"), []


def accuracy_figure(stages: Sequence[StageData], top: int = 5) -> Figure:
    """Train (dashed, open squares) and validation (solid, dots) accuracy per epoch of the best trials."""
    series = accuracy_series(stages, top)
    fig = _new_figure(9, 5.5)
    ax = fig.subplots()
    message = no_complete_message(stages)
    if message or not series:
        _message(ax, message or "No complete trial has an accuracy per epoch to draw")
        ax.set_axis_off()
        ax.set_title("Train and validation accuracy of the best trials")
        return fig
    cmap = matplotlib.colormaps["tab10"]
    handles = []
    for i, s in enumerate(series):
        ax.plot(s.epochs, s.val, "-o", color=cmap(i), ms=5, clip_on=False)
        ax.plot(s.epochs, s.train, "--s", color=cmap(i), ms=5, mfc="white", alpha=0.9, clip_on=False)
        handles.append(Line2D([], [], color=cmap(i), lw=2, label=s.label))
    handles += [
        Line2D([], [], color="black", ls="-", marker="o", ms=5, label="validation"),
        Line2D([], [], color="black", ls="--", marker="s", ms=5, mfc="white", label="train"),
    ]
    ax.set_xlim(*accuracy_xlim(series))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Train and validation accuracy of the top {len(series)} trials")
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", fontsize=8)
    return fig


def params_figure(stages: Sequence[StageData]) -> Figure | None:
    """Validation accuracy against each searched parameter (the random-search picture): numeric ones
    with each stage's range shaded (log x for log ranges), categorical ones with every trial per value
    and the best of each value marked; the best trial overall is a star, trials without an accuracy
    are red crosses along the bottom. With successive halving, a marker's size is the rung it reached."""
    panels = param_panels(stages)
    if not panels:
        return None
    fig = _new_figure(max(6.0, 4.6 * len(panels)), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    best = _ranked_across(stages)[:1]
    message = no_complete_message(stages)
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels, strict=True):
        if panel.categorical:
            _draw_categorical(ax, stages, panel, best, handles)
        else:
            _draw_numeric(ax, stages, panel, best, handles)
        ax.set_xlabel(panel.name)
        ax.set_title(f"validation accuracy vs {panel.name}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    if message:
        axes[0].set_ylim(0, 1)  # nothing completed: an accuracy axis, not matplotlib's -0.04..0.04
        fig.suptitle(message, fontsize=10, color=MESSAGE_COLOR)
    _legend_rows(fig, list(handles.values()), list(_rung_handles(stages, color="gray")))
    return fig


def _legend_rows(fig: Figure, first: list[Any], rungs: list[Any]) -> None:
    """The legend below the axes, read by rows: the stages and marks, then the rungs on rows of their
    own, their markers growing left to right. Matplotlib fills a legend's columns one after the other."""
    ncol = min(4, max(len(first), len(rungs)))
    blank = Line2D([], [], ls="", label="")
    items = first + [blank] * (-len(first) % ncol if rungs else 0) + rungs
    rows = math.ceil(len(items) / ncol)
    by_column = [items[r * ncol + c] for c in range(ncol) for r in range(rows) if r * ncol + c < len(items)]
    fig.legend(handles=by_column, loc="outside lower center", ncol=ncol, fontsize=8)


def _stage_style(i: int) -> tuple[str, str]:
    return STAGE_COLORS[i % len(STAGE_COLORS)], STAGE_MARKERS[i % len(STAGE_MARKERS)]


def _draw_numeric(
    ax: Axes, stages: Sequence[StageData], panel: Panel, best: list[tuple[str, TrialResult]], handles: dict[str, Any]
) -> None:
    name = panel.name
    assert isinstance(panel.domain, NumericRange)
    for i, s in enumerate(stages):
        color, marker = _stage_style(i)
        dom = s.spec.search.space.get(name)
        if isinstance(dom, NumericRange):
            ax.axvspan(dom.low, dom.high, color=color, alpha=0.08)
        done = [r for r in s.results if has_accuracy(r) and name in r.params]
        _scatter_by_rung(ax, [float(r.params[name]) for r in done], done, color=color, marker=marker)
        _note_median_stopped(done, handles)
        handles.setdefault(s.name, Line2D([], [], ls="", marker=marker, color=color, label=f"{s.name} (range shaded)"))
    lost = [r for s in stages for r in s.results if not has_accuracy(r) and name in r.params]
    _mark_lost(ax, [float(r.params[name]) for r in lost], handles)
    if best and name in best[0][1].params:
        _mark_best(ax, float(best[0][1].params[name]), best[0], handles)
    lo, hi = padded_range(panel.domain)
    if panel.domain.log:
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        _set_log_axis(ax.xaxis, panel.domain.low, panel.domain.high)
    else:
        ax.set_xlim(lo, hi)


def _draw_categorical(
    ax: Axes, stages: Sequence[StageData], panel: Panel, best: list[tuple[str, TrialResult]], handles: dict[str, Any]
) -> None:
    name = panel.name
    keys = [jsonable(c.value) for c in panel.categories]
    where: dict[int, float] = {}  # id of a drawn trial -> its x, so the best trial's star lands on its dot
    for i, s in enumerate(stages):
        color, marker = _stage_style(i)
        for k, key in enumerate(keys):
            done = [r for r in s.results if has_accuracy(r) and jsonable(r.params.get(name)) == key]
            # Spread a value's trials sideways (stages side by side), so that equal accuracies stay visible.
            offsets = np.linspace(-0.22, 0.22, len(done)) if len(done) > 1 else np.zeros(len(done))
            xs = [float(x) for x in k + offsets + 0.06 * i]
            where.update({id(r): x for r, x in zip(done, xs, strict=True)})
            _scatter_by_rung(ax, xs, done, color=color, marker=marker)
            _note_median_stopped(done, handles)
        handles.setdefault(s.name, Line2D([], [], ls="", marker=marker, color=color, label=s.name))
    for k, c in enumerate(panel.categories):
        if c.best is not None:
            ax.plot([k - 0.35, k + 0.35], [c.best, c.best], color="black", lw=2, zorder=4)
    if any(c.best is not None for c in panel.categories):
        handles.setdefault("best per value", Line2D([], [], color="black", lw=2, label="best of each value"))
    lost = [r for s in stages for r in s.results if not has_accuracy(r) and name in r.params]
    _mark_lost(ax, [keys.index(jsonable(r.params[name])) for r in lost if jsonable(r.params[name]) in keys], handles)
    if best and id(best[0][1]) in where:
        _mark_best(ax, where[id(best[0][1])], best[0], handles)
    ax.set_xticks(range(len(keys)), [_category_tick(c) for c in panel.categories], fontsize=8)
    ax.set_xlim(-0.6, len(keys) - 0.4)


def _category_tick(c: CategoryAccuracy) -> str:
    if c.trials == c.measured:
        return f"{c.label}\n{c.trials} trials"
    return f"{c.label}\n{c.trials} trials\n{c.trials - c.measured} diverged/failed"


def _scatter_by_rung(ax: Axes, xs: Sequence[float], results: Sequence[TrialResult], **style: Any) -> None:
    """Trials' validation accuracies at xs, each marker sized (and the many low ones made fainter) by
    the rung it reached: the higher rungs drawn last, on top. Trials median_stop stopped are hollow:
    their accuracy is from fewer epochs than the rest."""
    early = [j for j, r in enumerate(results) if r.stopped_below is not None]
    if early:
        ax.scatter(
            [xs[j] for j in early],
            [results[j].val_acc or 0.0 for j in early],
            s=POINT_SIZE,
            alpha=0.8,
            marker=style["marker"],
            facecolors="none",
            edgecolors=style["color"],
        )
    for rung in sorted({r.rung for r in results}, key=lambda rung: -1 if rung is None else rung):
        mine = [j for j, r in enumerate(results) if r.rung == rung and r.stopped_below is None]
        ax.scatter(
            [xs[j] for j in mine],
            [results[j].val_acc or 0.0 for j in mine],
            s=rung_size(rung),
            alpha=rung_alpha(rung),
            **style,
        )


def _note_median_stopped(results: Sequence[TrialResult], handles: dict[str, Any]) -> None:
    if any(r.stopped_below is not None for r in results):
        label = "stopped by median_stop (hollow: accuracy at fewer epochs)"
        handles.setdefault(label, Line2D([], [], ls="", marker="o", color="gray", markerfacecolor="none", label=label))


def _rung_order(r: TrialResult) -> int:
    return -1 if r.rung is None else r.rung


def _rung_handles(stages: Sequence[StageData], scale: float = 1.0, **style: Any) -> list[Line2D]:
    """A legend entry per rung reached, its marker as large as the rung's points (`scale` x rung_size)."""
    return [
        Line2D([], [], ls="", marker="o", ms=math.sqrt(scale * rung_size(rung)), label=label, **style)
        for rung, label in rung_labels(stages).items()
    ]


def _mark_lost(ax: Axes, xs: Sequence[float], handles: dict[str, Any]) -> None:
    """Trials without an accuracy (diverged, failed), as red crosses along the bottom of the panel."""
    if not xs:
        return
    ax.scatter(xs, [FAILED_Y] * len(xs), transform=ax.get_xaxis_transform(), marker="x", color="red", s=30, zorder=5)
    handles.setdefault("lost", Line2D([], [], ls="", marker="x", color="red", label="diverged / failed (no accuracy)"))


def _mark_best(ax: Axes, x: float, best: tuple[str, TrialResult], handles: dict[str, Any]) -> None:
    stage, r = best
    ax.scatter([x], [r.val_acc or 0.0], s=220, marker="*", color="gold", edgecolors="black", zorder=6)
    handles.setdefault(
        "best",
        Line2D(
            [],
            [],
            ls="",
            marker="*",
            ms=14,
            color="gold",
            mec="black",
            label=f"best: {stage} #{r.trial}, {_params_text(r)}",
        ),
    )


def lr_wd_figure(stages: Sequence[StageData]) -> Figure | None:
    """lr x weight decay, coloured by validation accuracy, one marker per stage (sized by the rung
    reached, with halving); trials without an accuracy as red crosses. None unless both are searched
    numeric ranges."""
    space = searched(stages)
    lr, wd = space.get("lr"), space.get("weight_decay")
    if not (isinstance(lr, NumericRange) and isinstance(wd, NumericRange)):
        return None
    fig = _new_figure(8, 6)
    ax = fig.subplots()
    done = [(i, r) for i, s in enumerate(stages) for r in s.results if has_accuracy(r)]
    accs = [r.val_acc or 0.0 for _, r in done]
    norm = Normalize(min(accs, default=0), max(accs, default=1))
    handles = []
    for i, s in enumerate(stages):
        # Higher rungs drawn last, on top of the many trials stopped at the first.
        mine = sorted((r for j, r in done if j == i), key=_rung_order)
        marker = STAGE_MARKERS[i % len(STAGE_MARKERS)]
        ax.scatter(
            [r.params["lr"] for r in mine],
            [r.params["weight_decay"] for r in mine],
            c=[r.val_acc or 0.0 for r in mine],
            cmap="viridis",
            norm=norm,
            s=[40 if r.rung is None else LR_WD_SCALE * rung_size(r.rung) for r in mine],
            marker=marker,
            edgecolors="black",
            linewidths=0.3,
        )
        # Legend entries in grey: the marker says the stage, the colour is the accuracy.
        handles.append(Line2D([], [], ls="", marker=marker, mfc="lightgray", mec="black", label=s.name))
    lost = [r for s in stages for r in s.results if not has_accuracy(r) and {"lr", "weight_decay"} <= r.params.keys()]
    if lost:
        ax.scatter(
            [r.params["lr"] for r in lost], [r.params["weight_decay"] for r in lost], marker="x", color="red", s=30
        )
        handles.append(Line2D([], [], ls="", marker="x", color="red", label="diverged / failed"))
    for axis, dom, set_scale, set_lim in (
        (ax.xaxis, lr, ax.set_xscale, ax.set_xlim),
        (ax.yaxis, wd, ax.set_yscale, ax.set_ylim),
    ):
        set_scale("log" if dom.log else "linear")
        set_lim(*padded_range(dom))
        if dom.log:
            _set_log_axis(axis, dom.low, dom.high)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay")
    ax.set_title("Learning rate x weight decay, coloured by validation accuracy")
    if done:
        fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax).set_label("validation accuracy")
    message = no_complete_message(stages)
    if message:
        fig.suptitle(message, fontsize=10, color=MESSAGE_COLOR)
    _legend_rows(fig, handles, _rung_handles(stages, LR_WD_SCALE, mfc="lightgray", mec="black", mew=0.5))
    ax.grid(alpha=0.3)
    return fig


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (shorter at the start), NaN-free input assumed. Each window
    is summed on its own: a running sum minus an earlier one loses a 2.3 beside a spike of 1e20, and
    the curve after a blow-up it came back from would read 0."""
    if len(values) == 0:
        return np.asarray(values, dtype=float)
    sums = np.convolve(values, np.ones(window))[: len(values)]
    return sums / np.minimum(np.arange(1, len(values) + 1), window)


# --------------------------------------------------------------------------- files


def _save(fig: Figure | None, path: Path) -> Path | None:
    """The figure as a PNG file, written whole or not at all: rendered into memory first, then
    store.atomic_write_bytes, so a full disk is a StoreError and the report drawn before stays."""
    if fig is None:
        return None
    png = io.BytesIO()
    # A Figure not registered with pyplot needs no close: it is freed with its last reference.
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, png.getvalue())
    return path


def plot_loss_curves(stages: list[StageData], path: Path) -> Path:
    _save(loss_figure(stages), path)
    return path


def plot_accuracy_curves(stages: list[StageData], path: Path, top: int = 5) -> Path:
    _save(accuracy_figure(stages, top), path)
    return path


def plot_val_vs_params(stages: list[StageData], path: Path) -> Path | None:
    return _save(params_figure(stages), path)


def plot_lr_wd(stages: list[StageData], path: Path) -> Path | None:
    return _save(lr_wd_figure(stages), path)


def write_report_plots(stages: list[StageData], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [
        plot_loss_curves(stages, out_dir / "loss_curves.png"),
        plot_accuracy_curves(stages, out_dir / "accuracy_curves.png"),
        plot_val_vs_params(stages, out_dir / "val_acc_vs_params.png"),
        plot_lr_wd(stages, out_dir / "lr_weight_decay.png"),
    ]
    return [p for p in made if p is not None]
