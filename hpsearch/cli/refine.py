"""hpsearch refine: the next stage, planned from the latest one (hpsearch.stages.refine), or its plan."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hpsearch.cli.console import err, note, out, say_model, warn
from hpsearch.cli.exits import guarded
from hpsearch.cli.options import (
    DataRootOption,
    Executor,
    ExecutorOption,
    FailOnEdgeOption,
    FailUnderOption,
    PopulationOption,
    RayAddressOption,
    WorkersOption,
    execution_options,
)
from hpsearch.cli.progress import TrialProgress
from hpsearch.cli.render import Gates, preflight, render_outcome
from hpsearch.spec.options import RefineOptions

if TYPE_CHECKING:
    from hpsearch.search.refine import RefinePlan

RESUME_REFINE_HELP = (
    "Finish the newest refine stage after a crash, kill or Ctrl-C (same options as before); never starts a new stage."
)


def refine(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory holding a coarse stage.")],
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="Plan around the best K trials.")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the new stage.")] = None,
    epochs: Annotated[
        Optional[int], typer.Option(min=1, help="Epochs per trial (default: refine.epochs_factor x).")
    ] = None,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_REFINE_HELP)] = False,
    executor: ExecutorOption = Executor.LOCAL,
    ray_address: RayAddressOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the planned stage (ranges, trials, epochs) and train nothing.")
    ] = False,
    fail_under: FailUnderOption = None,
    fail_on_edge: FailOnEdgeOption = False,
) -> None:
    """Plan the next stage from the latest one and run it: ranges narrowed around the top-k trials
    (or moved outward where the stage's verdict says accuracy points past an edge), longer training,
    no lr decay. Run it again to refine further. A stage where nothing learned is not refined: it
    exits 1 saying which way to change the range in the spec, for a new coarse search. Exit code 3
    if no trial of the new stage completed; 4 and 5 for the CI gates.

    Example: hpsearch refine runs/cifar10_coarse --top-k 5 --trials 20
    """
    with guarded("refine", run_dir):
        options = RefineOptions(
            top_k=top_k,
            trials=trials,
            epochs=epochs,
            data_root=data_root,
            command=tuple(sys.argv),
            execution=execution_options(population, workers, executor, ray_address),
            resume=resume,
        )
        if dry_run:
            print_plan(run_dir, options)
            return
        preflight(None, None, workers)
        with TrialProgress(planning=f"planning the next stage of {run_dir}") as progress:
            from hpsearch.stages.refine import run_refine

            result = run_refine(
                run_dir,
                options,
                on_data=progress.on_data,
                progress=progress,
                on_plan=render_plan,
                on_model=say_model,
                on_warning=warn,
                on_note=note,
            )
    if result.outcome is None:
        err.print("nothing new to train: raise --epochs or --trials, or widen the space", highlight=False)
        return
    render_outcome(result.outcome, Gates(fail_under, fail_on_edge))


def print_plan(run_dir: Path, options: RefineOptions) -> None:
    """refine --dry-run: the plan on stdout (ranges, trials, epochs, populations, estimated time),
    nothing trained or written."""
    from hpsearch.stages.plan import plan_refine_stage

    plan, stage = plan_refine_stage(run_dir, options, on_model=say_model)
    for line in plan.describe() + (stage.describe(header=False) if stage is not None else []):
        out.print(line, highlight=False, soft_wrap=True)
    for line in plan.notes:
        warn(line)


def render_plan(plan: RefinePlan) -> None:
    """The plan of the stage about to run, on stderr (its results go to stdout)."""
    for line in plan.describe():
        err.print(line, highlight=False, soft_wrap=True)
    for line in plan.notes:
        warn(line)
