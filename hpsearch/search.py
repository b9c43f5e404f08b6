"""The stage driver: plan trials -> execute -> record -> rank. The one module that knows the order."""

from __future__ import annotations

import datetime as dt
import json
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
from hpsearch.data import Dataset, ProgressFn, build_dataset
from hpsearch.errors import DataError, HpsearchError, Interrupted, SpecError, StoreError
from hpsearch.executor import DataRecipe, ExecOptions, execute
from hpsearch.plots import StageData, write_report_plots
from hpsearch.rank import Edge, edges, rank
from hpsearch.ray_executor import preflight
from hpsearch.refine import RangePlan, plan_ranges, top_complete
from hpsearch.report import csv_table, markdown_report, markdown_table, results_document
from hpsearch.sanity import SanityReport, StepCallback, run_sanity_checks, spec_with_lr_range
from hpsearch.space import TrialSampler
from hpsearch.spec import Sampler, Spec, load_spec, spec_to_yaml
from hpsearch.store import StageStore, atomic_write_text, pick_run_dir, read_json
from hpsearch.trial import TrialConfig, TrialResult, TrialState, jsonable, resolve_device

RUNS_DIR = Path("runs")
COARSE = "coarse"


@dataclass(frozen=True)
class StageOptions:
    out: Path | None = None  # the run directory; None: runs/<name> (or -2, -3, ... if taken)
    data_root: Path | None = None
    command: tuple[str, ...] = ()
    execution: ExecOptions = ExecOptions()
    resume: bool = False  # continue the run in `out` (same spec): finished trials are kept, the rest run


@dataclass
class StageOutcome:
    run_dir: Path
    stage_dir: Path
    stage: str
    ranked: list[TrialResult]
    edges: list[Edge]
    param_names: list[str]
    warnings: list[str] = field(default_factory=list)
    resumed: int = 0  # trials already finished before this command (resume)

    @property
    def best(self) -> TrialResult | None:
        return self.ranked[0] if self.ranked and self.ranked[0].state is TrialState.COMPLETE else None


class StageStopped(Interrupted):
    """A stage stopped by Ctrl-C or SIGTERM: finished trials are on disk, running ones recorded as
    interrupted; `--resume` continues it."""

    def __init__(self, code: int, stage_dir: Path, finished: int, total: int) -> None:
        super().__init__(code, f"{finished} of {total} trials finished and saved in {stage_dir}")
        self.stage_dir, self.finished, self.total = stage_dir, finished, total


class StageProgress(Protocol):
    """What a stage reports while it runs (the CLI draws it as a progress bar)."""

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None: ...

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None: ...

    def epochs_done(self, count: int) -> None: ...


def with_overrides(spec: Spec, trials: int | None = None, epochs: int | None = None, seed: int | None = None) -> Spec:
    """The spec with command-line overrides applied, validated like the file."""
    data = spec.model_dump()
    if trials is not None:
        data["search"]["trials"] = trials
    if seed is not None:
        data["search"]["seed"] = seed
    if epochs is not None:
        data["train"]["epochs"] = epochs
        data["search"]["space"].pop("epochs", None)  # --epochs fixes them, as it does for refine
    return Spec.model_validate(data)


def trial_configs(spec: Spec, sampler: TrialSampler) -> list[TrialConfig]:
    configs = []
    for i in range(sampler.n_trials):
        params = sampler.params(i)
        trial_spec = spec.resolved(params)
        configs.append(TrialConfig(i, params, trial_spec.model, trial_spec.train, spec.search.seed))
    return configs


def load_data(spec: Spec, data_root: Path | None, progress: ProgressFn | None, spec_path: str | None = None) -> Dataset:
    """The spec's dataset on the spec's device. Errors about the spec's own keys name its file."""
    try:
        data = build_dataset(spec.data, data_root, progress, seed=spec.search.seed)
        return data.to(resolve_device(spec.train.device))
    except (DataError, SpecError) as e:
        if spec_path and str(e).startswith(("data.", "train.")):
            raise type(e)(f"{spec_path}: {e}") from None
        raise


