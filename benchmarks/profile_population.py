#!/usr/bin/env python3
"""Where a population step's time goes, and what that bounds.

    python benchmarks/profile_population.py                 # CIFAR-shaped random data
    python benchmarks/profile_population.py --data-root DIR # real CIFAR-10
    python benchmarks/profile_population.py --json out.json

Two-layer net (search_speed.py's search): one epoch of a P-trial population under torch.profiler,
its ops grouped into matmuls (mm, addmm, bmm, baddbmm), the optimizer's elementwise update, the loss
and the rest. Then the two big matmuls of a step timed alone at the population's shapes: their rate
is the most useful FLOP/s a step can reach, even if everything else in it cost nothing.

Convnet (search_speed.py --convnet): one training step on a batch of 100 for P nets one after
another and for the same P nets as one population (shared first conv with P x C output channels,
grouped convs after), and the conv layers alone both ways; plus the useful FLOP/s of one-at-a-time
training (conv and linear forward FLOPs x 3 for forward and backward).
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_speed import C, D, H, gemm_peak, random_cifar_shaped

from hpsearch.data import (
    Dataset,
    load_data,
)
from hpsearch.executors.local import auto_population
from hpsearch.runs.records import TrialConfig
from hpsearch.search.space import trial_configs
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import Spec
from hpsearch.training.models import build_model
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.populations.stacked import PopulationNet

GROUPS = {
    "matmuls": {"aten::mm", "aten::addmm_", "aten::addmm", "aten::bmm", "aten::baddbmm"},
    "optimizer update": {"aten::addcmul_", "aten::addcmul", "aten::hardshrink"},
    "loss": {
        "aten::_log_softmax",
        "aten::_log_softmax_backward_data",
        "aten::nll_loss_forward",
        "aten::nll_loss_backward",
    },
    "L2 penalty for the curve": {"aten::linalg_vector_norm"},
    "batch gather and normalize": {"aten::index_select", "aten::copy_", "aten::index"},
}


def best_ms(fn: Callable[[], object], repeat: int = 20) -> float:
    fn()
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t) / repeat)
    return best * 1e3


def configs_for(spec: Spec, trials: int, **model: object) -> list[TrialConfig]:
    raw = spec.model_dump()
    raw["train"].update(epochs=1, device="cpu")
    raw["model"].update(model)
    raw["search"]["trials"] = trials
    s = Spec.model_validate(raw)
    return trial_configs(s)


def profile_mlp(spec: Spec, data: Dataset, peak: float) -> dict[str, object]:
    cfgs = configs_for(spec, 64)
    p = auto_population(cfgs[0], data)
    cfgs = cfgs[:p]
    n, b = len(data.x_train), cfgs[0].train.batch_size
    steps = math.ceil(n / b)
    run_population(cfgs, dataclasses.replace(data, x_train=data.x_train[:2000], y_train=data.y_train[:2000]))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        run_population(cfgs, data)
        wall = time.perf_counter() - t
    by_op = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}  # ms
    total = sum(by_op.values())
    groups = {g: sum(by_op.get(op, 0.0) for op in ops) for g, ops in GROUPS.items()}
    groups["everything else"] = total - sum(groups.values())
    useful = p * n * (4 * D * H + 6 * H * C) / 1e9  # GFLOP, as search_speed.py counts them

    # The first layer's two matmuls alone, at the population's shapes.
    w, x = torch.randn(p * H, D) * 0.01, torch.randn(b, D)
    buf, dz = torch.zeros(p * H, D), torch.randn(p * H, b)
    fwd = best_ms(lambda: torch.mm(w, x.T))
    bwd = best_ms(lambda: buf.addmm_(dz, x, beta=0.9))
    gemm_rate = 2 * (2 * p * H * D * b) / ((fwd + bwd) / 1e3) / 1e9
    out = {
        "population": p,
        "epoch_s_profiled": wall,
        "step_ms": total / steps,
        "ms_per_step": {g: v / steps for g, v in groups.items()},
        "useful_gflops_profiled": useful / wall,
        "first_layer_forward_ms": fwd,
        "first_layer_weight_grad_ms": bwd,
        "gemm_only_gflops": gemm_rate,
        "gemm_only_pct_of_peak": 100 * gemm_rate / peak,
    }
    print(f"\ntwo-layer net, population P={p}, one epoch of {n} images ({steps} steps), under the profiler:")
    print(f"  {total / steps:6.2f} ms per step (op self time), {useful / wall:.1f} GFLOP/s useful")
    for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:28s} {v / steps:6.2f} ms  {100 * v / total:5.1f}%")
    print(
        f"first layer's matmuls alone at these shapes: forward {fwd:.2f} ms, weight gradient {bwd:.2f} ms: "
        f"{gemm_rate:.0f} GFLOP/s = {100 * gemm_rate / peak:.0f}% of the GEMM peak"
    )
    print(
        f"bound: useful FLOP/s <= the matmuls' own rate ({100 * gemm_rate / peak:.0f}% of peak) even if "
        f"nothing else in a step cost time; the rest of the step is {100 * (1 - groups['matmuls'] / total):.0f}%"
    )
    return out


def conv_flops_per_example(hidden: tuple[int, ...]) -> float:
    """Forward multiply-adds x 2 of the 3x3 convs and the final linear layer, then x 3 for training."""
    flops, c, s = 0.0, 3, 32
    for ch in hidden:
        flops += 2 * c * 9 * ch * s * s
        c, s = ch, s // 2
    flops += 2 * c * s * s * C
    return 3 * flops


def profile_convnet(spec: Spec, data: Dataset, peak: float, p: int) -> dict[str, object]:
    hidden = (16, 32)
    cfgs = configs_for(spec, p, kind="convnet", hidden=list(hidden))
    torch.manual_seed(0)
    nets = [build_model(c.model, data.input_shape, data.num_classes) for c in cfgs]
    copies = [build_model(c.model, data.input_shape, data.num_classes) for c in cfgs]
    pop = PopulationNet(copies, "convnet")
    x = data.normalize(data.x_train[:100])
    y = data.y_train[:100]

    def separate() -> None:
        for net in nets:
            F.cross_entropy(net(x), y).backward()

    def together() -> None:
        logits = pop(x)
        F.cross_entropy(logits.reshape(-1, C), y.repeat(p)).backward()

    sep, tog = best_ms(separate, 5), best_ms(together, 5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        separate()
    by_op = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    total = sum(by_op.values())
    convs = sum(v for k, v in by_op.items() if "conv" in k)
    gemms = sum(by_op.get(op, 0.0) for op in GROUPS["matmuls"])
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:6]
    # The conv layers alone: P separate 16-channel convs vs one conv with P x 16 outputs, and the
    # second layer as P convs vs one grouped conv.
    x1 = x.clone().requires_grad_(False)
    w1s = [torch.randn(hidden[0], 3, 3, 3, requires_grad=True) for _ in range(p)]
    w1 = torch.randn(p * hidden[0], 3, 3, 3, requires_grad=True)
    h2 = torch.randn(100, hidden[0], 16, 16)
    w2s = [torch.randn(hidden[1], hidden[0], 3, 3, requires_grad=True) for _ in range(p)]
    h2g = torch.randn(100, p * hidden[0], 16, 16)
    w2g = torch.randn(p * hidden[1], hidden[0], 3, 3, requires_grad=True)
    conv1_sep = best_ms(lambda: [F.conv2d(x1, w, padding=1).sum().backward() for w in w1s], 5)
    conv1_one = best_ms(lambda: F.conv2d(x1, w1, padding=1).sum().backward(), 5)
    conv2_sep = best_ms(lambda: [F.conv2d(h2, w, padding=1).sum().backward() for w in w2s], 5)
    conv2_grp = best_ms(lambda: F.conv2d(h2g, w2g, padding=1, groups=p).sum().backward(), 5)
    rate = p * 100 * conv_flops_per_example(hidden) / (sep / 1e3) / 1e9
    print(f"\nconvnet 3x3 conv {hidden[0]}, {hidden[1]} + pooling, P={p}, one training step on a batch of 100:")
    print(f"  one at a time {sep:7.1f} ms, population {tog:7.1f} ms: population {sep / tog:.2f}x")
    print(
        f"  first conv, forward + backward: {p} separate {conv1_sep:.1f} ms, "
        f"one conv with {p}x{hidden[0]} outputs {conv1_one:.1f} ms"
    )
    print(
        f"  second conv, forward + backward: {p} separate {conv2_sep:.1f} ms, "
        f"one grouped conv (groups={p}) {conv2_grp:.1f} ms"
    )
    print(
        f"  one at a time, by op: convolutions {100 * convs / total:.0f}%, matmuls {100 * gemms / total:.0f}%, "
        f"the rest (activations, pooling, their backward: memory-bound, as costly together as apart) "
        f"{100 * (1 - (convs + gemms) / total):.0f}%; largest: "
        + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top)
    )
    print(
        f"  one at a time already runs at {rate:.0f} GFLOP/s useful = {100 * rate / peak:.0f}% of the GEMM peak; "
        f"2x would need {200 * rate / peak:.0f}%"
    )
    return {
        "population": p,
        "one_at_a_time_step_ms": sep,
        "population_step_ms": tog,
        "speedup": sep / tog,
        "conv1_separate_ms": conv1_sep,
        "conv1_shared_ms": conv1_one,
        "conv2_separate_ms": conv2_sep,
        "conv2_grouped_ms": conv2_grp,
        "one_at_a_time_share": {"convolutions": convs / total, "matmuls": gemms / total},
        "one_at_a_time_useful_gflops": rate,
        "one_at_a_time_pct_of_peak": 100 * rate / peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, help="real CIFAR-10 root; default: CIFAR-shaped random data")
    ap.add_argument("--convnet-population", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    data = load_data(spec, args.data_root, None) if args.data_root else random_cifar_shaped()
    peak = gemm_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 GEMM peak (4096^3): {peak:.1f} GFLOP/s")
    out = {
        "gemm_peak_gflops": peak,
        "mlp": profile_mlp(spec, data, peak),
        "convnet": profile_convnet(spec, data, peak, args.convnet_population),
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
