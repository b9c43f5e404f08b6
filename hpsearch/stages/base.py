"""base"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpsearch.analysis.rank import rank
from hpsearch.analysis.verdicts import Edge
from hpsearch.runs.records import (
    CurveData,
    TrialConfig,
    TrialEvents,
    TrialResult,
    TrialState,
    failure_summary,
)
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
    spec_path: str | None  # the file errors and run.json name; None: a Spec built in code
    configs: list[TrialConfig]
    history: list[dict[str, Any]]
    factory: FactorySource | None = None  # a user's factory file as the stage read it: run and shipped
    prior: tuple[TrialResult, ...] = ()  # sampler: tpe: earlier stages' trials the model is told first

    @property
    def planned(self) -> int:
        """The trials the stage trains: its configs; with sampler: tpe, search.trials (`configs`
        then holds the trials planned so far, and grows in place as the model proposes more)."""
        return planned_trials(self.spec.search, self.configs)


class StageBook:
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


def _better(result: TrialResult, best: TrialResult | None) -> TrialResult | None:
    if result.state is not TrialState.COMPLETE:
        return best
    return result if best is None or rank([result, best])[0] is result else best
