"""Result tables (rich for the terminal, Markdown, CSV, the results.json document) and the
`report` command's library side: plots and one ranked table across a run's stages.

Each table column has one number format. The terminal table is laid out for the terminal's width
and never cuts a number; CSV and JSON keep full precision. Every accuracy comes with its 95%
interval, and the trials tied for best (within the noise of the validation examples) are marked
`=`. Reading a run needs no torch: may import records, rank, curves, refine, spec, store;
matplotlib (through plots) only when the report is drawn.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from hpsearch.analysis.curves import curve_label
from hpsearch.analysis.rank import TIE_RULE, fmt_value, rank, tied_with_best, wilson_interval
from hpsearch.analysis.verdicts import Edge
from hpsearch.errors import StoreError
from hpsearch.runs.read import COARSE, StageData, how_to_start, is_partial, load_stage, resume_command, stage_curve_data
from hpsearch.runs.records import CurveData, TrialResult, TrialState, epochs_text
from hpsearch.runs.store import StageStore
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import Spec

if TYPE_CHECKING:
    from hpsearch.sanity.results import SanityReport

STATE_STYLE = {
    TrialState.COMPLETE: "green",
    TrialState.DIVERGED: "red",
    TrialState.FAILED: "magenta",
    TrialState.STOPPED: "dim",  # successive halving: trained fine, only shorter
}

COMPACT_BOX = box.SIMPLE_HEAD  # a narrow terminal: no side borders, one rule under the header


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def curve_text(r: TrialResult, data: CurveData | None = None) -> str:
    """The trial's curve label; with the run's data section, 'at chance' is judged too (1/C, and the
    noise of its validation size)."""
    label = curve_label(r, data.num_classes, data.val_size) if data is not None else curve_label(r)
    return label.value if label else ""


# --------------------------------------------------------------------------- noise: intervals and ties

TIE_MARK = "="  # before the rank of each trial tied for best: `=1`, `=2`, ... as in a sports table


def interval(r: TrialResult, data: CurveData | None) -> tuple[float, float] | None:
    """The 95% interval of a trial's validation accuracy; None without one, or without the count of
    validation examples it was measured on."""
    if data is None or r.val_acc is None or not math.isfinite(r.val_acc):
        return None
    return wilson_interval(r.val_acc, data.val_size)


def _interval_cell(r: TrialResult, data: CurveData | None) -> str:
    ci = interval(r, data)
    return "-" if ci is None else f"{_acc(ci[0])}-{_acc(ci[1])}"


def tied_for_best(ranked: list[TrialResult], data: CurveData | None) -> list[TrialResult]:
    """The trials tied for best, the best first (rank.tied_with_best); none without the count of
    validation examples."""
    return tied_with_best(ranked, data.val_size) if data is not None else []


def _marked(ranked: list[TrialResult], data: CurveData | None) -> set[int]:
    """The ids of the trials the tables mark as tied: none when the best stands alone."""
    tied = tied_for_best(ranked, data)
    return {id(r) for r in tied} if len(tied) >= 2 else set()


def ties_line(ranked: list[TrialResult], data: CurveData | None) -> str | None:
    """One line on the noise at the top: how many trials are tied for best, or that the best's lead is
    beyond noise; None with fewer than two complete trials at the best's rung to compare."""
    tied = tied_for_best(ranked, data)
    if not tied or data is None:
        return None
    best = tied[0]
    rivals = [r for r in ranked if r.state is TrialState.COMPLETE and r.val_acc is not None and r.rung == best.rung]
    if len(rivals) < 2:
        return None
    at = f" at rung {best.rung}" if best.rung is not None else ""
    n = data.val_size
    if len(tied) == 1:
        return (
            f"the best trial{at} leads beyond noise: no other trial's 95% interval overlaps its own "
            f"({n} validation examples)"
        )
    return (
        f"{len(tied)} trials{at} are tied for best (marked {TIE_MARK}; 95% intervals overlap, {n} validation "
        "examples): the ranking among them is noise"
    )


