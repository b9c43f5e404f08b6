"""One trial: train the spec's model with one set of hyperparameters -> TrialResult."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hpsearch.data import Dataset
from hpsearch.errors import SpecError
from hpsearch.models import Net, build_model, l2_penalty
from hpsearch.spec import ModelSpec, Optimizer, TrainSpec

MAX_CURVE_POINTS = 250  # per-iteration losses kept in a record (evenly strided)
TRAIN_ACC_SAMPLE = 1000  # training accuracy is measured on this many fixed training examples
EVAL_CHUNK = 1000  # examples per forward pass when evaluating
# Strong weight decay drives weights toward 0 until they are denormal floats, and CPU matmuls on
# denormals run ~10x slower (a 5-epoch trial: 3 s -> 25 s). Flush-to-zero set from Python reaches only
# the calling thread, not torch's worker threads, so values this small are zeroed every FLUSH_EVERY
# steps instead: they are far below anything that changes a float32 result.
TINY = 1e-30
FLUSH_EVERY = 16


class TrialState(str, enum.Enum):
    COMPLETE = "complete"
    DIVERGED = "diverged"  # the loss became NaN or inf
    FAILED = "failed"  # an unexpected exception; the message is kept
    INTERRUPTED = "interrupted"  # running when the search was stopped (Ctrl-C, SIGTERM); re-run on --resume

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


@dataclass
class TrialResult:
    trial: int
    state: TrialState
    params: dict[str, Any]
    val_acc: float | None = None  # at the last epoch trained
    train_acc: float | None = None
    train_loss: float | None = None  # mean data loss over the last epoch + the L2 penalty at its end
    initial_loss: float | None = None  # data loss at init on the first minibatch; ln(C) expected
    epochs_done: int = 0
    iterations: int = 0
    val_acc_per_epoch: list[float] = field(default_factory=list)
    train_acc_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_epoch: list[float] = field(default_factory=list)
    loss_every: int = 1  # losses[i] is the loss at iteration i * loss_every
    losses: list[float] = field(default_factory=list)
    wall_time: float = 0.0  # seconds
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier runs lost with their worker

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["params"] = jsonable(self.params)
        for key in ("losses", "train_loss_per_epoch", "train_acc_per_epoch", "val_acc_per_epoch"):
            d[key] = [finite_or_none(v) for v in d[key]]
        for key in ("train_loss", "initial_loss", "train_acc", "val_acc"):
            d[key] = finite_or_none(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        """A record read back; ValueError when a field has the wrong type (a line that is not ours)."""
        _check_record_types(d)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["state"] = TrialState(known["state"])
        for key in ("losses", "train_loss_per_epoch"):
            known[key] = [math.nan if v is None else v for v in known.get(key, [])]
        return cls(**known)


_NUMBERS = ("val_acc", "train_acc", "train_loss", "initial_loss", "wall_time")
_LISTS = ("val_acc_per_epoch", "train_acc_per_epoch", "train_loss_per_epoch", "losses", "attempts")


def _check_record_types(d: dict[str, Any]) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(d.get("trial"), int) or isinstance(d.get("trial"), bool) or not isinstance(d.get("params"), dict):
        raise ValueError("trial must be an integer and params a mapping")
    for key in _NUMBERS:
        if key in d and d[key] is not None and not number(d[key]):
            raise ValueError(f"{key} must be a number")
    for key in ("epochs_done", "iterations", "loss_every"):
        if key in d and (not isinstance(d[key], int) or isinstance(d[key], bool)):
            raise ValueError(f"{key} must be an integer")
    for key in _LISTS:
        if key in d and not isinstance(d[key], list):
            raise ValueError(f"{key} must be a list")
    for key in _LISTS[:4]:
        if any(v is not None and not number(v) for v in d.get(key, [])):
            raise ValueError(f"{key} must hold numbers")


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


@torch.no_grad()
def flush_tiny_(net: Net, opt: torch.optim.Optimizer) -> None:
    """Zero parameters and optimizer state smaller than TINY in magnitude (see TINY)."""
    tensors = list(net.parameters()) + [
        v for state in opt.state.values() for v in state.values() if torch.is_tensor(v) and v.is_floating_point()
    ]
    for t in tensors:
        zero_tiny_(t)


def zero_tiny_(t: torch.Tensor) -> None:
    """In place: values with |v| <= TINY become 0; NaN and inf stay. One pass (hardshrink writing
    into its input), 10x cheaper than abs, compare and masked_fill."""
    torch.ops.aten.hardshrink.out(t, TINY, out=t)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("train.device: 'cuda' was asked for but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def init_seed(seed: int, trial_id: int) -> int:
    """Seed of a trial's weight init and dropout: distinct per trial, fixed by (search seed, trial)."""
    return (seed * 1_000_003 + trial_id) % (2**63)


