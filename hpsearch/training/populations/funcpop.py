"""Population training for a user's network (model.kind python): P trials of one shape at once.

Each trial's module is built as run_trial builds it (same seed, so the same init); their parameters
are stacked (`torch.func.stack_module_state`) and one `vmap(grad(loss))` over `functional_call` gives
every trial's loss and gradient on the shared batch. The update is population.PopulationOptimizer's
in-place, preallocated one with per-trial lr, weight decay, momentum, betas and lr decay. The L2
term, 0.5 * wd * sum(W^2) over tensors with more than one dimension (models.regularized), enters the
gradient in the optimizer, as for the built-in population. Records equal run_trial's up to float
rounding. The loop is loop.train_population's; StackedNet is this network type's side of it.

Whether a network can train this way is decided by trying it on one real batch (population_support):
a network whose training changes its buffers (BatchNorm's running statistics), draws random numbers
(dropout), does what vmap refuses (in-place tricks, .item()), or gives other numbers under vmap than
alone (state kept in Python) trains one trial at a time, and the reason says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.spec.choices import Precision
from hpsearch.training.checkpoint import Snapshot
from hpsearch.training.models import build_model
from hpsearch.training.populations.loop import BatchBuffers, load_starts, train_population
from hpsearch.training.populations.plan import group_key
from hpsearch.training.populations.stacked import Param, PopulationOptimizer, leading
from hpsearch.training.trial import EVAL_CHUNK, autocast, init_seed, make_optimizer, training_loss

SUPPORT_TOLERANCE = 1e-3  # relative: vmapped loss and gradients against one module's, on one batch
# Steps timed each way when --population auto measures (after one untimed step): enough to average
# out a step's jitter on a loaded machine, few enough to cost well under a trial-epoch.
MEASURE_STEPS = 4

Tensors = dict[str, torch.Tensor]


class StackedNet:
    """P copies of one user module: stacked parameters (P, *shape) and buffers, one vmapped step.
    The torch.func network type of loop.train_population (its `Population` protocol)."""

    kind = "python"  # PopulationOptimizer fuses the first layer of the built-in MLP only
    label_copies = 1  # vmap maps over the trials: each trial's loss reads the batch's labels once

    def __init__(self, modules: list[nn.Module], precision: Precision = Precision.FP32) -> None:
        self.p = len(modules)
        self.precision = precision  # of the training forward pass; evaluation (logits) is fp32
        # P trials' activations at once: fewer examples per pass keep them near one trial's EVAL_CHUNK.
        self.eval_chunk = max(1, EVAL_CHUNK // self.p)
        self.base = modules[0]  # functional_call runs its forward with each trial's tensors swapped in
        params, buffers = stack_module_state(modules)  # type: ignore[arg-type]
        frozen = {k for k, prm in self.base.named_parameters() if not prm.requires_grad}
        self.names = [k for k in params if k not in frozen]
        # decays: the tensor had more than one dimension before stacking (models.regularized)
        self.params = [
            Param(params[k].detach(), leading(params[k].ndim - 1), params[k].ndim > 2, name=k) for k in self.names
        ]
        # Frozen parameters go in with the buffers: never differentiated nor updated, as torch.optim
        # skips a parameter without a gradient; run_trial's L2 term still counts them (penalty).
        self.buffers: Tensors = {k: v.detach() for k, v in buffers.items()}
        self.buffers.update({k: params[k].detach() for k in frozen})
        self._frozen_weights = [params[k].detach() for k in frozen if params[k].ndim > 2]
        self._grad_and_loss = vmap(grad_and_value(self._loss), in_dims=(0, 0, None, None))
        self._logits = vmap(self._forward, in_dims=(0, 0, None))

    def _forward(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))  # type: ignore[no-any-return]

    def _loss(self, params: Tensors, buffers: Tensors, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, x.device):
            logits = self._forward(params, buffers, x)
        return F.cross_entropy(logits.float(), y)

    def trial_state(self, p: int) -> Tensors:
        """Trial p's network state (what its own module's state_dict would hold)."""
        out = {name: prm.tensor[p] for name, prm in zip(self.names, self.params, strict=True)}
        out.update((k, v[p]) for k, v in self.buffers.items())
        return out

    def tensors(self) -> Tensors:
        return {name: prm.tensor for name, prm in zip(self.names, self.params, strict=True)}

    def grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[Tensors, torch.Tensor]:
        """Every trial's data-loss gradients (P, *shape) and data losses (P,) on one shared batch."""
        return self._grad_and_loss(self.tensors(), self.buffers, x, y)  # type: ignore[no-any-return]

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every trial's data loss (P,); its gradients, from the same vmapped call, go into each
        stacked tensor's .grad now, where PopulationOptimizer reads them."""
        grads, losses = self.grads(x, y)
        for name, prm in zip(self.names, self.params, strict=True):
            prm.tensor.grad = grads[name]
        return losses

    def backward(self, alive: torch.Tensor) -> None:
        """Nothing left to do: losses() made every trial's gradients. A dead trial's (NaN) went into
        its own slices only, which PopulationOptimizer.freeze zeroes."""

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) shared by every trial -> (P, B, classes), in eval mode as run_trial's accuracy."""
        self.base.eval()
        try:
            return self._logits(self.tensors(), self.buffers, x)  # type: ignore[no-any-return]
        finally:
            self.base.train()

    @torch.no_grad()
    def penalty(self, wd: torch.Tensor) -> torch.Tensor:
        """0.5 * wd_p * sum of trial p's squared weight tensors, per trial (P,)."""
        total = torch.zeros(self.p, device=wd.device)
        for t in [prm.tensor for prm in self.params if prm.decays] + self._frozen_weights:
            total += torch.linalg.vector_norm(t.reshape(self.p, -1), dim=1).square()
        return 0.5 * wd * total


