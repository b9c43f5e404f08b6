"""The stage driver: plan trials -> execute -> record -> rank. The one module that knows the order.

`run_coarse` and `run_refine` each plan a stage (space.trial_configs, refine.plan_refine), check a
resume against what is on disk, load the data and hand the stage to `run_stage`, which trains what
is not yet finished through the executor, appends one record per trial and writes the ranked
results. `run_sanity` runs the checks. May import every library module; only the CLI imports it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy
import torch

from hpsearch import __version__
from hpsearch.curves import stage_advice
from hpsearch.data import (
    DataRecipe,
    Dataset,
    ProgressFn,
    load_data,
    resolve_device,
    resolve_val_size,
    training_set_size,
)
from hpsearch.errors import DataError, Interrupted, NothingToResume, SpecError, StageStopped, StoreError
from hpsearch.executor import default_workers, execute, planned_populations
from hpsearch.factory import FactorySource, check_model, describe, disk_source
from hpsearch.halving import Standing, TopKeep, keep_count, planned_counts, replay, rung_epochs, rung_records
from hpsearch.lint import data_warnings, split_note
from hpsearch.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.population import shaping_params, step_seconds
from hpsearch.proposals import describe_tpe, optuna_module, propose, read_proposals, record_wave, typed_params
from hpsearch.rank import Edge, edges, rank
from hpsearch.ray_executor import preflight, ray_session
from hpsearch.records import (
    CurveData,
    TrialConfig,
    TrialEvents,
    TrialResult,
    TrialStart,
    TrialState,
    failure_summary,
    jsonable,
)
from hpsearch.refine import COARSE, RefinePlan, is_partial, plan_refine, stage_curve_data, stages
from hpsearch.report import csv_table, markdown_report, results_document
from hpsearch.sanity import SanityReport, StepCallback, run_sanity_checks, spec_with_lr_range, written_lr_range
from hpsearch.space import describe_grid, planned_trials, trial_config, trial_configs
from hpsearch.spec import DataSpec, MedianStopSpec, ModelSpec, Spec, load_spec, rewritten_spec, spec_to_yaml
from hpsearch.stage_plan import StagePlan, Timing
from hpsearch.stopping import with_bars
from hpsearch.store import Checkpoints, StageStore, atomic_write_text, pick_run_dir, read_json, refuse_nested_run
from hpsearch.verdicts import Verdict, range_verdicts

RUNS_DIR = Path("runs")


@dataclass
class StageOutcome:
    stage_dir: Path
    stage: str
    ranked: list[TrialResult]
    edges: list[Edge]
    param_names: list[str]
    warnings: list[str] = field(default_factory=list)
    resumed: int = 0  # trials already finished before this command (resume)
    advice: str | None = None  # one line when most trials' lr was too high or too low (curves.stage_advice)
    # What its accuracies were measured on: the classes (chance accuracy) and validation examples (intervals, ties).
    data: CurveData | None = None
    planned_epochs: list[int] | None = None  # with successive halving: each ranked trial's train.epochs

    @property
    def best(self) -> TrialResult | None:
        return self.ranked[0] if self.ranked and self.ranked[0].state is TrialState.COMPLETE else None

    @property
    def failures(self) -> str | None:
        """'k of N trials failed (first: ...)', or None when no trial failed."""
        return failure_summary(self.ranked)


class StageProgress(Protocol):
    """What a stage reports while it runs (the CLI draws it as a progress bar)."""

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None: ...

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None: ...

    def epochs_done(self, count: int) -> None: ...

    def rung(self, text: str) -> None: ...  # successive halving: a rung begins, described in one line


@dataclass(frozen=True)
class Stage:
    """A stage ready to run: where it is written, what it trains, and the plan history it records."""

    store: StageStore
    spec: Spec
    spec_path: str  # the file errors and run.json name
    configs: list[TrialConfig]
    history: list[dict[str, Any]]
    factory: FactorySource | None = None  # a user's factory file as the stage read it: run and shipped
    prior: tuple[TrialResult, ...] = ()  # sampler: tpe: earlier stages' trials the model is told first

    @property
    def planned(self) -> int:
        """The trials the stage trains: its configs; with sampler: tpe, search.trials (`configs`
        then holds the trials planned so far, and grows in place as the model proposes more)."""
        return planned_trials(self.spec.search, self.configs)


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
    return replace(stage, configs=[*stage.configs, *proposed])


# --------------------------------------------------------------------------- coarse


def run_coarse(
    spec: Spec,
    spec_path: str,
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
    split an automatic val_size chose."""
    given, spec = spec, resolve_val_size(spec)  # the stage records, and a resume compares, the split it trains on
    configs = trial_configs(spec, spec_path)
    if spec.search.proposed:
        optuna_module()  # not installed: said in one line before anything is written
    if options.out is not None:
        refuse_nested_run(options.out)
        run_dir = options.out
    else:
        run_dir = RUNS_DIR / spec.name if options.resume else pick_run_dir(RUNS_DIR, spec.name)
    store = StageStore(run_dir / COARSE)
    if options.execution.ray is not None:
        preflight(options.execution.ray)
    resuming = options.resume and store.started
    history = [{"stage": COARSE, "planned_from": None, "trials": len(configs), "epochs": spec.train.epochs}]
    stage = Stage(store, spec, spec_path, configs, history)
    history[0]["trials"] = stage.planned
    if resuming:
        refuse_changed_spec(store, spec, "start a new run: another --out, without --resume", configs)
        stage = with_proposals(stage)
        options = replace(options, data_root=options.data_root or previous_data_root(store.path))
        done = finished_stage(stage)
        if done is not None:  # nothing to train: no data loaded, nothing rewritten
            return done
    # Data first, then the user's network on one batch of it: a missing dataset or a bad factory
    # leaves no half-made run directory behind.
    data = load_data(spec, options.data_root, on_data, spec_path)
    say_data(given, data, on_warning, on_note)
    stage = replace(stage, factory=prepare_model(configs[0].model, data, spec_path, on_model))
    with store.lock():
        if not resuming:
            store.create()
        return run_stage(stage, data, options, progress, resuming)


