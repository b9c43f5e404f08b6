#!/usr/bin/env python3
"""The Ray executor's overhead against the local one, on the smoke search, side by side in one run.

    python benchmarks/ray_overhead.py [--trials 8] [--epochs 2]

Three ways, each a real `hpsearch coarse configs/smoke.yaml` process, wall time end to end:
local (one process), ray joining a head already running on 127.0.0.1 (`ray start --head`, started
here first and not timed), and ray starting its own local instance (what --executor ray does with no
--ray-address). Ray's token authentication is off for this loopback-only cluster.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def timed(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=ROOT, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        common = ["coarse", "configs/smoke.yaml", "--trials", str(args.trials), "--epochs", str(args.epochs)]
        common += ["--population", "1"]
        head = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
        head += ["--include-dashboard=false", "--disable-usage-stats"]
        subprocess.run(head, check=True, capture_output=True, env=env)
        try:
            local = timed([*common, "--out", f"{tmp}/local", "--workers", "1"], env)
            joined = timed(
                [*common, "--out", f"{tmp}/joined", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"], env
            )
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)
        own = timed([*common, "--out", f"{tmp}/own", "--executor", "ray"], env)
    print(f"smoke search, {args.trials} trials x {args.epochs} epochs, one trial per task, wall time end to end:")
    print(f"local executor                          {local:6.1f} s")
    for name, wall in (
        ("ray, joining a running head (127.0.0.1)", joined),
        ("ray, starting its own local instance", own),
    ):
        print(f"{name:39s} {wall:6.1f} s   overhead {wall - local:+5.1f} s ({wall / local:.2f}x)")


if __name__ == "__main__":
    main()
