"""The stage driver: plan trials -> execute -> record -> rank. The one module that knows the order.

`run_coarse` and `run_refine` (stages.coarse, stages.refine) each plan a stage, check a resume
against what is on disk, load the data and hand the stage to `run_stage`, which trains what is not
yet finished by the stage's strategy (stages.strategies: all at once, in waves, in rungs), appends
one record per trial and writes the ranked results.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from hpsearch.analysis.curves import stage_advice
from hpsearch.analysis.rank import rank
from hpsearch.analysis.verdicts import Verdict, edges, range_verdicts
from hpsearch.data import DataRecipe, Dataset
from hpsearch.errors import StageStopped, interrupt_exit_code
from hpsearch.output.report import csv_table, markdown_report, results_document
from hpsearch.runs.read import RESULTS, RUN_INFO, is_partial, read_document, said_precision, stage_curve_data
from hpsearch.runs.records import (
    PrecisionChoice,
    TrialConfig,
    TrialResult,
    TrialState,
    jsonable,
    planned_params,
)
from hpsearch.runs.store import StageStore, utc_now
from hpsearch.search.halving import replay, rung_epochs, rung_records
from hpsearch.search.space import trial_config
from hpsearch.search.tpe import read_proposals, typed_params
from hpsearch.spec.choices import Precision
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.options import ExecOptions, StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.base import Stage, StageOutcome, StageProgress, StageTracker
from hpsearch.stages.prepare import new_run_info, resumed_run_info
from hpsearch.stages.strategies import Trainer, is_final, strategy_for
from hpsearch.training.precision import choose_precision


def with_proposals(stage: Stage) -> Stage:
    """sampler: tpe: the stage's planned trials and the proposals recorded in its folder after them."""
    if not stage.spec.search.proposed:
        return stage
    known = {c.trial_id for c in stage.configs}
    proposed = [
        trial_config(stage.spec, t, typed_params(stage.spec.search, params))
        for t, params in sorted(read_proposals(stage.store.path).items())
        if t not in known and t < stage.planned
    ]
    return replace(stage, configs=(*stage.configs, *proposed))


# --------------------------------------------------------------------------- coarse


def finished_stage(stage: Stage) -> StageOutcome | None:
    """A resumed stage whose every planned trial is already recorded: its outcome read from disk
    (the results written if a crash came before them), else None."""
    with stage.store.lock():
        finished, warnings = reconcile(stage.store, stage.configs)
        results, complete = current_results(stage)
        if not complete:
            return None
        doc = read_document(stage.store.path, RESULTS)
        if doc is None or is_partial(doc) or doc.get("trials_planned", len(results)) != len(results):
            outcome = write_stage_results(stage, results)
        else:
            outcome = stage_outcome(stage, results)
    outcome.warnings, outcome.resumed = warnings, len(finished)
    return outcome


# --------------------------------------------------------------------------- running a stage


def run_stage(
    stage: Stage,
    data: Dataset,
    options: StageOptions,
    progress: StageProgress | None,
    resuming: bool,
    on_note: Callable[[str], None] | None = None,
) -> StageOutcome:
    """Train the stage's configs not yet finished, one record each, by the stage's strategy, then
    rank and write the results. On Ctrl-C / SIGTERM mark the running ones interrupted and raise
    StageStopped. `on_note`: told the precision the trials train in, before they start."""
    finished, warnings, run_info, precision = _start_run(stage, data, options, resuming)
    tracker = StageTracker(stage, finished, progress)
    # An absolute data root: worker processes (and Ray workers) need not share this one's directory.
    recipe = DataRecipe(spec_to_yaml(stage.spec), options.data_root.resolve() if options.data_root else None)
    warnings += _population_warnings(stage, data, options, tracker.todo(finished))
    if precision is not None and precision.said and on_note is not None:
        on_note(precision.line())
    execution = _with_ray_resources(options.execution, stage.spec)
    trainer = Trainer(data, execution, recipe, stage.factory, precision)
    try:
        strategy_for(stage.spec.search).run(stage, tracker, trainer)
        run_info["end_time"] = utc_now()
        stage.store.write_json(RUN_INFO, run_info)
        trained = tracker.trained_stage()
        outcome = write_stage_results(trained, current_results(trained)[0])
        note = tracker.median_stop_note()
        if note:
            tracker.notes.append(note)
    except KeyboardInterrupt as e:
        raise _record_stop(tracker, run_info, e) from None
    outcome.warnings, outcome.resumed = warnings + tracker.notes, len(finished)
    return outcome


