"""One trial, one model at a time: train the spec's model with one set of hyperparameters -> TrialResult.

This is the reference: the plain PyTorch loop that anyone can read top to bottom. The population
path (training.populations, many trials in one vectorized pass) is tested against it, and both keep their
records with the same TrialRecorder. Shared pieces of every loop live here too: seeds, batch order,
optimizer, loss, accuracy and the denormal flush.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.spec.choices import Optimizer, Precision
from hpsearch.spec.schema import TrainSpec
from hpsearch.training.checkpoint import load_into_optimizer, optimizer_snapshot, pack, start_snapshot
from hpsearch.training.models import build_model, l2_penalty
from hpsearch.training.recorder import TrialRecorder

TRAIN_ACC_SAMPLE = 1000  # training accuracy is measured on this many fixed training examples
EVAL_CHUNK = 1000  # examples per forward pass when evaluating
# Strong weight decay drives weights toward 0 until they are denormal floats, and CPU matmuls on
# denormals run ~10x slower (a 5-epoch trial: 3 s -> 25 s). Flush-to-zero set from Python reaches only
# the calling thread, not torch's worker threads, so values this small are zeroed every FLUSH_EVERY
# steps instead: they are far below anything that changes a float32 result.
TINY = 1e-30
FLUSH_EVERY = 16


@torch.no_grad()
def flush_tiny_(net: nn.Module, opt: torch.optim.Optimizer) -> None:
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


_warmed_up = False


def warm_up() -> None:
    """Pay a process's one-time costs before any trial's clock starts, so the first trial's wall
    time is comparable with the others': the first torch.optim optimizer imports torch._dynamo
    (~1.7 s here), and the first forward and backward pass set up autograd and the kernels."""
    global _warmed_up
    if _warmed_up:
        return
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.optim.Adam(net.parameters())
    F.cross_entropy(net(torch.zeros(2, 4)), torch.zeros(2, dtype=torch.long)).backward()
    opt.step()
    _warmed_up = True


def init_seed(seed: int, trial_id: int) -> int:
    """Seed of a trial's weight init and dropout: distinct per trial, fixed by (search seed, trial)."""
    return (seed * 1_000_003 + trial_id) % (2**63)


def batch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The permutation of training examples for one epoch, shared by every trial of a search."""
    g = torch.Generator().manual_seed((seed * 7919 + epoch) % (2**63))
    return torch.randperm(n, generator=g).to(device)


def epoch_spans(first_step: int, last_step: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
    """(epoch, first batch, end batch) of each epoch from step `first_step` to `last_step` (exclusive,
    counted from the first step of epoch 0): whole epochs, but for a halving rung that starts or ends
    inside one (min_epochs 0.25), which trains part of that epoch's batch order."""
    spans, step = [], first_step
    while step < last_step:
        epoch, begin = divmod(step, steps_per_epoch)
        end = min(steps_per_epoch, begin + last_step - step)
        spans.append((epoch, begin, end))
        step += end - begin
    return spans


def make_optimizer(net: nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    params = list(net.parameters())
    if train.optimizer is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps)
    momentum = 0.0 if train.optimizer is Optimizer.SGD else train.momentum
    nesterov = train.optimizer is Optimizer.NESTEROV and momentum > 0
    return torch.optim.SGD(params, lr=train.lr, momentum=momentum, nesterov=nesterov)


