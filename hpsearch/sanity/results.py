"""What the sanity checks report, as plain data: a verdict per check with what it measured and its
diagnosis, per-layer statistics, the probe's rows. No torch: the report and CI files render it."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from hpsearch.runs.records import finite_or_none


class CheckVerdict(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass
class CheckResult:
    check: str  # initial_loss | activations | overfit | lr_probe
    verdict: CheckVerdict
    measured: str  # the numbers, one line
    diagnosis: str  # what it means, one line
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True)
class LayerStats:
    layer: int  # 1 = first hidden layer
    mean: float
    std: float
    dead: float  # fraction of units that are zero for the whole batch
    saturated: float | None  # fraction of outputs saturated (tanh, sigmoid); None for others
    grad_norm: float  # norm of dL/dW of the weights feeding the layer, after one backward pass
    name: str | None = None  # a user's network: the module's name in named_modules() and its class

    @property
    def label(self) -> str:
        """The layer column: `1`, or `1 (features.1: ReLU)` in a user's network."""
        return f"{self.layer} ({self.name})" if self.name else str(self.layer)


class ProbeStatus(str, enum.Enum):
    """What one probed lr's loss did (thresholds above), and so whether the lr is too low or high."""

    FELL = "fell"  # dropped by >= SIGNIFICANT_DROP: a usable lr
    BARELY_MOVED = "barely moved"  # lr too low
    REBOUNDED = "fell then rose"  # ended ROSE_ABOVE above its lowest: lr too high
    ROSE = "rose"  # ended ROSE_ABOVE above its start: lr too high
    EXPLODED = "exploded"  # ended above EXPLODED x its start: lr too high
    DIVERGED = "diverged"  # inf or NaN: lr too high

    @property
    def ok(self) -> bool:
        return self is ProbeStatus.FELL

    @property
    def too_high(self) -> bool:
        return self not in (ProbeStatus.FELL, ProbeStatus.BARELY_MOVED)

    @property
    def label(self) -> str:
        """The probe table's status cell: what the loss did and what it says of the lr."""
        if self is ProbeStatus.FELL:
            return "fell: ok"
        return f"{self.value}: lr too {'high' if self.too_high else 'low'}"


@dataclass(frozen=True)
class ProbeRow:
    lr: float
    start_loss: float
    end_loss: float  # mean over the last 10 iterations
    drop: float  # (start - end) / start; negative when the loss rose
    rebound: float  # (end - lowest 10-iteration mean) / start; 0 when the loss ended at its lowest
    status: ProbeStatus

    @property
    def diverged(self) -> bool:
        """Exploded or went to inf/NaN (what the field of this name meant before statuses)."""
        return self.status in (ProbeStatus.EXPLODED, ProbeStatus.DIVERGED)

    def to_dict(self) -> dict[str, Any]:
        # JSON has no inf: a diverged probe's end loss and drop are null.
        return {
            "lr": self.lr,
            "start_loss": finite_or_none(self.start_loss),
            "end_loss": finite_or_none(self.end_loss),
            "drop": finite_or_none(self.drop),
            "rebound": finite_or_none(self.rebound),
            "status": self.status.value,
            "diverged": self.diverged,
        }


@dataclass
class SanityReport:
    checks: list[CheckResult]
    layers: list[LayerStats]
    probe: list[ProbeRow]
    recommended_lr: tuple[float, float] | None

    @property
    def failed(self) -> bool:
        return any(c.verdict is CheckVerdict.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": not self.failed,
            "checks": [c.to_dict() for c in self.checks],
            "layers": [asdict(s) for s in self.layers],
            "lr_probe": [r.to_dict() for r in self.probe],
            "recommended_lr": list(self.recommended_lr) if self.recommended_lr else None,
        }


CHECK_NAMES = ("initial loss", "activation statistics", "overfit a small sample", "learning-rate probe")
