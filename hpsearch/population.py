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
A user's network (model.kind python) trains as a torch.func population instead (funcpop.py).
May import: checkpoint, data, funcpop (inside train_group: it imports this module), models, records, recorder, spec,
trial; torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.checkpoint import EXP_AVG, EXP_AVG_SQ, MOMENTUM, Snapshot, pack, start_snapshot
from hpsearch.data import Dataset
from hpsearch.models import Maxout, Net, build_builtin, build_model
from hpsearch.recorder import Accuracies, TrialRecorder
from hpsearch.records import EpochCallback, TrialConfig, TrialResult
from hpsearch.spec import Activation, Optimizer, Spec
from hpsearch.trial import (
    EVAL_CHUNK,
    FLUSH_EVERY,
    batch_order,
    init_seed,
    make_optimizer,
    run_trial,
    train_accuracy_sample,
    training_loss,
    warm_up,
    zero_tiny_,
)

UNSUPPORTED_ACTIVATIONS = {Activation.PRELU}  # a learned slope per unit: trained one at a time


def group_key(cfg: TrialConfig) -> tuple[Any, ...] | None:
    """Trials with equal keys train together; None: this trial trains alone (run_trial)."""
    m, t = cfg.model, cfg.train
    adam, nesterov = t.optimizer is Optimizer.ADAM, t.optimizer is Optimizer.NESTEROV
    # Trials trained together also share their epochs (the stage's, and a halving rung's start and
    # end) and their seed, which fixes the batch order (a search has one; `final` trains several).
    epochs = (t.epochs, cfg.first_epoch, cfg.last_epoch, cfg.seed)
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
KEY_FIELDS = frozenset({"kind", "hidden", "activation", "batch_size", "epochs", "optimizer"})


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


@dataclass
class Param:
    """A stacked parameter and how a per-trial scalar (P,) broadcasts onto it."""

    tensor: torch.Tensor
    expand: Callable[[torch.Tensor], torch.Tensor]
    decays: bool  # a weight (L2-regularized), not a bias
    name: str = ""  # the one-trial network's name for it (its state_dict key)
    rows: int | None = None  # trials side by side in blocks of `rows` along dim 0; None: stacked (P, ...)

    def part(self, t: torch.Tensor, p: int) -> torch.Tensor:
        """Trial p's slice of `t` (this parameter, or an optimizer buffer shaped like it)."""
        return t[p * self.rows : (p + 1) * self.rows] if self.rows is not None else t[p]


Expand = Callable[[torch.Tensor], torch.Tensor]


def _blocks(size: int, trailing: int) -> Expand:
    """(P,) -> each value repeated `size` times along dim 0, then `trailing` singleton dims."""
    return lambda s: s.repeat_interleave(size).view(-1, *([1] * trailing))


def leading(trailing: int) -> Expand:
    return lambda s: s.view(-1, *([1] * trailing))