def autocast(precision: Precision, device: torch.device) -> AbstractContextManager[None]:
    """The forward pass's arithmetic: with bf16, torch's autocast runs matmuls and convolutions (and
    so their backward) in bfloat16 while weights, optimizer state and the loss stay fp32. `auto` is
    resolved by the stage before any trial trains (training.precision); unresolved, it is fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision is Precision.BF16)


@torch.no_grad()
def accuracy(net: nn.Module, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of x the network classifies right, in fp32 whatever it trained in: the accuracy
    of the (fp32) weights themselves, comparable across precisions."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(x), EVAL_CHUNK):
        logits = net(data.normalize(x[i : i + EVAL_CHUNK]))
        correct += int((logits.argmax(1) == y[i : i + EVAL_CHUNK]).sum())
    net.train(was_training)
    return correct / max(1, len(x))


def training_loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, weight_decay: float, precision: Precision = Precision.FP32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, data loss): softmax cross-entropy plus the L2 penalty when weight_decay > 0; the
    forward pass in `precision`, the loss in fp32."""
    with autocast(precision, x.device):
        logits = net(x)
    data_loss = F.cross_entropy(logits.float(), y)
    return (data_loss + l2_penalty(net, weight_decay) if weight_decay else data_loss), data_loss


def train_accuracy_sample(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training examples whose accuracy is measured each epoch (evenly spaced)."""
    n = len(data.x_train)
    idx = torch.linspace(0, n - 1, min(n, TRAIN_ACC_SAMPLE), device=data.x_train.device).long()
    return data.x_train[idx], data.y_train[idx]


def run_trial(config: TrialConfig, data: Dataset, on_epoch: EpochCallback | None = None) -> TrialResult:
    """Train one trial on `data` (already on its device). Never raises for a bad trial: NaN/inf is
    DIVERGED, any other exception FAILED with its message, place and traceback."""
    recorder = TrialRecorder([config], len(data.x_train), on_epoch)
    recorder.go_on_from([config.start.record] if config.start is not None else None)
    try:
        _train(config, data, recorder)
    except Exception as e:  # one trial's error must not end the search; it is recorded, not hidden
        recorder.fail(e)
    return recorder.finish()[0]


def _train(config: TrialConfig, data: Dataset, recorder: TrialRecorder) -> None:
    train = config.train
    device = data.x_train.device
    torch.manual_seed(init_seed(config.seed, config.trial_id))
    net = build_model(config.model, data.input_shape, data.num_classes).to(device)
    opt = make_optimizer(net, train)
    # The global RNG (dropout's masks) is seeded here, not restored from a checkpoint: a trial with
    # dropout that goes on from a halving rung draws other masks than one trained straight through,
    # at an epoch's end as inside one; without dropout the two are equal bit for bit.
    snap = start_snapshot(config, device)
    if snap is not None:
        net.load_state_dict(snap.model)
        load_into_optimizer(snap, net, opt, recorder.iteration)
        recorder.go_on_inside_epoch([snap.epoch_step], [snap.epoch_loss_sum])
    n, spe = len(data.x_train), recorder.steps_per_epoch
    x_acc, y_acc = train_accuracy_sample(data)
    accuracies = lambda: ([accuracy(net, data, x_acc, y_acc)], [accuracy(net, data, data.x_val, data.y_val)])  # noqa: E731
    for epoch, begin, end in epoch_spans(*config.steps(spe), spe):
        order = batch_order(n, config.seed, epoch, device)
        for start in range(begin * train.batch_size, end * train.batch_size, train.batch_size):
            idx = order[start : start + train.batch_size]
            x, y = data.normalize(data.x_train[idx]), data.y_train[idx]
            loss, data_loss = training_loss(net, x, y, train.weight_decay, train.precision)
            it = recorder.iteration
            if recorder.step([float(loss.detach())], [float(data_loss.detach())]):
                return  # diverged
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if it % FLUSH_EVERY == 0 and device.type == "cpu":
                flush_tiny_(net, opt)
        if end < spe:
            break  # a halving rung's end inside the epoch: no epoch's end
        for group in opt.param_groups:
            group["lr"] *= train.lr_decay
        penalty = float(l2_penalty(net, train.weight_decay).detach())
        recorder.end_epoch([penalty], accuracies)
        if not recorder.any_training:
            return
    recorder.end_inside_epoch(accuracies)
    if config.keeps_state:
        recorder.keep_state(0, pack(optimizer_snapshot(net, opt, recorder.inside_epoch(0))))
