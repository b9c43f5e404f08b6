"""Stacked parameters and their optimizer: `Param` (one tensor of all trials and how a per-trial
scalar broadcasts onto it), `PopulationNet` (the built-in MLP / convnet, P copies evaluated on one
shared batch) and `PopulationOptimizer` (torch.optim's updates with per-trial hyperparameters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.runs.records import TrialConfig
from hpsearch.spec.choices import Optimizer, Precision
from hpsearch.training.checkpoint import EXP_AVG, EXP_AVG_SQ, MOMENTUM, Snapshot
from hpsearch.training.models import Maxout, Net
from hpsearch.training.trial import EVAL_CHUNK, autocast, zero_tiny_

Expand = Callable[[torch.Tensor], torch.Tensor]


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


def _blocks(size: int, trailing: int) -> Expand:
    """(P,) -> each value repeated `size` times along dim 0, then `trailing` singleton dims."""
    return lambda s: s.repeat_interleave(size).view(-1, *([1] * trailing))


def leading(trailing: int) -> Expand:
    return lambda s: s.view(-1, *([1] * trailing))


class PopulationNet(nn.Module):
    """P copies of one architecture, each with its own weights, evaluated on one shared batch. The
    built-in network type of loop.train_population (its `Population` protocol)."""

    eval_chunk = EVAL_CHUNK  # examples per evaluation pass, as run_trial's

    def __init__(
        self,
        nets: list[Net],
        kind: str,
        generators: list[torch.Generator] | None = None,
        precision: Precision = Precision.FP32,
    ) -> None:
        super().__init__()
        self.p = len(nets)
        self.kind = kind
        self.precision = precision  # of the training forward pass; evaluation (logits) is fp32
        self.label_copies = self.p  # one cross-entropy over all trials' (P * B) logits reads P label copies
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
        self._loss: torch.Tensor | None = None  # the last batch's data losses, with their graph

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every trial's data loss (P,) on the shared batch x; y: its labels repeated P times."""
        with autocast(self.precision, x.device):
            logits = self(x)  # (P, B, C)
        per_example = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y, reduction="none")
        self._loss = per_example.view(self.p, -1).mean(1)
        return self._loss.detach()

    def backward(self, alive: torch.Tensor) -> None:
        """The last losses' gradients into .grad; a trial no longer alive gets none (zeros)."""
        assert self._loss is not None
        self.zero_grad(set_to_none=True)
        torch.where(alive, self._loss, torch.zeros_like(self._loss)).sum().backward()
        self._loss = None  # its graph is spent

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) shared by every trial -> (P, B, classes), in eval mode (no dropout)."""
        self.eval()
        try:
            return self(x)  # type: ignore[no-any-return]
        finally:
            self.train()

    def trial_state(self, p: int) -> dict[str, torch.Tensor]:
        """Trial p's network state, under its own network's state_dict names."""
        return {prm.name: prm.part(prm.tensor, p) for prm in self.params}

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
        dz = z.grad.view(-1, flat.shape[0])
        if dz.dtype == w0.dtype:
            torch.mm(dz, flat, out=self._w0_grad)  # (P * H, B) @ (B, D)
        else:  # bf16: the forward's matmul ran in bf16, and so does its weight gradient's
            self._w0_grad.copy_(torch.mm(dz, flat.to(dz.dtype)))
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
            and trains[0].precision is not Precision.BF16  # the fused matmul is fp32's (first_layer_grad)
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
        if isinstance(self.net, PopulationNet) and not self.fused_first:
            self.net.first_layer_grad()  # the MLP's first layer leaves its weight gradient to be made here
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