def plan_coarse(
    spec: Spec, spec_path: str, options: StageOptions, *, on_model: Callable[[str], None] | None = None
) -> StagePlan:
    """`coarse --dry-run`: the stage run_coarse would train (its trials, populations, epochs or rungs
    and sampler) and its time estimated from a few training steps of its first population on the
    real data. Nothing is trained that is kept, nothing written, nothing downloaded."""
    configs = trial_configs(spec, spec_path)
    return plan_stage(COARSE, spec, spec_path, configs, options.execution, options.data_root, on_model)


def plan_refine_stage(
    run_dir: Path, options: RefineOptions, *, on_model: Callable[[str], None] | None = None
) -> tuple[RefinePlan, StagePlan | None]:
    """`refine --dry-run`: the next stage as refine.plan_refine plans it, and what run_refine would
    train of it, timed as plan_coarse times a coarse stage (None when nothing is left to train)."""
    plan = plan_refine(run_dir, options)
    if not plan.configs:
        return plan, None
    data_root = options.data_root or previous_data_root(run_dir / plan.previous)
    stage = plan_stage(plan.stage, plan.spec, plan.spec_path, plan.configs, options.execution, data_root, on_model)
    return plan, stage


def plan_stage(
    name: str,
    spec: Spec,
    spec_path: str,
    configs: list[TrialConfig],
    execution: ExecOptions,
    data_root: Path | None,
    on_model: Callable[[str], None] | None = None,
) -> StagePlan:
    """What run_stage would train of `configs` (populations as `execute` plans them), its time from
    a few steps of the first population on the real data, read only if it is there already."""
    if execution.ray is not None:
        where = "on Ray"
    else:
        workers = execution.workers if execution.workers is not None else default_workers()
        where = "in 1 process" if workers == 1 else f"in {workers} worker processes"
    sampler = describe_grid(spec.search, spec_path) or describe_tpe(spec.search)
    plan = StagePlan(
        stage=name,
        spec=spec,
        trials=planned_trials(spec.search, configs),
        epochs=[c.train.epochs for c in configs],
        sampler=sampler or f"sampler {spec.search.sampler.value}, seed {spec.search.seed}",
        populations=None,
        workers=where,
    )
    downloads = spec.data.download
    if downloads:  # a dry run reads the data only if it is there already
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"download": False})})
    try:
        data = load_data(spec, data_root, None, spec_path)
    except DataError as e:
        prefix = "a dry run downloads nothing (training will): " if downloads else ""
        return replace(plan, not_timed=f"{prefix}{e}")
    prepare_model(configs[0].model, data, spec_path, on_model)
    populations = planned_populations(configs, data, execution)
    plan = replace(plan, populations=[len(p) for p in populations])
    first = populations[0]
    try:
        seconds, timed = step_seconds(first, data)
    except (RuntimeError, MemoryError) as e:  # what training would raise too; the plan still stands
        return replace(plan, not_timed=f"its first population's step raised {type(e).__name__}: {e}")
    steps = -(-len(data.x_train) // first[0].train.batch_size)  # the last batch may be short
    return replace(plan, timing=Timing(seconds, timed, len(first), first[0].trial_id, steps))


def finished_stage(stage: Stage) -> StageOutcome | None:
    """A resumed stage whose every planned trial is already recorded: its outcome read from disk
    (the results written if a crash came before them), else None."""
    with stage.store.lock():
        finished, warnings = reconcile(stage.store, stage.configs)
        results, complete = current_results(stage)
        if not complete:
            return None
        doc = _results_doc(stage.store)
        if doc is None or is_partial(doc) or doc.get("trials_planned", len(results)) != len(results):
            outcome = write_stage_results(stage, results)
        else:
            outcome = stage_outcome(stage, results)
    outcome.warnings, outcome.resumed = warnings, len(finished)
    return outcome


def _results_doc(store: StageStore) -> dict[str, Any] | None:
    try:
        doc = read_json(store.path / "results.json")
    except StoreError:
        return None
    return doc if isinstance(doc, dict) else None


def refuse_changed_spec(
    store: StageStore, spec: Spec, otherwise: str, configs: list[TrialConfig] | None = None
) -> None:
    """Resuming must train what the stored spec says: any difference is refused, naming it. One
    exception when `configs` (the new plan) is given: more trials, where every trial the stored
    spec planned keeps its values (trial i depends only on the seed and i), so the stage grows."""
    stored_path = store.path / "spec.yaml"
    stored = load_spec(stored_path)
    refuse_changed_factory(store, spec, otherwise)
    changes = _diff(stored.model_dump(mode="json"), spec.model_dump(mode="json"))
    grows = changes == [f"search.trials: {stored.search.trials} -> {spec.search.trials}"]
    if grows and spec.search.halving is not None:
        raise SpecError(
            f"{stored_path}: cannot add trials to a halving stage: its rungs were decided among "
            f"{stored.search.trials} trials; {otherwise}"
        )
    if configs is not None and grows:
        if spec.search.trials > stored.search.trials and _plan_kept(trial_configs(stored, str(stored_path)), configs):
            store.write_text("spec.yaml", spec_to_yaml(spec))
            return
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise SpecError(
            f"{stored_path}: cannot resume, the spec changed since this stage started ({shown}); "
            f"resume with the same spec and options, or {otherwise}"
        )


def refuse_changed_factory(store: StageStore, spec: Spec, otherwise: str) -> None:
    """Resuming must run the code the stage started with: a factory file, or a local module it
    imports, whose sha256 differs from the one in run.json is refused, naming the file."""
    if spec.model.kind != "python" or spec.model.factory is None:
        return
    info = recorded_run_info(store.path)
    recorded = info.get("factory_sha256")
    now = disk_source(spec.model.factory)
    if recorded is None or now is None or now.sha256 == recorded:
        return
    path, then, digest = _changed_file(now, info.get("factory_files"), recorded)
    beside = "" if path == now.path else f" (imported by {Path(now.path).name})"
    raise SpecError(
        f"model.factory: {path}{beside}: cannot resume {store.path}, the file changed since this stage started "
        f"({_digest(then, 'sha256 ')} then, {_digest(digest)} now); put back the code it started with, or {otherwise}"
    )


def _changed_file(now: FactorySource, recorded_files: Any, recorded: str) -> tuple[str, str | None, str | None]:
    """(file, sha256 then, sha256 now) of the first file that differs from what run.json recorded;
    the factory file itself when run.json has no files (a stage from before they were recorded)."""
    files = now.files
    if isinstance(recorded_files, dict):
        for path in [*files, *(p for p in recorded_files if p not in files)]:
            if files.get(path) != recorded_files.get(path):
                return path, recorded_files.get(path), files.get(path)
    return now.path, recorded, now.sha256


def _digest(sha256: str | None, prefix: str = "") -> str:
    return f"{prefix}{sha256[:8]}..." if sha256 else "no such file"


def prepare_model(
    model: ModelSpec, data: Dataset, spec_path: str, on_model: Callable[[str], None] | None
) -> FactorySource | None:
    """A user's factory file read once and pinned, and its network checked on one batch of `data`
    with `model`'s arguments, the first trial's (factory.check_model): a bad factory is refused before
    anything is written. Then `on_model` is told which file was loaded."""
    source = check_model(model, data, spec_path)
    line = describe(model, source)
    if on_model is not None and line is not None:
        on_model(line)
    return source


def say_warnings(data: Dataset, on_warning: Callable[[str], None] | None) -> None:
    """The loaded data's warnings, told once by the driver that loaded it (never by a worker process)."""
    if on_warning is not None:
        for line in data.warnings:
            on_warning(line)


def say_data(
    spec: Spec, data: Dataset, on_warning: Callable[[str], None] | None, on_note: Callable[[str], None] | None
) -> None:
    """What a command given `spec` (val_size perhaps left out) says once its data loaded, and so passed
    its checks: the split an automatic val_size chose, the data's warnings, and for a user's npz or
    folder the lint that needs its size (the CLI linted CIFAR-10 and synthetic data from the spec)."""
    size = training_set_size(spec.data)
    note = split_note(spec.data, size)
    if on_note is not None and note is not None:
        on_note(note)
    say_warnings(data, on_warning)
    if on_warning is not None and spec.data.path is not None and size is not None:
        for line in data_warnings(spec, size):
            on_warning(line)


def _plan_kept(old: list[TrialConfig], new: list[TrialConfig]) -> bool:
    """Every trial of the old plan is in the new one with the same values (a grid may not keep them)."""
    planned = {c.trial_id: jsonable(c.params) for c in new}
    return all(planned.get(c.trial_id) == jsonable(c.params) for c in old)


def _diff(old: Any, new: Any, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{key}.{k}" if key else str(k)
            if k not in old:
                out.append(f"{sub}: added {new[k]!r}")
            elif k not in new:
                out.append(f"{sub}: removed (was {old[k]!r})")
            else:
                out += _diff(old[k], new[k], sub)
        return out
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def previous_data_root(stage_dir: Path) -> Path | None:
    """The data root a stage was run with (its run.json), so a resume or refine finds the same data."""
    root = recorded_run_info(stage_dir).get("data_root")
    return Path(root) if root else None


def recorded_run_info(stage_dir: Path) -> dict[str, Any]:
    """A stage's run.json, or {} when it has none or it cannot be read."""
    try:
        info = read_json(stage_dir / "run.json") if (stage_dir / "run.json").is_file() else {}
    except StoreError:
        return {}
    return info if isinstance(info, dict) else {}


# --------------------------------------------------------------------------- running a stage


def run_stage(
    stage: Stage, data: Dataset, options: StageOptions, progress: StageProgress | None, resuming: bool
) -> StageOutcome:
    """Train the stage's configs not yet finished, one record each, then rank and write the
    results. On Ctrl-C / SIGTERM mark the running ones interrupted and raise StageStopped."""
    store = stage.store
    if resuming:
        finished, warnings = reconcile(store, stage.configs)
        run_info = _resumed_run_info(store, stage, options)
    else:
        store.write_text("spec.yaml", spec_to_yaml(stage.spec))
        finished, warnings = {}, []
        run_info = _run_info(stage.spec, stage.spec_path, options)
    # Kept from the stage's start on a resume (refuse_changed_factory saw the same hash): the classes
    # the labels judge chance by, and the code every trial of the stage ran.
    run_info.setdefault("num_classes", data.num_classes)
    run_info.setdefault("val_size", len(data.y_val))  # the true count: an npz's x_val or a folder's val/ sets it
    if stage.factory is not None:
        run_info.setdefault("factory_sha256", stage.factory.sha256)
        run_info.setdefault("factory_files", stage.factory.files)  # which file changed, should a resume be refused
    run_info["trials"] = stage.planned
    store.write_json("run.json", run_info)
    book = _StageBook(store, stage.planned, list(finished.values()), progress, stage.spec.search.median_stop)
    todo = [c for c in stage.configs if c.trial_id not in finished]
    # An absolute data root: worker processes (and Ray workers) need not share this one's directory.
    recipe = DataRecipe(spec_to_yaml(stage.spec), options.data_root.resolve() if options.data_root else None)
    if todo and stage.spec.model.kind == "python" and options.execution.population != 1:
        from hpsearch.funcpop import population_support

        reason = population_support(todo[0], data)
        if reason:
            warnings.append(f"model.factory {stage.spec.model.factory}: trials trained one at a time: {reason}")
    execution = _with_ray_resources(options.execution, stage.spec)
    try:
        if stage.spec.search.halving is not None:
            _execute_rungs(stage, data, execution, book, recipe)
        else:
            if progress:
                unproposed = (stage.planned - len(stage.configs)) * stage.spec.train.epochs
                progress.start(stage.planned, sum(c.train.epochs for c in todo) + unproposed, len(finished))
            if stage.spec.search.proposed:
                _execute_waves(stage, data, execution, book.events(), recipe, _told(stage, finished))
            else:
                execute(todo, data, execution, book.events(), recipe, stage.factory)
        run_info["end_time"] = _now()
        store.write_json("run.json", run_info)
        outcome = write_stage_results(stage, current_results(stage)[0])
        note = book.median_stop_note()
        if note:
            book.notes.append(note)
    except KeyboardInterrupt as e:
        raise _record_stop(stage, book, run_info, e) from None
    outcome.warnings, outcome.resumed = warnings + book.notes, len(finished)
    return outcome


def _execute_waves(
    stage: Stage,
    data: Dataset,
    execution: ExecOptions,
    events: TrialEvents,
    recipe: DataRecipe,
    told: dict[int, TrialResult],
    until: int | None = None,
) -> None:
    """sampler: tpe. The planned trials not in `told` (the finished ones, by trial id) train first:
    the startup trials, or on a resume the proposals recorded before the stop; then wave after wave
    of proposals, each asked from every trial finished before it and recorded before it trains,
    until search.trials. `until`: successive halving's first rung, where every trial stops."""
    record = events.on_result
    assert record is not None

    def on_result(r: TrialResult) -> None:
        record(r)
        told[r.trial] = r

    with ray_session(execution.ray) if execution.ray is not None else nullcontext():
        while True:
            todo = [c for c in stage.configs if c.trial_id not in told]
            if not todo:
                if len(stage.configs) >= stage.planned:
                    return
                todo = _ask_wave(stage, list(told.values()))
            todo = [replace(c, until=until) for c in todo]
            execute(todo, data, execution, replace(events, on_result=on_result), recipe, stage.factory)


CHECKPOINTS = "checkpoints"  # a halving stage's folder of trial states between rungs


def _execute_rungs(stage: Stage, data: Dataset, execution: ExecOptions, book: _StageBook, recipe: DataRecipe) -> None:
    """Successive halving: train rung by rung, each rung's trials going on from their states at
    the rung before; decisions are replayed from the records (halving.replay), so a stage stopped
    anywhere resumes to the same decisions. Only states that may still go on are kept on disk."""
    halving = stage.spec.search.halving
    assert halving is not None
    rungs = rung_epochs(stage.spec.train.epochs, halving)
    checkpoints = Checkpoints(stage.store.path / CHECKPOINTS)
    if stage.spec.search.proposed:
        _propose_first_rung(stage, data, execution, book, recipe, checkpoints, rungs)
    by_id = {c.trial_id: c for c in stage.configs}
    plan = {t: jsonable(c.params) for t, c in by_id.items()}
    started = False
    while True:
        records = stage.store.read_trials()
        standing = replay(rung_records(records, plan), list(by_id), rungs, halving.eta)
        _record_stopped(stage.store, standing, records, checkpoints)
        if standing.rung is None:
            break
        k = standing.rung
        if not started:
            _start_halving_progress(book, standing, rungs, halving.eta)
            started = True
        configs, missing = _rung_configs(standing, by_id, rungs, checkpoints)
        if missing:
            book.notes.append(
                f"{checkpoints.path}: {missing} trial state(s) of rung {k - 1} were missing; "
                f"those trials trained again from the start"
            )
        last = k == len(rungs) - 1
        top = TopKeep(0 if last else keep_count(standing.size, halving.eta), standing.done)
        book.begin_rung(k, standing.size, len(standing.done))
        if book.progress:
            book.progress.rung(_rung_line(k, rungs, standing.size, halving.eta))

        on_result = _rung_recorder(k, top, checkpoints, book)
        execute(configs, data, execution, replace(book.events(), on_result=on_result), recipe, stage.factory)
    checkpoints.remove_all()


def _told(stage: Stage, finished: dict[int, TrialResult]) -> dict[int, TrialResult]:
    """What the model is told before a wave: the stage's finished trials, and ahead of them the
    earlier stages' trials (stage.prior) under ids -1, -2, ... that no trial of the stage has."""
    prior = {-1 - i: replace(r, trial=-1 - i) for i, r in enumerate(stage.prior)}
    return {**prior, **finished}


def _ask_wave(stage: Stage, told: list[TrialResult]) -> list[TrialConfig]:
    """The next wave of proposals, recorded, then added to the stage's configs."""
    settings = stage.spec.search.tpe_settings
    first = len(stage.configs)
    shared = shaping_params(stage.spec) if settings.same_shape else []
    proposals = propose(stage.spec.search, told, first, min(settings.wave, stage.planned - first), shared)
    wave = 1 + (first - settings.startup_trials) // settings.wave  # the startup trials are wave 0
    record_wave(stage.store.path, wave, first, proposals, len(told))
    configs = [trial_config(stage.spec, first + i, p) for i, p in enumerate(proposals)]
    stage.configs.extend(configs)  # recorded: a stop from here on resumes with these trials
    return configs


def _rung_recorder(k: int, top: TopKeep, checkpoints: Checkpoints, book: _StageBook) -> Callable[[TrialResult], None]:
    """What happens to each result of rung k: its state kept while it may still go on (written
    before the record that says it exists), the record appended, states no longer needed removed."""

    def on_result(r: TrialResult) -> None:
        r.rung = k
        pushed_out: list[int] = []
        if r.checkpoint is not None:
            admitted, pushed_out = top.admit(r)
            if admitted:
                checkpoints.write(r.trial, k, r.checkpoint)
            r.checkpoint = None
        book.record(r)
        if k:
            checkpoints.remove(r.trial, k - 1)
        for t in pushed_out:
            checkpoints.remove(t, k)

    return on_result


def _propose_first_rung(
    stage: Stage,
    data: Dataset,
    execution: ExecOptions,
    book: _StageBook,
    recipe: DataRecipe,
    checkpoints: Checkpoints,
    rungs: list[int],
) -> None:
    """sampler: tpe with successive halving: the first rung trains wave by wave, each wave proposed
    from the first-rung results before it (every trial at the same budget); once all search.trials
    have their first-rung result, the rungs after it decide among them as without tpe."""
    halving = stage.spec.search.halving
    assert halving is not None
    plan = {c.trial_id: jsonable(c.params) for c in stage.configs}
    first = {t: by_rung[0] for t, by_rung in rung_records(stage.store.read_trials(), plan).items() if 0 in by_rung}
    if len(stage.configs) >= stage.planned and len(first) == len(stage.configs):
        return  # the first rung is done: the rungs after it go on as usual
    top = TopKeep(keep_count(stage.planned, halving.eta), list(first.values()))
    book.begin_rung(0, stage.planned, len(first))
    if book.progress:
        book.progress.start(stage.planned, (stage.planned - len(first)) * rungs[0], len(first))
        book.progress.rung(_rung_line(0, rungs, stage.planned, halving.eta) + ", proposed by TPE as trials finish")
    events = replace(book.events(), on_result=_rung_recorder(0, top, checkpoints, book))
    _execute_waves(stage, data, execution, events, recipe, _told(stage, first), until=rungs[0])


def _rung_line(k: int, rungs: list[int], size: int, eta: int) -> str:
    """'rung 1 of 0-2: 9 trials (the best 1/3 of rung 0) train on from epoch 1 to 3'"""
    where = f"rung {k} of 0-{len(rungs) - 1}"
    trials = f"{size} trial{'s' if size != 1 else ''}"
    if k == 0:
        return f"{where}: {trials} train {rungs[0]} epoch{'s' if rungs[0] > 1 else ''} each"
    return f"{where}: {trials} (the best 1/{eta} of rung {k - 1}) train on from epoch {rungs[k - 1]} to {rungs[k]}"


def _rung_configs(
    standing: Standing, by_id: dict[int, TrialConfig], rungs: list[int], checkpoints: Checkpoints
) -> tuple[list[TrialConfig], int]:
    """The rung's trials to train, each to the rung's end and from its state at the rung before;
    and how many had no state on disk (those train again from the start: the same result, up to
    float rounding)."""
    k = standing.rung
    assert k is not None
    until = rungs[k] if k < len(rungs) - 1 else None
    out, missing = [], 0
    for t in standing.todo:
        cfg = replace(by_id[t], until=until)
        if k:
            saved = checkpoints.read(t, k - 1)
            if saved is None:
                missing += 1
            else:
                cfg = replace(cfg, start=TrialStart(standing.starts[t], saved))
        out.append(cfg)
    return out, missing


def _record_stopped(
    store: StageStore, standing: Standing, records: list[TrialResult], checkpoints: Checkpoints
) -> None:
    """A STOPPED record for each trial a rung's decision stopped (once), and its state removed."""
    already = {r.trial for r in records if r.state is TrialState.STOPPED}
    for t, r in sorted(standing.results.items()):
        if r.state is TrialState.STOPPED and t not in already:
            store.append_trial(r)
            if r.rung is not None:
                checkpoints.remove(t, r.rung)


def _start_halving_progress(book: _StageBook, standing: Standing, rungs: list[int], eta: int) -> None:
    """The bar's total: the trial-epochs left, as planned from where the stage stands."""
    if book.progress is None:
        return
    k = standing.rung or 0
    counts = planned_counts(standing.size, rungs[k:], eta)
    ends = [rungs[k - 1] if k else 0, *rungs[k:]]
    left = len(standing.todo) * (ends[1] - ends[0])
    left += sum(c * (end - start) for c, start, end in zip(counts[1:], ends[1:-1], ends[2:], strict=True))
    n = book.total
    final = sum(1 for r in standing.results.values() if _is_final(r, len(rungs)))
    book.progress.start(n, left, final)


def _is_final(r: TrialResult, rungs: int) -> bool:
    return r.state is not TrialState.COMPLETE or r.rung == rungs - 1


def current_results(stage: Stage) -> tuple[list[TrialResult], bool]:
    """A stage's results as its records stand, and whether it is finished: each planned trial's
    final record; with halving, each trial's latest rung (outranked ones STOPPED)."""
    halving = stage.spec.search.halving
    if halving is None:
        found = reconcile(stage.store, stage.configs)[0]
        finished = len(found) == stage.planned
    else:
        rungs = rung_epochs(stage.spec.train.epochs, halving)
        plan = {c.trial_id: jsonable(c.params) for c in stage.configs}
        by_trial = rung_records(stage.store.read_trials(), plan)
        if len(plan) < stage.planned:  # sampler: tpe, still proposing: the first rung's results so far
            found, finished = {t: by_rung[0] for t, by_rung in by_trial.items() if 0 in by_rung}, False
        else:
            standing = replay(by_trial, list(plan), rungs, halving.eta)
            found, finished = standing.results, standing.rung is None
    # Read back from JSON a record's values are plain (an activation is "relu"): the plan's are typed.
    return [replace(found[c.trial_id], params=dict(c.params)) for c in stage.configs if c.trial_id in found], finished


def reconcile(store: StageStore, configs: list[TrialConfig]) -> tuple[dict[int, TrialResult], list[str]]:
    """A resumed stage's finished trials (by the records on disk that match this plan) and the
    warnings about records that did not."""
    store.remove_stale_temp_files()
    plan = {c.trial_id: jsonable(c.params) for c in configs}
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


class _StageBook:
    """While a stage trains: each record appended as it arrives, the running trials, the best so far."""

    def __init__(
        self,
        store: StageStore,
        total: int,
        finished: list[TrialResult],
        progress: StageProgress | None,
        median_stop: MedianStopSpec | None = None,
    ) -> None:
        self.store, self.total, self.progress, self.median_stop = store, total, progress, median_stop
        self.prepared = self.judged = 0  # median_stop: trials that started training, and those given bars
        self.results = list(finished)
        self.running: dict[int, TrialConfig] = {}
        self.best: TrialResult | None = None
        self.notes: list[str] = []  # warnings found while training, shown with the outcome
        self.rung_count: tuple[int, int] | None = None  # halving: (recorded, trials) of the rung
        for r in self.results:
            self.best = _better(r, self.best)

    def events(self) -> TrialEvents:
        return TrialEvents(
            on_result=self.record,
            on_epoch=self.progress.epochs_done if self.progress else None,
            on_start=self.started,
            on_prepare=self.prepare if self.median_stop is not None else None,
        )

    def prepare(self, pop: list[TrialConfig]) -> list[TrialConfig]:
        """median_stop: each trial's bars from the trials recorded so far."""
        ready = with_bars(pop, self.median_stop, self.results)
        self.prepared += len(ready)
        self.judged += sum(c.stop_below is not None for c in ready)
        return ready

    def median_stop_note(self) -> str | None:
        """A note when median_stop could judge none of the trials this run trained."""
        if self.median_stop is None or self.judged or not self.prepared:
            return None
        return (
            f"search.median_stop judged no trial: every trial started training before "
            f"{self.median_stop.startup_trials} had completed (trials trained together in a population are "
            "judged only by trials complete before it starts); train fewer at once (--population) or use "
            "search.halving"
        )

    def started(self, pop: list[TrialConfig]) -> None:
        self.running.update((c.trial_id, c) for c in pop)

    def record(self, result: TrialResult) -> None:
        self.store.append_trial(result)
        self.running.pop(result.trial, None)
        self.results.append(result)
        self.best = _better(result, self.best)
        done, total = len(self.results), self.total
        if self.rung_count is not None:
            self.rung_count = done, total = (self.rung_count[0] + 1, self.rung_count[1])
        if self.progress:
            self.progress.trial_done(result, done, total, self.best)

    def begin_rung(self, rung: int, trials: int, recorded: int) -> None:
        """Halving: the progress counts this rung's trials."""
        self.rung_count = (recorded, trials)


def _with_ray_resources(execution: ExecOptions, spec: Spec) -> ExecOptions:
    """On Ray, each task asks for the resources the spec names."""
    if execution.ray is None:
        return execution
    res = spec.resources
    ray = replace(execution.ray, num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=res.max_retries)
    return replace(execution, ray=ray)


def _record_stop(stage: Stage, book: _StageBook, run_info: dict[str, Any], e: KeyboardInterrupt) -> StageStopped:
    """Ctrl-C or SIGTERM: the running trials recorded as interrupted, run.json says when."""
    with _signals_ignored():  # a second Ctrl-C must not cut this bookkeeping short
        # What is on disk decides: the signal may have come between a record's write and the
        # bookkeeping above, and a trial recorded as finished must never be marked interrupted.
        planned = {c.trial_id for c in stage.configs}
        on_disk = {t for t in stage.store.final_trials() if t in planned}
        for cfg in book.running.values():
            if cfg.trial_id not in on_disk:
                stopped = TrialResult(trial=cfg.trial_id, state=TrialState.INTERRUPTED, params=dict(cfg.params))
                stage.store.append_trial(stopped)
        run_info["end_time"] = None
        run_info["interrupted_time"] = _now()
        stage.store.write_json("run.json", run_info)
        # What finished, ranked, marked partial: refine and report know it is not a finished stage.
        results = current_results(stage)[0]
        write_stage_results(stage, results, partial=True)
    code = e.code if isinstance(e, Interrupted) else 130
    halving = stage.spec.search.halving
    if halving is not None:  # trials whose fate is known: stopped, or at the last rung, or failed
        rungs = len(rung_epochs(stage.spec.train.epochs, halving))
        on_disk = {r.trial for r in results if _is_final(r, rungs)}
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


def _better(result: TrialResult, best: TrialResult | None) -> TrialResult | None:
    if result.state is not TrialState.COMPLETE:
        return best
    return result if best is None or rank([result, best])[0] is result else best


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
        planned_epochs=planned,
    )


def stage_num_classes(stage_dir: Path, data: DataSpec) -> int | None:
    """The classes a stage trained on: the spec's when it says (CIFAR-10, synthetic), else the count
    its run.json recorded from the loaded data (a user's npz or folder)."""
    return stage_curve_data(stage_dir, data).num_classes


def write_stage_results(stage: Stage, results: list[TrialResult], partial: bool = False) -> StageOutcome:
    """results.json, results.csv and results.md of a stage, best first, with the edge analysis.
    `partial`: the stage was stopped; these are the trials that finished, and the files say so."""
    spec, store = stage.spec, stage.store
    outcome = stage_outcome(stage, results)
    ranked, edge_list, names, name = outcome.ranked, outcome.edges, outcome.param_names, outcome.stage
    extra: dict[str, Any] = {"name": spec.name, "metric": "val_acc", "history": stage.history}
    extra["trials_planned"] = stage.planned
    title = f"{spec.name}: {name}"
    if partial:
        extra["partial"] = True
        title += f" (partial: {len(results)} of {stage.planned} trials; the stage was stopped)"
    data, planned = outcome.data, outcome.planned_epochs
    store.write_json("results.json", results_document(name, ranked, edge_list, extra, data, planned))
    store.write_text("results.csv", csv_table(ranked, names, planned_epochs=planned, data=data))
    store.write_text("results.md", markdown_report(title, ranked, names, edge_list, data, planned))
    return outcome


# --------------------------------------------------------------------------- run.json


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _run_info(spec: Spec, spec_path: str, options: StageOptions) -> dict[str, Any]:
    return {
        "hpsearch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(resolve_device(spec.train.device)),
        "command": list(options.command) or sys.argv,
        "spec_path": spec_path,
        "data_root": str(options.data_root) if options.data_root else None,
        "seed": spec.search.seed,
        "start_time": _now(),
        "end_time": None,
    }


def _resumed_run_info(store: StageStore, stage: Stage, options: StageOptions) -> dict[str, Any]:
    """run.json of a resumed stage: the first start kept, each resume's time and command added."""
    try:
        info = read_json(store.path / "run.json")
    except StoreError:
        info = None
    if not isinstance(info, dict):
        info = _run_info(stage.spec, stage.spec_path, options)
    info.setdefault("resumed", []).append({"time": _now(), "command": list(options.command) or sys.argv})
    info["end_time"] = None
    return info


# --------------------------------------------------------------------------- refine


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
) -> RefineOutcome:
    """Plan the next stage from the latest one (refine.plan_refine), show it through `on_plan`, and
    run it; never re-runs a configuration already trained at that budget. `on_model`, `on_warning`:
    as for run_coarse."""
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
        preflight(options.execution.ray)
    if plan.spec.search.proposed:
        optuna_module()
    # The data root the stage used before, else the previous stage's, unless the command line gives one.
    data_root = options.data_root or previous_data_root(store.path if resuming else run_dir / plan.previous)
    data = load_data(plan.spec, data_root, on_data, plan.spec_path)
    say_warnings(data, on_warning)
    factory = prepare_model(plan.configs[0].model, data, plan.spec_path, on_model)
    stage_options = StageOptions(data_root=data_root, command=options.command, execution=options.execution)
    stage = Stage(store, plan.spec, plan.spec_path, plan.configs, plan.history, factory, tuple(plan.prior))
    if resuming:
        stage = with_proposals(stage)
    with store.lock():
        if not resuming:
            store.create()
        outcome = run_stage(stage, data, stage_options, progress, resuming)
    return RefineOutcome(outcome, plan)