class PopulationNet(nn.Module):
    """P copies of one architecture, each with its own weights, evaluated on one shared batch."""

    def __init__(self, nets: list[Net], kind: str, generators: list[torch.Generator] | None = None) -> None:
        super().__init__()
        self.p = len(nets)
        self.kind = kind
        # Dropout: each trial's rate (0: none) and the generator its masks come from.
        self.drop = [next((m.p for m in net.modules() if isinstance(m, nn.Dropout)), 0.0) for net in nets]
        self.generators = generators
        layers = [[m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))] for net in nets]
        names = [n for n, m in nets[0].named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.act = nets[0].hidden_layers[0] if nets[0].hidden_layers else nn.Identity()
        self.params: list[Param] = []
        self.convs: list[tuple[nn.Parameter, nn.Parameter]] = []
        self.linears: list[tuple[nn.Parameter, nn.Parameter]] = []
        for i, first in enumerate(layers[0]):
            ws = [ls[i].weight.detach() for ls in layers]
            bs = [ls[i].bias.detach() for ls in layers]  # type: ignore[union-attr]  # every layer has a bias
            if isinstance(first, nn.Conv2d):
                # Output channels of all trials side by side: (P * C_out, C_in, k, k).
                w = nn.Parameter(torch.cat(ws).contiguous())
                b = nn.Parameter(torch.cat(bs).contiguous())
                c = first.out_channels
                self.params += [
                    Param(w, _blocks(c, 3), True, f"{names[i]}.weight", c),
                    Param(b, _blocks(c, 0), False, f"{names[i]}.bias", c),
                ]
                self.convs.append((w, b))
            elif i == 0 and kind == "mlp":
                # Every trial's first layer stacked: (P * H, D), trial p owns a block of H rows, so the
                # shared batch meets all trials in one matmul, and activations stay (P, H, B).
                w = nn.Parameter(torch.cat(ws).contiguous())
                b = nn.Parameter(torch.cat(bs).contiguous())
                h = first.out_features
                self.params += [
                    Param(w, _blocks(h, 1), True, f"{names[i]}.weight", h),
                    Param(b, _blocks(h, 0), False, f"{names[i]}.bias", h),
                ]
                self.linears.append((w, b))
            else:
                w = nn.Parameter(torch.stack(ws).contiguous())  # (P, out, in), as nn.Linear keeps it
                b = nn.Parameter(torch.stack(bs).contiguous())  # (P, out)
                self.params += [
                    Param(w, leading(2), True, f"{names[i]}.weight"),
                    Param(b, leading(1), False, f"{names[i]}.bias"),
                ]
                self.linears.append((w, b))
        for i, prm in enumerate(self.params):
            self.register_parameter(f"p{i}", prm.tensor)  # type: ignore[arg-type]
        self._first: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))
        self._w0_grad: torch.Tensor | None = None

    def _act(self, h: torch.Tensor, channel_dim: int) -> torch.Tensor:
        if isinstance(self.act, Maxout):  # pairs adjacent units, as Maxout does on one model
            a, b = h.unflatten(channel_dim, (-1, 2)).unbind(channel_dim + 1)
            return torch.maximum(a, b)
        return self.act(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) shared by every trial -> logits (P, B, classes)."""
        p, batch = self.p, x.shape[0]
        if self.kind == "mlp":
            # Activations are kept units-first, (P, units, B): every op below runs on contiguous data.
            w0, b0 = self.linears[0]
            flat = x.flatten(1)
            with torch.no_grad():
                z = torch.mm(w0, flat.T).view(p, -1, batch)  # (P, H, B)
            if torch.is_grad_enabled():
                # The first layer's weight gradient is computed by hand (first_layer_grad): autograd's
                # own matmul here ran ~3x slower and allocated a fresh P x H x 3072 tensor each step.
                z.requires_grad_(True)
                self._first = (flat, z)
            h = self._dropout(self._act(z + b0.view(p, -1, 1), 1))
            for w, b in self.linears[1:-1]:
                h = self._dropout(self._act(torch.baddbmm(b[:, :, None], w, h), 1))
        else:
            h = x
            for i, (w, b) in enumerate(self.convs):
                h = F.conv2d(h, w, b, padding=1, groups=1 if i == 0 else p)
                h = self._act(h, 1)
                if h.shape[-1] >= 2:
                    h = F.max_pool2d(h, 2)
            h = h.reshape(batch, p, -1).permute(1, 2, 0)  # (P, C * s * s, B), each trial's flatten order
            h = self._dropout(h)
        w, b = self.linears[-1]
        return torch.baddbmm(b[:, :, None], w, h).transpose(1, 2)  # (P, B, classes)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """(P, units, B) in training: each trial's activations times its mask, drawn as nn.Dropout
        draws it on one trial's (B, units) activations (bernoulli(1 - p) / (1 - p), on a CPU)."""
        if not self.training or not any(self.drop):
            return h
        assert self.generators is not None
        masks = []
        for rate, g in zip(self.drop, self.generators, strict=True):
            mask = torch.ones(h.shape[2], h.shape[1], device=h.device)
            if rate > 0:
                mask.bernoulli_(1 - rate, generator=g).div_(1 - rate)
            masks.append(mask.T)
        return h * torch.stack(masks)

    @torch.no_grad()
    def first_layer_grad(self) -> None:
        """After backward: dL/dW of the MLP's first layer, dz x, into a buffer kept across steps."""
        if self.kind != "mlp":
            return
        flat, z = self._first
        w0 = self.linears[0][0]
        assert z.grad is not None
        if self._w0_grad is None:
            self._w0_grad = torch.empty_like(w0)
        torch.mm(z.grad.view(-1, flat.shape[0]), flat, out=self._w0_grad)  # (P * H, B) @ (B, D)
        w0.grad = self._w0_grad

    @torch.no_grad()
    def penalty(self, wd: torch.Tensor) -> torch.Tensor:
        """0.5 * wd_p * sum of trial p's squared weights, per trial (P,)."""
        total = torch.zeros(self.p, device=wd.device)
        for prm in self.params:
            if not prm.decays:
                continue
            total += _rows(prm.tensor, self.p)
        return 0.5 * wd * total