def ties_document(ranked: list[TrialResult], data: CurveData | None) -> dict[str, Any] | None:
    """results.json's `ties`: the trials tied for best (the best first, alone when it leads beyond
    noise), the validation count and the rule; None without the count."""
    if data is None:
        return None
    tied = tied_for_best(ranked, data)
    return {"count": len(tied), "trials": [r.trial for r in tied], "val_size": data.val_size, "rule": TIE_RULE}


# --------------------------------------------------------------------------- one format per column


def fmt_column(values: Sequence[Any], sig: int = 3, spans: bool = True) -> list[str]:
    """A column's values, every number in the column's one format: integers as integers; scientific
    with `sig - 1` significant digits when the numbers span two decades or more (or any is below
    0.01 or from 10^4 up); else fixed decimals that give the smallest `sig` significant digits.
    Trailing zeros every value shares are dropped (a grid's `1e-04`, not `1.0e-04`). None is `-`;
    anything else (a string, layer widths) as fmt_value writes it. `spans=False`: a span of decades
    alone keeps fixed decimals (losses: 1.743 beside 805.000 compares better than 1.74e+00)."""
    spec = _number_format([float(v) for v in values if _is_number(v) and math.isfinite(v)], sig, spans)
    return [_cell(v, spec) for v in values]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_format(nums: list[float], sig: int, spans: bool = True) -> str:
    if all(v.is_integer() and abs(v) < 1e6 for v in nums):
        return ".0f"
    sizes = [abs(v) for v in nums if v != 0]
    if sizes and (min(sizes) < 1e-2 or max(sizes) >= 1e4 or spans and max(sizes) / min(sizes) >= 100):
        return f".{_fewest_decimals(nums, max(0, sig - 2), 'e')}e"
    most = max(0, sig - 1 - math.floor(math.log10(min(sizes)))) if sizes else 0
    return f".{_fewest_decimals(nums, most, 'f')}f"


def _fewest_decimals(nums: list[float], most: int, kind: str) -> int:
    """The fewest decimals that show every value as `most` decimals would."""
    for d in range(most):
        if all(float(f"{v:.{d}{kind}}") == float(f"{v:.{most}{kind}}") for v in nums):
            return d
    return most