def _modules(configs: list[TrialConfig], data: Dataset) -> list[nn.Module]:
    out = []
    for cfg in configs:
        torch.manual_seed(init_seed(cfg.seed, cfg.trial_id))  # the same init as run_trial
        out.append(build_model(cfg.model, data.input_shape, data.num_classes).to(data.x_train.device))
    return out


def stack_modules(configs: list[TrialConfig], data: Dataset, snaps: list[Snapshot | None]) -> StackedNet:
    """The user networks of `configs` as one StackedNet (loop.Stack), each from its snapshot."""
    modules = _modules(configs, data)
    load_starts(modules, snaps)
    return StackedNet(modules, configs[0].train.precision)


def run_func_population(
    configs: list[TrialConfig], data: Dataset, on_epoch: EpochCallback | None = None
) -> list[TrialResult]:
    """Train `configs` (one group key, a user's network that population_support accepts) together;
    one TrialResult per config, in order. Raises what training raises (train_group falls back)."""
    return train_population(configs, data, stack_modules, on_epoch)


# --------------------------------------------------------------------------- can it, and is it faster

_SUPPORT: dict[tuple[Any, ...], str | None] = {}
_MEASURED: dict[tuple[Any, ...], int] = {}


def _cache_key(cfg: TrialConfig, data: Dataset) -> tuple[Any, ...]:
    return (group_key(cfg), str(data.x_train.device), data.input_shape)


def population_support(cfg: TrialConfig, data: Dataset) -> str | None:
    """None if trials of `cfg`'s user network can train as one vmapped population, else the reason
    (one line) they train one at a time. Tried once per process and network on one real batch."""
    key = _cache_key(cfg, data)
    if key not in _SUPPORT:
        _SUPPORT[key] = _try_population(cfg, data)
    return _SUPPORT[key]


