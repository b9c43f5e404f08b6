#!/usr/bin/env python3
"""How fast a search's trials train, three ways, side by side in one run.

    python benchmarks/search_speed.py                      # CIFAR-shaped random data
    python benchmarks/search_speed.py --data-root DIR      # real CIFAR-10 (binary release under DIR)
    python benchmarks/search_speed.py --trials 32 --epochs 1 --json out.json

The search: the lecture's two-layer net (3072 -> 50 -> 10, ReLU), batch 100, SGD with momentum 0.9,
learning rate and weight decay log-uniform as in configs/cifar10_coarse.yaml; P trials x E epochs
on 49,000 training images. The three ways:

1. tutorial: the loop a user writes by hand: a float32 TensorDataset and a shuffling DataLoader,
   nn.Sequential, torch.optim.SGD with weight_decay, one trial after another;
2. hpsearch, one trial at a time (--population 1);
3. hpsearch population mode (the default).

Useful FLOPs are those every implementation must do to train: per training example,
4*D*H + 6*H*C (layer 1: forward and weight gradient; layer 2: forward, weight gradient and input
gradient; D=3072, H=50, C=10), times examples, epochs and trials. Evaluation, data movement and
optimizer updates are not counted. The GEMM peak is the best of three 4096^3 fp32 matmuls.
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
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpsearch.data import (
    Dataset,
    RawSplits,
    load_data,
    split_and_preprocess,
)
from hpsearch.executors.local import execute
from hpsearch.runs.records import TrialConfig, TrialEvents, TrialResult
from hpsearch.search.space import trial_configs
from hpsearch.spec.choices import Preprocess
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import ExecOptions
from hpsearch.spec.schema import Spec

D, H, C = 3072, 50, 10


def gemm_peak() -> float:
    """GFLOP/s of the best of three 4096^3 fp32 matmuls."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 4096**3 / best / 1e9


def random_cifar_shaped(seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    raw = RawSplits(
        x_train=torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=g),
        y_train=torch.randint(0, 10, (50_000,), generator=g),
        x_test=torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
        y_test=torch.zeros(0, dtype=torch.long),
        classes=tuple(str(i) for i in range(10)),
    )
    return split_and_preprocess(raw, 1000, None, Preprocess.MEAN_IMAGE)


def tutorial_trial(cfg: TrialConfig, x_train: torch.Tensor, y_train: torch.Tensor) -> float:
    """One trial written the plain way a tutorial teaches. Returns the last epoch's mean loss."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train), batch_size=cfg.train.batch_size, shuffle=True
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C))
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    for _ in range(cfg.train.epochs):
        total = 0.0
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
    return total / len(loader)


def run_way(name: str, fn, flops: float, peak: float, work: int) -> dict:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    row = {
        "way": name,
        "wall_s": wall,
        "trial_epochs_per_min": work / wall * 60,
        "useful_gflops": flops / wall / 1e9 if flops else None,
        "pct_of_gemm_peak": 100 * flops / wall / 1e9 / peak if flops else None,
    }
    line = f"{name:28s} {wall:8.2f} s  {row['trial_epochs_per_min']:8.1f} trial-epochs/min"
    if flops:
        line += f"  {row['useful_gflops']:7.1f} GFLOP/s useful  {row['pct_of_gemm_peak']:5.1f}% of GEMM peak"
    print(line, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, help="real CIFAR-10 root; default: CIFAR-shaped random data")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--population", type=int, default=None, help="hpsearch population size (default: auto)")
    ap.add_argument("--skip-tutorial", action="store_true")
    ap.add_argument(
        "--convnet",
        action="store_true",
        help="the convnet (3x3 conv 16 and 32 channels, pooling) instead of the two-layer net; "
        "no tutorial loop, and FLOPs not counted",
    )
    ap.add_argument("--images", type=int, default=None, help="train on the first N images only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    spec: Spec = load_spec(ROOT / "configs/cifar10_coarse.yaml")
    raw = spec.model_dump()
    raw["train"].update(epochs=args.epochs, device="cpu")
    if args.convnet:
        raw["model"].update(kind="convnet", hidden=[16, 32])
        args.skip_tutorial = True
    raw["search"]["trials"] = args.trials
    spec = Spec.model_validate(raw)
    t = time.perf_counter()
    data = load_data(spec, args.data_root, None) if args.data_root else random_cifar_shaped()
    load_s = time.perf_counter() - t
    if args.images:
        data = dataclasses.replace(data, x_train=data.x_train[: args.images], y_train=data.y_train[: args.images])
    configs = trial_configs(spec)
    n = len(data.x_train)
    work = args.trials * args.epochs
    flops = 0.0 if args.convnet else work * n * (4 * D * H + 6 * H * C)
    peak = gemm_peak()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; data: {'CIFAR-10' if args.data_root else 'random CIFAR-shaped'}, "
        f"{n} training images; {args.trials} trials x {args.epochs} epochs"
    )
    print(f"fp32 GEMM peak (4096^3 matmul): {peak:.1f} GFLOP/s", flush=True)
    print(f"data into memory (read, split, preprocessing statistics): {load_s:.2f} s", flush=True)

    rows = []
    if not args.skip_tutorial:
        x_float = data.normalize(data.x_train)  # a tutorial converts the whole dataset up front

        def tutorial() -> None:
            for cfg in configs:
                tutorial_trial(cfg, x_float, data.y_train)

        rows.append(run_way("tutorial loop", tutorial, flops, peak, work))
        del x_float

    results: list[TrialResult] = []
    rows.append(
        run_way(
            "hpsearch one at a time",
            lambda: execute(configs, data, ExecOptions(population=1, workers=1), TrialEvents(on_result=results.append)),
            flops,
            peak,
            work,
        )
    )
    pop: list[TrialResult] = []
    rows.append(
        run_way(
            f"hpsearch population (P={args.population or 'auto'})",
            lambda: execute(
                configs, data, ExecOptions(population=args.population, workers=1), TrialEvents(on_result=pop.append)
            ),
            flops,
            peak,
            work,
        )
    )
    by_trial = {r.trial: r for r in results}
    per_trial = {}
    for r in pop:
        # The first 50 steps, as the tests check: later, and in trials whose learning rate sits at the
        # edge of stability, float rounding differences grow chaotically.
        pairs = [
            (a, b)
            for i, (a, b) in enumerate(zip(by_trial[r.trial].losses, r.losses, strict=False))
            if i * r.loss_every < 50 and math.isfinite(a) and a != 0
        ]
        per_trial[r.trial] = max((abs(a - b) / abs(a) for a, b in pairs), default=0.0)
    close = [t for t, d in per_trial.items() if d <= 1e-4]
    worst = max(per_trial.values(), default=0.0)
    speedups = {}
    base = {r["way"]: r["wall_s"] for r in rows}
    names = list(base)
    for other in names[:-1]:
        speedups[f"population vs {other}"] = base[other] / base[names[-1]]
        print(f"speed-up, population vs {other}: {speedups[f'population vs {other}']:.2f}x")
    far = {t: f"{d:.1e} (lr {by_trial[t].params['lr']:.2g})" for t, d in per_trial.items() if d > 1e-4}
    print(
        f"population vs one at a time, losses in the first 50 steps: {len(close)} of {len(per_trial)} trials "
        f"within 1e-4 relative" + (f"; the others: {far}" if far else "")
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "gemm_peak_gflops": peak,
                    "trials": args.trials,
                    "epochs": args.epochs,
                    "images": n,
                    "ways": rows,
                    "speedups": speedups,
                    "max_rel_loss_diff": worst,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