def _start_run(
    stage: Stage, data: Dataset, options: StageOptions, resuming: bool
) -> tuple[dict[int, TrialResult], list[str], dict[str, Any], PrecisionChoice | None]:
    """The trials finished before (a resume), the warnings about its records, run.json as written
    now (new, or the first start's with this resume added) and the precision its trials train in."""
    store = stage.store
    if resuming:
        finished, warnings = reconcile(store, stage.configs)
        run_info = resumed_run_info(store, stage, options)
    else:
        store.write_text("spec.yaml", spec_to_yaml(stage.spec))
        finished, warnings = {}, []
        run_info = new_run_info(stage.spec, stage.spec_path, options)
    # Kept from the stage's start on a resume (refuse_changed_factory saw the same hash): the classes
    # the labels judge chance by, and the code every trial of the stage ran.
    run_info.setdefault("num_classes", data.num_classes)
    run_info.setdefault("val_size", len(data.y_val))  # the true count: an npz's x_val or a folder's val/ sets it
    if stage.factory is not None:
        run_info.setdefault("factory_sha256", stage.factory.sha256)
        run_info.setdefault("factory_files", stage.factory.files)  # which file changed, should a resume be refused
    run_info["trials"] = stage.planned
    precision = stage_precision(stage, data, run_info, [c for c in stage.configs if c.trial_id not in finished])
    store.write_json(RUN_INFO, run_info)
    return finished, warnings, run_info, precision


def stage_precision(
    stage: Stage, data: Dataset, run_info: dict[str, Any], todo: list[TrialConfig]
) -> PrecisionChoice | None:
    """What train.precision: auto trains in: the choice run.json kept (a resume trains on as the
    stage began), else chosen now on the first trial to train, and recorded. None where trials set
    their own (a searched precision without auto). The choice goes into `run_info`, which the caller
    writes."""
    if isinstance(run_info.get("precision"), dict):
        return PrecisionChoice.from_document(run_info["precision"])
    auto = next((c for c in [*todo, *stage.configs] if c.train.precision is Precision.AUTO), None)
    if auto is None:
        if "precision" in stage.spec.search.space:
            return None
        choice = PrecisionChoice(stage.spec.train.precision, "set in the spec", asked=stage.spec.train.precision)
    else:
        choice = choose_precision(auto, data)
    run_info["precision"] = choice.document()
    return choice


def _population_warnings(stage: Stage, data: Dataset, options: StageOptions, todo: list[TrialConfig]) -> list[str]:
    """A user's network that cannot train in populations says why, once."""
    if not todo or stage.spec.model.kind != "python" or options.execution.population == 1:
        return []
    from hpsearch.training.populations.funcpop import population_support

    reason = population_support(todo[0], data)
    return [f"model.factory {stage.spec.model.factory}: trials trained one at a time: {reason}"] if reason else []


def current_results(stage: Stage) -> tuple[list[TrialResult], bool]:
    """A stage's results as its records stand, and whether it is finished: each planned trial's
    final record; with halving, each trial's latest rung (outranked ones STOPPED)."""
    halving = stage.spec.search.halving
    if halving is None:
        found = reconcile(stage.store, stage.configs)[0]
        finished = len(found) == stage.planned
    else:
        rungs = rung_epochs(stage.spec.train.epochs, halving)
        plan = planned_params(stage.configs)
        by_trial = rung_records(stage.store.read_trials(), plan)
        if len(plan) < stage.planned:  # sampler: tpe, still proposing: the first rung's results so far
            found, finished = {t: by_rung[0] for t, by_rung in by_trial.items() if 0 in by_rung}, False
        else:
            current = replay(by_trial, list(plan), rungs, halving.eta)
            found, finished = current.results, current.rung is None
    # Read back from JSON a record's values are plain (an activation is "relu"): the plan's are typed.
    return [replace(found[c.trial_id], params=dict(c.params)) for c in stage.configs if c.trial_id in found], finished


def reconcile(store: StageStore, configs: Sequence[TrialConfig]) -> tuple[dict[int, TrialResult], list[str]]:
    """A resumed stage's finished trials (by the records on disk that match this plan) and the
    warnings about records that did not."""
    store.remove_stale_temp_files()
    plan = planned_params(configs)
    finished: dict[int, TrialResult] = {}
    foreign_trials: set[int] = set()
    for r in store.read_trials():  # the first final record with the plan's parameters counts
        if not r.state.final or r.trial not in plan or r.trial in finished:
            continue
        if jsonable(r.params) == plan[r.trial]:
            finished[r.trial] = r
        else:
            foreign_trials.add(r.trial)  # same trial number, other parameters: not this plan's trial
    foreign = len(foreign_trials)
    warnings = []
    if foreign:
        warnings.append(
            f"{store.path / 'trials.jsonl'}: {foreign} record(s) with parameters other than the plan's "
            "for their trial number were ignored; those trials were run again"
        )
    unreadable = store.unreadable_note(
        "a trial recorded only there counts as not run, and is trained again"
        if len(finished) < len(plan)
        else "every trial of the plan has a readable record, so none is trained again"
    )
    if unreadable:
        warnings.append(unreadable)
    return finished, warnings


