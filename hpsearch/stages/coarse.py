"""The coarse stage: the spec's trials into RUN/coarse, started fresh or resumed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hpsearch.data import ProgressFn, load_data, resolve_val_size
from hpsearch.executors.ray import check_ray
from hpsearch.runs.read import COARSE, previous_data_root
from hpsearch.runs.store import StageStore, pick_run_dir, refuse_nested_run
from hpsearch.search.space import planned_trials, trial_configs
from hpsearch.search.tpe import optuna_module
from hpsearch.spec.load import IN_CODE
from hpsearch.spec.options import StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.base import RUNS_DIR, Stage, StageOutcome, StageProgress
from hpsearch.stages.prepare import prepare_model, refuse_changed_spec, say_data
from hpsearch.stages.stage import finished_stage, run_stage, with_proposals


def run_coarse(
    spec: Spec,
    spec_path: str | None,
    options: StageOptions,
    *,
    on_data: ProgressFn | None = None,
    progress: StageProgress | None = None,
    on_model: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> StageOutcome:
    """Run the coarse stage of `spec` into RUN/coarse and return the ranked outcome. With
    options.resume, continue RUN/coarse if it was started with the same spec (or start it).
    `on_model`: told which file a user's network was loaded from, once it passed its check;
    `on_warning`: told each warning about the data once it loaded (classes with no training examples;
    for a user's npz or folder, a validation split or batch too large for it); `on_note`: told the
    split an automatic val_size chose. `spec_path` None: a Spec built in code (errors name it
    <spec>; run.json records no path)."""
    where = spec_path if spec_path is not None else IN_CODE
    given, spec = spec, resolve_val_size(spec)  # the stage records, and a resume compares, the split it trains on
    configs = trial_configs(spec, where)
    if spec.search.proposed:
        optuna_module()  # not installed: said in one line before anything is written
    if options.out is not None:
        refuse_nested_run(options.out)
        run_dir = options.out
    else:
        run_dir = RUNS_DIR / spec.name if options.resume else pick_run_dir(RUNS_DIR, spec.name)
    store = StageStore(run_dir / COARSE)
    if options.execution.ray is not None:
        check_ray(options.execution.ray)
    resuming = options.resume and store.started
    history = (
        {
            "stage": COARSE,
            "planned_from": None,
            "trials": planned_trials(spec.search, configs),
            "epochs": spec.train.epochs,
        },
    )
    stage = Stage(store, spec, spec_path, tuple(configs), history)
    if resuming:
        refuse_changed_spec(store, spec, "start a new run: another --out, without --resume", configs)
        stage = with_proposals(stage)
        options = replace(options, data_root=options.data_root or previous_data_root(store.path))
        done = finished_stage(stage)
        if done is not None:  # nothing to train: no data loaded, nothing rewritten
            return done
    # Data first, then the user's network on one batch of it: a missing dataset or a bad factory
    # leaves no half-made run directory behind.
    data = load_data(spec, options.data_root, on_data, where)
    say_data(given, data, on_warning, on_note)
    stage = replace(stage, factory=prepare_model(configs[0].model, data, where, on_model))
    with store.lock():
        if not resuming:
            store.create()
        return run_stage(stage, data, options, progress, resuming, on_note)