def _cell(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if not _is_number(v):
        return fmt_value(v)
    return format(float(v), spec) if math.isfinite(v) else str(float(v))  # nan, inf, -inf


# --------------------------------------------------------------------------- the table's columns


# The layouts of the terminal table, widest first: every column with borders; every column
# without; without time_s and train_loss; without train_acc, and the curve label in the state
# column; without the 95% interval too (the tie marks on the ranks stay).
FULL, BORDERLESS, SHORT, SHORTER, SHORTEST = range(5)
LAYOUTS = range(FULL, SHORTEST + 1)
CI_HEADER = "95% CI"


@dataclass(frozen=True)
class _Column:
    name: str
    cells: list[str]
    numeric: bool  # right-aligned, kept on one line: a number is never cut
    layouts: range = LAYOUTS  # the layouts that show it


def _epochs_cell(r: TrialResult, planned: int) -> str:
    """The epochs a trial trained; `2/4` when it stopped (diverged, failed, stopped by halving)
    before its plan's end."""
    done = epochs_text(r.epochs_done)
    return done if r.epochs_done >= planned else f"{done}/{planned}"


def _shown_params(param_names: list[str], planned_epochs: list[int] | None) -> list[str]:
    # With an epochs column, a searched `epochs` is in it already (trained / planned).
    return [p for p in param_names if planned_epochs is None or p != "epochs"]


def _columns(
    ranked: list[TrialResult],
    param_names: list[str],
    stages: list[str] | None = None,
    planned_epochs: list[int] | None = None,
    data: CurveData | None = None,
    marked: set[int] | frozenset[int] = frozenset(),
) -> list[_Column]:
    """`marked`: the ids of the trials tied for best, their ranks marked `=`."""
    until_short, until_borderless = range(FULL, SHORT + 1), range(FULL, BORDERLESS + 1)
    ranks = [f"{TIE_MARK}{i}" if id(r) in marked else str(i) for i, r in enumerate(ranked, 1)]
    cols = [_Column("rank", ranks, numeric=True)]
    if stages is not None:
        cols.append(_Column("stage", list(stages), numeric=False))
    cols += [
        _Column("trial", [str(r.trial) for r in ranked], numeric=True),
        _Column("state", [r.state.value for r in ranked], numeric=False, layouts=until_short),
        _Column(
            "state",
            [curve_text(r, data) or r.state.value for r in ranked],
            numeric=False,
            layouts=range(SHORTER, SHORTEST + 1),
        ),
        _Column("val_acc", [_acc(r.val_acc) for r in ranked], numeric=True),
    ]
    if data is not None:
        cells = [_interval_cell(r, data) for r in ranked]
        cols.append(_Column(CI_HEADER, cells, numeric=True, layouts=range(FULL, SHORTER + 1)))
    cols += [
        _Column("train_acc", [_acc(r.train_acc) for r in ranked], numeric=True, layouts=until_short),
        # Four digits: the initial loss of a 10-class softmax reads as 2.303, ln 10.
        _Column(
            "train_loss",
            fmt_column([r.train_loss for r in ranked], sig=4, spans=False),
            numeric=True,
            layouts=until_borderless,
        ),
    ]
    if _halving(ranked):  # how far each trial got
        cols.append(_Column("rung", ["-" if r.rung is None else str(r.rung) for r in ranked], numeric=True))
    if planned_epochs is not None:
        cells = [_epochs_cell(r, p) for r, p in zip(ranked, planned_epochs, strict=True)]
        cols.append(_Column("epochs", cells, numeric=True))
    for p in _shown_params(param_names, planned_epochs):
        cols.append(_Column(p, fmt_column([r.params.get(p) for r in ranked]), numeric=True))
    cols += [
        _Column("curve", [curve_text(r, data) for r in ranked], numeric=False, layouts=until_short),
        _Column("time_s", [f"{r.wall_time:.2f}" for r in ranked], numeric=True, layouts=until_borderless),
    ]
    return cols


def _halving(ranked: list[TrialResult]) -> bool:
    """Whether the trials ran under successive halving: then each has the rung it reached."""
    return any(r.rung is not None for r in ranked)


def _stopped_early_note(ranked: list[TrialResult], planned_epochs: list[int] | None) -> str | None:
    for r, planned in zip(ranked, planned_epochs or [], strict=False):
        done = epochs_text(r.epochs_done)
        if r.epochs_done < planned and r.stopped_below is not None:
            return (
                f"epochs {done}/{planned}: trained {done} of {planned} planned epochs, then stopped "
                f"by median_stop (its best val_acc so far below {r.stopped_below:.3f}, the median of the complete "
                "trials at that epoch)"
            )
        if r.epochs_done < planned and r.state is TrialState.STOPPED:
            return (
                f"epochs {done}/{planned}: trained {done} of {planned} planned epochs, "
                "then stopped by successive halving (outranked at its rung)"
            )
        if r.epochs_done < planned:
            return f"epochs {done}/{planned}: stopped after {done} of {planned} planned epochs ({r.state.value})"
    return None


# --------------------------------------------------------------------------- rich, Markdown, CSV


class FittedTable:
    """The ranked table, laid out when it is printed, for the terminal's width: every column when
    they fit; else without borders, then without time_s and train_loss, then without train_acc and
    with the curve label in the state column, then without the 95% interval (results.md/csv/json
    keep every column). A number is
    never cut: its column is as wide as its widest number, and on a terminal too narrow even for
    that it is folded onto a second line, whole."""

    def __init__(self, title: str, columns: list[_Column], states: list[TrialState], notes: list[str]) -> None:
        self.title, self.columns, self.states, self.notes = title, columns, states, notes

    def layouts(self) -> list[Table]:
        """Widest first."""
        return [self.table(layout) for layout in LAYOUTS]

    def table(self, layout: int) -> Table:
        shown = [c for c in self.columns if layout in c.layouts]
        names = {c.name for c in shown}
        left = [c.name for c in self.columns if FULL in c.layouts and c.name not in names]
        notes = list(self.notes)
        if "curve" in left:
            left.remove("curve")
            notes.append("state: the curve label of a complete trial")
        if left:
            notes.append(f"not shown: {', '.join(left)} (see results.md)")
        table = Table(title=self.title, title_justify="left", caption="\n".join(notes) or None, caption_justify="left")
        if layout != FULL:
            table.box, table.show_edge, table.pad_edge, table.collapse_padding = COMPACT_BOX, False, False, True
        for c in shown:
            # A borderless header may wrap at its underscores: `weight` over `decay` above `1.0e-04`.
            header = c.name if layout == FULL else c.name.replace("_", " ")
            width = max(len(x) for x in c.cells) if c.numeric and c.cells else None
            table.add_column(
                header, justify="right" if c.numeric else "left", no_wrap=c.numeric, min_width=width, overflow="fold"
            )
        for i, state in enumerate(self.states):
            style = STATE_STYLE.get(state) if state is not TrialState.COMPLETE else None
            table.add_row(*(c.cells[i] for c in shown), style=style)
        return table

    def pick(self, console: Console, options: ConsoleOptions) -> Table:
        """The first layout whose rows fit on one line each; else the first whose numbers fit (its
        text columns wrap); else the narrowest, its numbers folded."""
        layouts = self.layouts()
        unbounded = options.update_width(10_000)
        sizes = [Measurement.get(console, unbounded, t) for t in layouts]
        for fits in (lambda m: m.maximum <= options.max_width, lambda m: m.minimum <= options.max_width):
            for table, size in zip(layouts, sizes, strict=True):
                if fits(size):
                    return table
        narrowest = layouts[-1]
        for column in narrowest.columns:
            column.min_width, column.no_wrap = None, False
        return narrowest

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.pick(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.pick(console, options))


def rich_table(
    title: str,
    ranked: list[TrialResult],
    param_names: list[str],
    limit: int | None = None,
    stages: list[str] | None = None,
    planned_epochs: list[int] | None = None,
    data: CurveData | None = None,
) -> FittedTable:
    """The ranked trials for the terminal, the top `limit`; with `stages`, each trial's stage, and
    with `planned_epochs`, the epochs each trained (`2/4` when it stopped early). With `data` (the
    count of validation examples), each accuracy's 95% interval and the trials tied for best marked."""
    n = len(ranked) if limit is None else limit
    shown = ranked[:n]
    marked = _marked(ranked, data)
    columns = _columns(shown, param_names, stages and stages[:n], planned_epochs and planned_epochs[:n], data, marked)
    notes = [] if len(ranked) <= n else [f"top {n} of {len(ranked)} trials; all are in results.md/csv/json"]
    if marked:
        notes.append(f"{TIE_MARK}: tied for best (95% intervals overlap the best's)")
    early = _stopped_early_note(shown, planned_epochs)
    return FittedTable(title, columns, [r.state for r in shown], notes + ([early] if early else []))


def markdown_table(
    ranked: list[TrialResult],
    param_names: list[str],
    stages: list[str] | None = None,
    planned_epochs: list[int] | None = None,
    data: CurveData | None = None,
) -> str:
    """The ranked trials as a Markdown table, every column, then a line on the trials tied for best."""
    marked = _marked(ranked, data)
    cols = [c for c in _columns(ranked, param_names, stages, planned_epochs, data, marked) if FULL in c.layouts]
    lines = ["| " + " | ".join(c.name for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(c.cells[i] for c in cols) + " |" for i in range(len(ranked))]
    notes = [n for n in (_stopped_early_note(ranked, planned_epochs), ties_line(ranked, data)) if n]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)


def csv_table(
    ranked: list[TrialResult],
    param_names: list[str],
    stages: list[str] | None = None,
    planned_epochs: list[int] | None = None,
    data: CurveData | None = None,
) -> str:
    """Every trial at full precision, for a program to read: its accuracy's 95% interval and whether it
    is tied for best (with `data`, the count of validation examples; else empty), the rung it reached
    (with successive halving), and with `planned_epochs`, the epochs each trained and planned."""
    params = _shown_params(param_names, planned_epochs)
    tied = {id(r) for r in tied_for_best(ranked, data)}
    halving = _halving(ranked)
    buf = io.StringIO()
    w = csv.writer(buf)
    where = ["stage"] if stages is not None else []
    rung = ["rung"] if halving else []
    epochs = ["epochs", "epochs_planned"] if planned_epochs is not None else []
    noise = ["val_acc_low", "val_acc_high", "tied_for_best"]
    head = ["rank", *where, "trial", "state", "val_acc", *noise, "train_acc", "train_loss", *rung, *epochs, *params]
    w.writerow(head + ["curve", "time_s", "error"])
    for i, r in enumerate(ranked):
        ci = interval(r, data)
        w.writerow(
            [i + 1, *([stages[i]] if stages is not None else []), r.trial, r.state.value, r.val_acc]
            + (["", ""] if ci is None else list(ci))
            + ["" if data is None else str(id(r) in tied).lower(), r.train_acc, r.train_loss]
            + ([r.rung] if halving else [])
            + ([r.epochs_done, planned_epochs[i]] if planned_epochs is not None else [])
            + [fmt_csv(r.params.get(p)) for p in params]
            + [curve_text(r, data), round(r.wall_time, 3), r.error or ""]
        )
    return buf.getvalue()


def fmt_csv(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return getattr(v, "value", v)


def results_document(
    stage: str,
    ranked: list[TrialResult],
    edge_list: list[Edge],
    extra: dict[str, Any],
    data: CurveData | None = None,
    planned_epochs: list[int] | None = None,
) -> dict[str, Any]:
    """results.json: the stage; the trials tied for best; every trial best first with its rank, its
    accuracy's 95% interval, the rung it reached (successive halving), the epochs it trained (and
    with `planned_epochs`, planned); and the edge analysis."""
    ties = ties_document(ranked, data)
    tied = {id(r) for r in tied_for_best(ranked, data)}  # not by number: the report's stages repeat them
    halving = _halving(ranked)
    rows = []
    for i, r in enumerate(ranked, 1):
        d = r.to_dict()
        keys = ("trial", "state", "params", "val_acc")
        row = {"rank": i, **{k: d[k] for k in keys}}
        ci = interval(r, data)
        row["val_acc_interval"] = None if ci is None else list(ci)
        row["tied_for_best"] = id(r) in tied
        row |= {"train_acc": d["train_acc"], "train_loss": d["train_loss"]}
        if halving:
            row["rung"] = r.rung
        row["epochs"] = r.epochs_done
        if planned_epochs is not None:
            row["epochs_planned"] = planned_epochs[i - 1]
        row["curve"] = curve_text(r, data) or None
        rows.append(row)
    return {
        "stage": stage,
        **extra,
        **({"ties": ties} if ties is not None else {}),
        "ranked": rows,
        "edges": {e.name: e.to_dict() for e in edge_list},
    }


def markdown_report(
    title: str,
    ranked: list[TrialResult],
    param_names: list[str],
    edge_list: list[Edge],
    data: CurveData | None = None,
    planned_epochs: list[int] | None = None,
) -> str:
    flags = [f"- {e.warning}" for e in edge_list if e.warning]
    parts = [f"# {title}\n", markdown_table(ranked, param_names, planned_epochs=planned_epochs, data=data)]
    if flags:
        parts.append("\n**Careful with the ranges (what all the trials say):**\n\n" + "\n".join(flags) + "\n")
    return "\n".join(parts)


VERDICT_STYLE = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red"}


def sanity_tables(report: SanityReport) -> list[Table]:
    """The checks (one row each), the per-layer activation statistics and the lr probe."""
    checks = Table(title="sanity checks", title_justify="left")
    for h in ("check", "verdict", "measured", "diagnosis"):
        checks.add_column(h, overflow="fold")
    for c in report.checks:
        v = c.verdict.value
        checks.add_row(c.check, Text(v, style=VERDICT_STYLE[v]), c.measured, c.diagnosis)
    layers = Table(title="activation statistics at init", title_justify="left")
    for h in ("layer", "mean", "std", "dead", "saturated", "grad norm"):
        layers.add_column(h, justify="right")
    for s in report.layers:
        sat = "-" if s.saturated is None else f"{s.saturated:.1%}"
        layers.add_row(s.label, f"{s.mean:.3g}", f"{s.std:.3g}", f"{s.dead:.1%}", sat, f"{s.grad_norm:.3g}")
    probe = Table(title="learning-rate probe", title_justify="left")
    for h in ("lr", "start loss", "end loss", "drop", "status"):
        probe.add_column(h, justify="right")
    for r in report.probe:
        style = "" if r.status.ok else "red" if r.status.too_high else "yellow"  # too high / too low
        status = Text(r.status.label, style=style)
        end = (
            "inf" if not math.isfinite(r.end_loss) else f"{r.end_loss:.3f}" if r.end_loss < 1e4 else f"{r.end_loss:.3g}"
        )
        drop = "-" if r.diverged else f"{r.drop:+.1%}"  # exploded: a drop of -5.7e+22% says nothing more
        probe.add_row(f"{r.lr:g}", f"{r.start_loss:.3f}", end, drop, status)
    return [checks, layers, probe]


@dataclass
class ReportOutcome:
    stages: list[StageData]  # every stage with a finished trial, in order; an unfinished one too
    ranked: list[TrialResult]  # every trial of every stage, best first
    stage_of: list[str]  # the stage of each ranked trial
    param_names: list[str]
    plots: list[Path]
    results_path: Path
    planned_epochs: list[int] = field(default_factory=list)  # the epochs each ranked trial was to train
    unfinished: dict[str, tuple[int, int]] = field(default_factory=dict)  # stage: (trials finished, planned)
    notes: list[str] = field(default_factory=list)  # for the user: what is unfinished and how to finish it

    @property
    def data(self) -> CurveData:
        """What the run's accuracies were measured on, as curve labels and intervals need it (every
        stage trains on its coarse stage's data)."""
        run_dir = self.results_path.parent.parent  # RUN/report/results.json
        return stage_curve_data(run_dir / self.stages[0].name, self.stages[0].spec.data)

    @property
    def title(self) -> str:
        """'all stages (coarse, refine-1 (unfinished: 7 of 20 trials)): 27 trials'"""
        names = ", ".join(_stage_label(s.name, self.unfinished) for s in self.stages)
        return f"all stages ({names}): {len(self.ranked)} trials"


def _stage_label(name: str, unfinished: dict[str, tuple[int, int]]) -> str:
    if name not in unfinished:
        return name
    done, planned = unfinished[name]
    return f"{name} (unfinished: {done} of {planned} trials)"


def run_report(run_dir: Path) -> ReportOutcome:
    """Plots of every stage under RUN/report/, and one ranked table across stages (with each trial's
    stage, epochs and curve label) as RUN/report/results.json, results.md and results.csv. A stage
    that did not finish (stopped by Ctrl-C) is reported with the trials it finished, and a note."""
    from hpsearch.output.plots import write_report_plots

    data, unfinished, unreadable = _report_stages(run_dir)
    if not any(s.results for s in data):
        raise StoreError(f"{run_dir}: no finished stage to report on; {how_to_start(run_dir)}")
    owner = {id(r): s for s in data for r in s.results}
    ranked = rank([r for s in data for r in s.results])
    stage_of = [owner[id(r)].name for r in ranked]
    planned = [_planned_epochs(r, owner[id(r)].spec) for r in ranked]
    params = sorted({p for s in data for p in s.spec.search.space})
    notes = unreadable + [_unfinished_note(run_dir, name, done, total) for name, (done, total) in unfinished.items()]
    out = StageStore(run_dir / "report")
    out.make_dir()
    plots = write_report_plots([s for s in data if s.results], out.path)
    results_path = out.path / "results.json"
    outcome = ReportOutcome(data, ranked, stage_of, params, plots, results_path, planned, unfinished, notes)
    extra = {
        "stages": [s.name for s in data],
        "unfinished": {k: {"trials_done": d, "trials_planned": t} for k, (d, t) in unfinished.items()},
        "notes": notes,
    }
    run_data = outcome.data  # every stage of a run trains on its coarse stage's data
    doc = results_document("all", ranked, [], extra, run_data, planned)
    for row, stage in zip(doc["ranked"], stage_of, strict=True):
        row["stage"] = stage
    if "ties" in doc:  # trial numbers repeat across stages: each tied trial's stage, in the same order
        doc["ties"]["stages"] = [stage_of[row["rank"] - 1] for row in doc["ranked"] if row["tied_for_best"]]
    out.write_json("results.json", doc)
    head = f"# {data[0].spec.name}: {outcome.title}\n\n" + "".join(f"{n}\n\n" for n in notes)
    out.write_text("results.md", head + markdown_table(ranked, params, stage_of, planned, run_data))
    out.write_text("results.csv", csv_table(ranked, params, stage_of, planned, run_data))
    return outcome


def _report_stages(run_dir: Path) -> tuple[list[StageData], dict[str, tuple[int, int]], list[str]]:
    """The run's stages in order: each finished one as refine.load_stage reads it, and one that did
    not finish (stopped by Ctrl-C: a trials.jsonl, and no results.json or one marked partial) with
    the trials it finished; for those, (finished, planned) in the second value. Third: a note for
    each trials.jsonl with lines that could not be read."""
    data: list[StageData] = []
    unfinished: dict[str, tuple[int, int]] = {}
    unreadable: list[str] = []
    name = COARSE
    while True:
        path = run_dir / name
        partial: dict[str, Any] = {}
        if (path / "results.json").is_file():
            spec, results, doc, read = load_stage(run_dir, name)
            if not is_partial(doc):
                data.append(StageData(name, spec, results))
                unreadable += _unreadable(read)
                name = f"refine-{len(data)}"
                continue
            partial = doc
        store = StageStore(path)
        if not (store.started and (path / "spec.yaml").is_file()):
            return data, unfinished, unreadable
        spec = load_spec(path / "spec.yaml")
        final = store.final_trials()  # newer than a partial results.json, if one was written since
        results = [final[t] for t in sorted(final)]
        unfinished[name] = (len(results), _planned_trials(spec, partial))
        data.append(StageData(name, spec, results))
        unreadable += _unreadable(store)
        name = f"refine-{len(data)}"


def _unreadable(store: StageStore) -> list[str]:
    note = store.unreadable_note("a trial recorded only there is left out of this report")
    return [note] if note else []


def _planned_trials(spec: Spec, partial: dict[str, Any]) -> int:
    """The trials a stage planned: as the results written when it was stopped count them (a refine
    leaves out what earlier stages trained), else (a killed stage wrote none) as its spec asks."""
    trials = partial.get("trials_planned")
    return trials if isinstance(trials, int) and not isinstance(trials, bool) else spec.search.trials


def _planned_epochs(r: TrialResult, spec: Spec) -> int:
    return int(r.params.get("epochs", spec.train.epochs))  # a searched epochs is the trial's own


def _unfinished_note(run_dir: Path, stage: str, done: int, planned: int) -> str:
    return (
        f"{run_dir / stage} did not finish: its {done} finished trials of {planned} are in this report; "
        f"{resume_command(run_dir, stage)} (with the same options) finishes it"
    )
