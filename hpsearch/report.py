"""Result tables (rich for the terminal, Markdown, CSV, the results.json document) and the
`report` command's library side: plots and one ranked table across a run's stages.

Reading a finished run needs no torch: may import records, rank, curves, refine, store; matplotlib
(through plots) only when the report is drawn.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from hpsearch.curves import curve_label
from hpsearch.errors import StoreError
from hpsearch.rank import Edge, fmt_value, rank
from hpsearch.records import TrialResult, TrialState
from hpsearch.refine import StageData, how_to_start, load_stage, stages
from hpsearch.store import StageStore

if TYPE_CHECKING:
    from hpsearch.sanity import SanityReport

STATE_STYLE = {TrialState.COMPLETE: "green", TrialState.DIVERGED: "red", TrialState.FAILED: "magenta"}


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _loss(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def curve_text(r: TrialResult) -> str:
    label = curve_label(r)
    return label.value if label else ""


def table_rows(ranked: list[TrialResult], param_names: list[str], stages: list[str] | None = None) -> list[list[str]]:
    rows = []
    for i, r in enumerate(ranked, 1):
        params = [fmt_value(r.params.get(p, "-")) for p in param_names]
        where = [stages[i - 1]] if stages else []
        rows.append(
            [str(i), *where, str(r.trial), r.state.value, _acc(r.val_acc), _acc(r.train_acc), _loss(r.train_loss)]
            + params
            + [curve_text(r), f"{r.wall_time:.2f}"]
        )
    return rows


def headers(param_names: list[str], with_stage: bool = False) -> list[str]:
    stage = ["stage"] if with_stage else []
    return ["rank", *stage, "trial", "state", "val_acc", "train_acc", "train_loss", *param_names, "curve", "time_s"]


def rich_table(
    title: str,
    ranked: list[TrialResult],
    param_names: list[str],
    limit: int | None = None,
    stages: list[str] | None = None,
) -> Table:
    table = Table(title=title, title_justify="left")
    for h in headers(param_names, with_stage=stages is not None):
        table.add_column(h, justify="left" if h in ("state", "stage", "curve") else "right")
    shown = ranked if limit is None else ranked[:limit]
    for r, row in zip(shown, table_rows(shown, param_names, stages), strict=True):
        table.add_row(*row, style=STATE_STYLE.get(r.state) if r.state is not TrialState.COMPLETE else None)
    if limit is not None and len(ranked) > limit:
        table.caption = f"top {limit} of {len(ranked)} trials; all are in results.md/csv/json"
    return table


def markdown_table(ranked: list[TrialResult], param_names: list[str], stages: list[str] | None = None) -> str:
    head = headers(param_names, with_stage=stages is not None)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(ranked, param_names, stages)]
    return "\n".join(lines) + "\n"


def csv_table(ranked: list[TrialResult], param_names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers(param_names) + ["error"])
    for i, r in enumerate(ranked, 1):
        w.writerow(
            [i, r.trial, r.state.value, r.val_acc, r.train_acc, r.train_loss]
            + [fmt_csv(r.params.get(p)) for p in param_names]
            + [curve_text(r), round(r.wall_time, 3), r.error or ""]
        )
    return buf.getvalue()


def fmt_csv(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return getattr(v, "value", v)


def results_document(
    stage: str, ranked: list[TrialResult], edge_list: list[Edge], extra: dict[str, Any]
) -> dict[str, Any]:
    """results.json: the stage, every trial best first with its rank, and the edge analysis."""
    rows = []
    for i, r in enumerate(ranked, 1):
        d = r.to_dict()
        keys = ("trial", "state", "params", "val_acc", "train_acc", "train_loss")
        rows.append({"rank": i, **{k: d[k] for k in keys}, "curve": curve_text(r) or None})
    return {
        "stage": stage,
        **extra,
        "ranked": rows,
        "edges": {e.name: e.to_dict() for e in edge_list},
    }


def markdown_report(title: str, ranked: list[TrialResult], param_names: list[str], edge_list: list[Edge]) -> str:
    flags = [f"- {e.advice()}" for e in edge_list if e.flag]
    parts = [f"# {title}\n", markdown_table(ranked, param_names)]
    if flags:
        parts.append("\n**Careful with best values on the border:**\n\n" + "\n".join(flags) + "\n")
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
        layers.add_row(str(s.layer), f"{s.mean:.3g}", f"{s.std:.3g}", f"{s.dead:.1%}", sat, f"{s.grad_norm:.3g}")
    probe = Table(title="learning-rate probe", title_justify="left")
    for h in ("lr", "start loss", "end loss", "drop", "status"):
        probe.add_column(h, justify="right")
    for r in report.probe:
        status = Text("diverged", style="red") if r.diverged else "ok"
        end = "inf" if not math.isfinite(r.end_loss) else f"{r.end_loss:.3f}"
        drop = "-" if not math.isfinite(r.drop) else f"{r.drop:+.1%}"
        probe.add_row(f"{r.lr:g}", f"{r.start_loss:.3f}", end, drop, status)
    return [checks, layers, probe]


@dataclass
class ReportOutcome:
    stages: list[StageData]
    ranked: list[TrialResult]  # every trial of every stage, best first
    stage_of: list[str]  # the stage of each ranked trial
    param_names: list[str]
    plots: list[Path]
    results_path: Path


def run_report(run_dir: Path) -> ReportOutcome:
    """Plots of every stage under RUN/report/, and one ranked table across stages (with each trial's
    stage and curve label) as RUN/report/results.json and results.md."""
    from hpsearch.plots import write_report_plots  # matplotlib: only when a report is drawn

    names = stages(run_dir)
    if not names:
        raise StoreError(f"{run_dir}: no finished stage to report on; {how_to_start(run_dir)}")
    data = []
    for name in names:
        spec, results, _ = load_stage(run_dir, name)
        data.append(StageData(name, spec, results))
    owner = {id(r): s.name for s in data for r in s.results}
    ranked = rank([r for s in data for r in s.results])
    stage_of = [owner[id(r)] for r in ranked]
    params = sorted({p for s in data for p in s.spec.search.space})
    out = StageStore(run_dir / "report")
    out.make_dir()
    plots = write_report_plots(data, out.path)
    doc = results_document("all", ranked, [], {"stages": names})
    for row, stage in zip(doc["ranked"], stage_of, strict=True):
        row["stage"] = stage
    out.write_json("results.json", doc)
    out.write_text("results.md", f"# {data[0].spec.name}: all stages\n\n" + markdown_table(ranked, params, stage_of))
    return ReportOutcome(data, ranked, stage_of, params, plots, out.path / "results.json")
