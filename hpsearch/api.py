"""The Python API: the CLI's commands as functions, for notebooks and scripts (the calls, in
hpsearch's own docstring, are re-exported there).

Each function takes its command's options as keyword arguments, named as the CLI's (`--top-k` is
`top_k`); an unknown one is Python's TypeError, a value the command would refuse an OptionError.
Nothing is printed: what the CLI says on stderr is in the result (`warnings`, `notes`), and the
paths in a result are absolute (a notebook may change folder later). Progress goes to `progress=`,
an object with the methods of the CLI's progress bar (stages.base.StageProgress: start,
trial_done, epochs_done, rung; optionally on_data, told of a download; for sanity_check, on_step).
A user's mistake raises an HpsearchError subclass with the CLI's one-line message; Ctrl-C raises
KeyboardInterrupt (StageStopped once trials were saved: call again with resume=True).

What a run records: the `command` of run.json, plan.json and the test ledger is null for a stage
started here (the CLI records its command line). A spec given as a path, or as the Spec load_spec
read from one, is recorded as run.json's spec_path, its relative paths taken from the file's
folder; any other Spec (built in code, or a changed copy) records spec_path null, its relative
data.path and model.factory taken from the current directory and made absolute before the stage
records them (refine reads them back from RUN/coarse/).
The CLI's CI gates (--fail-under, --fail-on-edge) and other renderings (--json, --junit, --dry-run)
have no argument here: a script reads the result (stage.best.val_acc, stage.verdicts) instead.
The library is imported inside each function: importing this module loads no torch.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hpsearch.errors import NothingToTrain, OptionError
from hpsearch.results import FinalResult, Run, SanityResult, StageResult, read_ledger
from hpsearch.spec.load import IN_CODE, parse_spec
from hpsearch.spec.load import load_spec as read_spec
from hpsearch.spec.options import ExecOptions, FinalOptions, FitOn, RayOptions, RefineOptions, StageOptions
from hpsearch.spec.schema import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hpsearch.runs.final import FinalPlan
    from hpsearch.search.refine import RefinePlan
    from hpsearch.stages.base import StageOutcome, StageProgress
    from hpsearch.training.saved_model import Preprocessor

PathLike = str | os.PathLike[str]

__all__ = ["coarse", "final", "load_model", "load_spec", "open_run", "refine", "sanity_check"]


# The Specs load_spec returned, by id: each with the path it was read from. A Spec is frozen, so the
# same object passed to coarse or sanity_check is still that file's spec, and records its path.
_READ_FROM: dict[int, tuple[weakref.ref[Spec], str]] = {}


def load_spec(path: PathLike) -> Spec:
    """Read a YAML spec file and validate it; relative paths in it are from its folder. Passed on
    unchanged, the Spec is recorded as read from `path` (run.json's spec_path)."""
    spec = read_spec(_required_path("path", path))
    key = id(spec)
    _READ_FROM[key] = (weakref.ref(spec, lambda _: _READ_FROM.pop(key, None)), str(path))
    return spec


class CheckProgress(Protocol):
    """What sanity_check reports while it runs (the CLI's progress bar has it)."""

    def on_step(self, name: str, done: int, total: int) -> None: ...


def coarse(
    spec: Spec | PathLike,
    *,
    out: PathLike | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    data_root: PathLike | None = None,
    population: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    progress: StageProgress | None = None,
) -> StageResult:
    """`hpsearch coarse`: the spec's search (random by default) in OUT/coarse (default runs/<name>),
    its trials ranked and a verdict on each searched range. `trials`, `epochs`, `seed` override the
    spec's; `resume`: continue OUT/coarse after a crash or Ctrl-C (the same spec and options)."""
    loaded, spec_path = _spec(spec)
    options = StageOptions(
        out=_path("out", out),
        data_root=_path("data_root", data_root),
        execution=_execution(population, workers, executor, ray_address),
        resume=_flag("resume", resume),
    )
    from hpsearch.spec.load import with_overrides

    loaded = with_overrides(
        loaded, trials=_count("trials", trials), epochs=_count("epochs", epochs), seed=_count("seed", seed, least=0)
    )
    said = _Said()
    _lint(loaded, spec_path, workers, said)
    from hpsearch.stages.coarse import run_coarse

    outcome = run_coarse(
        loaded,
        spec_path,
        options,
        on_data=_on_data(progress),
        progress=progress,
        on_model=said.note,
        on_warning=said.warn,
        on_note=said.note,
    )
    return _stage_result(outcome, said)


def refine(
    run: PathLike,
    *,
    top_k: int | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    data_root: PathLike | None = None,
    population: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    progress: StageProgress | None = None,
) -> StageResult:
    """`hpsearch refine`: the next stage (refine-K) planned from RUN's latest one and run: ranges
    narrowed around the `top_k` best trials (or moved outward where a verdict points past an edge),
    longer training. Raises NothingToTrain when every planned configuration was already trained;
    `resume`: finish an interrupted refine stage (never starts a new one)."""
    run_dir = _required_path("run", run)
    options = RefineOptions(
        top_k=_count("top_k", top_k),
        trials=_count("trials", trials),
        epochs=_count("epochs", epochs),
        data_root=_path("data_root", data_root),
        execution=_execution(population, workers, executor, ray_address),
        resume=_flag("resume", resume),
    )
    said = _Said()
    _lint(None, None, workers, said)
    from hpsearch.stages.refine import run_refine

    def on_plan(plan: RefinePlan) -> None:
        said.notes.extend(plan.describe())
        said.warnings.extend(plan.notes)

    result = run_refine(
        run_dir,
        options,
        on_data=_on_data(progress),
        progress=progress,
        on_plan=on_plan,
        on_model=said.note,
        on_warning=said.warn,
        on_note=said.note,
    )
    if result.outcome is None:
        raise NothingToTrain(
            f"{run_dir}: nothing new to train: every configuration refine planned was already trained at its "
            "budget; raise epochs or trials, or widen the space"
        )
    return _stage_result(result.outcome, said, result.plan)


def sanity_check(
    spec: Spec | PathLike,
    *,
    out: PathLike | None = None,
    data_root: PathLike | None = None,
    write_spec: PathLike | None = None,
    progress: CheckProgress | None = None,
) -> SanityResult:
    """`hpsearch sanity-check`: the lecture's checks before a search (initial loss = ln(C),
    activation statistics at init, overfitting 20 examples, a learning-rate probe), written to
    OUT/sanity/report.json. `write_spec`: a copy of the spec with the probe's lr range."""
    loaded, spec_path = _spec(spec)
    options = StageOptions(out=_path("out", out), data_root=_path("data_root", data_root))
    written = _path("write_spec", write_spec)
    said = _Said()
    _lint(loaded, spec_path, None, said)
    from hpsearch.sanity.probe import lr_range_hint
    from hpsearch.stages.sanity import run_sanity

    outcome = run_sanity(
        loaded,
        spec_path,
        options,
        write_spec=written,
        on_data=_on_data(progress),
        on_step=progress.on_step if progress is not None else None,
        on_model=said.note,
        on_warning=said.warn,
        on_note=said.note,
    )
    report = outcome.report
    if written is not None and outcome.written_spec is None:
        said.warn(f"no lr range to recommend, so {written} was not written")
    elif written is None and (hint := lr_range_hint(loaded, report.recommended_lr)):
        said.note(f"hint: {hint}")
    return SanityResult(
        report.checks,
        report.layers,
        report.probe,
        report.recommended_lr,
        outcome.report_path.absolute(),
        outcome.written_spec.absolute() if outcome.written_spec is not None else None,
        said.warnings,
        said.notes,
    )


def final(
    run: PathLike,
    *,
    top: int | None = None,
    seeds: int | None = None,
    fit_on: str | FitOn | None = None,
    epochs: int | None = None,
    again: bool = False,
    resume: bool = False,
    data_root: PathLike | None = None,
    population: int | None = None,
    workers: int | None = None,
    progress: StageProgress | None = None,
) -> FinalResult:
    """`hpsearch final`: the latest stage's best configurations (the `top` K, default the trials
    tied with the best) trained with `seeds` seeds each (default 3) on `fit_on` ("train+val", the
    default, or "train"), each scored once on the test set, the best network kept (load_model reads
    it). A second final on a run is refused unless `again`; `resume` finishes an interrupted one."""
    run_dir = _required_path("run", run)
    options = FinalOptions(
        top=_count("top", top),
        seeds=_count("seeds", seeds),
        fit_on=_fit_on(fit_on),
        epochs=_count("epochs", epochs),
        again=_flag("again", again),
        data_root=_path("data_root", data_root),
        execution=_execution(population, workers, "local", None),
        resume=_flag("resume", resume),
    )
    said = _Said()
    _lint(None, None, workers, said)
    from hpsearch.stages.final import run_final

    def on_plan(plan: FinalPlan) -> None:
        said.warnings.extend(plan.notes)

    outcome = run_final(
        run_dir,
        options,
        on_data=_on_data(progress),
        progress=progress,
        on_plan=on_plan,
        on_model=said.note,
        on_warning=said.warn,
        on_note=said.note,
    )
    return FinalResult(
        outcome.final_dir.absolute(),
        outcome.plan,
        outcome.rows,
        read_ledger(outcome.final_dir),
        outcome.test_size,
        outcome.seen,
        outcome.model_path.absolute() if outcome.model_path is not None else None,
        said.warnings,
        said.notes + outcome.notes,
        outcome.resumed,
    )


def open_run(run: PathLike) -> Run:
    """A run directory, read only: its finished stages (`stages`), each one's ranked trials
    (`ranked(stage)`), results.json rows and spec, and the final's test ledger. Needs no torch."""
    return Run.open(_required_path("run", run).absolute())


def load_model(run: PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocessor]:
    """The network `hpsearch final` kept in RUN, in eval mode, and the preprocessing it expects:
    `model, preprocess = load_model("runs/demo"); logits = model(preprocess(uint8_images))`."""
    from hpsearch.training.saved_model import load_model as load

    return load(_required_path("run", run), device)


# --------------------------------------------------------------------------- the arguments


class _Said:
    """What a command says on the way (the CLI's stderr), kept for its result."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def warn(self, line: str) -> None:
        self.warnings.append(line)

    def note(self, line: str) -> None:
        self.notes.append(line)


def _spec(spec: Spec | PathLike) -> tuple[Spec, str | None]:
    """The spec, and the path run.json records (None for a Spec object)."""
    if isinstance(spec, Spec):
        read = _READ_FROM.get(id(spec))
        if read is not None and read[0]() is spec:
            return spec, read[1]
        # Validated again from the current directory, as load_spec does from a file's folder: its
        # relative paths become absolute (each stage records its spec, and refine reads it back).
        return parse_spec(spec.model_dump(exclude_unset=True), IN_CODE, Path.cwd()), None
    if isinstance(spec, (str, os.PathLike)):
        path = _required_path("spec", spec)
        return read_spec(path), str(path)
    raise TypeError(f"spec: a hpsearch.Spec or the path of a spec file, not {type(spec).__name__}")


def _count(name: str, value: int | None, least: int = 1) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise OptionError(f"{name}={value!r}: must be an integer >= {least}")
    return value


def _flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{name}={value!r}: must be True or False")
    return value


def _path(name: str, value: PathLike | None) -> Path | None:
    """An empty path would silently mean the current directory, as the CLI's --out says."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(f"{name}={value!r}: must be a path (str or pathlib.Path)")
    if not str(value).strip():
        raise OptionError(f"{name}={value!r}: an empty path; give a folder ('.' for this one)")
    return Path(value)


def _required_path(name: str, value: PathLike) -> Path:
    path = _path(name, value)
    if path is None:
        raise OptionError(f"{name}=None: must be a path (str or pathlib.Path)")
    return path


def _execution(population: int | None, workers: int | None, executor: str, ray_address: str | None) -> ExecOptions:
    if executor not in ("local", "ray"):
        raise OptionError(f"executor={executor!r}: must be 'local' or 'ray'")
    if ray_address is not None and executor != "ray":
        raise OptionError(f"ray_address={ray_address!r} needs executor='ray'")
    ray = RayOptions(address=ray_address) if executor == "ray" else None
    return ExecOptions(population=_count("population", population), workers=_count("workers", workers), ray=ray)


def _fit_on(value: str | FitOn | None) -> FitOn | None:
    if value is None or isinstance(value, FitOn):
        return value
    try:
        return FitOn(value)
    except ValueError:
        names = " or ".join(repr(f.value) for f in FitOn)
        raise OptionError(f"fit_on={value!r}: must be {names}") from None


def _on_data(progress: object) -> Callable[[str, int, int | None], None] | None:
    """The progress object's on_data, told of a download, where it has one (the CLI's bar has)."""
    on_data: Any = getattr(progress, "on_data", None)
    return on_data if callable(on_data) else None


def _lint(spec: Spec | None, spec_path: str | None, workers: int | None, said: _Said) -> None:
    """What the CLI says before any work: the grid a grid search built or TPE's settings, and each
    setting that makes no sense (hpsearch.spec.lint)."""
    from hpsearch.search.space import describe_grid
    from hpsearch.search.tpe import describe_tpe
    from hpsearch.spec.lint import execution_warnings, spec_warnings

    if spec is not None:
        line = describe_grid(spec.search, spec_path or IN_CODE) or describe_tpe(spec.search)
        if line is not None:
            said.note(line)
        said.warnings.extend(spec_warnings(spec))
    said.warnings.extend(execution_warnings(workers, os.cpu_count()))


def _stage_result(outcome: StageOutcome, said: _Said, plan: RefinePlan | None = None) -> StageResult:
    """The stage as the CLI renders it: its warnings in the order the CLI prints them (the data's,
    the stage's, each range's, the lr advice, the failures)."""
    warnings = said.warnings + list(outcome.warnings) + [e.warning for e in outcome.edges if e.warning]
    if outcome.advice:
        warnings.append(outcome.advice)
    if outcome.failures:
        warnings.append(f"{outcome.failures}; tracebacks in {outcome.stage_dir / 'trials.jsonl'}")
    return StageResult(
        outcome.stage,
        outcome.stage_dir.absolute(),
        outcome.ranked,
        {e.name: e for e in outcome.edges},
        outcome.param_names,
        warnings,
        said.notes,
        outcome.data,
        outcome.planned_epochs,
        outcome.resumed,
        plan,
    )
