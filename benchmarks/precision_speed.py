#!/usr/bin/env python3
"""bf16 against fp32, trial by trial, one at a time, on configs/cifar10_hard.yaml's space.

    python benchmarks/precision_speed.py --data-root DIR            # real CIFAR-10 under DIR
    python benchmarks/precision_speed.py --configs 12 --json out.json

The first N configurations the hard spec's random search draws (its widths, depths, batch sizes,
activations and dropouts), each trained one trial at a time (run_trial) for --epochs on the spec's
training subset, once with train.precision fp32 and once with bf16, the two in alternating order so
that drift on a shared machine falls on both. Prints a row per configuration (seconds each way, the
ratio, validation accuracy each way) and the totals as trial-epochs per second, and what
`precision: auto` chooses for the first configuration. The JSON records the CPU model, its bf16
flags and torch's version beside the numbers.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpsearch.data import load_data
from hpsearch.search.space import trial_configs
from hpsearch.spec.choices import Precision
from hpsearch.spec.load import load_spec
from hpsearch.training.precision import choose_precision, machine, with_precision
from hpsearch.training.trial import run_trial, warm_up


def measured_on() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {**machine(), "commit": commit.strip(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "configs/cifar10_hard.yaml"))
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    spec = load_spec(args.spec)
    train = spec.train.model_copy(update={"epochs": args.epochs, "device": "cpu"})
    spec = spec.model_copy(update={"train": train})
    data = load_data(spec, args.data_root, None)
    configs = trial_configs(spec)[: args.configs]
    warm_up()
    info = measured_on()
    print(
        f"{info['cpu']}, bf16 flags: {', '.join(info['bf16_flags']) or 'none'}, torch {info['torch']}, "
        f"{info['threads']} threads, commit {info['commit']}, {info['date']}"
    )
    print(f"{len(configs)} configurations of {args.spec}, {args.epochs} epoch(s) each on {len(data.x_train):,} images")
    columns = ("trial", "hidden", "batch", "activation", "drop", "fp32 s", "bf16 s", "x", "acc fp32", "acc bf16")
    widths = (5, 12, 5, 10, 4, 7, 7, 5, 8, 8)
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(header)
    rows = []
    for i, cfg in enumerate(configs):
        order = (Precision.FP32, Precision.BF16) if i % 2 == 0 else (Precision.BF16, Precision.FP32)
        got: dict[Precision, tuple[float, float | None]] = {}
        for precision in order:
            start = time.perf_counter()
            result = run_trial(with_precision(cfg, precision), data)
            got[precision] = (time.perf_counter() - start, result.val_acc)
        (t32, a32), (t16, a16) = got[Precision.FP32], got[Precision.BF16]
        m = cfg.model
        row = {
            "trial": cfg.trial_id,
            "hidden": list(m.hidden),
            "batch_size": cfg.train.batch_size,
            "activation": m.activation.value,
            "dropout": m.dropout,
            "fp32_s": round(t32, 3),
            "bf16_s": round(t16, 3),
            "speedup": round(t32 / t16, 3),
            "val_acc_fp32": a32,
            "val_acc_bf16": a16,
        }
        rows.append(row)
        print(
            f"{cfg.trial_id:>5} {str(list(m.hidden)):>12} {cfg.train.batch_size:>5} {m.activation.value:>10} "
            f"{m.dropout:>4} {t32:>7.2f} {t16:>7.2f} {t32 / t16:>5.2f} {a32 or 0:>8.3f} {a16 or 0:>8.3f}"
        )
    total32, total16 = sum(r["fp32_s"] for r in rows), sum(r["bf16_s"] for r in rows)
    te = len(rows) * args.epochs
    auto = choose_precision(with_precision(configs[0], Precision.AUTO), data)
    print(f"trial-epochs per second: fp32 {te / total32:.3f}, bf16 {te / total16:.3f}: bf16 {total32 / total16:.2f}x")
    print(f"auto on trial {configs[0].trial_id}: {auto.line()}")
    if args.json:
        doc = {
            **info,
            "spec": args.spec,
            "epochs": args.epochs,
            "rows": rows,
            "trial_epochs_per_s": {"fp32": te / total32, "bf16": te / total16},
            "speedup": total32 / total16,
            "auto": auto.document(),
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
