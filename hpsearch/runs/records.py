"""What a trial is and what it leaves behind: TrialConfig in, TrialResult out, with an enum state.

Plain data, no torch: the store, ranking, refine planner and report read a run with these alone.
"""

from __future__ import annotations

import enum
import math
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from hpsearch.spec.choices import Precision
from hpsearch.spec.schema import ModelSpec, TrainSpec

TRACEBACK_FRAMES = 5  # frames of a failed trial's traceback kept in its record


class TrialState(str, enum.Enum):
    """What became of a trial, as its record says."""

    COMPLETE = "complete"
    DIVERGED = "diverged"  # the loss became NaN or inf
    FAILED = "failed"  # an unexpected exception; its message, place and short traceback are kept
    INTERRUPTED = "interrupted"  # running when the search was stopped (Ctrl-C, SIGTERM); re-run on --resume
    STOPPED = "stopped"  # stopped early: outranked at its halving rung, or below the median (median_stop)

    @property
    def final(self) -> bool:
        """A final state is never trained again; an interrupted trial is."""
        return self is not TrialState.INTERRUPTED


@dataclass(frozen=True)
class TrialConfig:
    trial_id: int
    params: dict[str, Any]  # the searched values only
    model: ModelSpec  # with the searched values applied
    train: TrainSpec
    seed: int  # the search seed: batch order depends on it alone, the init also on trial_id
    # Successive halving: train only up to epoch `until` (None: train.epochs) and hand back the
    # trial's state with its result; `start`: go on from where an earlier rung left the trial. A
    # fraction (0.25) ends the rung inside an epoch, after rung_steps(until, steps per epoch) steps.
    until: float | None = None
    start: TrialStart | None = None
    # `hpsearch final`: hand back the trained state at the end too (the network it keeps and tests).
    keep_final: bool = False
    # search.median_stop: after epoch e (1-based) the trial stops if its best validation accuracy so
    # far is below stop_below[e - 1] (None there: not judged). Set as its population starts training.
    stop_below: tuple[float | None, ...] | None = None

    @property
    def first_epoch(self) -> float:
        """The epoch training starts at: 0, or where the earlier rung stopped (0.25: inside epoch 0)."""
        return self.start.record.epochs_done if self.start is not None else 0

    @property
    def last_epoch(self) -> float:
        """The epoch training stops at (exclusive): the rung's end, or train.epochs."""
        return self.until if self.until is not None else self.train.epochs

    def steps(self, steps_per_epoch: int) -> tuple[int, int]:
        """The steps it trains, counted from the first of its first epoch: from where the earlier
        rung stopped (its record's iterations) to its rung's end or train.epochs (exclusive)."""
        first = self.start.record.iterations if self.start is not None else 0
        return first, rung_steps(self.last_epoch, steps_per_epoch)

    @property
    def keeps_state(self) -> bool:
        """Its trained state is wanted afterwards: it stops before train.epochs (a halving rung), or
        it is a final run whose network is kept."""
        return self.keep_final or self.last_epoch < self.train.epochs


