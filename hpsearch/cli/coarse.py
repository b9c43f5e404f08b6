"""hpsearch coarse: random search over the spec's space (hpsearch.stages.coarse), or its plan."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hpsearch.cli.console import note, out, say_model, warn
from hpsearch.cli.exits import fail, guarded
from hpsearch.cli.options import (
    DataRootOption,
    Executor,
    ExecutorOption,
    FailOnEdgeOption,
    FailUnderOption,
    OutOption,
    PopulationOption,
    RayAddressOption,
    SpecArgument,
    WorkersOption,
    execution_options,
)
from hpsearch.cli.progress import TrialProgress
from hpsearch.cli.render import Gates, preflight, render_outcome
from hpsearch.spec.options import StageOptions

if TYPE_CHECKING:
    from hpsearch.spec.schema import Spec

RESUME_HELP = (
    "Continue the run in --out after a crash, kill or Ctrl-C: finished trials are kept, the others run. "
    "The spec and options must be the same as the first time (starts the run if it does not exist)."
)


def coarse(
    spec_path: SpecArgument,
    out_dir: OutOption = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Override search.trials.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override train.epochs (and searched epochs).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override search.seed.")] = None,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    executor: ExecutorOption = Executor.LOCAL,
    ray_address: RayAddressOption = None,
    fail_under: FailUnderOption = None,
    fail_on_edge: FailOnEdgeOption = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (trials, populations, epochs, sampler, estimated time) and train nothing.",
        ),
    ] = False,
) -> None:
    """Random search: short trainings, a ranked table, and a verdict on each range from all the trials
    (accuracy points past an edge; nothing learned, and which way to move).
    Exit code 3 if no trial completed (every one failed or diverged); 4 and 5 for the CI gates.

    Example: hpsearch coarse configs/cifar10_coarse.yaml --trials 10 --epochs 1 --out runs/quick
    """
    if dry_run and resume:
        raise fail("--dry-run plans a new stage: leave out --resume", code=2)
    with guarded("coarse", out_dir):
        from hpsearch.spec.load import load_spec, with_overrides

        spec = with_overrides(load_spec(spec_path), trials=trials, epochs=epochs, seed=seed)
        preflight(spec, str(spec_path), workers, plan=not dry_run)
        options = StageOptions(
            out=out_dir,
            data_root=data_root,
            command=tuple(sys.argv),
            execution=execution_options(population, workers, executor, ray_address),
            resume=resume,
        )
        if dry_run:
            print_coarse_plan(spec, str(spec_path), options)
            return
        with TrialProgress(planning=f"planning {spec.search.trials:,} trials") as progress:
            from hpsearch.stages.coarse import run_coarse

            outcome = run_coarse(
                spec,
                str(spec_path),
                options,
                on_data=progress.on_data,
                progress=progress,
                on_model=say_model,
                on_warning=warn,
                on_note=note,
            )
    render_outcome(outcome, Gates(fail_under, fail_on_edge))


def print_coarse_plan(spec: Spec, spec_path: str, options: StageOptions) -> None:
    """coarse --dry-run: the plan on stdout, nothing trained or written."""
    from hpsearch.stages.plan import plan_coarse

    plan = plan_coarse(spec, spec_path, options, on_model=say_model)
    for line in plan.describe():
        out.print(line, highlight=False, soft_wrap=True)