def _try_population(cfg: TrialConfig, data: Dataset) -> str | None:
    b = min(cfg.train.batch_size, len(data.x_train))
    x, y = data.normalize(data.x_train[:b]), data.y_train[:b]
    twins = [cfg, cfg.__class__(cfg.trial_id + 1, cfg.params, cfg.model, cfg.train, cfg.seed)]
    # One at a time first, as run_trial trains: its buffers must not change, and the loss and
    # gradients of a second call (state kept from the first shows there) are what vmap must give.
    alone: list[tuple[torch.Tensor, Tensors]] = []
    try:
        for module in _modules(twins, data):
            before = {k: v.clone() for k, v in module.named_buffers()}
            _plain_grads(module, x, y)
            changed = [k for k, v in module.named_buffers() if k not in before or not torch.equal(v, before[k])]
            if changed:
                return f"training changes its buffers ({', '.join(changed[:3])}), as BatchNorm's running statistics do"
            alone.append(_plain_grads(module, x, y))
    except Exception as e:  # not hidden: each trial, trained alone, records this error as its own
        return f"one copy alone raised {_one_line(e)}"
    try:
        net = StackedNet(_modules(twins, data))
        net.grads(x, y)
        grads, losses = net.grads(x, y)
    except Exception as e:  # not hidden: the reason is returned and shown to the user
        return f"torch.func.vmap cannot run it: {_one_line(e)}"
    for p, (loss, want) in enumerate(alone):
        if not _close(losses[p], loss) or any(k not in grads or not _close(grads[k][p], g) for k, g in want.items()):
            return (
                "under vmap its losses or gradients differ from one at a time (a tensor kept as a plain "
                "attribute, not a parameter or buffer, or other state kept in Python?)"
            )
    return None


def _one_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _plain_grads(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Tensors]:
    loss = F.cross_entropy(module(x), y)
    named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return loss.detach(), {k: g for (k, _), g in zip(named, grads, strict=True) if g is not None}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if not b.numel():
        return True
    return float((a - b).abs().max()) <= SUPPORT_TOLERANCE * max(float(b.abs().max()), 1e-6)


def faster_together(together_s: float, size: int, alone_s: float) -> bool:
    """Per trial, a step of `size` trials together beats a step of one trial alone."""
    return together_s / size < alone_s


def measured_population(cfg: TrialConfig, data: Dataset, size: int) -> int:
    """--population auto for a user's network: `size` if population_support accepts it and a few
    timed steps of `size` trials together beat the same steps one trial at a time, else 1. Measured
    once per process and network."""
    if size <= 1 or population_support(cfg, data) is not None:
        return 1
    key = (*_cache_key(cfg, data), size)
    if key not in _MEASURED:
        try:
            together, alone = step_seconds(cfg, data, size)
        except (RuntimeError, MemoryError):  # out of memory at this size: one at a time is what fits
            _MEASURED[key] = 1
        else:
            _MEASURED[key] = size if faster_together(together, size, alone) else 1
    return _MEASURED[key]


def step_seconds(cfg: TrialConfig, data: Dataset, size: int) -> tuple[float, float]:
    """Seconds per training step: `size` trials together, and one trial alone."""
    b = min(cfg.train.batch_size, len(data.x_train))
    batch = BatchBuffers(data, b, 1)
    x, y = batch.load(torch.arange(b, device=data.x_train.device))
    configs = [cfg.__class__(cfg.trial_id + i, cfg.params, cfg.model, cfg.train, cfg.seed) for i in range(size)]
    net = StackedNet(_modules(configs, data), cfg.train.precision)
    opt = PopulationOptimizer(net, configs, data.x_train.device)

    def together() -> None:
        net.losses(x, y)
        net.backward(opt.alive)
        opt.step()

    module = _modules(configs[:1], data)[0]
    single = make_optimizer(module, cfg.train)

    def alone() -> None:
        loss, _ = training_loss(module, x, y, cfg.train.weight_decay, cfg.train.precision)
        single.zero_grad(set_to_none=True)
        loss.backward()
        single.step()

    return _time(together), _time(alone)


def _time(step: Callable[[], None]) -> float:
    step()  # untimed: the first call sets up kernels and vmap's tracing
    start = time.perf_counter()
    for _ in range(MEASURE_STEPS):
        step()
    return (time.perf_counter() - start) / MEASURE_STEPS
