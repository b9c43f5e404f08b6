"""hpsearch report: the plots and one ranked table across a run's stages (hpsearch.output.report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpsearch.cli.console import err, out, warn
from hpsearch.cli.exits import guarded
from hpsearch.cli.render import TABLE_LIMIT, summary

if TYPE_CHECKING:
    from hpsearch.output.report import ReportOutcome


def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory.")],
) -> None:
    """Learning curves and search pictures as PNG files under RUN/report/, and one ranked table
    across all stages with each trial's stage and curve label.

    Example: hpsearch report runs/cifar10_coarse
    """
    with guarded():
        from hpsearch.output.report import run_report

        render_report(run_report(run_dir), run_dir)


def render_report(outcome: ReportOutcome, run_dir: Path) -> None:
    """The table on stdout; ties, notes and where the plots and results are on stderr; the table in
    the CI step summary."""
    from hpsearch.output.ci import summary_section
    from hpsearch.output.report import markdown_table, rich_table, ties_line

    out.print(
        rich_table(
            outcome.title,
            outcome.ranked,
            outcome.param_names,
            limit=TABLE_LIMIT,
            stages=outcome.stage_of,
            planned_epochs=outcome.planned_epochs,
            data=outcome.data,
        )
    )
    ties = ties_line(outcome.ranked, outcome.data)
    if ties:
        err.print(ties, highlight=False, soft_wrap=True)
    for note in outcome.notes:
        warn(note)
    table = markdown_table(
        outcome.ranked, outcome.param_names, outcome.stage_of, planned_epochs=outcome.planned_epochs, data=outcome.data
    )
    summary(summary_section(f"hpsearch report: {run_dir}", table, list(outcome.notes)))
    for path in outcome.plots:
        err.print(f"plot: {path}", highlight=False)
    err.print(f"results: {outcome.results_path}", highlight=False)
