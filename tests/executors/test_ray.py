"""--executor ray against a real Ray instance on 127.0.0.1, started here with `ray start --head --block`. A
command that joins Ray runs in a process of its own: Ray's state, signal handlers and shutdown stay out
of this one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PATIENCE, ROOT, cli, run_hpsearch, start_hpsearch, wait_for

pytest.importorskip("ray")
SMOKE = str(ROOT / "configs/smoke.yaml")
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # A cluster on loopback for this test only: Ray's token authentication is turned off, for the
    # head and for every hpsearch process started by these tests (they inherit os.environ).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # No prestarted workers: they serve jobs without a runtime_env, and every hpsearch run has one (its
    # PYTHONPATH), so they would only take CPU from the tests while they start.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_worker_prestart": "0"}
    # --block: the head stays in the foreground, and stopping it stops this cluster's processes and no
    # others (`ray stop` would stop every Ray instance on the machine), in a second or two.
    start = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
    start += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    log = temp / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(start, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(lambda: head.poll() is not None or "Ray runtime started" in log.read_text(), "ray start", every=0.1)
        assert head.poll() is None, f"ray start failed:\n{log.read_text()}"
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(PATIENCE)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of its process group outlived it
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def final_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if json.loads(line)["state"] != "interrupted"]


def test_a_tpe_halving_search_on_ray_equals_the_local_one(tmp_path: Path, ray_address: str) -> None:
    """A tpe search with successive halving: its first rung's waves of proposals go to Ray one after
    another (one Ray session), each told the results that came back; a trial's state at the rung's
    end comes back with its result and travels to the task that trains it on. One Ray task with 2
    CPUs runs torch on 2 threads, as the local run does on this 2-core machine: then the float
    arithmetic is the same, and so is every number, every proposal and every decision."""
    spec = tmp_path / "smoke2.yaml"
    text = Path(SMOKE).read_text().replace("sampler: random", "sampler: tpe\n  tpe: {startup_trials: 2, wave: 2}")
    text = text.replace("  seed: 0\n", "  seed: 0\n  halving: {eta: 2, min_epochs: 1}\n")
    assert "sampler: tpe" in text
    assert "halving:" in text
    spec.write_text(text + "resources:\n  num_cpus: 2\n")
    args = ["--trials", "4", "--epochs", "2", "--population", "1"]
    local = cli("coarse", str(spec), "--out", str(tmp_path / "local"), *args, "--workers", "1")
    assert local.returncode == 0, local.stderr
    assert "rung 1 of 0-1: 2 trials (the best 1/2 of rung 0)" in local.stderr
    on_ray = run_hpsearch(
        "coarse", str(spec), "--out", str(tmp_path / "ray"), *args, "--executor", "ray", "--ray-address", ray_address
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert "best val_acc" in on_ray.stderr  # the same progress bar
    proposed = [(tmp_path / d / "coarse/proposals.jsonl").read_text() for d in ("ray", "local")]
    assert proposed[0] == proposed[1]
    assert proposed[0].count("\n") == 1  # trials 2-3
    a = final_records(tmp_path / "ray/coarse/trials.jsonl")
    b = final_records(tmp_path / "local/coarse/trials.jsonl")
    key = lambda r: (r["trial"], r["rung"], r["state"])  # noqa: E731
    assert sorted(map(key, a)) == sorted(map(key, b))
    assert {r["trial"] for r in a} == set(range(4))
    assert {r["state"] for r in a} >= {"stopped", "complete"}
    by = {key(r): r for r in b}
    for r in a:
        assert r["params"] == by[key(r)]["params"]
        for field in (
            "val_acc",
            "train_acc",
            "train_loss",
            "initial_loss",
            "epochs_done",
            "val_acc_per_epoch",
            "losses",
        ):
            assert r[field] == by[key(r)][field], (key(r), field)
    assert not (tmp_path / "ray/coarse/checkpoints").exists()
    order = [
        [row["trial"] for row in json.loads((tmp_path / d / "coarse/results.json").read_text())["ranked"]]
        for d in ("ray", "local")
    ]
    assert order[0] == order[1]  # the same ranking
    # The driver is the only writer: refine and report work on a Ray run unchanged (here, in this process;
    # refine's trials would go to Ray through the same executor as coarse's, and it hands that its options).
    bad = cli("refine", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", "127.0.0.1:abc")
    assert bad.returncode == 1
    assert "--ray-address: expected HOST:PORT" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "ray/refine-1").exists()
    refined = cli("refine", str(tmp_path / "ray"), "--trials", "3")
    assert refined.returncode == 0, refined.stderr
    report = cli("report", str(tmp_path / "ray"))
    assert report.returncode == 0, report.stderr


def _ray_task_pids() -> list[int]:
    """Ray worker processes running our task (Ray names them ray::<task name>)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if cmd.startswith(b"ray::hpsearch_trials"):
                pids.append(int(proc.name))
    return pids


