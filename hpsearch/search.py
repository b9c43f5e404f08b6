"""The stage driver: plan trials -> execute -> record -> rank. The one module that knows the order."""

from __future__ import annotations

import datetime as dt
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch

from hpsearch import __version__
from hpsearch.data import Dataset, ProgressFn, build_dataset
from hpsearch.errors import SpecError, StoreError
from hpsearch.rank import Edge, edges, rank
from hpsearch.report import csv_table, markdown_report, results_document
from hpsearch.sanity import SanityReport, StepCallback, run_sanity_checks, spec_with_lr_range
from hpsearch.space import TrialSampler
from hpsearch.spec import Spec, spec_to_yaml
from hpsearch.store import StageStore, atomic_write_text, pick_run_dir
from hpsearch.trial import TrialConfig, TrialResult, TrialState, resolve_device, run_trial

RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class StageOptions:
    out: Path | None = None  # the run directory; None: runs/<name> (or -2, -3, ... if taken)
    data_root: Path | None = None
    command: tuple[str, ...] = ()


@dataclass
class StageOutcome:
    run_dir: Path
    stage_dir: Path
    stage: str
    ranked: list[TrialResult]
    edges: list[Edge]
    param_names: list[str]

    @property
    def best(self) -> TrialResult | None:
        return self.ranked[0] if self.ranked and self.ranked[0].state is TrialState.COMPLETE else None


TrialCallback = Callable[[TrialResult, int, int, TrialResult | None], None]  # result, done, total, best


def with_overrides(spec: Spec, trials: int | None = None, epochs: int | None = None, seed: int | None = None) -> Spec:
    """The spec with command-line overrides applied, validated like the file."""
    data = spec.model_dump()
    if trials is not None:
        data["search"]["trials"] = trials
    if seed is not None:
        data["search"]["seed"] = seed
    if epochs is not None:
        data["train"]["epochs"] = epochs
    return Spec.model_validate(data)


def trial_configs(spec: Spec, sampler: TrialSampler) -> list[TrialConfig]:
    configs = []
    for i in range(sampler.n_trials):
        params = sampler.params(i)
        trial_spec = spec.resolved(params)
        configs.append(TrialConfig(i, params, trial_spec.model, trial_spec.train, spec.search.seed))
    return configs


def load_data(spec: Spec, data_root: Path | None, progress: ProgressFn | None) -> Dataset:
    data = build_dataset(spec.data, data_root, progress, seed=spec.search.seed)
    return data.to(resolve_device(spec.train.device))


def run_coarse(
    spec: Spec,
    spec_path: str,
    options: StageOptions,
    on_data: ProgressFn | None = None,
    on_trial: TrialCallback | None = None,
) -> StageOutcome:
    """Run the coarse stage of `spec` into RUN/coarse and return the ranked outcome."""
    try:
        sampler = TrialSampler(spec.search)
    except SpecError as e:
        raise SpecError(f"{spec_path}: {e}") from None
    configs = trial_configs(spec, sampler)
    # Data first: a missing dataset leaves no half-made run directory behind.
    data = load_data(spec, options.data_root, on_data)
    run_dir = options.out if options.out is not None else pick_run_dir(RUNS_DIR, spec.name)
    store = StageStore(run_dir / "coarse")
    store.create()
    store.write_text("spec.yaml", spec_to_yaml(spec))
    run_info = _run_info(spec, spec_path, options)
    store.write_json("run.json", run_info)
    results: list[TrialResult] = []
    best: TrialResult | None = None
    for cfg in configs:
        result = run_trial(cfg, data)
        store.append_trial(result)
        results.append(result)
        best = _better(result, best)
        if on_trial:
            on_trial(result, len(results), len(configs), best)
    run_info["end_time"] = _now()
    store.write_json("run.json", run_info)
    return write_stage_results(store, spec, "coarse", results, run_dir)


def _better(result: TrialResult, best: TrialResult | None) -> TrialResult | None:
    if result.state is not TrialState.COMPLETE:
        return best
    return result if best is None or rank([result, best])[0] is result else best


def write_stage_results(
    store: StageStore, spec: Spec, stage: str, results: list[TrialResult], run_dir: Path
) -> StageOutcome:
    ranked = rank(results)
    best = ranked[0] if ranked and ranked[0].state is TrialState.COMPLETE else None
    edge_list = edges(spec.search.space, best)
    names = sorted(spec.search.space)
    doc = results_document(stage, ranked, edge_list, {"name": spec.name, "metric": "val_acc"})
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
    data = load_data(spec, options.data_root, on_data)
    report = run_sanity_checks(spec, data, on_step)
    run_dir = options.out if options.out is not None else RUNS_DIR / spec.name
    store = StageStore(run_dir / "sanity")
    store.make_dir()
    doc = {"spec_path": spec_path, **report.to_dict(), "run": _run_info(spec, spec_path, options)}
    store.write_json("report.json", doc)
    written = None
    if write_spec is not None and report.recommended_lr is not None:
        low, high = report.recommended_lr
        header = f"# Written by hpsearch sanity-check from {spec_path}: lr range from the learning-rate probe.\n"
        atomic_write_text(write_spec, header + spec_to_yaml(spec_with_lr_range(spec, low, high)))
        written = write_spec
    return SanityOutcome(report, store.path / "report.json", written)
