"""The refine stage: the next stage planned from the latest finished one (`search.refine.plan_refine`)
and run, never re-training a configuration already trained at that budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpsearch.data import ProgressFn, load_data
from hpsearch.errors import NothingToResume, StoreError
from hpsearch.executors.ray import check_ray
from hpsearch.runs.read import previous_data_root, stages
from hpsearch.runs.store import StageStore
from hpsearch.search.refine import RefinePlan, plan_refine
from hpsearch.search.tpe import optuna_module
from hpsearch.spec.options import RefineOptions, StageOptions
from hpsearch.stages.base import Stage, StageOutcome, StageProgress
from hpsearch.stages.prepare import prepare_model, refuse_changed_spec, say_warnings
from hpsearch.stages.stage import run_stage, with_proposals


@dataclass
class RefineOutcome:
    outcome: StageOutcome | None  # None when every planned configuration was already trained
    plan: RefinePlan


def run_refine(
    run_dir: Path,
    options: RefineOptions,
    *,
    on_data: ProgressFn | None = None,
    progress: StageProgress | None = None,
    on_plan: Callable[[RefinePlan], None] | None = None,
    on_model: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> RefineOutcome:
    """Plan the next stage from the latest one (refine.plan_refine), show it through `on_plan`, and
    run it; never re-runs a configuration already trained at that budget. `on_model`, `on_warning`,
    `on_note`: as for run_coarse."""
    if options.resume:
        _check_something_to_resume(run_dir)
    plan = plan_refine(run_dir, options)
    if on_plan:
        on_plan(plan)
    if not plan.configs:  # everything planned is already trained: a stage with no trials is no stage
        return RefineOutcome(None, plan)
    store = StageStore(run_dir / plan.stage)
    resuming = store.started
    if resuming and not options.resume:
        raise StoreError(
            f"{store.path}: an earlier refine into this stage did not finish; finish it with "
            f"hpsearch refine {run_dir} --resume (and the same options), or remove the folder to plan it again"
        )
    if resuming:
        refuse_changed_spec(store, plan.spec, f"remove {store.path} to plan it again")
    if options.execution.ray is not None:
        check_ray(options.execution.ray)
    if plan.spec.search.proposed:
        optuna_module()
    # The data root the stage used before, else the previous stage's, unless the command line gives one.
    data_root = options.data_root or previous_data_root(store.path if resuming else run_dir / plan.previous)
    data = load_data(plan.spec, data_root, on_data, plan.spec_path)
    say_warnings(data, on_warning)
    factory = prepare_model(plan.configs[0].model, data, plan.spec_path, on_model)
    stage_options = StageOptions(data_root=data_root, command=options.command, execution=options.execution)
    stage = Stage(
        store, plan.spec, plan.spec_path, tuple(plan.configs), tuple(plan.history), factory, tuple(plan.prior)
    )
    if resuming:
        stage = with_proposals(stage)
    with store.lock():
        if not resuming:
            store.create()
        outcome = run_stage(stage, data, stage_options, progress, resuming, on_note)
    return RefineOutcome(outcome, plan)


def _check_something_to_resume(run_dir: Path) -> None:
    """--resume never starts a new stage, so running it twice is harmless."""
    done = stages(run_dir)
    if done and not StageStore(run_dir / f"refine-{len(done)}").started:
        raise NothingToResume(
            f"nothing to resume in {run_dir}: its newest stage, {done[-1]}, finished; "
            f"hpsearch refine {run_dir} (without --resume) plans the next one"
        )
