"""What a stage checks and records before it trains: that a resume uses the same spec and network
code, the user's network tried on one batch, the data's warnings, and the run.json it starts from."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
import torch

from hpsearch.data import Dataset, resolve_device, training_set_size
from hpsearch.errors import SpecError
from hpsearch.runs.read import RUN_INFO, read_document, recorded_run_info
from hpsearch.runs.records import TrialConfig, planned_params
from hpsearch.runs.store import StageStore, utc_now
from hpsearch.search.space import trial_configs
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.lint import data_warnings, split_note
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import StageOptions
from hpsearch.spec.schema import ModelSpec, Spec
from hpsearch.stages.base import Stage
from hpsearch.training.factory import FactorySource, check_model, describe, disk_source
from hpsearch.version import __version__


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
    planned = planned_params(new)
    return all(planned.get(t) == params for t, params in planned_params(old).items())


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


def new_run_info(spec: Spec, spec_path: str | None, options: StageOptions) -> dict[str, Any]:
    return {
        "hpsearch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(resolve_device(spec.train.device)),
        "command": list(options.command) or None,  # None: not started from a command line (the Python API)
        "spec_path": spec_path,
        "data_root": str(options.data_root) if options.data_root else None,
        "seed": spec.search.seed,
        "start_time": utc_now(),
        "end_time": None,
    }


def resumed_run_info(store: StageStore, stage: Stage, options: StageOptions) -> dict[str, Any]:
    """run.json of a resumed stage: the first start kept, each resume's time and command added."""
    info = read_document(store.path, RUN_INFO)
    if info is None:
        info = new_run_info(stage.spec, stage.spec_path, options)
    info.setdefault("resumed", []).append({"time": utc_now(), "command": list(options.command) or None})
    info["end_time"] = None
    return info
