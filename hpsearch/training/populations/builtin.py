"""Population training: P trials of one shape trained at once in one process.

Every trial sees the same minibatches (the batch order depends on the search seed alone). The MLP's
first layer is one matmul of the shared batch against all trials' weights side by side; later layers
are batched matmuls. The convnet's first conv is one conv with P x C output channels, later convs
are grouped convolutions (groups = P). Each trial keeps its own init (the same seed as one-at-a-time
training), learning rate, weight decay, momentum or Adam betas and lr decay, applied in one
vectorized update. A trial whose loss turns NaN/inf is frozen and masked out of the others' way.
Dropout (on a CPU) draws each trial's masks from the trial's own generator, left where its init left
the global one, in the shape and order nn.Dropout draws them one at a time: the same masks, so trials
of any dropout rate train together.
The results equal one-at-a-time training (`run_trial`) up to float rounding.
A user's network (model.kind python) trains as a torch.func population instead (populations.funcpop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpsearch.data import Dataset
from hpsearch.runs.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.training.checkpoint import start_snapshot
from hpsearch.training.models import Net, build_builtin
from hpsearch.training.populations.loop import BatchBuffers, close_epoch, keep_states, starts
from hpsearch.training.populations.stacked import PopulationNet, PopulationOptimizer
from hpsearch.training.recorder import TrialRecorder
from hpsearch.training.trial import EVAL_CHUNK, FLUSH_EVERY, batch_order, init_seed, train_accuracy_sample


def build_nets(configs: list[TrialConfig], data: Dataset) -> tuple[list[Net], list[torch.Generator]]:
    """Each trial's network, initialized as run_trial does, and a generator where the global one is
    after that init: run_trial's dropout masks come from there."""
    nets, generators = [], []
    for cfg in configs:
        torch.manual_seed(init_seed(cfg.seed, cfg.trial_id))  # the same init as run_trial
        nets.append(build_builtin(cfg.model, data.input_shape, data.num_classes).to(data.x_train.device))
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    return nets, generators


@torch.no_grad()
def _accuracy(net: PopulationNet, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    correct = torch.zeros(net.p, dtype=torch.long, device=x.device)  # counts: exact, as run_trial's
    net.eval()  # no dropout
    for i in range(0, len(x), EVAL_CHUNK):
        logits = net(data.normalize(x[i : i + EVAL_CHUNK]))
        correct += (logits.argmax(2) == y[i : i + EVAL_CHUNK]).sum(1)
    net.train()
    return [c / max(1, len(x)) for c in correct.tolist()]


def run_population(
    configs: list[TrialConfig], data: Dataset, on_epoch: EpochCallback | None = None
) -> list[TrialResult]:
    """Train `configs` (one group key) together on `data`; one TrialResult per config, in order.
    Raises what the population's training raises (train_group falls back to one at a time)."""
    first = configs[0]
    p, device = len(configs), data.x_train.device
    recorder = TrialRecorder(configs, len(data.x_train), on_epoch)
    recorder.go_on_from(starts(configs))
    snaps = [start_snapshot(c, device) for c in configs]
    nets, generators = build_nets(configs, data)
    for one, snap in zip(nets, snaps, strict=True):
        if snap is not None:
            one.load_state_dict(snap.model)
    net = PopulationNet(nets, first.model.kind, generators)
    opt = PopulationOptimizer(net, configs, device)
    opt.load(snaps, recorder.iteration)
    train = first.train
    n = len(data.x_train)
    x_acc, y_acc = train_accuracy_sample(data)
    batch = BatchBuffers(data, train.batch_size, p)
    for epoch in range(first.first_epoch, first.last_epoch):
        order = batch_order(n, first.seed, epoch, device)
        for s in range(0, n, train.batch_size):
            x, y_rep = batch.load(order[s : s + train.batch_size])
            logits = net(x)  # (P, B, C)
            per_example = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_rep, reduction="none")
            data_loss = per_example.view(p, -1).mean(1)
            watched = data_loss.detach()
            if recorder.curve_step:
                # The L2 term costs a pass over all weights, so it is added where the curve is sampled.
                watched = watched + net.penalty(opt.wd)
            it = recorder.iteration
            losses, data_losses = torch.stack([watched, data_loss.detach()]).tolist()
            dead = recorder.step(losses, data_losses)
            opt.stop(dead)
            net.zero_grad(set_to_none=True)
            torch.where(opt.alive, data_loss, torch.zeros_like(data_loss)).sum().backward()
            if not opt.fused_first:
                net.first_layer_grad()
            opt.step()
            if dead:
                opt.freeze()  # after the step: autograd still needed the weights as they were
            if it % FLUSH_EVERY == 0 and device.type == "cpu":
                opt.flush_tiny()
        accuracies = lambda: (_accuracy(net, data, x_acc, y_acc), _accuracy(net, data, data.x_val, data.y_val))  # noqa: E731
        if not close_epoch(recorder, opt, net.penalty, accuracies):
            break
    keep_states(recorder, opt, first, lambda j: {prm.name: prm.part(prm.tensor, j) for prm in net.params})
    return recorder.finish()