def _with_ray_resources(execution: ExecOptions, spec: Spec) -> ExecOptions:
    """On Ray, each task asks for the resources the spec names."""
    if execution.ray is None:
        return execution
    res = spec.resources
    ray = replace(execution.ray, num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=res.max_retries)
    return replace(execution, ray=ray)


def _record_stop(tracker: StageTracker, run_info: dict[str, Any], e: KeyboardInterrupt) -> StageStopped:
    """Ctrl-C or SIGTERM: the running trials recorded as interrupted, run.json says when."""
    stage = tracker.trained_stage()
    with _signals_ignored():  # a second Ctrl-C must not cut this bookkeeping short
        # What is on disk decides: the signal may have come between a record's write and the
        # bookkeeping above, and a trial recorded as finished must never be marked interrupted.
        planned = {c.trial_id for c in stage.configs}
        on_disk = {t for t in stage.store.final_trials() if t in planned}
        for cfg in tracker.running.values():
            if cfg.trial_id not in on_disk:
                stopped = TrialResult(trial=cfg.trial_id, state=TrialState.INTERRUPTED, params=dict(cfg.params))
                stage.store.append_trial(stopped)
        run_info["end_time"] = None
        run_info["interrupted_time"] = utc_now()
        stage.store.write_json(RUN_INFO, run_info)
        # What finished, ranked, marked partial: refine and report know it is not a finished stage.
        results = current_results(stage)[0]
        write_stage_results(stage, results, partial=True)
    code = interrupt_exit_code(e)
    halving = stage.spec.search.halving
    if halving is not None:  # trials whose fate is known: stopped, or at the last rung, or failed
        rungs = len(rung_epochs(stage.spec.train.epochs, halving))
        on_disk = {r.trial for r in results if is_final(r, rungs)}
    return StageStopped(code, stage.store.path, len(on_disk), stage.planned)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored inside, the previous handlers back afterwards."""
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread: signals are not delivered here anyway
            pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def stage_outcome(stage: Stage, results: list[TrialResult]) -> StageOutcome:
    """A stage's results ranked best first, with the edge analysis; with successive halving, the
    epochs each trial was planned to train (its rung's epochs are fewer when it was stopped)."""
    ranked = rank(sorted(results, key=lambda r: r.trial))
    best = ranked[0] if ranked and ranked[0].state is TrialState.COMPLETE else None
    space = stage.spec.search.space
    data = stage_curve_data(stage.store.path, stage.spec.data)
    verdicts = range_verdicts(ranked, stage.spec.search, data)
    # A stage where nothing learned says so, and which way to move, in its lr verdict: once.
    learned_nothing = any(v.verdict is Verdict.NOTHING_LEARNED for v in verdicts.values())
    lr_verdict = verdicts.get("lr")
    # The stage's line and the lr verdict agree: advice to move lr against where its verdict points is not given.
    toward = lr_verdict.flag if lr_verdict is not None and lr_verdict.verdict is not Verdict.INSIDE else None
    advice = None if learned_nothing else stage_advice(ranked, data.num_classes, data.val_size, toward)
    planned = None
    if stage.spec.search.halving is not None or stage.spec.search.median_stop is not None:
        epochs = {c.trial_id: c.train.epochs for c in stage.configs}
        planned = [epochs.get(r.trial, stage.spec.train.epochs) for r in ranked]
    return StageOutcome(
        stage.store.path,
        stage.store.path.name,
        ranked,
        edges(space, best, verdicts),
        sorted(space),
        advice=advice,
        data=data,
        precision=said_precision(stage.store.path),
        planned_epochs=planned,
    )


def write_stage_results(stage: Stage, results: list[TrialResult], partial: bool = False) -> StageOutcome:
    """results.json, results.csv and results.md of a stage, best first, with the edge analysis.
    `partial`: the stage was stopped; these are the trials that finished, and the files say so."""
    spec, store = stage.spec, stage.store
    outcome = stage_outcome(stage, results)
    ranked, edge_list, names, name = outcome.ranked, outcome.edges, outcome.param_names, outcome.stage
    extra: dict[str, Any] = {"name": spec.name, "metric": "val_acc", "history": stage.history}
    extra["trials_planned"] = stage.planned
    title = f"{spec.name}: {name}"
    if outcome.precision is not None:
        title += f", trained in {outcome.precision}"
        extra["precision"] = outcome.precision
    if partial:
        extra["partial"] = True
        title += f" (partial: {len(results)} of {stage.planned} trials; the stage was stopped)"
    data, planned = outcome.data, outcome.planned_epochs
    store.write_json(RESULTS, results_document(name, ranked, edge_list, extra, data, planned))
    store.write_text("results.csv", csv_table(ranked, names, planned_epochs=planned, data=data))
    store.write_text("results.md", markdown_report(title, ranked, names, edge_list, data, planned))
    return outcome
