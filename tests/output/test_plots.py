"""The report's pictures, tested on what they are drawn from (panels, series, the colour parameter,
axis limits and ticks, the message for a stage with nothing to show), and on a few facts of the drawn
figures: legends beside the axes, never on them; tick labels that do not touch; a diverged curve that
ends on its last finite loss; trials stopped by successive halving drawn as far as they trained, and
marked by the rung they reached; PNG files written. Hand-made trial records only: no training."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from hpsearch.output.plots import (
    accuracy_figure,
    accuracy_series,
    accuracy_xlim,
    category_accuracy,
    color_param,
    epoch_xlim,
    log_ticks,
    loss_figure,
    loss_series,
    lr_wd_figure,
    moving_average,
    no_complete_message,
    param_panels,
    params_figure,
    rung_labels,
    rung_size,
    write_report_plots,
)
from hpsearch.runs.read import StageData
from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import Categorical

STEPS = 25  # iterations per epoch of SPEC's data: (3000 - 500) / 100
LR = {"low": 1e-4, "high": 1.0, "log": True}
WD = {"low": 1e-6, "high": 1e-1, "log": True}


def stage(
    space: dict[str, Any], results: list[TrialResult], name: str = "coarse", epochs: int = 1, halving: bool = False
) -> StageData:
    search: dict[str, Any] = {"trials": max(1, len(results)), "space": space}
    if halving:
        search["halving"] = {"eta": 3, "min_epochs": 1}
    spec = parse_spec(
        {
            "name": "t",
            "data": {"dataset": "synthetic", "synthetic_train": 3000, "val_size": 500},
            "train": {"epochs": epochs, "batch_size": 100},
            "search": search,
        }
    )
    return StageData(name, spec, results)


def done(n: int, val: float, epochs: int = 1, **params: Any) -> TrialResult:
    """A complete trial: a loss falling from ln 10 over `epochs` epochs of STEPS iterations."""
    steps = epochs * STEPS
    return TrialResult(
        trial=n,
        state=TrialState.COMPLETE,
        params=params,
        val_acc=val,
        train_acc=val + 0.05,
        train_loss=1.0,
        epochs_done=epochs,
        iterations=steps,
        val_acc_per_epoch=[val * (e + 1) / epochs for e in range(epochs)],
        train_acc_per_epoch=[(val + 0.05) * (e + 1) / epochs for e in range(epochs)],
        train_loss_per_epoch=[1.0] * epochs,
        losses=list(np.linspace(2.3026, 1.0, steps)),
    )


def diverged(n: int, at: int = 10, **params: Any) -> TrialResult:
    """A trial whose loss became NaN on iteration `at` of its first epoch."""
    return TrialResult(
        trial=n,
        state=TrialState.DIVERGED,
        params=params,
        iterations=at + 1,
        losses=[2.3, *([1e20] * (at - 1)), math.nan],
    )


def stopped(n: int, val: float, epochs: int, rung: int, **params: Any) -> TrialResult:
    """A trial stopped by successive halving at `rung`, after `epochs` epochs."""
    r = done(n, val, epochs, **params)
    r.state, r.rung = TrialState.STOPPED, rung
    return r


def halving_stage(lost: int = 1, space: dict[str, Any] | None = None, name: str = "coarse", **params: Any) -> StageData:
    """Successive halving with eta 3 over 9 epochs: 9 trials train 1 epoch (rung 0), the best 3 train
    to 3 epochs (rung 1), the best of those to 9 (rung 2, complete); `lost` more diverge at rung 0.
    Each searched lr, and `params` besides."""
    results = [stopped(i, 0.20 + i / 100, 1, 0, lr=10 ** (-4 + i / 3), **params) for i in range(6)]
    results += [stopped(6 + i, 0.40 + i / 100, 3, 1, lr=10 ** (-2 + i / 4), **params) for i in range(2)]
    best = done(8, 0.6, 9, lr=0.02, **params)
    best.rung = 2
    results.append(best)
    for i in range(lost):
        d = diverged(9 + i, lr=0.9 - i / 10, **params)
        d.rung = 0
        results.append(d)
    return stage(space or {"lr": LR}, results, name, epochs=9, halving=True)


def drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


# --------------------------------------------------------------------------- categorical panels


def test_a_categorical_parameter_gets_a_panel_with_the_best_accuracy_of_each_value() -> None:
    space = {"lr": LR, "activation": {"values": ["relu", "tanh", "sigmoid"]}}
    results = [
        done(0, 0.50, lr=0.01, activation="relu"),
        done(1, 0.70, lr=0.02, activation="relu"),
        done(2, 0.60, lr=0.03, activation="tanh"),
        diverged(3, lr=0.9, activation="tanh"),
        diverged(4, lr=0.8, activation="sigmoid"),
    ]
    panels = param_panels([stage(space, results)])
    assert [(p.name, p.categorical) for p in panels] == [("lr", False), ("activation", True)]
    cats = panels[1].categories
    assert [(c.label, c.trials, c.measured, c.best) for c in cats] == [
        ("relu", 2, 2, 0.70),
        ("tanh", 2, 1, 0.60),
        ("sigmoid", 1, 0, None),
    ]


def test_layer_widths_read_back_as_lists_match_the_specs_tuples() -> None:
    space = {"hidden": {"values": [[16], [32, 32]]}}
    results = [done(0, 0.4, hidden=[16]), done(1, 0.6, hidden=[32, 32]), done(2, 0.5, hidden=(32, 32))]
    dom = stage(space, results).spec.search.space["hidden"]
    assert isinstance(dom, Categorical)
    cats = category_accuracy([stage(space, results)], "hidden", dom)
    assert [(c.label, c.trials, c.best) for c in cats] == [("16", 1, 0.4), ("32x32", 2, 0.6)]


def test_a_spec_searching_only_categorical_values_still_gets_its_picture() -> None:
    s = stage(
        {"activation": {"values": ["relu", "tanh"]}}, [done(0, 0.3, activation="relu"), done(1, 0.4, activation="tanh")]
    )
    fig = params_figure([s])
    assert fig is not None
    assert [ax.get_xlabel() for ax in fig.axes] == ["activation"]


# --------------------------------------------------------------------------- the epoch axis


def test_a_one_epoch_run_spans_epochs_zero_to_one() -> None:
    s = stage({"lr": LR}, [done(0, 0.5, lr=0.01), done(1, 0.4, lr=0.1)])
    series = loss_series([s], "lr")
    assert series[0].x[0] == 0.0
    assert series[0].x[-1] == pytest.approx((STEPS - 1) / STEPS)
    assert epoch_xlim(series) == (0.0, 1.0)
    acc = accuracy_series([s])
    assert [list(a.epochs) for a in acc] == [[1], [1]]
    lo, hi = accuracy_xlim(acc)
    assert lo == 0.0
    assert 1.0 < hi <= 1.5  # epoch 1 inside the axis, not on a 0.945..1.05 sliver


def test_a_three_epoch_run_spans_zero_to_three() -> None:
    s = stage({"lr": LR}, [done(0, 0.5, epochs=3, lr=0.01)], epochs=3)
    assert epoch_xlim(loss_series([s], "lr")) == (0.0, 3.0)
    assert accuracy_xlim(accuracy_series([s]))[1] == pytest.approx(3.15)


def test_a_diverged_trial_ends_where_it_diverged_not_at_the_end_of_the_epoch() -> None:
    # NaN on iteration 10 of 25: its curve ends on iteration 9's loss, not stretched to the epoch's end.
    s = stage({"lr": LR}, [diverged(0, at=10, lr=50.0)])
    (series,) = loss_series([s], "lr")
    assert series.diverged
    assert series.x[-1] == pytest.approx(9 / STEPS)
    assert series.y[-1] == 1e20
    assert np.all(np.isfinite(series.y))


def _rising_then_nan(n: int) -> TrialResult:
    """Diverged on iteration 20: a spike to 1e20 it came back from, a last finite loss of 3.0, then NaN."""
    return TrialResult(
        trial=n,
        state=TrialState.DIVERGED,
        params={"lr": 5.0},
        iterations=21,
        losses=[2.3, 2.2, 1e20, *([2.0] * 16), 3.0, math.nan],
    )


def test_a_record_read_back_ends_its_diverged_curve_on_the_last_finite_loss() -> None:
    # trials.jsonl writes the NaN as null and reads it back as NaN: the curve stops on the 3.0 before it.
    line = json.dumps(_rising_then_nan(0).to_dict())
    assert line.count("null") >= 1
    assert "NaN" not in line
    r = TrialResult.from_dict(json.loads(line))
    (series,) = loss_series([stage({"lr": LR}, [r])], "lr")
    assert series.x[-1] == pytest.approx(19 / STEPS)
    assert series.y[-1] == 3.0
    assert len(series.y) == 20


def test_the_moving_average_recovers_after_a_spike() -> None:
    # A running sum minus an earlier one loses 2.0 beside 1e20: the average read 0 after the spike.
    avg = moving_average(np.array([2.3, 1e20, 2.0, 2.0, 2.0, 2.0]), 3)
    assert avg[-1] == pytest.approx(2.0)
    assert avg[0] == pytest.approx(2.3)


def test_a_diverged_curve_is_drawn_to_its_last_finite_loss_and_no_further() -> None:
    fig = drawn(loss_figure([stage({"lr": LR}, [done(0, 0.5, lr=0.01), _rising_then_nan(1)])]))
    ax = fig.axes[0]
    last_x = 19 / STEPS
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert cross.get_xydata().tolist() == [[pytest.approx(last_x), 3.0]]
    # Its line: the one that ends where the cross is, at the last finite loss itself.
    (curve,) = [
        line
        for line in ax.get_lines()
        if line.get_marker() in ("None", None, "") and float(np.asarray(line.get_xdata())[-1]) == pytest.approx(last_x)
    ]
    xy = curve.get_xydata()
    assert xy[-1].tolist() == [pytest.approx(last_x), 3.0]
    assert np.all(xy[:, 1] > 1.0)  # never dropping to 0 after the spike it came back from
    points = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert all(float(np.max(p[:, 0])) <= last_x + 1e-9 for p in points if len(p) == 20)  # nothing after it
    assert any("diverged" in t.get_text() for legend in fig.legends for t in legend.get_texts())


def test_a_one_epoch_accuracy_plot_marks_train_and_validation() -> None:
    fig = drawn(accuracy_figure([stage({"lr": LR}, [done(0, 0.5, lr=0.01)])]))
    ax = fig.axes[0]
    markers = sorted(line.get_marker() for line in ax.get_lines())
    assert markers == ["o", "s"]  # validation dots, train squares: one point each is still seen
    assert ax.get_xlim()[0] == 0.0
    assert ax.get_xlim()[1] > 1.0


# --------------------------------------------------------------------------- successive halving


def test_stopped_trials_curves_end_at_the_epochs_they_trained() -> None:
    s = halving_stage()
    by_trial = {r.trial: r for r in s.results}
    series = loss_series([s], "lr")
    assert [x.trial for x in series] == [r.trial for r in s.results]
    for x in series:
        r = by_trial[x.trial]
        assert x.stopped == (r.state is TrialState.STOPPED)
        if r.state is not TrialState.DIVERGED:
            assert len(x.y) == r.epochs_done * STEPS
            assert x.x[-1] == pytest.approx(r.epochs_done - 1 / STEPS)
    assert epoch_xlim(series) == (0.0, 9.0)


def test_stopped_trials_curves_are_drawn_fainter_and_end_in_a_dot() -> None:
    s = halving_stage()
    fig = drawn(loss_figure([s]))
    ax = fig.axes[0]
    ends = sorted(float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_marker() == "o")
    epochs = sorted(r.epochs_done for r in s.results if r.state is TrialState.STOPPED)
    assert ends == pytest.approx([e - 1 / STEPS for e in epochs])
    faint = [
        line for line in ax.get_lines() if line.get_marker() in ("None", None, "") and (line.get_alpha() or 1.0) < 1.0
    ]
    assert len(faint) == len(epochs)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "8 stopped by halving" in labels


def test_the_rungs_reached_are_labelled_with_their_epochs() -> None:
    assert rung_labels([halving_stage()]) == {0: "rung 0 (1 epoch)", 1: "rung 1 (3 epochs)", 2: "rung 2 (9 epochs)"}
    assert rung_labels([stage({"lr": LR}, [done(0, 0.5, lr=0.01)])]) == {}  # no halving, no rung legend


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _points_by_size(ax: Any) -> dict[float, int]:
    out: dict[float, int] = {}
    for c in ax.collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()):
            size = float(c.get_sizes()[0])
            out[size] = out.get(size, 0) + len(c.get_offsets())
    return out


def test_accuracy_against_a_parameter_marks_each_trial_by_the_rung_it_reached() -> None:
    s = halving_stage(lost=2)
    fig = drawn(params_figure([s]))  # type: ignore[arg-type]
    sizes = _points_by_size(fig.axes[0])
    # Every trial with an accuracy is a point sized by its rung, stopped ones included; the two that
    # diverged are the red crosses (size 30), not the stopped ones; the best is the star (size 220).
    assert rung_size(0) < rung_size(1) < rung_size(2)
    assert sizes == {rung_size(0): 6, rung_size(1): 2, rung_size(2): 1, 30.0: 2, 220.0: 1}
    # The legend names each rung with its epochs, its marker as large as the rung's points.
    legend = {
        h.get_label(): h.get_markersize()
        for legend in fig.legends
        for h in legend.legend_handles
        if isinstance(h, Line2D) and str(h.get_label()).startswith("rung")
    }
    assert legend == {
        "rung 0 (1 epoch)": pytest.approx(math.sqrt(rung_size(0))),
        "rung 1 (3 epochs)": pytest.approx(math.sqrt(rung_size(1))),
        "rung 2 (9 epochs)": pytest.approx(math.sqrt(rung_size(2))),
    }
    assert no_complete_message([s]) is None


def test_trials_stopped_by_median_stop_are_hollow_and_named_in_the_legend() -> None:
    results = [done(i, 0.4 + i / 100, 4, lr=0.01 * (i + 1)) for i in range(3)]
    for i in range(3, 5):
        r = done(i, 0.2, 2, lr=0.001 * i)
        r.state, r.stopped_below = TrialState.STOPPED, 0.41
        results.append(r)
    fig = drawn(params_figure([stage({"lr": LR}, results, epochs=4)]))  # type: ignore[arg-type]
    hollow = [
        c
        for c in fig.axes[0].collections
        if isinstance(c, PathCollection) and len(c.get_offsets()) and not c.get_facecolors().size
    ]
    assert [len(c.get_offsets()) for c in hollow] == [2]
    assert sorted(float(y) for _, y in hollow[0].get_offsets()) == [0.2, 0.2]
    assert "stopped by median_stop (hollow: accuracy at fewer epochs)" in _legend_texts(fig)


def test_only_the_rungs_present_are_in_the_legend() -> None:
    results = [stopped(i, 0.3, 1, 0, lr=0.01 * (i + 1), weight_decay=1e-4) for i in range(3)]
    top = done(3, 0.5, 9, lr=0.02, weight_decay=1e-3)
    top.rung = 2
    s = stage({"lr": LR, "weight_decay": WD}, [*results, top], epochs=9, halving=True)
    for make in (params_figure, lr_wd_figure):
        texts = _legend_texts(drawn(make([s])))  # type: ignore[arg-type]
        assert sorted(t for t in texts if t.startswith("rung")) == ["rung 0 (1 epoch)", "rung 2 (9 epochs)"], (
            make.__name__
        )
        assert not any("diverged" in t for t in texts)  # stopped trials are not lost ones


def test_the_best_trials_accuracy_curves_put_the_highest_rung_first() -> None:
    acc = accuracy_series([halving_stage()], top=4)
    assert [(a.trial, len(a.epochs)) for a in acc] == [(8, 9), (7, 3), (6, 3), (5, 1)]


def test_a_categorical_value_counts_stopped_trials_as_measured() -> None:
    space = {"activation": {"values": ["relu", "tanh"]}}
    results = [
        stopped(0, 0.30, 1, 0, activation="relu"),
        stopped(1, 0.35, 1, 0, activation="tanh"),
        diverged(2, activation="tanh"),
    ]
    top = done(3, 0.5, 3, activation="relu")
    top.rung = 1
    s = stage(space, [*results, top], epochs=3, halving=True)
    cats = param_panels([s])[0].categories
    assert [(c.label, c.trials, c.measured, c.best) for c in cats] == [("relu", 2, 2, 0.5), ("tanh", 2, 1, 0.35)]
    fig = drawn(params_figure([s]))  # type: ignore[arg-type]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["relu\n2 trials", "tanh\n2 trials\n1 diverged/failed"]


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"lr": LR, "weight_decay": WD}, "lr"),
        ({"weight_decay": WD}, "weight_decay"),
        ({"weight_decay": WD, "momentum": {"low": 0.5, "high": 0.99}}, "momentum"),
        ({"activation": {"values": ["relu", "tanh"]}}, "activation"),
        ({}, None),
    ],
)
def test_the_loss_curves_are_coloured_by_what_was_searched(space: dict[str, Any], expected: str | None) -> None:
    assert color_param([stage(space, [])]) == expected


def test_without_lr_the_colour_bar_is_the_searched_parameters() -> None:
    results = [done(i, 0.5, weight_decay=wd) for i, wd in enumerate([1e-5, 1e-3, 1e-1])]
    s = stage({"weight_decay": WD}, results)
    assert [r.color_value for r in loss_series([s], color_param([s]))] == [1e-5, 1e-3, 1e-1]
    fig = drawn(loss_figure([s]))
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "weight_decay"]
    assert len(bars) == 1  # a colour bar for weight decay, not grey lines with none


# --------------------------------------------------------------------------- nothing completed


def test_an_all_diverged_stage_draws_a_message_with_the_lectures_advice() -> None:
    s = stage(
        {"lr": {"low": 10, "high": 100, "log": True}, "weight_decay": WD},
        [diverged(i, lr=20.0 + i, weight_decay=1e-4) for i in range(4)],
    )
    message = no_complete_message([s])
    assert message is not None
    assert "No trial of coarse completed (4 diverged)" in message
    assert "learning rate is too high" in message
    params = drawn(params_figure([s]))  # type: ignore[arg-type]
    assert params.axes[0].get_ylim() == (0.0, 1.0)  # an accuracy axis, not -0.04..0.04
    assert params.get_suptitle() == message
    acc = drawn(accuracy_figure([s]))
    assert message in [t.get_text() for t in acc.axes[0].texts]
    lrwd = drawn(lr_wd_figure([s]))  # type: ignore[arg-type]
    assert lrwd.get_suptitle() == message


def test_one_complete_trial_means_no_message() -> None:
    s = stage({"lr": LR}, [diverged(0, lr=0.9), done(1, 0.3, lr=0.01)])
    assert no_complete_message([s]) is None


def test_a_stage_of_failures_points_to_their_errors() -> None:
    failed = TrialResult(trial=0, state=TrialState.FAILED, params={"lr": 0.1}, error="ValueError: x")
    message = no_complete_message([stage({"lr": LR}, [failed])])
    assert message is not None
    assert "1 failed" in message
    assert "trials.jsonl" in message


def test_with_lr_not_searched_the_advice_names_the_specs_lr() -> None:
    message = no_complete_message([stage({"weight_decay": WD}, [diverged(0, weight_decay=1e-3)])])
    assert message is not None
    assert message.endswith("lower train.lr.")


# --------------------------------------------------------------------------- ticks and legends


@pytest.mark.parametrize(
    ("low", "high"), [(1e-4, 1.0), (1e-6, 0.1), (1e-10, 1.0), (0.03, 0.3), (0.0087, 0.809), (30, 100), (0.035, 0.05)]
)
def test_log_ticks_are_few_and_inside_the_range(low: float, high: float) -> None:
    ticks = log_ticks(low, high)
    assert 2 <= len(ticks) <= 6
    assert all(low <= t <= high for t in ticks)
    assert ticks == sorted(set(ticks))


def test_log_ticks_of_whole_decades_are_the_decades() -> None:
    assert log_ticks(1e-4, 1.0) == [1e-4, 1e-3, 1e-2, 0.1, 1.0]


def _overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    bad = []
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lo, hi), max(lo, hi)
            shown = [
                (t.get_text(), t.get_window_extent(renderer))
                for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
                for t in [tick.label1]
                if t.get_visible() and t.get_text() and lo <= tick.get_loc() <= hi
            ]
            bad += [(a, b) for (a, ba), (b, bb) in itertools.combinations(shown, 2) if ba.overlaps(bb)]
    return bad


def test_log_tick_labels_of_a_one_decade_range_do_not_overlap() -> None:
    # lr 0.03..0.3 on a panel of four: matplotlib alone writes 3x10^-2, 4x10^-2, ... into each other.
    space = {
        "lr": {"low": 0.03, "high": 0.3, "log": True},
        "weight_decay": {"low": 1e-4, "high": 2e-3, "log": True},
        "momentum": {"low": 0.5, "high": 0.95},
        "activation": {"values": ["relu", "tanh"]},
    }
    results = [
        done(i, 0.5 + i / 50, lr=0.03 * 1.25**i, weight_decay=1e-4 * 1.3**i, momentum=0.5 + i / 25, activation="relu")
        for i in range(10)
    ]
    fig = drawn(params_figure([stage(space, results)]))  # type: ignore[arg-type]
    assert _overlapping_labels(fig) == []
    wd = drawn(lr_wd_figure([stage(space, results)]))  # type: ignore[arg-type]
    assert _overlapping_labels(wd) == []


def _legends_on_axes(fig: Figure) -> list[str]:
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    plots = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    legends = [*fig.legends, *(ax.get_legend() for ax in plots if ax.get_legend() is not None)]
    return [
        ax.get_title()
        for legend in legends
        for ax in plots
        for box in (ax.get_window_extent(renderer), ax.title.get_window_extent(renderer))
        if legend.get_window_extent(renderer).overlaps(box)
    ]


def test_legends_stay_off_the_data_and_the_titles() -> None:
    # Four parameters make legend labels long enough to squeeze the axes beside a legend.
    space = {"lr": LR, "weight_decay": WD, "activation": {"values": ["relu", "tanh"]}, "hidden": {"values": [[32, 32]]}}
    results = [
        done(
            i,
            0.3 + i / 20,
            2,
            lr=10 ** (-4 + i / 2),
            weight_decay=10 ** (-6 + i / 2),
            activation="relu",
            hidden=[32, 32],
        )
        for i in range(9)
    ]
    stages = [
        stage(space, results, epochs=2),
        stage(space, [diverged(0, lr=0.9, weight_decay=1e-3, activation="tanh", hidden=[32, 32])], "refine-1"),
    ]
    for make in (loss_figure, accuracy_figure, params_figure, lr_wd_figure):
        fig = make(stages)
        assert fig is not None
        assert _legends_on_axes(drawn(fig)) == [], make.__name__


# --------------------------------------------------------------------------- the files


def _is_a_picture(path: Path) -> bool:
    with Image.open(path) as img:
        grey = img.convert("L")
        return (
            img.format == "PNG" and img.width >= 600 and img.height >= 400 and len(set(grey.get_flattened_data())) > 20
        )


def test_every_png_is_written_and_shows_something(tmp_path: Path) -> None:
    space = {"lr": LR, "weight_decay": WD, "hidden": {"values": [[16], [32, 32]]}}
    coarse = [
        done(i, 0.2 + i / 20, lr=10 ** (-4 + i / 2), weight_decay=10 ** (-6 + i / 2), hidden=[16]) for i in range(8)
    ]
    refine = [done(i, 0.6 + i / 50, epochs=3, lr=0.05 + i / 100, weight_decay=1e-3, hidden=[32, 32]) for i in range(4)]
    refine.append(diverged(4, lr=0.9, weight_decay=1e-3, hidden=[32, 32]))
    halving = halving_stage(space=space, name="refine-2", weight_decay=1e-3, hidden=[16])  # stopped trials, rungs
    stages = [stage(space, coarse), stage(space, refine, "refine-1", epochs=3), halving]
    made = write_report_plots(stages, tmp_path)
    assert sorted(p.name for p in made) == [
        "accuracy_curves.png",
        "loss_curves.png",
        "lr_weight_decay.png",
        "val_acc_vs_params.png",
    ]
    assert all(_is_a_picture(p) for p in made)


def test_without_lr_there_is_no_lr_weight_decay_map() -> None:
    s = stage({"weight_decay": WD}, [done(i, 0.5, weight_decay=10.0**-i) for i in range(1, 4)])
    assert lr_wd_figure([s]) is None
    assert params_figure([s]) is not None
