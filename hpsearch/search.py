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
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy
import torch

from hpsearch import __version__
from hpsearch.curves import stage_advice
from hpsearch.data import DataRecipe, Dataset, ProgressFn, load_data, resolve_device
from hpsearch.errors import Interrupted, NothingToResume, SpecError, StageStopped, StoreError
from hpsearch.executor import execute
from hpsearch.factory import FactorySource, check_model, describe, source_hash
from hpsearch.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.rank import Edge, edges, rank
from hpsearch.ray_executor import preflight
from hpsearch.records import CurveData, TrialConfig, TrialEvents, TrialResult, TrialState, failure_summary, jsonable
from hpsearch.refine import COARSE, RefinePlan, is_partial, plan_refine, stages
from hpsearch.report import csv_table, markdown_report, results_document
from hpsearch.sanity import SanityReport, StepCallback, run_sanity_checks, spec_with_lr_range
from hpsearch.space import trial_configs
from hpsearch.spec import DataSpec, ModelSpec, Spec, load_spec, spec_to_yaml
from hpsearch.store import StageStore, atomic_write_text, pick_run_dir, read_json, refuse_nested_run

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
    data: DataSpec | CurveData | None = None  # what its curve labels judge chance accuracy by

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


@dataclass(frozen=True)
class Stage:
    """A stage ready to run: where it is written, what it trains, and the plan history it records."""

    store: StageStore
    spec: Spec
    spec_path: str  # the file errors and run.json name
    configs: list[TrialConfig]
    history: list[dict[str, Any]]
    factory: FactorySource | None = None  # a user's factory file as the stage read it: run and shipped


# --------------------------------------------------------------------------- coarse


def run_coarse(
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    *,
    on_data: ProgressFn | None = None,
    progress: StageProgress | None = None,
    on_model: Callable[[str], None] | None = None,
) -> StageOutcome:
    """Run the coarse stage of `spec` into RUN/coarse and return the ranked outcome. With
    options.resume, continue RUN/coarse if it was started with the same spec (or start it).
    `on_model`: told which file a user's network was loaded from, once it passed its check."""
    configs = trial_configs(spec, spec_path)
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
    if resuming:
        refuse_changed_spec(store, spec, "start a new run: another --out, without --resume", configs)
        options = replace(options, data_root=options.data_root or previous_data_root(store.path))
        done = finished_stage(stage)
        if done is not None:  # nothing to train: no data loaded, nothing rewritten
            return done
    # Data first, then the user's network on one batch of it: a missing dataset or a bad factory
    # leaves no half-made run directory behind.
    data = load_data(spec, options.data_root, on_data, spec_path)
    stage = replace(stage, factory=prepare_model(configs[0].model, data, spec_path, on_model))
    with store.lock():
        if not resuming:
            store.create()
        return run_stage(stage, data, options, progress, resuming)


