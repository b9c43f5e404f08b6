"""How a stage's trials are trained: one `Strategy` per way, chosen in one place (`strategy_for`).

`AllAtOnce` trains every planned trial to its end; `Waves` (sampler: tpe) trains the planned trials,
then asks the sampler for wave after wave of proposals until search.trials; `Rungs` (search.halving)
trains rung by rung, its first rung in `Waves` when the sampler proposes (tpe + halving: rungs over
waves). A new sampler or stopping rule is a new class here, not another branch in the stage driver.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

from hpsearch.data import DataRecipe, Dataset
from hpsearch.executors.local import execute
from hpsearch.executors.ray import ray_session
from hpsearch.runs.records import (
    PrecisionChoice,
    TrialConfig,
    TrialEvents,
    TrialResult,
    TrialStart,
    TrialState,
    epochs_text,
    planned_params,
)
from hpsearch.runs.store import Checkpoints, StageStore
from hpsearch.search.halving import (
    CurrentRung,
    RungLeaders,
    keep_count,
    planned_counts,
    replay,
    rung_epochs,
    rung_records,
)
from hpsearch.search.space import trial_config
from hpsearch.search.tpe import propose, record_wave
from hpsearch.spec.options import ExecOptions
from hpsearch.spec.schema import HalvingSpec, SearchSpec
from hpsearch.stages.base import Stage, StageTracker
from hpsearch.training.factory import FactorySource
from hpsearch.training.populations.plan import shaping_params
from hpsearch.training.precision import resolved

CHECKPOINTS = "checkpoints"  # a halving stage's folder of trial states between rungs


@dataclass(frozen=True)
class Trainer:
    """What every strategy trains trials with: the data, where populations run, the recipe worker
    processes load the data from, a user's factory file as the stage read it, and the precision the
    stage chose for train.precision: auto."""

    data: Dataset
    execution: ExecOptions
    recipe: DataRecipe
    factory: FactorySource | None
    precision: PrecisionChoice | None = None  # what train.precision: auto trains in (stages.stage)

    def train(self, configs: list[TrialConfig], events: TrialEvents) -> None:
        execute(resolved(configs, self.precision), self.data, self.execution, events, self.recipe, self.factory)


class Strategy(Protocol):
    def run(self, stage: Stage, tracker: StageTracker, trainer: Trainer) -> None:
        """Train the stage's trials not finished before (tracker.finished), each result recorded
        through `tracker`, until the stage has all its results; a proposing strategy adds each
        proposal to tracker.configs once it is recorded."""


def strategy_for(search: SearchSpec) -> Strategy:
    """The one place a stage's strategy is chosen: a proposing sampler (tpe) trains in waves;
    successive halving in rungs, over waves when the sampler proposes."""
    if search.halving is not None:
        return Rungs(first_rung=Waves() if search.proposed else None)
    return Waves() if search.proposed else AllAtOnce()


def start_progress(stage: Stage, tracker: StageTracker, todo: list[TrialConfig]) -> None:
    """The bar's total: the trial-epochs of `todo`, and of the trials still to be proposed (tpe)."""
    if tracker.progress:
        unproposed = (stage.planned - len(tracker.configs)) * stage.spec.train.epochs
        trial_epochs = sum(c.train.epochs for c in todo) + unproposed
        tracker.progress.start(stage.planned, trial_epochs, len(tracker.finished))


class AllAtOnce:
    """Every planned trial not yet finished, trained to its end (random and grid search)."""

    def run(self, stage: Stage, tracker: StageTracker, trainer: Trainer) -> None:
        todo = tracker.todo(tracker.finished)
        start_progress(stage, tracker, todo)
        trainer.train(todo, tracker.events())


class Waves:
    """sampler: tpe. The planned trials not yet finished train first: the startup trials, or on a
    resume the proposals recorded before the stop; then wave after wave of proposals, each asked from
    every trial finished before it and recorded before it trains, until search.trials."""

    def run(self, stage: Stage, tracker: StageTracker, trainer: Trainer) -> None:
        start_progress(stage, tracker, tracker.todo(tracker.finished))
        self.train(stage, tracker, trainer, tracker.events(), sampler_history(stage, tracker.finished))

    def train(
        self,
        stage: Stage,
        tracker: StageTracker,
        trainer: Trainer,
        events: TrialEvents,
        history: dict[int, TrialResult],
        until: float | None = None,
    ) -> None:
        """The waves, the sampler told `history` (trial id -> result) and each result as it comes.
        `until`: successive halving's first rung, where every trial stops."""
        record = events.on_result
        assert record is not None

        def on_result(r: TrialResult) -> None:
            record(r)
            history[r.trial] = r

        execution = trainer.execution
        with ray_session(execution.ray) if execution.ray is not None else nullcontext():
            while True:
                todo = tracker.todo(history)
                if not todo:
                    if len(tracker.configs) >= stage.planned:
                        return
                    todo = _ask_wave(stage, tracker.configs, list(history.values()))
                todo = [replace(c, until=until) for c in todo]
                trainer.train(todo, replace(events, on_result=on_result))