def run_coarse(
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    on_data: ProgressFn | None = None,
    progress: StageProgress | None = None,
) -> StageOutcome:
    """Run the coarse stage of `spec` into RUN/coarse and return the ranked outcome. With
    options.resume, continue RUN/coarse if it was started with the same spec (or start it)."""
    configs = trial_configs(spec, _sampler(spec, spec_path))
    if options.out is not None:
        run_dir = options.out
    else:
        run_dir = RUNS_DIR / spec.name if options.resume else pick_run_dir(RUNS_DIR, spec.name)
    store = StageStore(run_dir / COARSE)
    if options.execution.ray is not None:
        preflight(options.execution.ray)
    resuming = options.resume and _started(store)
    if resuming:
        refuse_changed_spec(store, spec, "start a new run: another --out, without --resume")
        options = replace(options, data_root=options.data_root or _previous_data_root(store.path))
    # Data first: a missing dataset leaves no half-made run directory behind.
    data = load_data(spec, options.data_root, on_data, spec_path)
    history = [{"stage": COARSE, "planned_from": None, "trials": len(configs), "epochs": spec.train.epochs}]
    with store.lock():
        if not resuming:
            store.create()
        return _run_stage(store, spec, spec_path, options, configs, data, history, progress, resuming)


def _started(store: StageStore) -> bool:
    """A stage exists to resume once its resolved spec is written (before any trial runs)."""
    return (store.path / "spec.yaml").is_file() or (store.path / "trials.jsonl").is_file()


def refuse_changed_spec(store: StageStore, spec: Spec, otherwise: str) -> None:
    """Resuming must train what the stored spec says: any difference is refused, naming it."""
    stored_path = store.path / "spec.yaml"
    stored = load_spec(stored_path)
    changes = _diff(stored.model_dump(mode="json"), spec.model_dump(mode="json"))
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise SpecError(
            f"{stored_path}: cannot resume, the spec changed since this stage started ({shown}); "
            f"resume with the same spec and options, or {otherwise}"
        )


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


def _sampler(spec: Spec, spec_path: str) -> TrialSampler:
    try:
        return TrialSampler(spec.search)
    except SpecError as e:
        raise SpecError(f"{spec_path}: {e}") from None


def _run_stage(
    store: StageStore,
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    configs: list[TrialConfig],
    data: Dataset,
    history: list[dict[str, Any]],
    progress: StageProgress | None,
    resuming: bool = False,
) -> StageOutcome:
    """Train the stage's configs not yet finished, one record each; on Ctrl-C / SIGTERM mark the
    running ones interrupted and raise StageStopped."""
    warnings: list[str] = []
    if resuming:
        store.remove_stale_temp_files()
        plan = {c.trial_id: jsonable(c.params) for c in configs}
        finished: dict[int, TrialResult] = {}
        foreign = 0
        for t, r in store.final_trials().items():
            if t in plan and jsonable(r.params) == plan[t]:
                finished[t] = r
            elif t in plan:
                foreign += 1  # same trial number, other parameters: not this plan's trial
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
        run_info = _resumed_run_info(store, spec, spec_path, options)
    else:
        store.write_text("spec.yaml", spec_to_yaml(spec))
        finished = {}
        run_info = _run_info(spec, spec_path, options)
    store.write_json("run.json", run_info)
    results: list[TrialResult] = list(finished.values())
    todo = [c for c in configs if c.trial_id not in finished]
    running: dict[int, TrialConfig] = {}
    best: TrialResult | None = None
    for r in results:
        best = _better(r, best)

    def started(pop: list[TrialConfig]) -> None:
        running.update((c.trial_id, c) for c in pop)

    def record(result: TrialResult) -> None:
        nonlocal best
        store.append_trial(result)
        running.pop(result.trial, None)
        results.append(result)
        best = _better(result, best)
        if progress:
            progress.trial_done(result, len(results), len(configs), best)

    # An absolute data root: worker processes (and Ray workers) need not share this one's directory.
    recipe = DataRecipe(spec_to_yaml(spec), options.data_root.resolve() if options.data_root else None)
    execution = options.execution
    if execution.ray is not None:  # each task's resources come from the spec
        res = spec.resources
        ray = replace(execution.ray, num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=res.max_retries)
        execution = replace(execution, ray=ray)
    if progress:
        progress.start(len(configs), sum(c.train.epochs for c in todo), len(finished))
    try:
        execute(todo, data, execution, record, recipe, progress.epochs_done if progress else None, started)
        results.sort(key=lambda r: r.trial)
        run_info["end_time"] = _now()
        store.write_json("run.json", run_info)
        outcome = write_stage_results(store, spec, store.path.name, results, store.path.parent, history)
    except KeyboardInterrupt as e:
        with _signals_ignored():  # a second Ctrl-C must not cut this bookkeeping short
            # What is on disk decides: the signal may have come between a record's write and the
            # bookkeeping above, and a trial recorded as finished must never be marked interrupted.
            planned = {c.trial_id for c in configs}
            on_disk = {t for t in store.final_trials() if t in planned}
            for cfg in running.values():
                if cfg.trial_id not in on_disk:
                    stopped = TrialResult(trial=cfg.trial_id, state=TrialState.INTERRUPTED, params=dict(cfg.params))
                    store.append_trial(stopped)
            run_info["end_time"] = None
            run_info["interrupted_time"] = _now()
            store.write_json("run.json", run_info)
        code = e.code if isinstance(e, Interrupted) else 130
        raise StageStopped(code, store.path, len(on_disk), len(configs)) from None
    outcome.warnings, outcome.resumed = warnings, len(finished)
    return outcome


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