def finished_stage(stage: Stage) -> StageOutcome | None:
    """A resumed stage whose every planned trial is already recorded: its outcome read from disk
    (the results written if a crash came before them), else None."""
    with stage.store.lock():
        finished, warnings = reconcile(stage.store, stage.configs)
        if len(finished) < len(stage.configs):
            return None
        results = [finished[c.trial_id] for c in stage.configs]
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
    if configs is not None and changes == [f"search.trials: {stored.search.trials} -> {spec.search.trials}"]:
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
    """Resuming must run the code the stage started with: a factory file whose sha256 differs from
    the one in run.json is refused, naming the file."""
    if spec.model.kind != "python" or spec.model.factory is None:
        return
    recorded = recorded_run_info(store.path).get("factory_sha256")
    now = source_hash(spec.model.factory)
    if recorded is None or now is None or now == recorded:
        return
    path = spec.model.factory.rpartition(":")[0]
    raise SpecError(
        f"model.factory: {path}: cannot resume {store.path}, the file changed since this stage started "
        f"(sha256 {recorded[:8]}... then, {now[:8]}... now); put back the code it started with, or {otherwise}"
    )


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
    if stage.factory is not None:
        run_info.setdefault("factory_sha256", stage.factory.sha256)
    run_info["trials"] = len(stage.configs)
    store.write_json("run.json", run_info)
    book = _StageBook(store, len(stage.configs), list(finished.values()), progress)
    todo = [c for c in stage.configs if c.trial_id not in finished]
    # An absolute data root: worker processes (and Ray workers) need not share this one's directory.
    recipe = DataRecipe(spec_to_yaml(stage.spec), options.data_root.resolve() if options.data_root else None)
    if todo and stage.spec.model.kind == "python" and options.execution.population != 1:
        from hpsearch.funcpop import population_support

        reason = population_support(todo[0], data)
        if reason:
            warnings.append(f"model.factory {stage.spec.model.factory}: trials trained one at a time: {reason}")
    if progress:
        progress.start(len(stage.configs), sum(c.train.epochs for c in todo), len(finished))
    try:
        execute(todo, data, _with_ray_resources(options.execution, stage.spec), book.events(), recipe, stage.factory)
        run_info["end_time"] = _now()
        store.write_json("run.json", run_info)
        outcome = write_stage_results(stage, book.results)
    except KeyboardInterrupt as e:
        raise _record_stop(stage, book, run_info, e) from None
    outcome.warnings, outcome.resumed = warnings, len(finished)
    return outcome


def reconcile(store: StageStore, configs: list[TrialConfig]) -> tuple[dict[int, TrialResult], list[str]]:
    """A resumed stage's finished trials (by the records on disk that match this plan) and the
    warnings about records that did not."""
    store.remove_stale_temp_files()
    plan = {c.trial_id: jsonable(c.params) for c in configs}
    finished: dict[int, TrialResult] = {}
    foreign = 0
    for t, r in store.final_trials().items():
        if t in plan and jsonable(r.params) == plan[t]:
            finished[t] = r
        elif t in plan:
            foreign += 1  # same trial number, other parameters: not this plan's trial
    warnings = []
    if foreign:
        warnings.append(
            f"{store.path / 'trials.jsonl'}: {foreign} record(s) with parameters other than the plan's "
            "for their trial number were ignored; those trials were run again"
        )
    if store.unreadable_lines:
        warnings.append(
            f"{store.path / 'trials.jsonl'}: skipped {store.unreadable_lines} unreadable line(s) "
            "(a write cut by a crash); trials without a readable record were run again"
        )
    return finished, warnings


class _StageBook:
    """While a stage trains: each record appended as it arrives, the running trials, the best so far."""

    def __init__(
        self, store: StageStore, total: int, finished: list[TrialResult], progress: StageProgress | None
    ) -> None:
        self.store, self.total, self.progress = store, total, progress
        self.results = list(finished)
        self.running: dict[int, TrialConfig] = {}
        self.best: TrialResult | None = None
        for r in self.results:
            self.best = _better(r, self.best)

    def events(self) -> TrialEvents:
        return TrialEvents(
            on_result=self.record,
            on_epoch=self.progress.epochs_done if self.progress else None,
            on_start=self.started,
        )

    def started(self, pop: list[TrialConfig]) -> None:
        self.running.update((c.trial_id, c) for c in pop)

    def record(self, result: TrialResult) -> None:
        self.store.append_trial(result)
        self.running.pop(result.trial, None)
        self.results.append(result)
        self.best = _better(result, self.best)
        if self.progress:
            self.progress.trial_done(result, len(self.results), self.total, self.best)


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
        finished = reconcile(stage.store, stage.configs)[0]
        write_stage_results(stage, list(finished.values()), partial=True)
    code = e.code if isinstance(e, Interrupted) else 130
    return StageStopped(code, stage.store.path, len(on_disk), len(stage.configs))


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
    """A stage's results ranked best first, with the edge analysis."""
    ranked = rank(sorted(results, key=lambda r: r.trial))
    best = ranked[0] if ranked and ranked[0].state is TrialState.COMPLETE else None
    space, spec_data = stage.spec.search.space, stage.spec.data
    data = CurveData(stage_num_classes(stage.store.path, spec_data), spec_data.val_size)
    advice = stage_advice(ranked, data.num_classes, data.val_size)
    return StageOutcome(
        stage.store.path, stage.store.path.name, ranked, edges(space, best), sorted(space), advice=advice, data=data
    )


