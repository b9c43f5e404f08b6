"""hpsearch final: the best configurations with several seeds, scored once on the test set
(hpsearch.stages.final)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hpsearch.cli.console import err, note, out, say_model, warn
from hpsearch.cli.exits import NO_TRIAL_COMPLETED, fail, guarded
from hpsearch.cli.options import DataRootOption, Executor, PopulationOption, WorkersOption, execution_options
from hpsearch.cli.progress import TrialProgress
from hpsearch.cli.render import Gates, Red, below_bar, preflight, red_line, summary

if TYPE_CHECKING:
    from hpsearch.runs.final import FinalOutcome, FinalPlan


class FitOnChoice(str, enum.Enum):
    TRAIN_VAL = "train+val"
    TRAIN = "train"


def final(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory with a finished stage.")],
    top: Annotated[
        Optional[int],
        typer.Option("--top", min=1, help="Finalists: the best K (default: the trials tied with the best)."),
    ] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Runs per finalist (default 3).")] = None,
    fit_on: Annotated[
        Optional[FitOnChoice],
        typer.Option("--fit-on", help="train+val (default): train on both; train: hold validation out and report it."),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs per run (default: the stage's).")] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Evaluate the test set although an earlier final did (another look at it).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted final (same options); never starts a new one.")
    ] = False,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    fail_under: Annotated[
        Optional[float],
        typer.Option(
            "--fail-under",
            min=0.0,
            max=1.0,
            metavar="ACC",
            help="CI gate: exit 4 when the best mean test accuracy is below ACC.",
        ),
    ] = None,
) -> None:
    """The end of a search: train the latest stage's best configurations with several seeds, score
    each on the test set once, keep the best network (RUN/final/model.pt; hpsearch.load_model reads
    it). Every test evaluation is logged in RUN/final/test_ledger.jsonl; a second final on the same
    run is refused unless --again. Exit code 4 for the --fail-under gate.

    Example: hpsearch final runs/cifar10_coarse --seeds 3
    """
    from hpsearch.spec.options import FinalOptions, FitOn

    with guarded("final", run_dir):
        options = FinalOptions(
            top=top,
            seeds=seeds,
            fit_on=FitOn(fit_on.value) if fit_on is not None else None,
            epochs=epochs,
            again=again,
            data_root=data_root,
            command=tuple(sys.argv),
            execution=execution_options(population, workers, Executor.LOCAL, None),
            resume=resume,
        )
        preflight(None, None, workers)
        with TrialProgress("final", "run", planning=f"planning the final of {run_dir}") as progress:
            from hpsearch.stages.final import run_final

            outcome = run_final(
                run_dir,
                options,
                on_data=progress.on_data,
                progress=progress,
                on_plan=render_final_plan,
                on_model=say_model,
                on_warning=warn,
                on_note=note,
            )
    render_final(outcome, Gates(fail_under))


def render_final_plan(plan: FinalPlan) -> None:
    err.print(plan.describe(), highlight=False, soft_wrap=True)
    for line in plan.notes:
        warn(line)


def render_final(outcome: FinalOutcome, gates: Gates) -> None:
    """The finalists' table on stdout; the summary, the kept model and the files on stderr; the table
    in the CI step summary. Exit 3 or 4 (`final_red`)."""
    from hpsearch.output.ci import summary_section
    from hpsearch.output.final import final_markdown, rich_final_table, summary_lines, title

    out.print(title(outcome), highlight=False, soft_wrap=True)
    out.print(rich_final_table(outcome))
    for line in summary_lines(outcome):
        err.print(line, highlight=False, soft_wrap=True)
    if outcome.model_path is not None:
        err.print(f"model: {outcome.model_path} (load it with hpsearch.load_model)", highlight=False)
    err.print(
        f"results: {outcome.final_dir}/results.md, results.json; ledger: {outcome.final_dir}/test_ledger.jsonl",
        highlight=False,
        soft_wrap=True,
    )
    red = final_red(outcome, gates)
    heading, table = f"hpsearch final: {outcome.plan.run_dir}", final_markdown(outcome, heading=False)
    summary(summary_section(heading, table, [], red_line(red)))
    if red is not None:
        raise fail(red.message, code=red.code)


def final_red(outcome: FinalOutcome, gates: Gates) -> Red | None:
    """Exit 3 when no run of the final completed; else 4 below the --fail-under bar."""
    if outcome.best is None:
        message = f"no run of the final completed: nothing to keep (see {outcome.final_dir}/results.md)"
        return Red(NO_TRIAL_COMPLETED, message)
    what = "the best mean test accuracy" if outcome.test_size is not None else "the best mean validation accuracy"
    return below_bar(gates, outcome.best_accuracy, what)