def _check_something_to_resume(run_dir: Path) -> None:
    """--resume never starts a new stage, so running it twice is harmless."""
    done = stages(run_dir)
    if done and not StageStore(run_dir / f"refine-{len(done)}").started:
        raise NothingToResume(
            f"nothing to resume in {run_dir}: its newest stage, {done[-1]}, finished; "
            f"hpsearch refine {run_dir} (without --resume) plans the next one"
        )


# --------------------------------------------------------------------------- sanity checks


@dataclass
class SanityOutcome:
    report: SanityReport
    report_path: Path
    written_spec: Path | None


def run_sanity(
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    *,
    write_spec: Path | None = None,
    on_data: ProgressFn | None = None,
    on_step: StepCallback | None = None,
    on_model: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SanityOutcome:
    """Run the four sanity checks, write RUN/sanity/report.json and, if asked and the probe
    recommends a range, a copy of the spec with that lr range. `on_model`, `on_warning`, `on_note`:
    as for run_coarse."""
    if write_spec is not None and write_spec.exists():
        raise StoreError(f"{write_spec}: already exists; choose another --write-spec path")
    if write_spec is not None and not (write_spec.parent.is_dir() and os.access(write_spec.parent, os.W_OK)):
        raise StoreError(f"{write_spec}: its folder {write_spec.parent} does not exist or is not writable")
    if options.out is not None:
        refuse_nested_run(options.out)
    run_dir = options.out if options.out is not None else RUNS_DIR / spec.name
    store = StageStore(run_dir / "sanity")
    data = load_data(spec, options.data_root, on_data, spec_path)
    say_data(spec, data, on_warning, on_note)
    source = prepare_model(spec.model, data, spec_path, on_model)  # the network sanity-check builds
    store.make_dir()  # before the checks run: an unwritable --out fails at once
    report = run_sanity_checks(spec, data, on_step)
    run = _run_info(spec, spec_path, options)
    run["num_classes"] = data.num_classes
    if source is not None:
        run["factory_sha256"] = source.sha256
    doc = {"spec_path": spec_path, **report.to_dict(), "run": run}
    store.write_json("report.json", doc)
    written = None
    if write_spec is not None and report.recommended_lr is not None:
        low, high = written_lr_range(*report.recommended_lr)
        header = f"# Written by hpsearch sanity-check from {spec_path}: lr range from the learning-rate probe.\n"
        text = rewritten_spec(Path(spec_path), spec_with_lr_range(spec, low, high), write_spec, "lr")
        atomic_write_text(write_spec, header + text)
        written = write_spec
    return SanityOutcome(report, store.path / "report.json", written)