def _resumed_run_info(store: StageStore, spec: Spec, spec_path: str, options: StageOptions) -> dict[str, Any]:
    """run.json of a resumed stage: the first start kept, each resume's time and command added."""
    try:
        info = read_json(store.path / "run.json")
    except StoreError:
        info = None
    if not isinstance(info, dict):
        info = _run_info(spec, spec_path, options)
    info.setdefault("resumed", []).append({"time": _now(), "command": list(options.command) or sys.argv})
    info["end_time"] = None
    return info


def _better(result: TrialResult, best: TrialResult | None) -> TrialResult | None:
    if result.state is not TrialState.COMPLETE:
        return best
    return result if best is None or rank([result, best])[0] is result else best


def write_stage_results(
    store: StageStore, spec: Spec, stage: str, results: list[TrialResult], run_dir: Path, history: list[dict[str, Any]]
) -> StageOutcome:
    ranked = rank(results)
    best = ranked[0] if ranked and ranked[0].state is TrialState.COMPLETE else None
    edge_list = edges(spec.search.space, best)
    names = sorted(spec.search.space)
    doc = results_document(stage, ranked, edge_list, {"name": spec.name, "metric": "val_acc", "history": history})
    store.write_json("results.json", doc)
    store.write_text("results.csv", csv_table(ranked, names))
    store.write_text("results.md", markdown_report(f"{spec.name}: {stage}", ranked, names, edge_list))
    return StageOutcome(run_dir, store.path, stage, ranked, edge_list, names)


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


@dataclass
class SanityOutcome:
    report: SanityReport
    report_path: Path
    written_spec: Path | None


def run_sanity(
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    write_spec: Path | None = None,
    on_data: ProgressFn | None = None,
    on_step: StepCallback | None = None,
) -> SanityOutcome:
    """Run the four sanity checks, write RUN/sanity/report.json and, if asked and the probe
    recommends a range, a copy of the spec with that lr range."""
    if write_spec is not None and write_spec.exists():
        raise StoreError(f"{write_spec}: already exists; choose another --write-spec path")
    if write_spec is not None and not (write_spec.parent.is_dir() and os.access(write_spec.parent, os.W_OK)):
        raise StoreError(f"{write_spec}: its folder {write_spec.parent} does not exist or is not writable")
    run_dir = options.out if options.out is not None else RUNS_DIR / spec.name
    store = StageStore(run_dir / "sanity")
    store.make_dir()  # before the checks run: an unwritable --out fails at once
    data = load_data(spec, options.data_root, on_data, spec_path)
    report = run_sanity_checks(spec, data, on_step)
    doc = {"spec_path": spec_path, **report.to_dict(), "run": _run_info(spec, spec_path, options)}
    store.write_json("report.json", doc)
    written = None
    if write_spec is not None and report.recommended_lr is not None:
        low, high = report.recommended_lr
        header = f"# Written by hpsearch sanity-check from {spec_path}: lr range from the learning-rate probe.\n"
        atomic_write_text(write_spec, header + spec_to_yaml(spec_with_lr_range(spec, low, high)))
        written = write_spec
    return SanityOutcome(report, store.path / "report.json", written)


@dataclass(frozen=True)
class RefineOptions:
    top_k: int | None = None  # None: the spec's refine.top_k
    trials: int | None = None  # None: refine.trials, else as many as the previous stage
    epochs: int | None = None  # None: the previous stage's epochs x refine.epochs_factor
    data_root: Path | None = None
    command: tuple[str, ...] = ()
    execution: ExecOptions = ExecOptions()
    resume: bool = False  # finish an interrupted refine stage (same options); never starts a new one


class NothingToResume(HpsearchError):
    """`refine --resume` with no interrupted stage: a notice, not a failure (exit code 0)."""