def sampler_history(stage: Stage, finished: dict[int, TrialResult]) -> dict[int, TrialResult]:
    """The results a sampler learns from before a wave: the stage's finished trials, and ahead of
    them the earlier stages' trials (stage.prior) under ids -1, -2, ... that no trial of the stage has."""
    prior = {-1 - i: replace(r, trial=-1 - i) for i, r in enumerate(stage.prior)}
    return {**prior, **finished}


def _ask_wave(stage: Stage, configs: list[TrialConfig], history: list[TrialResult]) -> list[TrialConfig]:
    """The next wave of proposals, recorded, then added to `configs`, the stage's trials so far."""
    settings = stage.spec.search.tpe_settings
    first = len(configs)
    shared = shaping_params(stage.spec) if settings.same_shape else []
    proposals = propose(stage.spec.search, history, first, min(settings.wave, stage.planned - first), shared)
    wave = 1 + (first - settings.startup_trials) // settings.wave  # the startup trials are wave 0
    record_wave(stage.store.path, wave, first, proposals, len(history))
    wave_configs = [trial_config(stage.spec, first + i, p) for i, p in enumerate(proposals)]
    configs.extend(wave_configs)  # recorded: a stop from here on resumes with these trials
    return wave_configs


@dataclass(frozen=True)
class Rungs:
    """Successive halving: train rung by rung, each rung's trials going on from their states at the
    rung before; decisions are replayed from the records (halving.replay), so a stage stopped anywhere
    resumes to the same decisions. Only states that may still go on are kept on disk. `first_rung`:
    the strategy that proposes the first rung's trials (tpe), else every planned trial trains it."""

    first_rung: Waves | None = None

    def run(self, stage: Stage, tracker: StageTracker, trainer: Trainer) -> None:
        halving = stage.spec.search.halving
        assert halving is not None
        rungs = rung_epochs(stage.spec.train.epochs, halving)
        checkpoints = Checkpoints(stage.store.path / CHECKPOINTS)
        if self.first_rung is not None:
            _propose_first_rung(self.first_rung, stage, tracker, trainer, checkpoints, rungs)
        by_id = {c.trial_id: c for c in tracker.configs}
        plan = planned_params(tracker.configs)
        started = False
        while True:
            records = stage.store.read_trials()
            current = replay(rung_records(records, plan), list(by_id), rungs, halving.eta)
            _record_stopped(stage.store, current, records, checkpoints)
            if current.rung is None:
                break
            if not started:
                _start_halving_progress(tracker, current, rungs, halving.eta)
                started = True
            _train_rung(current, by_id, rungs, halving, tracker, trainer, checkpoints)
        checkpoints.remove_all()


def _train_rung(
    current: CurrentRung,
    by_id: dict[int, TrialConfig],
    rungs: list[float],
    halving: HalvingSpec,
    tracker: StageTracker,
    trainer: Trainer,
    checkpoints: Checkpoints,
) -> None:
    """The current rung's trials not yet recorded, each from its state at the rung before."""
    k = current.rung
    assert k is not None
    configs, missing = _rung_configs(current, by_id, rungs, checkpoints)
    if missing:
        tracker.notes.append(
            f"{checkpoints.path}: {missing} trial state(s) of rung {k - 1} were missing; "
            f"those trials trained again from the start"
        )
    last = k == len(rungs) - 1
    leaders = RungLeaders(0 if last else keep_count(current.size, halving.eta), current.done)
    tracker.begin_rung(k, current.size, len(current.done))
    if tracker.progress:
        tracker.progress.rung(_rung_line(k, rungs, current.size, halving.eta))
    on_result = _rung_recorder(k, leaders, checkpoints, tracker)
    trainer.train(configs, replace(tracker.events(), on_result=on_result))


def _rung_recorder(
    k: int, leaders: RungLeaders, checkpoints: Checkpoints, tracker: StageTracker
) -> Callable[[TrialResult], None]:
    """What happens to each result of rung k: its state kept while it may still go on (written
    before the record that says it exists), the record appended, states no longer needed removed."""

    def on_result(r: TrialResult) -> None:
        r.rung = k
        if r.state is TrialState.COMPLETE and r.val_acc is not None:
            r.rung_val_accs = [*r.rung_val_accs[:k], r.val_acc]
        pushed_out: list[int] = []
        if r.checkpoint is not None:
            admitted, pushed_out = leaders.admit(r)
            if admitted:
                checkpoints.write(r.trial, k, r.checkpoint)
            r.checkpoint = None
        tracker.record(r)
        if k:
            checkpoints.remove(r.trial, k - 1)
        for t in pushed_out:
            checkpoints.remove(t, k)

    return on_result