def test_a_killed_ray_worker_is_retried_and_each_trial_recorded_once(tmp_path: Path, ray_address: str) -> None:
    run = tmp_path / "run"
    args = ["--trials", "4", "--epochs", "60", "--population", "2", "--executor", "ray", "--ray-address", ray_address]
    proc = start_hpsearch("coarse", SMOKE, "--out", str(run), *args)
    wait_for(lambda: proc.poll() is not None or bool(_ray_task_pids()), "a Ray task started", every=0.1)
    pids = _ray_task_pids()
    assert pids, "no Ray task started"
    time.sleep(1.0)  # inside the trials
    victim = pids[0]
    assert victim in _ray_task_pids(), "the task ended before the kill: give it more epochs"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err
    finals = final_records(run / "coarse/trials.jsonl")
    assert sorted(r["trial"] for r in finals) == [0, 1, 2, 3]  # each exactly once
    assert all(r["state"] == "complete" for r in finals)
    retried = [r for r in finals if r["attempts"]]
    assert len(retried) == 2  # the killed population's two trials, each with its lost attempt kept
    for r in retried:
        assert len(r["attempts"]) == 1
        assert r["attempts"][0]["attempt"] == 1
        assert r["attempts"][0]["error"].startswith("WorkerCrashedError: The worker died unexpectedly")
    assert all(not r["attempts"] for r in finals if r not in retried)


def test_a_bad_ray_address_fails_with_one_line_before_ray_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def init(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ray.init was called: at an address nothing answers at, it retries for minutes")

    monkeypatch.setattr(ray, "init", init)  # refused in seconds: before Ray is asked, not timed
    for address, message in [
        (f"127.0.0.1:{_free_port()}", "nothing answers at 127.0.0.1:"),
        ("127.0.0.1:abc", "--ray-address: expected HOST:PORT"),
    ]:
        r = cli("coarse", SMOKE, "--out", str(tmp_path / "run"), "--executor", "ray", "--ray-address", address)
        assert r.returncode == 1
        assert "Traceback" not in r.stderr
        assert message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_resources_larger_than_the_cluster_are_refused(tmp_path: Path, ray_address: str) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(Path(SMOKE).read_text() + "resources:\n  num_cpus: 64\n")
    r = run_hpsearch(
        "coarse", str(spec), "--out", str(tmp_path / "run"), "--executor", "ray", "--ray-address", ray_address
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "resources.num_cpus: 64 per task, but the Ray cluster has 2 CPUs in all" in r.stderr.strip().splitlines()[-1]


def test_sigterm_during_a_ray_run_records_interrupted_trials_and_exits_143(tmp_path: Path, ray_address: str) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "6", "--epochs", "20", "--population", "1"]
    ray_args = ["--executor", "ray", "--ray-address", ray_address]
    proc = start_hpsearch(*args, *ray_args)
    wait_for(lambda: proc.poll() is not None or bool(_ray_task_pids()), "a Ray task started", every=0.1)
    assert proc.poll() is None, "no Ray task started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "resume with: hpsearch" in err.strip().splitlines()[-1]
    states = [json.loads(line)["state"] for line in (run / "coarse/trials.jsonl").read_text().splitlines()]
    assert "interrupted" in states
    # What --resume does is the driver's (read the records, train what is not final): in this process.
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["trial"] for r in final_records(run / "coarse/trials.jsonl")) == list(range(6))


