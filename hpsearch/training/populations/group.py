"""Training a planned population: together with loop.train_population (the built-in network type, or
a user's network through torch.func), else one trial at a time; and the time of one such step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.training.models import build_model
from hpsearch.training.populations.builtin import stack_builtin
from hpsearch.training.populations.funcpop import MEASURE_STEPS, population_support, stack_modules
from hpsearch.training.populations.funcpop import step_seconds as together_seconds
from hpsearch.training.populations.loop import BatchBuffers, Stack, train_population
from hpsearch.training.populations.stacked import PopulationOptimizer
from hpsearch.training.trial import init_seed, make_optimizer, run_trial, training_loss, warm_up


def train_group(pop: list[TrialConfig], data: Dataset, on_epoch: EpochCallback | None = None) -> list[TrialResult]:
    """Train a planned population: one trial with run_trial, more together with train_population. A
    population whose training raises (out of memory, say) trains again one trial at a time, so each
    trial's own result or error is what gets recorded, not one error for them all."""
    warm_up()  # once per process, outside every trial's wall time
    stack = _network_type(pop, data)
    if stack is not None:
        try:
            return train_population(pop, data, stack, on_epoch)
        except Exception:  # not hidden: each trial's own run below records its error
            pass
    return [run_trial(cfg, data, on_epoch) for cfg in pop]


def _network_type(pop: list[TrialConfig], data: Dataset) -> Stack | None:
    """How `pop` stacks into one population, or None when its trials train one at a time."""
    if len(pop) == 1 or (data.x_train.device.type != "cpu" and any(c.model.dropout > 0 for c in pop)):
        return None  # a GPU draws dropout masks its own way
    if pop[0].model.kind != "python":
        return stack_builtin
    return stack_modules if population_support(pop[0], data) is None else None  # the caller shows the reason once


TIMED_STEPS = 10  # steps timed for an estimate, after one untimed step (kernels, autograd set up)


# The learning rate of timed steps: the same arithmetic, with weights that barely move. At the trials'
# own rates, repeated steps on one batch drove some trials (lr 0.3, weight decay 8) to inf or to
# denormal floats that made a CPU step 10-25x slower (0.12 s against 5 ms for 10 CIFAR-10 MLPs),
# states the real loop stops (diverged) or flushes (trial.TINY) before they cost anything.
TIMING_LR = 1e-12


def step_seconds(pop: list[TrialConfig], data: Dataset) -> tuple[float, int]:
    """Seconds per training step of a planned population, trained as train_group trains it (together,
    or one trial after another), timed on the data's first batch, and the steps timed: what
    `coarse --dry-run` estimates a stage's time from. Trains nothing that is kept."""
    warm_up()
    pop = [replace(c, train=c.train.model_copy(update={"lr": TIMING_LR})) for c in pop]
    cfg = pop[0]
    stack = _network_type(pop, data)
    if stack is stack_modules:  # --population auto's own measurement
        return together_seconds(cfg, data, len(pop))[0], MEASURE_STEPS
    if stack is None:
        return len(pop) * _timed(_trial_step(cfg, data)), TIMED_STEPS
    return _timed(_population_step(pop, data)), TIMED_STEPS


def _timed(step: Callable[[], None]) -> float:
    step()
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step()
    return (time.perf_counter() - start) / TIMED_STEPS


def _first_batch(cfg: TrialConfig, data: Dataset, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = min(cfg.train.batch_size, len(data.x_train))
    return BatchBuffers(data, b, p).load(torch.arange(b, device=data.x_train.device))


def _trial_step(cfg: TrialConfig, data: Dataset) -> Callable[[], None]:
    """run_trial's step: loss, its value read back (as the recorder reads it), backward, update."""
    torch.manual_seed(init_seed(cfg.seed, cfg.trial_id))
    net = build_model(cfg.model, data.input_shape, data.num_classes).to(data.x_train.device)
    opt = make_optimizer(net, cfg.train)
    x, y = _first_batch(cfg, data, 1)

    def step() -> None:
        loss, _ = training_loss(net, x, y, cfg.train.weight_decay, cfg.train.precision)
        float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _population_step(pop: list[TrialConfig], data: Dataset) -> Callable[[], None]:
    """train_population's step for the built-in network: every trial's loss on the shared batch,
    read back, backward, update."""
    net = stack_builtin(pop, data, [None] * len(pop))
    opt = PopulationOptimizer(net, pop, data.x_train.device)
    x, y = _first_batch(pop[0], data, net.label_copies)

    def step() -> None:
        net.losses(x, y).tolist()
        net.backward(opt.alive)
        opt.step()

    return step