@dataclass
class RefineOutcome:
    outcome: StageOutcome | None  # None when every planned configuration was already trained
    planned_from: str
    plans: list[RangePlan]
    skipped: list[dict[str, Any]]  # planned configurations already trained at this budget


def stages(run_dir: Path) -> list[str]:
    """The finished stages of a run, in order: coarse, refine-1, refine-2, ..."""
    found = []
    name = COARSE
    while (run_dir / name / "results.json").is_file():
        found.append(name)
        name = f"refine-{len(found)}"
    return found


def _how_to_start(run_dir: Path) -> str:
    if _started(StageStore(run_dir / COARSE)):
        return f"its coarse stage did not finish: hpsearch coarse SPEC --out {run_dir} --resume finishes it"
    return f"run hpsearch coarse SPEC --out {run_dir} first"


def load_stage(run_dir: Path, stage: str) -> tuple[Spec, list[TrialResult], dict[str, Any]]:
    """A finished stage's resolved spec, trial records and results document."""
    path = run_dir / stage
    spec = load_spec(path / "spec.yaml")
    doc = read_json(path / "results.json")
    # The trials the finished stage ranked, each by its final record: not the interrupted records
    # of a resumed stage, nor a line that does not belong to it.
    ranked = (
        {row.get("trial") for row in doc.get("ranked", []) if isinstance(row, dict)} if isinstance(doc, dict) else set()
    )
    final = StageStore(path).final_trials()
    return spec, [final[t] for t in sorted(final) if t in ranked], doc


def run_refine(
    run_dir: Path,
    options: RefineOptions,
    on_data: ProgressFn | None = None,
    progress: StageProgress | None = None,
    on_plan: Callable[[list[RangePlan]], None] | None = None,
) -> RefineOutcome:
    """Plan the next stage from the latest one (narrower around its top-k, outward at an edge),
    train longer without lr decay, and never re-run a configuration already trained at that budget."""
    done = stages(run_dir)
    if not done:
        raise StoreError(f"{run_dir}: no finished stage to refine; {_how_to_start(run_dir)}")
    previous = done[-1]
    if options.resume and not _started(StageStore(run_dir / f"refine-{len(done)}")):
        # Nothing was interrupted: --resume never starts a new stage, so running it twice is harmless.
        raise NothingToResume(
            f"nothing to resume in {run_dir}: its newest stage, {previous}, finished; "
            f"hpsearch refine {run_dir} (without --resume) plans the next one"
        )
    spec, results, previous_doc = load_stage(run_dir, previous)
    top_k = options.top_k or spec.refine.top_k
    top = top_complete(results, top_k)
    if not top:
        raise StoreError(f"{run_dir / previous}: no complete trial to refine around")
    plans = plan_ranges(spec.search.space, top, edges(spec.search.space, top[0]))
    if on_plan:
        on_plan(plans)
    new_spec = _refined_spec(spec, plans, options, previous_trials=len(results))
    trained = {_config_key(c) for stage in done for c in _stage_configs(run_dir, stage)}
    configs: list[TrialConfig] = []
    skipped: list[TrialConfig] = []
    for cfg in trial_configs(new_spec, _sampler(new_spec, str(run_dir / previous / "spec.yaml"))):
        key = _config_key(cfg)
        (skipped if key in trained else configs).append(cfg)
        trained.add(key)  # a configuration drawn twice in this stage also trains once
    if not configs:  # everything planned is already trained: a stage with no trials is no stage
        return RefineOutcome(None, previous, plans, [jsonable(c.params) for c in skipped])
    stage = f"refine-{len(done)}"
    store = StageStore(run_dir / stage)
    resuming = _started(store)
    if resuming and not options.resume:
        raise StoreError(
            f"{store.path}: an earlier refine into this stage did not finish; finish it with "
            f"hpsearch refine {run_dir} --resume (and the same options), or remove the folder to plan it again"
        )
    if resuming:
        refuse_changed_spec(store, new_spec, f"remove {store.path} to plan it again")
    if options.execution.ray is not None:
        preflight(options.execution.ray)
    # The data root the stage used before, else the previous stage's, unless the command line gives one.
    data_root = options.data_root or _previous_data_root(store.path if resuming else run_dir / previous)
    data = load_data(new_spec, data_root, on_data, str(run_dir / previous / "spec.yaml"))
    entry = {
        "stage": stage,
        "planned_from": previous,
        "top_k": top_k,
        "top_trials": [r.trial for r in top],
        "trials": len(configs),
        "epochs": new_spec.train.epochs,
        "lr_decay": new_spec.train.lr_decay,
        "ranges": {p.name: p.to_dict() for p in plans},
        "skipped_already_trained": [c.params for c in skipped],
    }
    history = [*previous_doc.get("history", []), jsonable(entry)]
    spec_path = str(run_dir / previous / "spec.yaml")
    stage_options = StageOptions(data_root=data_root, command=options.command, execution=options.execution)
    with store.lock():
        if not resuming:
            store.create()
        outcome = _run_stage(store, new_spec, spec_path, stage_options, configs, data, history, progress, resuming)
    return RefineOutcome(outcome, previous, plans, [jsonable(c.params) for c in skipped])