def stage_num_classes(stage_dir: Path, data: DataSpec) -> int | None:
    """The classes a stage trained on: the spec's when it says (CIFAR-10, synthetic), else the count
    its run.json recorded from the loaded data (a user's npz or folder)."""
    if data.num_classes is not None:
        return data.num_classes
    count = recorded_run_info(stage_dir).get("num_classes")
    return count if isinstance(count, int) and count >= 2 else None


def write_stage_results(stage: Stage, results: list[TrialResult], partial: bool = False) -> StageOutcome:
    """results.json, results.csv and results.md of a stage, best first, with the edge analysis.
    `partial`: the stage was stopped; these are the trials that finished, and the files say so."""
    spec, store = stage.spec, stage.store
    outcome = stage_outcome(stage, results)
    ranked, edge_list, names, name = outcome.ranked, outcome.edges, outcome.param_names, outcome.stage
    extra: dict[str, Any] = {"name": spec.name, "metric": "val_acc", "history": stage.history}
    extra["trials_planned"] = len(stage.configs)
    title = f"{spec.name}: {name}"
    if partial:
        extra["partial"] = True
        title += f" (partial: {len(results)} of {len(stage.configs)} trials; the stage was stopped)"
    data = outcome.data
    store.write_json("results.json", results_document(name, ranked, edge_list, extra, data))
    store.write_text("results.csv", csv_table(ranked, names, data=data))
    store.write_text("results.md", markdown_report(title, ranked, names, edge_list, data))
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
) -> RefineOutcome:
    """Plan the next stage from the latest one (refine.plan_refine), show it through `on_plan`, and
    run it; never re-runs a configuration already trained at that budget."""
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
    # The data root the stage used before, else the previous stage's, unless the command line gives one.
    data_root = options.data_root or previous_data_root(store.path if resuming else run_dir / plan.previous)
    data = load_data(plan.spec, data_root, on_data, plan.spec_path)
    factory = prepare_model(plan.configs[0].model, data, plan.spec_path, on_model)
    stage_options = StageOptions(data_root=data_root, command=options.command, execution=options.execution)
    stage = Stage(store, plan.spec, plan.spec_path, plan.configs, plan.history, factory)
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
) -> SanityOutcome:
    """Run the four sanity checks, write RUN/sanity/report.json and, if asked and the probe
    recommends a range, a copy of the spec with that lr range."""
    if write_spec is not None and write_spec.exists():
        raise StoreError(f"{write_spec}: already exists; choose another --write-spec path")
    if write_spec is not None and not (write_spec.parent.is_dir() and os.access(write_spec.parent, os.W_OK)):
        raise StoreError(f"{write_spec}: its folder {write_spec.parent} does not exist or is not writable")
    if options.out is not None:
        refuse_nested_run(options.out)
    run_dir = options.out if options.out is not None else RUNS_DIR / spec.name
    store = StageStore(run_dir / "sanity")
    data = load_data(spec, options.data_root, on_data, spec_path)
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
        low, high = report.recommended_lr
        header = f"# Written by hpsearch sanity-check from {spec_path}: lr range from the learning-rate probe.\n"
        atomic_write_text(write_spec, header + spec_to_yaml(spec_with_lr_range(spec, low, high)))
        written = write_spec
    return SanityOutcome(report, store.path / "report.json", written)