def _rows(t: torch.Tensor, p: int) -> torch.Tensor:
    """Per-trial sum of squares of a weight whose leading rows are grouped by trial: (P * H, D),
    (P, out, in) or a conv's (P * C_out, C_in, k, k)."""
    return torch.linalg.vector_norm(t.detach().view(p, -1), dim=1).square()


class Stacked(Protocol):
    """What PopulationOptimizer updates: PopulationNet, or funcpop.StackedNet for a user's network."""

    kind: str
    params: list[Param]


class PopulationOptimizer:
    """torch.optim.SGD (momentum, nesterov) / Adam semantics with a per-trial lr, wd, momentum,
    betas and eps; the L2 gradient wd * W is added here, as autograd would from 0.5 * wd * W^2."""

    def __init__(self, net: Stacked, configs: list[TrialConfig], device: torch.device) -> None:
        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        trains = [c.train for c in configs]
        self.net = net
        self.adam = trains[0].optimizer is Optimizer.ADAM
        self.nesterov = trains[0].optimizer is Optimizer.NESTEROV
        self.lr = vec([t.lr for t in trains])
        self.wd = vec([t.weight_decay for t in trains])
        self.decay = vec([t.lr_decay for t in trains])
        self.momentum = vec([0.0 if t.optimizer is Optimizer.SGD else t.momentum for t in trains])
        self.beta1, self.beta2 = vec([t.beta1 for t in trains]), vec([t.beta2 for t in trains])
        self.eps = vec([t.eps for t in trains])
        self.alive = torch.ones(len(configs), dtype=torch.bool, device=device)
        # The common case, momentum fixed in the spec and only lr / weight decay searched, gets the
        # first layer's update fused into its gradient matmul (see _fused_first_layer).
        self.fused_first = (
            net.kind == "mlp"
            and not self.adam
            and not self.nesterov
            and bool((self.momentum == self.momentum[0]).all())
        )
        self.state = [torch.zeros_like(p.tensor) for p in net.params]
        self.state2 = [torch.zeros_like(p.tensor) for p in net.params] if self.adam else []
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        # In-place fused updates: at P x 150k parameters the update is memory-bound, so every
        # pass over the weights counts.
        self.steps += 1
        lr = torch.where(self.alive, self.lr, torch.zeros_like(self.lr))
        for i, prm in enumerate(self.net.params):
            if i == 0 and self.fused_first:
                self._fused_first_layer(prm, lr)
                continue
            t, g = prm.tensor, prm.tensor.grad
            assert g is not None
            if prm.decays:
                g.addcmul_(t, prm.expand(self.wd))  # + wd * W: the gradient of 0.5 * wd * W^2
            if self.adam:
                self._adam(i, prm, t, g, lr)
            else:
                self._sgd(i, prm, t, g, lr)

    def _fused_first_layer(self, prm: Param, lr: torch.Tensor) -> None:
        """SGD with one momentum for every trial, on the MLP's first layer: the matmul that makes the
        gradient adds it straight into the momentum buffer (buf = m * buf + dz x), so the gradient
        itself is never written out; then buf += wd * W and W -= lr * buf, as torch.optim.SGD does."""
        assert isinstance(self.net, PopulationNet)  # fused_first: the built-in MLP only
        flat, z = self.net._first
        assert z.grad is not None
        buf = self.state[0]
        buf.addmm_(z.grad.view(-1, flat.shape[0]), flat, beta=float(self.momentum[0]))
        buf.addcmul_(prm.tensor, prm.expand(self.wd))
        prm.tensor.addcmul_(buf, prm.expand(-lr))

    def _sgd(self, i: int, prm: Param, t: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        m = prm.expand(self.momentum)
        buf = self.state[i]
        torch.addcmul(g, buf, m, out=buf)  # torch: buf = momentum * buf + grad (the first step: buf = grad)
        update = g.addcmul_(buf, m) if self.nesterov else buf  # with momentum 0, buf is the grad itself
        t.addcmul_(update, prm.expand(-lr))

    def _adam(self, i: int, prm: Param, t: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        b1, b2 = prm.expand(self.beta1), prm.expand(self.beta2)
        m, v = self.state[i], self.state2[i]
        m.mul_(b1).addcmul_(g, 1 - b1)
        v.mul_(b2).addcmul_(g * g, 1 - b2)
        c1 = 1 - self.beta1**self.steps
        c2 = 1 - self.beta2**self.steps
        denom = (v.sqrt() / prm.expand(c2.sqrt())).add_(prm.expand(self.eps))
        t.addcdiv_(m, denom.div_(prm.expand(-lr / c1)))

    @torch.no_grad()
    def load(self, snaps: list[Snapshot | None], steps: int) -> None:
        """Each trial's optimizer buffers and learning rate from where an earlier rung left it (the
        weights went into its network before stacking); `steps` taken so far, for Adam."""
        buffers = [self.state, self.state2] if self.adam else [self.state]
        keys = [EXP_AVG, EXP_AVG_SQ] if self.adam else [MOMENTUM]
        for p, snap in enumerate(snaps):
            if snap is None:
                continue
            self.lr[p] = snap.lr
            for i, prm in enumerate(self.net.params):
                saved = snap.optim.get(prm.name, {})
                for state, key in zip(buffers, keys, strict=True):
                    if key in saved:
                        prm.part(state[i], p).copy_(saved[key].reshape(prm.part(state[i], p).shape))
        if any(s is not None for s in snaps):
            self.steps = steps

    def snapshot(self, p: int) -> tuple[dict[str, dict[str, torch.Tensor]], float]:
        """Trial p's optimizer buffers (by parameter name) and the learning rate its next epoch uses."""
        optim: dict[str, dict[str, torch.Tensor]] = {}
        for i, prm in enumerate(self.net.params):
            if self.adam:
                optim[prm.name] = {EXP_AVG: prm.part(self.state[i], p), EXP_AVG_SQ: prm.part(self.state2[i], p)}
            else:
                optim[prm.name] = {MOMENTUM: prm.part(self.state[i], p)}
        return optim, float(self.lr[p])

    def stop(self, trials: list[int]) -> None:
        """These trials diverged: no more updates for them (freeze() then clears their weights)."""
        if trials:
            self.alive[trials] = False

    def end_epoch(self) -> None:
        self.lr *= self.decay

    @torch.no_grad()
    def freeze(self) -> None:
        """Zero the weights and state of trials no longer alive, so nothing NaN flows on."""
        for i, prm in enumerate(self.net.params):
            keep = prm.expand(self.alive.float())
            prm.tensor.mul_(keep).nan_to_num_(0.0, 0.0, 0.0)
            self.state[i].mul_(keep).nan_to_num_(0.0, 0.0, 0.0)
            if self.adam:
                self.state2[i].mul_(keep).nan_to_num_(0.0, 0.0, 0.0)

    @torch.no_grad()
    def flush_tiny(self) -> None:
        """trial.flush_tiny_ for the population."""
        for t in [p.tensor for p in self.net.params] + self.state + self.state2:
            zero_tiny_(t)


def _nets(configs: list[TrialConfig], data: Dataset) -> tuple[list[Net], list[torch.Generator]]:
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
    nets, generators = _nets(configs, data)
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


def starts(configs: list[TrialConfig]) -> list[TrialResult] | None:
    """The records a population goes on from (successive halving), or None when it starts afresh."""
    records = [c.start.record for c in configs if c.start is not None]
    return records if len(records) == len(configs) else None


def keep_states(
    recorder: TrialRecorder,
    opt: PopulationOptimizer,
    cfg: TrialConfig,
    model_state: Callable[[int], dict[str, torch.Tensor]],
) -> None:
    """At a halving rung's end, each trial still training keeps its weights, optimizer buffers and
    learning rate in its result (checkpoint.pack), to go on from at the next rung."""
    if not cfg.keeps_state:
        return
    for j, training in enumerate(recorder.training):
        if training:
            optim, lr = opt.snapshot(j)
            recorder.keep_state(j, pack(Snapshot(model_state(j), optim, lr)))


def close_epoch(
    recorder: TrialRecorder,
    opt: PopulationOptimizer,
    penalty: Callable[[torch.Tensor], torch.Tensor],
    accuracies: Accuracies,
) -> bool:
    """A population's epoch end, whatever computed its steps: lr decay, the recorder's epoch (its
    penalty and accuracies), trials that blew up in the weights frozen. False when none trains on."""
    opt.end_epoch()
    blown = recorder.end_epoch(penalty(opt.wd).tolist(), accuracies)
    if blown:
        opt.stop(blown)
        opt.freeze()
    return recorder.any_training


def train_group(pop: list[TrialConfig], data: Dataset, on_epoch: EpochCallback | None = None) -> list[TrialResult]:
    """Train a planned population: one trial with run_trial, more together with run_population. A
    population whose training raises (out of memory, say) trains again one trial at a time, so each
    trial's own result or error is what gets recorded, not one error for them all."""
    warm_up()  # once per process, outside every trial's wall time
    if len(pop) == 1 or (data.x_train.device.type != "cpu" and any(c.model.dropout > 0 for c in pop)):
        return [run_trial(cfg, data, on_epoch) for cfg in pop]  # a GPU draws dropout masks its own way
    if pop[0].model.kind == "python":
        from hpsearch.funcpop import population_support, run_func_population  # funcpop imports this module

        if population_support(pop[0], data) is not None:  # the caller shows the reason once
            return [run_trial(cfg, data, on_epoch) for cfg in pop]
        try:
            return run_func_population(pop, data, on_epoch)
        except Exception:  # not hidden: each trial's own run below records its error
            pass
        return [run_trial(cfg, data, on_epoch) for cfg in pop]
    try:
        return run_population(pop, data, on_epoch)
    except Exception:  # not hidden: each trial's own run below records its error
        pass
    return [run_trial(cfg, data, on_epoch) for cfg in pop]


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
    alone = len(pop) == 1 or (data.x_train.device.type != "cpu" and any(c.model.dropout > 0 for c in pop))
    if cfg.model.kind == "python" and not alone:
        from hpsearch.funcpop import MEASURE_STEPS, population_support
        from hpsearch.funcpop import step_seconds as together_seconds

        if population_support(cfg, data) is None:  # --population auto's own measurement
            return together_seconds(cfg, data, len(pop))[0], MEASURE_STEPS
        alone = True
    if alone:
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
        loss, _ = training_loss(net, x, y, cfg.train.weight_decay)
        float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _population_step(pop: list[TrialConfig], data: Dataset) -> Callable[[], None]:
    """run_population's step: every trial's loss on the shared batch, read back, backward, update."""
    nets, generators = _nets(pop, data)
    net = PopulationNet(nets, pop[0].model.kind, generators)
    opt = PopulationOptimizer(net, pop, data.x_train.device)
    x, y = _first_batch(pop[0], data, len(pop))

    def step() -> None:
        logits = net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y, reduction="none").view(len(pop), -1).mean(1)
        loss.detach().tolist()
        net.zero_grad(set_to_none=True)
        loss.sum().backward()
        if not opt.fused_first:
            net.first_layer_grad()
        opt.step()

    return step


class BatchBuffers:
    """The minibatch gathered and normalized into buffers kept across steps: fresh megabyte-sized
    tensors each step cost page faults that showed up as much as the conversion itself."""

    def __init__(self, data: Dataset, batch_size: int, p: int) -> None:
        self.data, self.p = data, p
        rows = min(batch_size, len(data.x_train))  # a batch larger than the data is the whole data
        self.raw = torch.empty((rows, *data.x_train.shape[1:]), dtype=torch.uint8, device=data.x_train.device)
        self.x = torch.empty(self.raw.shape, dtype=torch.float32, device=data.x_train.device)
        self.y = torch.empty(p * rows, dtype=torch.long, device=data.x_train.device)

    def load(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(idx)
        raw, x = self.raw[:b], self.x[:b]
        torch.index_select(self.data.x_train, 0, idx, out=raw)
        x.copy_(raw)
        gain, offset = self.data.affine
        torch.addcmul(offset, x, gain, out=x)  # the same arithmetic as Dataset.normalize
        y = self.y[: self.p * b]
        y.view(self.p, b).copy_(self.data.y_train[idx].expand(self.p, b))
        return x, y
