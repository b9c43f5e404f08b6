"""What a stage would train, for `coarse --dry-run`: trials, populations, epochs or rungs, sampler,
and an estimate of the time from a few timed steps. `StagePlan` and its lines are pure; `plan_stage`
loads the data (never downloading) and times a few steps of the first population. Nothing trained is
kept, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hpsearch.data.load import load_data
from hpsearch.errors import DataError
from hpsearch.executors.local import default_workers, planned_populations
from hpsearch.runs.read import COARSE, previous_data_root
from hpsearch.runs.records import TrialConfig, epochs_text
from hpsearch.search.halving import planned_counts, rung_epochs, trial_epochs
from hpsearch.search.refine import RefinePlan, plan_refine
from hpsearch.search.space import describe_grid, planned_trials, trial_configs
from hpsearch.search.tpe import describe_tpe
from hpsearch.spec.options import ExecOptions, RefineOptions, StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.prepare import prepare_model
from hpsearch.training.populations.group import step_seconds


@dataclass(frozen=True)
class Timing:
    """Training steps timed on the stage's first population: seconds per step of all its trials."""

    step_seconds: float
    steps: int  # steps timed (after one untimed)
    population: int  # trials of the timed population
    trial: int  # its first trial's id
    steps_per_epoch: int  # its batch size over the training examples

    @property
    def trial_epoch_seconds(self) -> float:
        return self.step_seconds * self.steps_per_epoch / self.population


@dataclass(frozen=True)
class StagePlan:
    stage: str
    spec: Spec
    trials: int  # planned (sampler tpe: search.trials, most of them proposed later)
    epochs: list[int]  # train.epochs of each planned trial (tpe: those planned so far)
    sampler: str  # one line: the sampler and what it does
    populations: list[int] | None  # trials in each population of the planned trials; None: not known
    workers: str  # where the populations train: 'in 1 process', 'in 2 worker processes', 'on Ray'
    timing: Timing | None = None
    not_timed: str | None = None  # why there is no estimate

    @property
    def rungs(self) -> list[float] | None:
        halving = self.spec.search.halving
        return rung_epochs(self.spec.train.epochs, halving) if halving is not None else None

    @property
    def trial_epochs(self) -> float:
        """Trial-epochs the stage trains: with halving, when enough trials complete to fill each
        rung (an upper bound); trials proposed later (tpe) at train.epochs."""
        halving = self.spec.search.halving
        if halving is not None and self.rungs is not None:
            return trial_epochs(planned_counts(self.trials, self.rungs, halving.eta), self.rungs)
        return sum(self.epochs) + (self.trials - len(self.epochs)) * self.spec.train.epochs

    @property
    def estimate_seconds(self) -> float | None:
        return None if self.timing is None else self.timing.trial_epoch_seconds * self.trial_epochs

    def describe(self, header: bool = True) -> list[str]:
        """The plan in lines a person reads; without `header`, its first line (the trials, epochs
        and sampler: refine's own plan says them)."""
        epochs = self._epochs_shown()
        size = f"{_count(self.trials, 'trial')} x {epochs} epoch{'' if epochs == '1' else 's'}"
        lines = [f"{self.stage}: {size}, {self.sampler}"] if header else []
        halving = self.spec.search.halving
        at_most = f"{_count(self.trial_epochs, 'trial-epoch')} at most"
        if halving is not None and self.rungs is not None:
            counts = planned_counts(self.trials, self.rungs, halving.eta)
            rungs = ", ".join(f"{c} to epoch {epochs_text(e)}" for c, e in zip(counts, self.rungs, strict=True))
            lines.append(f"successive halving (eta {halving.eta}): {rungs} ({at_most})")
        elif self.spec.search.median_stop is not None:
            lines.append(f"median stopping: trials falling behind stop early ({at_most})")
        else:
            lines.append(f"{_count(self.trial_epochs, 'trial-epoch')} to train")
        lines.append(self._populations_line())
        lines.append(self._estimate_line())
        lines.append("dry run: nothing trained, no run directory written")
        return lines

    def _epochs_shown(self) -> str:
        counts = sorted(set(self.epochs)) or [self.spec.train.epochs]
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

    def _populations_line(self) -> str:
        """'populations: 3 of 16 trials, 1 of 4, trained in 1 process'"""
        if self.populations is None:
            return "populations: sized from memory once the data is loaded"
        which = "populations"
        if self.spec.search.proposed:
            which = "the startup trials' populations"
        if self.spec.search.halving is not None:
            which = "rung 0's populations"
        return f"{which}: {_sizes(self.populations)}, trained {self.workers}"

    def _estimate_line(self) -> str:
        if self.timing is None or self.estimate_seconds is None:
            return f"estimated time: not estimated: {self.not_timed}"
        t = self.timing
        bound = "at most " if self.spec.search.halving or self.spec.search.median_stop else ""
        step = f"{t.step_seconds:.3g} s a step x {t.steps_per_epoch} steps an epoch / {t.population}"
        return (
            f"estimated time: {bound}~{_duration(self.estimate_seconds)} of training (from {t.steps} timed steps of "
            f"trial {t.trial}'s population of {t.population}: {step} = {t.trial_epoch_seconds:.3g} s a trial-epoch, "
            f"x {epochs_text(self.trial_epochs)}; evaluation, start-up and trials of other shapes not timed)"
        )


def _sizes(populations: list[int]) -> str:
    """'12 of 1 trial', '3 of 16 trials, 1 of 4': how many populations of each size, in plan order."""
    runs: list[tuple[int, int]] = []  # (size, populations of that size in a row)
    for size in populations:
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1] + 1)
        else:
            runs.append((size, 1))
    text = ", ".join(f"{count} of {size}" for size, count in runs)
    return text + (" trial" if runs[-1][0] == 1 and len(runs) == 1 else " trials")


def _count(n: float, unit: str) -> str:
    return f"{epochs_text(n)} {unit}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
