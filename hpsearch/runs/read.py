"""Reading back what a run's stages wrote: which stages finished, a finished stage's spec, records
and results (`load_stage`), what its accuracies were measured on (`stage_curve_data`), what its
run.json recorded, and the command that finishes or starts a stage."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from hpsearch.errors import StoreError
from hpsearch.runs.records import CurveData, PrecisionChoice, TrialResult
from hpsearch.runs.store import StageStore, read_json
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import AUTO_VAL_CAP, DataSpec, Spec

COARSE = "coarse"
RUN_INFO, RESULTS = "run.json", "results.json"  # what a stage records of its command, and its ranked results


def stages(run_dir: Path) -> list[str]:
    """The finished stages of a run, in order: coarse, refine-1, refine-2, ... (a stage stopped by
    Ctrl-C has results marked partial: it is not finished)."""
    found = []
    name = COARSE
    while _finished(run_dir / name):
        found.append(name)
        name = f"refine-{len(found)}"
    return found


def _finished(stage_dir: Path) -> bool:
    if not (stage_dir / RESULTS).is_file():
        return False
    doc = read_document(stage_dir, RESULTS)
    return doc is None or not is_partial(doc)  # unreadable: load_stage names the file


def read_document(folder: Path, name: str) -> dict[str, Any] | None:
    """A stage's run.json or results.json (the final's too) as written; None when it is missing, cannot
    be read or is not a JSON object. (load_stage reads a finished stage's results strictly, naming the file.)"""
    try:
        doc = read_json(folder / name)
    except StoreError:
        return None
    return doc if isinstance(doc, dict) else None


def is_partial(doc: Any) -> bool:
    """A results.json written when its stage was stopped (Ctrl-C): the trials that finished, not the stage."""
    return isinstance(doc, dict) and bool(doc.get("partial"))


def how_to_start(run_dir: Path) -> str:
    """What to run when a run has no finished stage yet, naming the spec its coarse stage ran."""
    if StageStore(run_dir / COARSE).started:
        return f"its coarse stage did not finish: {resume_command(run_dir, COARSE)} finishes it"
    return f"run {resume_command(run_dir, COARSE).removesuffix(' --resume')} first"


def resume_command(run_dir: Path, stage: str) -> str:
    """The command that finishes a stage of `run_dir`; for coarse, with the spec path its run.json
    recorded (SPEC when there is none)."""
    out = shlex.quote(str(run_dir))
    if stage != COARSE:
        return f"hpsearch refine {out} --resume"
    path = recorded_run_info(run_dir / COARSE).get("spec_path")
    spec = shlex.quote(path) if isinstance(path, str) and path else "SPEC"
    return f"hpsearch coarse {spec} --out {out} --resume"


@dataclass(frozen=True)
class StageData:
    """A finished stage as read back: its name (coarse, refine-1, ...), resolved spec and records."""

    name: str
    spec: Spec
    results: list[TrialResult]


class LoadedStage(NamedTuple):
    """A finished stage as load_stage read it."""

    spec: Spec
    results: list[TrialResult]
    doc: dict[str, Any]  # its results.json
    store: StageStore  # as read: the lines of its trials.jsonl that could not be (`unreadable_note`)


def load_stage(run_dir: Path, stage: str) -> LoadedStage:
    """A finished stage's resolved spec, trial records and results document."""
    path = run_dir / stage
    spec = load_spec(path / "spec.yaml")
    doc = read_json(path / RESULTS)
    # The trials the finished stage ranked, each by its final record: not the interrupted records
    # of a resumed stage, nor a line that does not belong to it.
    ranked = (
        {row.get("trial") for row in doc.get("ranked", []) if isinstance(row, dict)} if isinstance(doc, dict) else set()
    )
    store = StageStore(path)
    final = store.final_trials()
    return LoadedStage(spec, [final[t] for t in sorted(final) if t in ranked], doc, store)


def stage_curve_data(stage_dir: Path, data: DataSpec) -> CurveData:
    """What a stage's accuracies were measured on: its classes (the spec's when it says, else the
    count its run.json recorded from the loaded data: a user's npz or folder) and its validation
    examples (the count run.json recorded: an npz's own x_val or a folder's val/ sets it, not
    data.val_size; the spec's val_size for a stage recorded before the count was kept, or 1,000, the
    most an automatic val_size holds out, when the spec left it out)."""
    info = recorded_run_info(stage_dir)
    classes, val_size = _count(info.get("num_classes"), 2), _count(info.get("val_size"), 1)
    return CurveData(data.known_num_classes or classes, val_size or data.val_size or AUTO_VAL_CAP)


def recorded_precision(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's choice of train.precision as run.json recorded it (precision, asked, reason,
    bf16_speedup); None where it made none (a searched precision, or a stage recorded before)."""
    choice = recorded_run_info(stage_dir).get("precision")
    return choice if isinstance(choice, dict) and isinstance(choice.get("precision"), str) else None


def said_precision(stage_dir: Path) -> str | None:
    """What the tables' title names the stage's trials trained in (PrecisionChoice.said), or None."""
    recorded = recorded_precision(stage_dir)
    choice = None if recorded is None else PrecisionChoice.from_document(recorded)
    return choice.precision.value if choice is not None and choice.said else None


def _count(v: Any, least: int) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= least else None


def previous_data_root(stage_dir: Path) -> Path | None:
    """The data root a stage was run with (its run.json), so a resume or refine finds the same data."""
    root = recorded_run_info(stage_dir).get("data_root")
    return Path(root) if root else None


def recorded_run_info(stage_dir: Path) -> dict[str, Any]:
    """A stage's run.json, or {} when it has none or it cannot be read."""
    return read_document(stage_dir, RUN_INFO) or {}


def stage_num_classes(stage_dir: Path, data: DataSpec) -> int | None:
    """The classes a stage trained on: the spec's when it says (CIFAR-10, synthetic), else the count
    its run.json recorded from the loaded data (a user's npz or folder)."""
    return stage_curve_data(stage_dir, data).num_classes
