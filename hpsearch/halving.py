"""Successive halving inside a stage: synchronous rungs, the best 1/eta of each going on.

Every trial trains the first rung's epochs; the best 1/eta of a rung (complete trials only, ranked
as the stage ranks them) train on from where they stopped to eta times as many epochs, up to the
stage's train.epochs; the rest are STOPPED, final, with the epochs and rung they reached. This
module decides; the stage driver (search.py) trains. No torch.
May import: rank, records, spec.
"""

from __future__ import annotations

from hpsearch.rank import rank
from hpsearch.records import TrialResult, TrialState
from hpsearch.spec import HalvingSpec


def rung_epochs(epochs: int, halving: HalvingSpec) -> list[int]:
    """The epochs each rung ends at: min_epochs, x eta, x eta^2, ... below `epochs`, then `epochs`."""
    out, e = [], halving.min_epochs
    while e < epochs:
        out.append(e)
        e *= halving.eta
    return [*out, epochs]


def promoted(rung_results: list[TrialResult], eta: int) -> list[int]:
    """The trials that go on from a rung: its best len/eta (at least one), complete ones only."""
    keep = max(1, len(rung_results) // eta)
    complete = [r for r in rank(rung_results) if r.state is TrialState.COMPLETE]
    return sorted(r.trial for r in complete[:keep])
