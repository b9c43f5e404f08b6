"""A trial's trained state between halving rungs: weights, optimizer buffers and learning rate, and
where it stands inside an epoch when a fractional rung ended there.

One format for every training loop (run_trial's torch.optim, the built-in population's and the
torch.func population's stacked tensors), keyed by the network's own parameter names, so a trial
may stop in a population and go on alone, in another process or on a Ray node. Written with
torch.save and read back with weights_only=True: tensors, numbers and strings, never code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

from hpsearch.runs.records import TrialConfig

# Buffer names: torch.optim.SGD's momentum_buffer, torch.optim.Adam's exp_avg and exp_avg_sq.
MOMENTUM, EXP_AVG, EXP_AVG_SQ = "momentum", "exp_avg", "exp_avg_sq"


@dataclass
class Snapshot:
    model: dict[str, torch.Tensor]  # the network's state_dict
    optim: dict[str, dict[str, torch.Tensor]]  # parameter name -> buffer name -> tensor
    lr: float  # the learning rate the next step trains with (lr decay applied at each epoch's end)
    # A rung that ended inside an epoch (min_epochs 0.25): the steps of that epoch's batch order
    # taken, and their data losses summed (the recorder's running sum, which the epoch's mean loss
    # goes on from). 0 and 0.0 at an epoch's end.
    epoch_step: int = 0
    epoch_loss_sum: float = 0.0


def pack(snap: Snapshot) -> bytes:
    buf = io.BytesIO()
    model = {k: v.detach().cpu().clone() for k, v in snap.model.items()}
    optim = {k: {b: v.detach().cpu().clone() for b, v in d.items()} for k, d in snap.optim.items()}
    within = {"epoch_step": int(snap.epoch_step), "epoch_loss_sum": float(snap.epoch_loss_sum)}
    torch.save({"model": model, "optim": optim, "lr": float(snap.lr), **within}, buf)
    return buf.getvalue()


def unpack(data: bytes, device: torch.device | str = "cpu") -> Snapshot:
    raw = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    # Checkpoints written before rungs could end inside an epoch were all taken at an epoch's end.
    within = int(raw.get("epoch_step", 0)), float(raw.get("epoch_loss_sum", 0.0))
    return Snapshot(raw["model"], raw["optim"], float(raw["lr"]), *within)


def start_snapshot(cfg: TrialConfig, device: torch.device) -> Snapshot | None:
    return unpack(cfg.start.checkpoint, device) if cfg.start is not None else None


def optimizer_snapshot(net: nn.Module, opt: torch.optim.Optimizer, within: tuple[int, float] = (0, 0.0)) -> Snapshot:
    """run_trial's network and torch.optim optimizer as a Snapshot; `within`: where it stands inside
    an epoch (TrialRecorder.inside_epoch)."""
    optim: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in net.named_parameters():
        state = opt.state.get(p, {})
        if state.get("momentum_buffer") is not None:
            optim[name] = {MOMENTUM: state["momentum_buffer"]}
        elif "exp_avg" in state:
            optim[name] = {EXP_AVG: state["exp_avg"], EXP_AVG_SQ: state["exp_avg_sq"]}
    return Snapshot(dict(net.state_dict()), optim, float(opt.param_groups[0]["lr"]), *within)


def load_into_optimizer(snap: Snapshot, net: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """The reverse of optimizer_snapshot, into a freshly made optimizer; `steps` taken so far
    (Adam's bias correction counts them)."""
    for name, p in net.named_parameters():
        buffers = snap.optim.get(name)
        if not buffers:
            continue
        if MOMENTUM in buffers:
            opt.state[p]["momentum_buffer"] = buffers[MOMENTUM].clone()
        else:
            opt.state[p].update(
                step=torch.tensor(float(steps)),
                exp_avg=buffers[EXP_AVG].clone(),
                exp_avg_sq=buffers[EXP_AVG_SQ].clone(),
            )
    for group in opt.param_groups:
        group["lr"] = snap.lr
