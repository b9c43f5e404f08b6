"""The pictures of `hpsearch report`: loss curves, accuracy curves, the random-search picture and the
lr x weight-decay map. PNG files drawn headless on `matplotlib.figure.Figure` objects: no pyplot, and the
backend of a program that imports hpsearch is left alone (`Figure.savefig` renders with Agg for PNG).
May import: rank, records, refine, spec; matplotlib (never pyplot), numpy.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hpsearch.rank import fmt_value, rank
from hpsearch.records import TrialResult, TrialState
from hpsearch.refine import StageData
from hpsearch.spec import NumericRange

STAGE_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
STAGE_MARKERS = ["o", "s", "^", "D", "v", "P"]
DPI = 120


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (shorter at the start), NaN-free input assumed."""
    if len(values) == 0:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - window)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def _epoch_axis(r: TrialResult) -> np.ndarray:
    per_epoch = r.iterations / max(1, r.epochs_done) if r.epochs_done else max(1, r.iterations)
    return np.arange(len(r.losses)) * r.loss_every / per_epoch


def _save(fig: Figure, path: Path) -> Path:
    # A Figure not registered with pyplot needs no close: it is freed with its last reference.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_loss_curves(stages: list[StageData], path: Path) -> Path:
    """Every trial's loss: faint per-iteration points plus a moving average, coloured by lr."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    trials = [r for s in stages for r in s.results if r.losses]
    lrs = [float(r.params["lr"]) for r in trials if "lr" in r.params]
    norm = LogNorm(min(lrs), max(lrs)) if lrs and min(lrs) < max(lrs) else None
    cmap = matplotlib.colormaps["viridis"]
    finite_starts = [r.losses[0] for r in trials if r.losses and math.isfinite(r.losses[0])]
    top = 2.0 * float(np.median(finite_starts)) if finite_starts else 5.0
    for r in trials:
        color = cmap(norm(float(r.params["lr"]))) if norm and "lr" in r.params else "tab:gray"
        x, y = _epoch_axis(r), np.asarray(r.losses, dtype=float)
        ok = np.isfinite(y)
        ax.scatter(x[ok], np.minimum(y[ok], top), s=2, color=color, alpha=0.12, linewidths=0)
        if ok.sum() >= 2:
            ax.plot(x[ok], np.minimum(moving_average(y[ok], max(3, len(y) // 25)), top), color=color, lw=1.2)
    ax.set_ylim(0, top * 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (data + L2)")
    ax.set_title(f"Loss curves of all {len(trials)} trials (points: per iteration; lines: moving average)")
    if norm:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
        bar.set_label("learning rate")
    ax.text(
        0.99,
        0.98,
        f"losses above {top:.2f} drawn at the top",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        color="gray",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_accuracy_curves(stages: list[StageData], path: Path, top: int = 5) -> Path:
    """Train (dashed) and validation (solid) accuracy per epoch of the best trials across stages."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    ranked = _ranked_across(stages)[:top]
    cmap = matplotlib.colormaps["tab10"]
    for i, (stage, r) in enumerate(ranked):
        epochs = np.arange(1, len(r.val_acc_per_epoch) + 1)
        label = f"{stage} #{r.trial}: {_params_text(r)}"
        ax.plot(epochs, r.val_acc_per_epoch, "-o", color=cmap(i), ms=3, label=f"{label} (val)")
        ax.plot(epochs, r.train_acc_per_epoch, "--", color=cmap(i), alpha=0.8, label=f"{label} (train)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Train (dashed) and validation (solid) accuracy of the top {len(ranked)} trials")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ranked:
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_val_vs_params(stages: list[StageData], path: Path) -> Path | None:
    """Validation accuracy against each numeric parameter (log x for log ranges), each stage's range
    shaded and the best trial marked: the random-search picture."""
    names = _numeric_params(stages)
    if not names:
        return None
    fig = Figure(figsize=(5.5 * len(names), 4.5))
    axes = fig.subplots(1, len(names), squeeze=False)
    best = _ranked_across(stages)[:1]
    for ax, name in zip(axes[0], names, strict=True):
        for i, s in enumerate(stages):
            color, marker = STAGE_COLORS[i % len(STAGE_COLORS)], STAGE_MARKERS[i % len(STAGE_MARKERS)]
            dom = s.spec.search.space.get(name)
            if isinstance(dom, NumericRange):
                ax.axvspan(dom.low, dom.high, color=color, alpha=0.08)
                if dom.log:
                    ax.set_xscale("log")
            done = [r for r in s.results if r.state is TrialState.COMPLETE and name in r.params]
            ax.scatter(
                [float(r.params[name]) for r in done],
                [r.val_acc for r in done],
                s=18,
                color=color,
                marker=marker,
                alpha=0.8,
                label=f"{s.name} (range shaded)",
            )
        if best and name in best[0][1].params:
            stage, r = best[0]
            ax.scatter(
                [float(r.params[name])],
                [r.val_acc],
                s=220,
                marker="*",
                color="gold",
                edgecolors="black",
                zorder=5,
                label=f"best: {stage} #{r.trial}, {name}={fmt_value(r.params[name])}",
            )
        ax.set_xlabel(name)
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"validation accuracy vs {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_lr_wd(stages: list[StageData], path: Path) -> Path | None:
    """lr x weight decay, coloured by validation accuracy, one marker per stage."""
    if not all(n in _numeric_params(stages) for n in ("lr", "weight_decay")):
        return None
    fig = Figure(figsize=(8, 6))
    ax = fig.subplots()
    done = [(i, r) for i, s in enumerate(stages) for r in s.results if r.state is TrialState.COMPLETE]
    accs = [r.val_acc or 0.0 for _, r in done]
    norm = Normalize(min(accs, default=0), max(accs, default=1))
    for i, s in enumerate(stages):
        mine = [r for j, r in done if j == i]
        sc = ax.scatter(
            [r.params["lr"] for r in mine],
            [r.params["weight_decay"] for r in mine],
            c=[r.val_acc or 0.0 for r in mine],
            cmap="viridis",
            norm=norm,
            s=40,
            marker=STAGE_MARKERS[i % len(STAGE_MARKERS)],
            edgecolors="black",
            linewidths=0.3,
            label=s.name,
        )
    failed = [r for s in stages for r in s.results if r.state is not TrialState.COMPLETE and "lr" in r.params]
    if failed:
        ax.scatter(
            [r.params["lr"] for r in failed],
            [r.params.get("weight_decay", np.nan) for r in failed],
            marker="x",
            color="red",
            s=30,
            label="diverged / failed",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay")
    ax.set_title("Learning rate x weight decay, coloured by validation accuracy")
    fig.colorbar(sc, ax=ax).set_label("validation accuracy")
    # Legend entries in grey: the marker says the stage, the colour is the accuracy.
    handles = [
        Line2D([], [], ls="", marker=STAGE_MARKERS[i % len(STAGE_MARKERS)], mfc="lightgray", mec="black", label=s.name)
        for i, s in enumerate(stages)
    ]
    if failed:
        handles.append(Line2D([], [], ls="", marker="x", color="red", label="diverged / failed"))
    ax.legend(handles=handles, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _numeric_params(stages: list[StageData]) -> list[str]:
    names: list[str] = []
    for s in stages:
        for name, dom in sorted(s.spec.search.space.items()):
            if isinstance(dom, NumericRange) and name not in names:
                names.append(name)
    return names


def _ranked_across(stages: list[StageData]) -> list[tuple[str, TrialResult]]:
    owner = {id(r): s.name for s in stages for r in s.results}
    ranked = rank([r for s in stages for r in s.results])
    return [(owner[id(r)], r) for r in ranked if r.state is TrialState.COMPLETE]


def _params_text(r: TrialResult) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(r.params.items()))


def write_report_plots(stages: list[StageData], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [
        plot_loss_curves(stages, out_dir / "loss_curves.png"),
        plot_accuracy_curves(stages, out_dir / "accuracy_curves.png"),
        plot_val_vs_params(stages, out_dir / "val_acc_vs_params.png"),
        plot_lr_wd(stages, out_dir / "lr_weight_decay.png"),
    ]
    return [p for p in made if p is not None]