def _previous_data_root(stage_dir: Path) -> Path | None:
    try:
        info = read_json(stage_dir / "run.json") if (stage_dir / "run.json").is_file() else {}
    except StoreError:
        info = {}
    root = info.get("data_root") if isinstance(info, dict) else None
    return Path(root) if root else None


def _refined_spec(spec: Spec, plans: list[RangePlan], options: RefineOptions, previous_trials: int) -> Spec:
    data = spec.model_dump()
    data["search"]["space"] = {p.name: p.new.model_dump(exclude_none=True) for p in plans}
    data["search"]["trials"] = options.trials or spec.refine.trials or previous_trials
    # A new seed per stage: the same seed would redraw the same positions in the new ranges.
    data["search"]["seed"] = spec.search.seed + 1
    data["search"]["sampler"] = Sampler.RANDOM
    data["train"]["epochs"] = options.epochs or max(1, round(spec.train.epochs * spec.refine.epochs_factor))
    data["train"]["lr_decay"] = spec.refine.lr_decay
    space = data["search"]["space"]
    if "epochs" in space:
        # Searched epochs would override the longer training: --epochs fixes them, otherwise the
        # searched range itself is stretched by the same factor.
        if options.epochs or "values" in space["epochs"]:
            del space["epochs"]
        else:
            factor = spec.refine.epochs_factor
            space["epochs"] = {
                **space["epochs"],
                "low": round(space["epochs"]["low"] * factor),
                "high": max(round(space["epochs"]["high"] * factor), round(space["epochs"]["low"] * factor) + 1),
            }
    return Spec.model_validate(data)


def _stage_configs(run_dir: Path, stage: str) -> list[TrialConfig]:
    spec, results, _ = load_stage(run_dir, stage)
    out = []
    for r in results:
        params = {k: _restore(v) for k, v in r.params.items()}
        resolved = spec.resolved(params)
        out.append(TrialConfig(r.trial, params, resolved.model, resolved.train, spec.search.seed))
    return out


def _restore(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _config_key(cfg: TrialConfig) -> str:
    """What makes two trainings the same: the whole model and training setup, budget included."""
    return json.dumps(
        {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")}, sort_keys=True
    )


@dataclass
class ReportOutcome:
    stages: list[StageData]
    ranked: list[TrialResult]  # every trial of every stage, best first
    stage_of: list[str]  # the stage of each ranked trial
    param_names: list[str]
    plots: list[Path]
    results_path: Path


def run_report(run_dir: Path) -> ReportOutcome:
    """Plots of every stage under RUN/report/, and one ranked table across stages (with each trial's
    stage and curve label) as RUN/report/results.json and results.md."""
    names = stages(run_dir)
    if not names:
        raise StoreError(f"{run_dir}: no finished stage to report on; {_how_to_start(run_dir)}")
    data = []
    for name in names:
        spec, results, _ = load_stage(run_dir, name)
        data.append(StageData(name, spec, results))
    owner = {id(r): s.name for s in data for r in s.results}
    ranked = rank([r for s in data for r in s.results])
    stage_of = [owner[id(r)] for r in ranked]
    params = sorted({p for s in data for p in s.spec.search.space})
    out = StageStore(run_dir / "report")
    out.make_dir()
    plots = write_report_plots(data, out.path)
    doc = results_document("all", ranked, [], {"stages": names})
    for row, stage in zip(doc["ranked"], stage_of, strict=True):
        row["stage"] = stage
    out.write_json("results.json", doc)
    out.write_text("results.md", f"# {data[0].spec.name}: all stages\n\n" + markdown_table(ranked, params, stage_of))
    return ReportOutcome(data, ranked, stage_of, params, plots, out.path / "results.json")
