"""The final stage as it is recorded: its finalists and plan, a row per finalist with each seed's
scores, the outcome, and the test ledger (every evaluation of the test set, one line each: how many
times a run's test set has been looked at). Plain data: no torch."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpsearch.runs.records import TrialConfig, TrialState
from hpsearch.runs.store import read_json_lines
from hpsearch.spec.options import FitOn
from hpsearch.spec.schema import Spec

PLAN, RUNS, LEDGER, MODELS = "plan.json", "runs.jsonl", "test_ledger.jsonl", "models"


@dataclass(frozen=True)
class Finalist:
    """A configuration of the stage that goes to the final: its trial number there and values."""

    trial: int
    params: dict[str, Any]
    search_val_acc: float | None  # its validation accuracy in the stage
    config: TrialConfig  # as the final trains it (epochs applied; the seed is set per run)


@dataclass(frozen=True)
class FinalPlan:
    run_dir: Path
    stage: str  # the stage the finalists come from
    spec: Spec  # that stage's resolved spec
    finalists: list[Finalist]
    seeds: list[int]
    fit_on: FitOn
    epochs: int
    basis: str  # why these finalists, in words
    attempt: int  # 1 for the first final of this run; each --again adds one
    notes: list[str] = field(default_factory=list)  # warnings on the stage read (lines that could not be)

    @property
    def runs(self) -> int:
        return len(self.finalists) * len(self.seeds)

    def config(self, finalist: Finalist, seed: int) -> TrialConfig:
        return replace(finalist.config, seed=seed, keep_final=True)

    def describe(self) -> str:
        fit = "train + validation" if self.fit_on is FitOn.TRAIN_VAL else "train (validation held out)"
        return (
            f"final: {self.basis}, {len(self.seeds)} seed{'s' if len(self.seeds) != 1 else ''} each "
            f"({self.runs} runs), {self.epochs} epoch{'s' if self.epochs != 1 else ''} on {fit}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "stage": self.stage,
            "trials": [f.trial for f in self.finalists],
            "seeds": self.seeds,
            "fit_on": self.fit_on.value,
            "epochs": self.epochs,
            "basis": self.basis,
        }


@dataclass
class FinalRow:
    """One finalist's results: test accuracy per seed (None where it did not complete), validation
    accuracy per seed where it was held out."""

    finalist: Finalist
    test: dict[int, float | None] = field(default_factory=dict)
    val: dict[int, float | None] = field(default_factory=dict)
    states: dict[int, TrialState] = field(default_factory=dict)

    def _done(self, accs: dict[int, float | None]) -> list[float]:
        return [a for a in accs.values() if a is not None]

    @property
    def test_mean(self) -> float | None:
        done = self._done(self.test)
        return statistics.fmean(done) if done else None

    @property
    def test_std(self) -> float | None:
        done = self._done(self.test)
        return statistics.stdev(done) if len(done) >= 2 else None

    @property
    def val_mean(self) -> float | None:
        done = self._done(self.val)
        return statistics.fmean(done) if done else None


@dataclass
class FinalOutcome:
    plan: FinalPlan
    rows: list[FinalRow]  # best first: by mean test accuracy (by validation when there is no test split)
    test_size: int | None  # None: the data has no test split
    seen: int  # finals that have evaluated this run's test set, this one included
    model_path: Path | None
    final_dir: Path
    notes: list[str] = field(default_factory=list)
    resumed: int = 0  # runs already finished before this command

    @property
    def best(self) -> FinalRow | None:
        return self.rows[0] if self.rows and self._score(self.rows[0]) is not None else None

    @property
    def best_accuracy(self) -> float | None:
        """What --fail-under compares: the best's mean test accuracy (validation without a test split)."""
        return self._score(self.rows[0]) if self.rows else None

    def _score(self, row: FinalRow) -> float | None:
        return row.test_mean if self.test_size is not None else row.val_mean


def ledger_entries(final_dir: Path) -> list[dict[str, Any]]:
    return read_json_lines(final_dir / LEDGER)[0]


def attempts_that_tested(entries: list[dict[str, Any]]) -> dict[int, str]:
    """The attempts (finals) whose ledger entries evaluated the test set, each with the time of its
    first evaluation."""
    out: dict[int, str] = {}
    for e in entries:
        a = e.get("attempt")
        if isinstance(a, int) and a not in out:
            out[a] = str(e.get("time", "?"))
    return out