def batch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The permutation of training examples for one epoch, shared by every trial of a search."""
    g = torch.Generator().manual_seed((seed * 7919 + epoch) % (2**63))
    return torch.randperm(n, generator=g).to(device)


def make_optimizer(net: Net, train: TrainSpec) -> torch.optim.Optimizer:
    params = list(net.parameters())
    if train.optimizer is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps)
    momentum = 0.0 if train.optimizer is Optimizer.SGD else train.momentum
    nesterov = train.optimizer is Optimizer.NESTEROV and momentum > 0
    return torch.optim.SGD(params, lr=train.lr, momentum=momentum, nesterov=nesterov)


@torch.no_grad()
def accuracy(net: Net, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(x), EVAL_CHUNK):
        logits = net(data.normalize(x[i : i + EVAL_CHUNK]))
        correct += int((logits.argmax(1) == y[i : i + EVAL_CHUNK]).sum())
    net.train(was_training)
    return correct / max(1, len(x))


def training_loss(net: Net, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, data loss): softmax cross-entropy plus the L2 penalty when weight_decay > 0."""
    data_loss = F.cross_entropy(net(x), y)
    return (data_loss + l2_penalty(net, weight_decay) if weight_decay else data_loss), data_loss


EpochCallback = Callable[[int], None]  # called with the number of trial-epochs just finished
ResultCallback = Callable[[TrialResult], None]  # a trial's result, as soon as it is known
StartCallback = Callable[[list[TrialConfig]], None]  # a population (or lone trial) begins training


def run_trial(config: TrialConfig, data: Dataset, on_epoch: EpochCallback | None = None) -> TrialResult:
    """Train one trial on `data` (already on its device). Never raises for a bad trial:
    NaN/inf is DIVERGED, any other exception FAILED with its message."""
    start = time.perf_counter()
    result = TrialResult(trial=config.trial_id, state=TrialState.COMPLETE, params=dict(config.params))
    try:
        _train(config, data, result, on_epoch)
    except Exception as e:  # one trial's error must not end the search; it is recorded, not hidden
        result.state = TrialState.FAILED
        result.error = f"{type(e).__name__}: {e}"
    result.wall_time = time.perf_counter() - start
    return result


def _train(config: TrialConfig, data: Dataset, result: TrialResult, on_epoch: EpochCallback | None) -> None:
    train = config.train
    device = data.x_train.device
    torch.manual_seed(init_seed(config.seed, config.trial_id))
    net = build_model(config.model, data.input_shape, data.num_classes).to(device)
    opt = make_optimizer(net, train)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / train.batch_size)
    result.loss_every = max(1, math.ceil(train.epochs * steps_per_epoch / MAX_CURVE_POINTS))
    acc_idx = torch.linspace(0, n - 1, min(n, TRAIN_ACC_SAMPLE), device=device).long()
    x_acc, y_acc = data.x_train[acc_idx], data.y_train[acc_idx]
    it = 0
    for epoch in range(train.epochs):
        order = batch_order(n, config.seed, epoch, device)
        epoch_data_loss = 0.0
        for start in range(0, n, train.batch_size):
            idx = order[start : start + train.batch_size]
            loss, data_loss = training_loss(
                net, data.normalize(data.x_train[idx]), data.y_train[idx], train.weight_decay
            )
            value = float(loss.detach())
            if it == 0:
                result.initial_loss = float(data_loss.detach())
            if it % result.loss_every == 0:
                result.losses.append(value)
            if not math.isfinite(value):
                result.state = TrialState.DIVERGED
                result.iterations = it + 1
                return
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if it % FLUSH_EVERY == 0 and device.type == "cpu":
                flush_tiny_(net, opt)
            epoch_data_loss += float(data_loss.detach())
            it += 1
        for group in opt.param_groups:
            group["lr"] *= train.lr_decay
        result.iterations = it
        result.epochs_done = epoch + 1
        result.train_loss = epoch_data_loss / steps_per_epoch + float(l2_penalty(net, train.weight_decay).detach())
        if not math.isfinite(result.train_loss):  # the weights blew up on the epoch's last step
            result.state = TrialState.DIVERGED
            result.iterations = it
            return
        result.train_loss_per_epoch.append(result.train_loss)
        result.train_acc_per_epoch.append(accuracy(net, data, x_acc, y_acc))
        result.val_acc_per_epoch.append(accuracy(net, data, data.x_val, data.y_val))
        result.train_acc = result.train_acc_per_epoch[-1]
        result.val_acc = result.val_acc_per_epoch[-1]
        if on_epoch:
            on_epoch(1)
