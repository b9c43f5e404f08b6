"""Which trials train together: trials of one shape (the keys that fix a network's tensors) go into
one population of at most the size the executor chose, in trial order; a trial whose shape has no
group key (an activation that cannot be stacked) trains alone."""

from __future__ import annotations

import json
from typing import Any

from hpsearch.runs.records import TrialConfig
from hpsearch.spec.choices import Activation, Optimizer
from hpsearch.spec.schema import Spec

UNSUPPORTED_ACTIVATIONS = {Activation.PRELU}  # a learned slope per unit: trained one at a time


def group_key(cfg: TrialConfig) -> tuple[Any, ...] | None:
    """Trials with equal keys train together; None: this trial trains alone (run_trial)."""
    m, t = cfg.model, cfg.train
    adam, nesterov = t.optimizer is Optimizer.ADAM, t.optimizer is Optimizer.NESTEROV
    # Trials trained together also share their epochs (the stage's, and a halving rung's start and
    # end), their seed, which fixes the batch order (a search has one; `final` trains several), and
    # the precision of their forward pass.
    epochs = (t.epochs, cfg.first_epoch, cfg.last_epoch, cfg.seed, t.precision)
    if m.kind == "python":
        # The factory and its arguments fix the shapes; lr, weight decay, momentum and betas are per trial.
        args = json.dumps(m.args, sort_keys=True, default=repr)
        return (m.kind, m.factory, args, t.batch_size, epochs, adam, nesterov)
    if m.activation in UNSUPPORTED_ACTIVATIONS or not m.hidden:
        return None
    # Dropout rates may differ within a population (each trial draws its own masks), but a trial with
    # dropout trains on a CPU only, where masks drawn from a generator are nn.Dropout's (train_group).
    return (m.kind, m.hidden, m.activation, t.batch_size, epochs, adam, nesterov)


# What group_key reads of a built-in model's searched values (a python model: every model argument).
KEY_FIELDS = frozenset({"kind", "hidden", "activation", "batch_size", "epochs", "optimizer", "precision"})


def shaping_params(spec: Spec) -> list[str]:
    """The searched parameters whose values decide which population a trial trains in."""
    return sorted(n for n in spec.search.space if n in KEY_FIELDS or spec.is_factory_arg(n))


def plan_populations(configs: list[TrialConfig], size: int) -> list[list[TrialConfig]]:
    """Split trials into populations of at most `size` that share a group key, in trial order."""
    groups: dict[Any, list[TrialConfig]] = {}
    out: list[list[TrialConfig]] = []
    for cfg in configs:
        key = group_key(cfg)
        if key is None or size <= 1:
            out.append([cfg])
            continue
        groups.setdefault(key, []).append(cfg)
    for members in groups.values():
        out.extend(members[i : i + size] for i in range(0, len(members), size))
    return sorted(out, key=lambda pop: pop[0].trial_id)
