"""Successive halving inside a stage: synchronous rungs, the best 1/eta of each going on.

Every trial trains the first rung's epochs; the best 1/eta of a rung (complete trials only, ranked
as the stage ranks them) train on from where they stopped to eta times as many epochs, up to the
stage's train.epochs; the rest are STOPPED, final, with the epochs and rung they reached. This
module decides; the stage driver (stages.strategies) trains. No torch. A fractional first rung
(min_epochs 0.25) counts rungs in steps, as Hyperband and ASHA count their resource: a rung may end
inside an epoch, and its trials go on from that step of the epoch's batch order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hpsearch.analysis.rank import rank, rank_key
from hpsearch.runs.records import TrialResult, TrialState, jsonable
from hpsearch.spec.schema import HalvingSpec


def rung_epochs(epochs: int, halving: HalvingSpec) -> list[float]:
    """The epochs each rung ends at: min_epochs, x eta, x eta^2, ... below `epochs`, then `epochs`.
    Ints for a whole min_epochs; for a fraction, floats where a rung ends inside an epoch (0.25,
    0.75, 2.25 for eta 3), which the training loops turn into steps (records.rung_steps)."""
    out: list[float] = []
    r = 0
    while (e := halving.min_epochs * halving.eta**r) < epochs:
        out.append(int(e) if float(e).is_integer() else e)  # 0.5 x 2 = 1.0 is epoch 1's end
        r += 1
    return [*out, epochs]


def promoted(rung_results: list[TrialResult], eta: int) -> list[int]:
    """The trials that go on from a rung: its best len/eta (at least one), complete ones only."""
    keep = max(1, len(rung_results) // eta)
    complete = [r for r in rank(rung_results) if r.state is TrialState.COMPLETE]
    return sorted(r.trial for r in complete[:keep])


def keep_count(trials: int, eta: int) -> int:
    """How many of a rung's trials go on: the best 1/eta, at least one."""
    return max(1, trials // eta)


def planned_counts(trials: int, rungs: list[float], eta: int) -> list[int]:
    """Trials at each rung when enough of them complete: n, n/eta, n/eta^2, ..."""
    counts = [trials]
    for _ in rungs[1:]:
        counts.append(keep_count(counts[-1], eta))
    return counts


def trial_epochs(counts: list[int], rungs: list[float]) -> float:
    """Trial-epochs a halving stage trains: each rung's trials from the previous rung's end to its own."""
    return sum(c * (end - start) for c, start, end in zip(counts, [0, *rungs], rungs, strict=False))


def rung_records(records: list[TrialResult], plan: dict[int, Any]) -> dict[int, dict[int, TrialResult]]:
    """trial -> rung -> its result at that rung: the first record with a final state other than
    STOPPED (a decision, not a result), for trials of the plan with the plan's parameters."""
    out: dict[int, dict[int, TrialResult]] = {}
    for r in records:
        if r.rung is None or not r.state.final or r.state is TrialState.STOPPED:
            continue
        if r.trial in plan and jsonable(r.params) == plan[r.trial]:
            out.setdefault(r.trial, {}).setdefault(r.rung, r)
    return out


@dataclass
class CurrentRung:
    """The rung a halving stage is at, replayed from its records (every decision follows from the
    recorded rung results alone, so a resumed stage decides exactly as the first run would have)."""

    rung: int | None  # the first rung with trials left to train; None: the stage is finished
    todo: list[int]  # those trials
    starts: dict[int, TrialResult]  # each one's result at the rung before (rung > 0)
    done: list[TrialResult]  # the rung's results already recorded
    size: int  # trials at that rung
    results: dict[int, TrialResult]  # every trial's latest result; those outranked marked STOPPED


def replay(records: dict[int, dict[int, TrialResult]], trials: list[int], rungs: list[float], eta: int) -> CurrentRung:
    """Walk the rungs from the first: a rung with trials not yet recorded is where the stage stands;
    a rung fully recorded decides who goes on (promoted) and who stops."""
    alive = sorted(trials)
    results: dict[int, TrialResult] = {}
    for k in range(len(rungs)):
        have = {t: records[t][k] for t in alive if k in records.get(t, {})}
        results.update(have)
        todo = [t for t in alive if t not in have]
        if todo:
            starts = {t: records[t][k - 1] for t in todo} if k else {}
            return CurrentRung(k, todo, starts, list(have.values()), len(alive), results)
        if k == len(rungs) - 1:
            break
        winners = promoted(list(have.values()), eta)
        for t in alive:
            if t not in winners and have[t].state is TrialState.COMPLETE:
                results[t] = replace(have[t], state=TrialState.STOPPED, checkpoint=None)
        alive = winners
    return CurrentRung(None, [], {}, [], 0, results)


class RungLeaders:
    """While a rung trains: its best `keep` trials so far, the only ones that may still go on (a trial
    outside them never can: later results only push it further down), so only their states are kept."""

    def __init__(self, keep: int, done: list[TrialResult]) -> None:
        self.keep = keep
        self.best: list[TrialResult] = []
        for r in done:
            self.admit(r)

    def admit(self, r: TrialResult) -> tuple[bool, list[int]]:
        """(whether r is among the best `keep` so far, the trials it pushed out)."""
        if r.state is not TrialState.COMPLETE:
            return False, []
        self.best = sorted([*self.best, r], key=rank_key)
        out = [x.trial for x in self.best[self.keep :]]
        self.best = self.best[: self.keep]
        return r.trial not in out, [t for t in out if t != r.trial]

    @property
    def trials(self) -> set[int]:
        return {r.trial for r in self.best}
