"""What more than one command prints: the warnings before work starts (`preflight`), a stage's
ranked outcome (`render_outcome`, for coarse and refine), the CI gates' exit codes (`Gates`, `Red`) and
the CI step summary."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpsearch.cli.console import err, out, warn
from hpsearch.cli.exits import BELOW_BAR, NO_TRIAL_COMPLETED, OUTSIDE_RANGE, fail

if TYPE_CHECKING:
    from hpsearch.runs.records import TrialResult
    from hpsearch.spec.schema import Spec
    from hpsearch.stages.base import StageOutcome

TABLE_LIMIT = 20  # rows shown in the terminal; the files hold every trial


def preflight(spec: Spec | None, spec_path: str | None, workers: int | None = None, plan: bool = True) -> None:
    """Before any work, on stderr: the grid a grid search built (unless `plan` is False: a dry run
    prints it in its plan), and each setting that makes no sense, once (hpsearch.spec.lint)."""
    from hpsearch.search.space import describe_grid
    from hpsearch.search.tpe import describe_tpe
    from hpsearch.spec.lint import execution_warnings, spec_warnings

    if spec is not None:
        line = describe_grid(spec.search, spec_path) or describe_tpe(spec.search)
        if line is not None and plan:
            err.print(line, highlight=False, soft_wrap=True, markup=False)
        for w in spec_warnings(spec):
            warn(w)
    for w in execution_warnings(workers, os.cpu_count()):
        warn(w)


@dataclass(frozen=True)
class Gates:
    """CI gates: exit non-zero when the best accuracy is below `fail_under`, or (`fail_on_edge`) when
    a range verdict says the optimum lies outside a searched range."""

    fail_under: float | None = None
    fail_on_edge: bool = False


def render_outcome(outcome: StageOutcome, gates: Gates = Gates()) -> None:
    """The ranked table on stdout; how many trials are tied for best, warnings, failures and where the
    files are on stderr; the table and warnings in the CI step summary. Exit 3 when no trial of the
    stage completed, 4 or 5 when a gate fails."""
    from hpsearch.output.ci import summary_section
    from hpsearch.output.report import markdown_table, rich_table, ties_line

    warnings = list(outcome.warnings)
    for w in outcome.warnings:
        warn(w)
    if outcome.resumed and outcome.resumed == len(outcome.ranked):  # a resume with nothing left to train
        n = outcome.resumed
        err.print(f"resuming: {n} of {n} trials already finished, 0 to run", highlight=False)
    title = f"{outcome.stage}: {len(outcome.ranked)} trials, ranked by validation accuracy"
    if outcome.precision is not None:
        title += f", trained in {outcome.precision}"
    planned = outcome.planned_epochs
    out.print(
        rich_table(
            title, outcome.ranked, outcome.param_names, limit=TABLE_LIMIT, planned_epochs=planned, data=outcome.data
        )
    )
    ties = ties_line(outcome.ranked, outcome.data)
    if ties:
        err.print(ties, highlight=False, soft_wrap=True)
    for e in outcome.edges:
        if e.warning:
            warn(e.warning)
            warnings.append(e.warning)
    if outcome.advice:
        warn(outcome.advice)
        warnings.append(outcome.advice)
    if outcome.failures:
        warn(f"{outcome.failures}; tracebacks in {outcome.stage_dir / 'trials.jsonl'}")
        warnings.append(outcome.failures)
    err.print(f"results: {outcome.stage_dir}/results.md, results.csv, results.json", highlight=False)
    table = markdown_table(outcome.ranked, outcome.param_names, planned_epochs=planned, data=outcome.data)
    red = stage_red(outcome, gates)
    summary(summary_section(f"hpsearch {outcome.stage}: {outcome.stage_dir.parent}", table, warnings, red_line(red)))
    if red is not None:
        raise fail(red.message, code=red.code)


@dataclass(frozen=True)
class Red:
    """Why a command that ran exits non-zero (3, 4, 5): the code, and the one line that says why, on
    stderr and in the CI step summary."""

    code: int
    message: str


def red_line(red: Red | None) -> str | None:
    return None if red is None else f"exit {red.code}: {red.message}"


def stage_red(outcome: StageOutcome, gates: Gates) -> Red | None:
    """Exit 3 when no trial completed; else 4 below the --fail-under bar; else 5 for --fail-on-edge."""
    if outcome.best is None:
        states = _states(outcome.ranked)
        return Red(NO_TRIAL_COMPLETED, f"no trial of {outcome.stage} completed ({states}): nothing to rank or refine")
    below = below_bar(gates, outcome.best.val_acc, f"the best validation accuracy of {outcome.stage}")
    if below is not None:
        return below
    outside = [e for e in outcome.edges if e.verdict.value in ("edge", "nothing_learned")]
    if gates.fail_on_edge and outside:
        names = ", ".join(f"{e.name} ({e.verdict.value})" for e in outside)
        return Red(OUTSIDE_RANGE, f"--fail-on-edge: the optimum lies outside the searched range of {names}")
    return None


def below_bar(gates: Gates, best: float | None, what: str) -> Red | None:
    if gates.fail_under is not None and (best is None or best < gates.fail_under):
        shown = "none" if best is None else f"{best:.4f}"
        return Red(BELOW_BAR, f"--fail-under {gates.fail_under}: {what} is {shown}, below the bar")
    return None


def summary(markdown: str) -> None:
    """Append to the CI step summary ($GITHUB_STEP_SUMMARY) when one is set."""
    from hpsearch.output.ci import append_step_summary

    problem = append_step_summary(markdown)
    if problem:
        warn(problem)


def _states(results: list[TrialResult]) -> str:
    counts = Counter(r.state.value for r in results)
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"