def _propose_first_rung(
    waves: Waves,
    stage: Stage,
    tracker: StageTracker,
    trainer: Trainer,
    checkpoints: Checkpoints,
    rungs: list[float],
) -> None:
    """sampler: tpe with successive halving: the first rung trains wave by wave, each wave proposed
    from the first-rung results before it (every trial at the same budget); once all search.trials
    have their first-rung result, the rungs after it decide among them as without tpe."""
    halving = stage.spec.search.halving
    assert halving is not None
    plan = planned_params(tracker.configs)
    first = {t: by_rung[0] for t, by_rung in rung_records(stage.store.read_trials(), plan).items() if 0 in by_rung}
    if len(tracker.configs) >= stage.planned and len(first) == len(tracker.configs):
        return  # the first rung is done: the rungs after it go on as usual
    leaders = RungLeaders(keep_count(stage.planned, halving.eta), list(first.values()))
    tracker.begin_rung(0, stage.planned, len(first))
    if tracker.progress:
        tracker.progress.start(stage.planned, (stage.planned - len(first)) * rungs[0], len(first))
        line = _rung_line(0, rungs, stage.planned, halving.eta)
        tracker.progress.rung(line + ", proposed by TPE as trials finish")
    events = replace(tracker.events(), on_result=_rung_recorder(0, leaders, checkpoints, tracker))
    waves.train(stage, tracker, trainer, events, sampler_history(stage, first), until=rungs[0])


def _rung_line(k: int, rungs: list[float], size: int, eta: int) -> str:
    """'rung 1 of 0-2: 9 trials (the best 1/3 of rung 0) train on from epoch 1 to 3'"""
    where = f"rung {k} of 0-{len(rungs) - 1}"
    trials = f"{size} trial{'s' if size != 1 else ''}"
    if k == 0:
        return f"{where}: {trials} train {epochs_text(rungs[0])} epoch{'s' if rungs[0] != 1 else ''} each"
    start, end = epochs_text(rungs[k - 1]), epochs_text(rungs[k])
    return f"{where}: {trials} (the best 1/{eta} of rung {k - 1}) train on from epoch {start} to {end}"


def _rung_configs(
    current: CurrentRung, by_id: dict[int, TrialConfig], rungs: list[float], checkpoints: Checkpoints
) -> tuple[list[TrialConfig], int]:
    """The rung's trials to train, each to the rung's end and from its state at the rung before;
    and how many had no state on disk (those train again from the start: the same result, up to
    float rounding)."""
    k = current.rung
    assert k is not None
    until = rungs[k] if k < len(rungs) - 1 else None
    out, missing = [], 0
    for t in current.todo:
        cfg = replace(by_id[t], until=until)
        if k:
            saved = checkpoints.read(t, k - 1)
            if saved is None:
                missing += 1
            else:
                cfg = replace(cfg, start=TrialStart(current.starts[t], saved))
        out.append(cfg)
    return out, missing


def _record_stopped(
    store: StageStore, current: CurrentRung, records: list[TrialResult], checkpoints: Checkpoints
) -> None:
    """A STOPPED record for each trial a rung's decision stopped (once), and its state removed."""
    already = {r.trial for r in records if r.state is TrialState.STOPPED}
    for t, r in sorted(current.results.items()):
        if r.state is TrialState.STOPPED and t not in already:
            store.append_trial(r)
            if r.rung is not None:
                checkpoints.remove(t, r.rung)


def _start_halving_progress(tracker: StageTracker, current: CurrentRung, rungs: list[float], eta: int) -> None:
    """The bar's total: the trial-epochs left, as planned from where the stage stands."""
    if tracker.progress is None:
        return
    k = current.rung or 0
    counts = planned_counts(current.size, rungs[k:], eta)
    ends = [rungs[k - 1] if k else 0, *rungs[k:]]
    left = len(current.todo) * (ends[1] - ends[0])
    left += sum(c * (end - start) for c, start, end in zip(counts[1:], ends[1:-1], ends[2:], strict=True))
    final = sum(1 for r in current.results.values() if is_final(r, len(rungs)))
    tracker.progress.start(tracker.total, left, final)


def is_final(r: TrialResult, rungs: int) -> bool:
    """A halving trial whose fate is known: stopped, failed, or at the last rung."""
    return r.state is not TrialState.COMPLETE or r.rung == rungs - 1
