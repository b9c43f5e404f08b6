#!/usr/bin/env python3
"""How fast a user's own network (model.kind python) trains, population against one at a time,
side by side in one run.

    python benchmarks/user_net_speed.py                      # CIFAR-shaped random data
    python benchmarks/user_net_speed.py --data-root DIR      # real CIFAR-10 (binary release under DIR)
    python benchmarks/user_net_speed.py --trials 32 --epochs 1 --json out.json

The search is configs/cifar10_coarse.yaml's (batch 100, SGD with momentum 0.9, lr and weight decay
log-uniform), P trials x E epochs on 49,000 training images. The ways:

a. the built-in two-layer net (3072 -> 50 -> 10, ReLU), hpsearch's hand-written MLP population;
b. the same net written by a user as an nn.Sequential factory, trained as a torch.func population;
c. that factory, one trial at a time;
d. a user convnet (conv 16 and 32 channels, 3x3, ReLU, 2x2 max-pool each, then a linear layer),
   trained as a population, and e. one at a time, on --convnet-trials trials and the first
   --convnet-images images (a convnet on a CPU is slow);
and what `--population auto` picks for each user net (funcpop.measured_population), with the step
times it measured.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_speed import random_cifar_shaped  # the benchmark beside this one: the same random data

from hpsearch.data import Dataset, load_data
from hpsearch.executors.local import auto_population, execute
from hpsearch.runs.records import TrialConfig, TrialEvents, TrialResult
from hpsearch.search.space import trial_configs
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import ExecOptions
from hpsearch.spec.schema import Spec
from hpsearch.training.populations.funcpop import measured_population, population_support, step_seconds


def two_layer_net(input_shape: tuple[int, ...], num_classes: int, hidden: int = 50) -> nn.Module:
    """The lecture's two-layer net as a user writes it (Kaiming init, as the coarse spec's)."""
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )
    for layer in (net[1], net[3]):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    return net


def small_convnet(input_shape: tuple[int, ...], num_classes: int, channels: int = 16) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (h // 4) * (w // 4), num_classes),
    )


def search(base: Spec, trials: int, model: dict[str, Any]) -> list[TrialConfig]:
    raw = base.model_dump()
    raw["model"] = model
    raw["search"]["trials"] = trials
    return trial_configs(Spec.model_validate(raw))


def timed(name: str, work: int, fn: Callable[[], list[TrialResult]]) -> tuple[dict[str, Any], list[TrialResult]]:
    t = time.perf_counter()
    results = fn()
    wall = time.perf_counter() - t
    print(f"{name:44s} {wall:8.2f} s  {work / wall * 60:8.1f} trial-epochs/min", flush=True)
    return {"way": name, "wall_s": wall, "trial_epochs_per_min": work / wall * 60}, results


def train(configs: list[TrialConfig], data: Dataset, population: int) -> list[TrialResult]:
    out: list[TrialResult] = []
    execute(configs, data, ExecOptions(population=population, workers=1), TrialEvents(on_result=out.append))
    return out


def first_steps_difference(a: list[TrialResult], b: list[TrialResult]) -> str:
    """How many trials' losses agree within 1e-4 relative over the first 50 steps, and the others'
    (later, and in trials near the edge of stability, float rounding grows chaotically, as
    benchmarks/search_speed.py says)."""
    by_trial = {r.trial: r for r in a}
    worst: dict[int, float] = {}
    for r in b:
        pairs = zip(by_trial[r.trial].losses, r.losses, strict=False)
        diffs = [
            abs(u - v) / abs(u) for i, (u, v) in enumerate(pairs) if i * r.loss_every < 50 and math.isfinite(u) and u
        ]
        worst[r.trial] = max(diffs, default=0.0)
    far = {t: f"{d:.1e} (lr {by_trial[t].params['lr']:.2g})" for t, d in worst.items() if d > 1e-4}
    close = len(worst) - len(far)
    return f"{close} of {len(worst)} trials within 1e-4 relative" + (f"; the others: {far}" if far else "")


def auto_line(name: str, cfg: TrialConfig, data: Dataset, size: int) -> dict[str, Any]:
    reason = population_support(cfg, data)
    if reason is not None:
        print(f"auto for {name}: one at a time ({reason})")
        return {"net": name, "picked": 1, "reason": reason}
    together, alone = step_seconds(cfg, data, size)
    picked = measured_population(cfg, data, size)
    print(
        f"auto for {name}: {'population of ' + str(picked) if picked > 1 else 'one at a time'} "
        f"(measured: {size} together {1000 * together:.1f} ms a step = {1000 * together / size:.2f} ms per trial, "
        f"one alone {1000 * alone:.2f} ms a step)"
    )
    return {"net": name, "picked": picked, "together_step_s": together, "alone_step_s": alone, "size": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, help="real CIFAR-10 root; default: CIFAR-shaped random data")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--images", type=int, default=None, help="train the two-layer nets on the first N images only")
    ap.add_argument("--convnet-trials", type=int, default=8)
    ap.add_argument("--convnet-images", type=int, default=5000)
    ap.add_argument("--skip-convnet", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    spec: Spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    raw = spec.model_dump()
    raw["train"].update(epochs=args.epochs, device="cpu")
    spec = Spec.model_validate(raw)
    t = time.perf_counter()
    full = load_data(spec, args.data_root, None) if args.data_root else random_cifar_shaped()
    load_s = time.perf_counter() - t
    data = full
    if args.images:
        data = dataclasses.replace(full, x_train=full.x_train[: args.images], y_train=full.y_train[: args.images])
    here = Path(__file__).resolve()
    builtin = search(spec, args.trials, spec.model.model_dump())
    user = search(spec, args.trials, {"kind": "python", "factory": f"{here}:two_layer_net"})
    work = args.trials * args.epochs
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; data: {'CIFAR-10' if args.data_root else 'random CIFAR-shaped'}, "
        f"{len(data.x_train)} training images; {args.trials} trials x {args.epochs} epochs; "
        f"data into memory {load_s:.2f} s",
        flush=True,
    )
    size = min(auto_population(builtin[0], data), args.trials)
    # Untimed first: a process's first population pays one-time costs (allocator, thread pool, kernels)
    # that made whichever way ran first look 2x slower.
    warm = dataclasses.replace(data, x_train=data.x_train[:1000], y_train=data.y_train[:1000])
    train(builtin[:2], warm, 2)
    train(user[:2], warm, 2)
    rows = []
    row, _ = timed(f"a. built-in MLP population (P={size})", work, lambda: train(builtin, data, size))
    rows.append(row)
    row, together = timed(f"b. user nn.Sequential, vmap population (P={size})", work, lambda: train(user, data, size))
    rows.append(row)
    row, alone = timed("c. user nn.Sequential, one at a time", work, lambda: train(user, data, 1))
    rows.append(row)
    a, b, c = (r["wall_s"] for r in rows)
    ratios = {"b_speed_vs_a": a / b, "b_speed_vs_c": c / b}
    print(f"b's speed / a's: {a / b:.2f} (target >= 0.70);  b's speed / c's: {c / b:.2f}x (target >= 2.5x)")
    print(f"b vs c, losses in the first 50 steps: {first_steps_difference(alone, together)}", flush=True)
    autos = [auto_line("user nn.Sequential", user[0], data, size)]

    if not args.skip_convnet:
        small = dataclasses.replace(
            full, x_train=full.x_train[: args.convnet_images], y_train=full.y_train[: args.convnet_images]
        )
        conv = search(spec, args.convnet_trials, {"kind": "python", "factory": f"{here}:small_convnet"})
        conv_size = min(auto_population(conv[0], small), args.convnet_trials)
        conv_work = args.convnet_trials * args.epochs
        print(f"user convnet: {args.convnet_trials} trials x {args.epochs} epochs on {len(small.x_train)} images")
        row, conv_together = timed(
            f"d. user convnet, as auto picked ({f'population of {conv_size}' if conv_size > 1 else 'one at a time'})",
            conv_work,
            lambda: train(conv, small, conv_size),
        )
        rows.append(row)
        row, conv_alone = timed("e. user convnet, one at a time", conv_work, lambda: train(conv, small, 1))
        rows.append(row)
        ratios["d_speed_vs_e"] = rows[-1]["wall_s"] / rows[-2]["wall_s"]
        print(f"d's speed / e's: {ratios['d_speed_vs_e']:.2f}x")
        print(f"d vs e, losses in the first 50 steps: {first_steps_difference(conv_alone, conv_together)}")
        autos.append(auto_line("user convnet", conv[0], small, conv_size))

    if args.json:
        args.json.write_text(json.dumps({"ways": rows, "ratios": ratios, "auto": autos}, indent=2) + "\n")


if __name__ == "__main__":
    main()