@dataclass
class TrialResult:
    trial: int
    state: TrialState
    params: dict[str, Any]
    val_acc: float | None = None  # at the last epoch trained, or at a halving rung's end inside an epoch
    train_acc: float | None = None
    train_loss: float | None = None  # mean data loss over the last epoch + the L2 penalty at its end
    initial_loss: float | None = None  # data loss at init on the first minibatch; ln(C) expected
    # Epochs whose every step ran (the last one may have ended in a blow-up): an int, or a float when
    # a halving rung stopped the trial inside an epoch (0.25: a quarter of epoch 0's steps).
    epochs_done: float = 0
    iterations: int = 0
    val_acc_per_epoch: list[float] = field(default_factory=list)  # finite epochs only
    train_acc_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_epoch: list[float] = field(default_factory=list)
    loss_every: int = 1  # losses[i] is the loss at iteration i * loss_every
    losses: list[float] = field(default_factory=list)
    # The data loss (no L2 term) at the same iterations as `losses`: what `flat` is judged on, since a
    # shrinking L2 term can make the total fall while the data loss stays at ln(C). Empty in records
    # written before it was kept.
    data_losses: list[float] = field(default_factory=list)
    wall_time: float = 0.0  # seconds
    error: str | None = None  # failed: "Type: message"
    error_at: str | None = None  # failed: file:line where it was raised (the innermost frame outside torch)
    traceback: str | None = None  # failed: the last TRACEBACK_FRAMES frames, as Python prints them
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier runs lost with their worker
    rung: int | None = None  # successive halving: the rung it reached (0 = the first); None without halving
    # Successive halving: val_acc at each rung's end it reached, rung 0 first; what range verdicts
    # compare trials by when the first rung ends inside an epoch (no val_acc_per_epoch entry there).
    rung_val_accs: list[float] = field(default_factory=list)
    # search.median_stop: the bar its best accuracy fell below (the complete trials' median at its last epoch)
    stopped_below: float | None = None
    # Successive halving: the trial's weights and optimizer state at its rung's end (checkpoint.pack),
    # carried back from wherever it trained; never written into the record.
    checkpoint: bytes | None = field(default=None, repr=False, compare=False)

    def fail(self, e: BaseException) -> None:
        """Record an unexpected exception: FAILED, with its message, where it was raised and the
        last frames of its traceback."""
        self.state = TrialState.FAILED
        self.error = f"{type(e).__name__}: {e}"
        frames = traceback.extract_tb(e.__traceback__)
        self.error_at = _where(frames)
        self.traceback = "".join(traceback.format_exception(e, limit=-TRACEBACK_FRAMES, chain=False)).rstrip("\n")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["checkpoint"]
        d["state"] = self.state.value
        d["params"] = jsonable(self.params)
        curves = ("losses", "data_losses", "train_loss_per_epoch", "train_acc_per_epoch", "val_acc_per_epoch")
        for key in (*curves, "rung_val_accs"):
            d[key] = [finite_or_none(v) for v in d[key]]
        for key in ("train_loss", "initial_loss", "train_acc", "val_acc"):
            d[key] = finite_or_none(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        """A record read back; ValueError (pydantic's ValidationError) when a field has the wrong
        type: a line that is not ours."""
        known = _RecordShape.model_validate(d).model_dump(exclude_unset=True)
        for key in ("losses", "data_losses", "train_loss_per_epoch"):
            known[key] = [math.nan if v is None else v for v in known.get(key, [])]
        return cls(**known)


@dataclass(frozen=True)
class TrialStart:
    """Where a trial goes on from (successive halving): its record up to its last rung, and its
    weights and optimizer state then (checkpoint.pack)."""

    record: TrialResult
    checkpoint: bytes


@dataclass(frozen=True)
class CurveData:
    """What a trial's curve label needs of the data it trained on: the classes (chance accuracy is
    1/C) and the validation examples (the noise allowed around chance). spec.DataSpec has both, but
    knows the classes of CIFAR-10 and synthetic data only; for a user's npz or folder a stage's
    run.json records the count of the loaded data."""

    num_classes: int | None
    val_size: int


Number = float  # strict: an int or a float, never a bool or a string


class _RecordShape(BaseModel):
    """The types a trials.jsonl record must have; unknown keys (from a newer version) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    trial: int
    state: Annotated[TrialState, Field(strict=False)]  # written as its value, a string
    params: dict[str, Any]
    val_acc: Number | None = None
    train_acc: Number | None = None
    train_loss: Number | None = None
    initial_loss: Number | None = None
    epochs_done: int | float = 0  # an int read back as an int: whole epochs print as "3", not "3.0"
    iterations: int = 0
    val_acc_per_epoch: list[Number | None] = []
    train_acc_per_epoch: list[Number | None] = []
    train_loss_per_epoch: list[Number | None] = []
    loss_every: int = 1
    losses: list[Number | None] = []
    data_losses: list[Number | None] = []
    wall_time: Number = 0.0
    error: str | None = None
    error_at: str | None = None
    traceback: str | None = None
    attempts: list[Any] = []
    rung: int | None = None
    rung_val_accs: list[Number] = []
    stopped_below: Number | None = None


def _where(frames: traceback.StackSummary) -> str | None:
    """file:line of the innermost frame outside torch: the user's (or our) line that went wrong,
    not the depths of torch.nn.functional."""
    torch_dir = f"{os.sep}torch{os.sep}"
    ours = [f for f in frames if torch_dir not in f.filename] or list(frames)
    return f"{os.path.basename(ours[-1].filename)}:{ours[-1].lineno}" if ours else None


def rung_steps(epochs: float, steps_per_epoch: int) -> int:
    """The steps `epochs` epochs take: whole epochs exactly, a fraction rounded to the nearest step
    (at least one: a rung trains something)."""
    return max(1, round(epochs * steps_per_epoch))


def as_epochs(steps: int, steps_per_epoch: int) -> float:
    """`steps` in epochs: an int when whole (recorded and printed as whole epochs always were), else
    a float (a halving rung's end inside an epoch)."""
    whole, part = divmod(steps, steps_per_epoch)
    return whole if part == 0 else steps / steps_per_epoch


def epochs_text(epochs: float) -> str:
    """'3' for whole epochs, '0.25' for a fraction (at most 3 decimals: 2 of 7 steps is '0.286')."""
    return str(int(epochs)) if float(epochs).is_integer() else f"{round(epochs, 3):g}"


def finite_or_none(v: float | None) -> float | None:
    """JSON has no NaN/inf: a non-finite number is written as null."""
    return v if v is not None and math.isfinite(v) else None


def jsonable(value: Any) -> Any:
    """Enums as their values, tuples as lists, all the way down: what json.dumps can write."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return getattr(value, "value", value)


def planned_params(configs: Iterable[TrialConfig]) -> dict[int, Any]:
    """Each planned trial's values as a record read back from JSON holds them, by trial id: what a
    record is matched against to count as that trial's."""
    return {c.trial_id: jsonable(c.params) for c in configs}


def failure_summary(results: list[TrialResult]) -> str | None:
    """One line for a stage with failed trials: 'k of N trials failed (first: trial 7, ValueError:
    ... at models.py:88)'; None when none failed."""
    failed = sorted((r for r in results if r.state is TrialState.FAILED), key=lambda r: r.trial)
    if not failed:
        return None
    first = failed[0]
    message = ((first.error or "").splitlines() or ["no message"])[0]
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 3] + "..."
    where = f" at {first.error_at}" if first.error_at else ""
    return f"{len(failed)} of {len(results)} trials failed (first: trial {first.trial}, {message}{where})"


MESSAGE_CHARS = 160  # of the first failure's message in the one-line summary


EpochCallback = Callable[[float], None]  # called with the trial-epochs just finished (a rung may end inside one)
ResultCallback = Callable[[TrialResult], None]  # a trial's result, as soon as it is known
StartCallback = Callable[[list[TrialConfig]], None]  # a population (or lone trial) begins training
PrepareCallback = Callable[[list[TrialConfig]], list[TrialConfig]]  # a population's configs as it will train


@dataclass(frozen=True)
class TrialEvents:
    """What an executor reports while it trains, each optional: a population (or lone trial) starts,
    trial-epochs finish, a trial's result is known; and `on_prepare`, the stage's last word on a
    population's configs just before it trains (search.median_stop's bars, from the trials finished by then)."""

    on_result: ResultCallback | None = None
    on_epoch: EpochCallback | None = None
    on_start: StartCallback | None = None
    on_prepare: PrepareCallback | None = None

    def ready(self, pop: list[TrialConfig]) -> list[TrialConfig]:
        return self.on_prepare(pop) if self.on_prepare else pop

    def result(self, r: TrialResult) -> None:
        if self.on_result:
            self.on_result(r)

    def epochs(self, count: float) -> None:
        if self.on_epoch:
            self.on_epoch(count)

    def start(self, pop: list[TrialConfig]) -> None:
        if self.on_start:
            self.on_start(pop)


@dataclass(frozen=True)
class PrecisionChoice:
    """What a stage's trials train in (train.precision resolved by training.precision), why, and the
    measured fp32 / bf16 step-time ratio (None where nothing was timed), as run.json records it."""

    precision: Precision
    reason: str
    speedup: float | None = None
    asked: Precision = Precision.AUTO  # what the spec said: fp32, the default, goes unsaid in the outputs

    @property
    def said(self) -> bool:
        """Whether the outputs name it (a stderr line, the tables' title): not for the plain default."""
        return self.asked is not Precision.FP32

    def line(self) -> str:
        return f"precision: {self.precision.value} ({self.reason})"

    def document(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "asked": self.asked.value,
            "reason": self.reason,
            "bf16_speedup": self.speedup,
        }

    @classmethod
    def from_document(cls, d: dict[str, Any]) -> PrecisionChoice:
        asked = Precision(d.get("asked", Precision.AUTO.value))
        return cls(Precision(d["precision"]), str(d["reason"]), d.get("bf16_speedup"), asked)