# --------------------------------------------------------------------------- a user's own network

OWN_NET = """\
import torch.nn as nn


def tiny(input_shape, num_classes, hidden=8):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_a_user_factory_runs_on_ray_with_the_numbers_of_the_local_run(tmp_path: Path, ray_address: str) -> None:
    # The factory's text travels with each task (factory.FactorySource); tasks with 2 CPUs run torch on
    # 2 threads as the local run does on this 2-core machine, so every number is the same.
    (tmp_path / "nets.py").write_text(OWN_NET)
    spec = tmp_path / "own.yaml"
    spec.write_text(
        "name: own\ndata: {dataset: synthetic, synthetic_train: 400, synthetic_test: 10, val_size: 100}\n"
        "model: {kind: python, factory: nets.py:tiny, args: {hidden: 8}}\n"
        "train: {epochs: 2, batch_size: 50, device: cpu}\nresources: {num_cpus: 2}\n"
        "search: {trials: 3, seed: 0, space: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}, hidden: {values: [4, 8]}}}\n"
    )
    args = ["--population", "1"]
    local = cli("coarse", str(spec), "--out", str(tmp_path / "local"), *args, "--workers", "1")
    assert local.returncode == 0, local.stderr
    on_ray = run_hpsearch(
        "coarse", str(spec), "--out", str(tmp_path / "ray"), *args, "--executor", "ray", "--ray-address", ray_address
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"model: tiny from {(tmp_path / 'nets.py').resolve()} (sha256 " in on_ray.stderr
    a = {r["trial"]: r for r in final_records(tmp_path / "ray/coarse/trials.jsonl")}
    b = {r["trial"]: r for r in final_records(tmp_path / "local/coarse/trials.jsonl")}
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for t in a:
        assert a[t]["state"] == "complete", a[t]["error"]
        assert a[t]["params"] == b[t]["params"]
        for key in ("val_acc", "train_acc", "train_loss", "initial_loss", "val_acc_per_epoch", "losses"):
            assert a[t][key] == b[t][key], (t, key)
    info = json.loads((tmp_path / "ray/coarse/run.json").read_text())
    assert info["factory_sha256"] == json.loads((tmp_path / "local/coarse/run.json").read_text())["factory_sha256"]


def test_a_factory_importing_its_neighbour_runs_on_ray_from_the_text_the_stage_read(
    tmp_path: Path, ray_address: str
) -> None:
    # Ray's worker processes start in a folder of Ray's own, with sys.path of their own: they import
    # lenet as the driver does, from the text it read with the factory.
    (tmp_path / "lenet.py").write_text(OWN_NET.replace("def tiny(", "def lenet("))
    (tmp_path / "nets.py").write_text(
        "from lenet import lenet\n\n\ndef tiny(input_shape, num_classes):\n    return lenet(input_shape, num_classes)\n"
    )
    spec = tmp_path / "own.yaml"
    spec.write_text(
        "name: own\ndata: {dataset: synthetic, synthetic_train: 200, synthetic_test: 10, val_size: 100}\n"
        "model: {kind: python, factory: nets.py:tiny}\ntrain: {epochs: 1, batch_size: 50, device: cpu}\n"
        "search: {trials: 2, seed: 0, space: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}}\n"
    )
    on_ray = ["--population", "1", "--executor", "ray", "--ray-address", ray_address]
    res = run_hpsearch("coarse", str(spec), "--out", str(tmp_path / "run"), *on_ray)
    assert res.returncode == 0, res.stderr
    records = final_records(tmp_path / "run/coarse/trials.jsonl")
    assert [r["state"] for r in records] == ["complete", "complete"], [r.get("error") for r in records]
