"""What every stage driver shares: the stage being run (`Stage`), the outcome it returns, the
progress callbacks the CLI passes, and `StageTracker`, which appends a stage's records as they arrive and
keeps the running trials and the best so far."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from hpsearch.analysis.rank import rank
from hpsearch.analysis.verdicts import Edge
from hpsearch.runs.records import CurveData, TrialConfig, TrialEvents, TrialResult, TrialState, failure_summary
from hpsearch.runs.store import StageStore
from hpsearch.search.median_stop import with_bars
from hpsearch.search.space import planned_trials
from hpsearch.spec.schema import MedianStopSpec, Spec
from hpsearch.training.factory import FactorySource

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
    precision: str | None = None  # what its trials trained in (run.json's choice); None: searched per trial

    @property
    def best(self) -> TrialResult | None:
        return self.ranked[0] if self.ranked and self.ranked[0].state is TrialState.COMPLETE else None

    @property
    def failures(self) -> str | None:
        """'k of N trials failed (first: ...)', or None when no trial failed."""
        return failure_summary(self.ranked)


class TrainingProgress(Protocol):
    """What a driver reports while it trains, a stage's trials or the final's runs (the CLI draws it
    as a progress bar)."""

    def start(self, trials: int, trial_epochs: float, finished: int = 0) -> None: ...

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None: ...

    def epochs_done(self, count: float) -> None: ...


class StageProgress(TrainingProgress, Protocol):
    """A stage's progress: that, and with successive halving each rung as it begins."""

    def rung(self, text: str) -> None: ...  # a rung begins, described in one line


@dataclass(frozen=True)
class Stage:
    """A stage ready to run: where it is written, what it trains, and the plan history it records.
    `configs` are the trials planned before it trains; with sampler: tpe, the startup trials and the
    proposals an earlier run recorded (with_proposals), those proposed while it trains being the
    tracker's (StageTracker.configs)."""

    store: StageStore
    spec: Spec
    spec_path: str | None  # the file errors and run.json name; None: a Spec built in code
    configs: tuple[TrialConfig, ...]
    history: tuple[dict[str, Any], ...]  # the stages before it and itself: planned from what, trials, epochs
    factory: FactorySource | None = None  # a user's factory file as the stage read it: run and shipped
    prior: tuple[TrialResult, ...] = ()  # sampler: tpe: earlier stages' trials the model is told first

    @property
    def planned(self) -> int:
        """The trials the stage trains: its configs; with sampler: tpe, search.trials (most of them
        proposed as it trains)."""
        return planned_trials(self.spec.search, self.configs)


class StageTracker:
    """Tracks a stage while it trains: appends each record as it arrives (and tells the progress),
    and keeps the stage's trials so far (a proposing sampler adds to them), the running trials
    (marked interrupted on a stop), the best so far and the notes."""

    def __init__(self, stage: Stage, finished: dict[int, TrialResult], progress: StageProgress | None) -> None:
        self.planned_stage, self.store, self.total, self.progress = stage, stage.store, stage.planned, progress
        self.median_stop: MedianStopSpec | None = stage.spec.search.median_stop
        self.configs = list(stage.configs)  # the planned trials, then each proposal once it is recorded
        self.finished = dict(finished)  # trial id -> its final record, of the trials finished before this command
        self.prepared = self.judged = 0  # median_stop: trials that started training, and those given bars
        self.results = list(finished.values())
        self.running: dict[int, TrialConfig] = {}
        self.best: TrialResult | None = None
        self.notes: list[str] = []  # warnings found while training, shown with the outcome
        self.rung_count: tuple[int, int] | None = None  # halving: (recorded, trials) of the rung
        for r in self.results:
            self.best = _better(r, self.best)

    def todo(self, done: Collection[int]) -> list[TrialConfig]:
        """The stage's trials so far whose id is not in `done`."""
        return [c for c in self.configs if c.trial_id not in done]

    def trained_stage(self) -> Stage:
        """The stage with every trial planned or proposed so far: what its results are read for."""
        return replace(self.planned_stage, configs=tuple(self.configs))

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


def _better(result: TrialResult, best: TrialResult | None) -> TrialResult | None:
    if result.state is not TrialState.COMPLETE:
        return best
    return result if best is None or rank([result, best])[0] is result else best
