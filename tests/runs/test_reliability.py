"""Never lose a trial: kill -9 and resume, Ctrl-C / SIGTERM, torn writes, concurrent writers, atomic
rewrites. Real processes, real signals, real files; the commands around them (resume, report, refine)
run in this process (helpers.cli)."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PATIENCE, ROOT, cli, start_hpsearch, wait_for

from hpsearch.runs.records import TrialResult, TrialState
from hpsearch.runs.store import StageStore, atomic_write_text

SMOKE = str(ROOT / "configs/smoke.yaml")
FINAL = {"complete", "diverged", "failed"}
# Long enough trials (about 0.3 s each one at a time) that a kill lands inside one.
KILL_ARGS = ["--trials", "14", "--epochs", "6", "--population", "1", "--workers", "1"]
# Refine trials as long as the coarse ones (its default, 3x the epochs, only makes the test longer).
REFINE_KILL_ARGS = ["--trials", "8", "--epochs", "6", "--population", "1"]


def records(path: Path) -> list[dict[str, Any]]:
    """Every readable line of a trials.jsonl (a line cut by a kill is skipped)."""
    out = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def final_records(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["state"] in FINAL]


def metrics(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["state"], r["val_acc"], r["train_acc"], r["train_loss"], r["val_acc_per_epoch"], r["losses"])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_a_new_record(proc: subprocess.Popen[str], trials_file: Path, before: int) -> None:
    """Until the process has recorded more than `before` final records, or ended."""
    wait_for(lambda: len(final_records(trials_file)) > before or proc.poll() is not None, "a new record")


def kill_and_resume(args: list[str], trials_file: Path, kills: int, rng: random.Random) -> tuple[int, list[str]]:
    """Run `hpsearch *args` and kill -9 it at a random moment, again and again (with --resume once the
    stage has started) until `kills` kills have hit a live process or 3 x `kills` runs were made,
    checking after every run that no finished trial was recorded twice or changed; then resume to
    the end. Returns the number of kills that hit a live process."""
    log: list[str] = []
    seen: dict[int, dict[str, Any]] = {}  # trial -> its final record, as first written
    hits = 0
    started = trials_file.parent / "spec.yaml"  # written before the stage's first trial
    attempts = 0
    while True:
        last = hits == kills or attempts == 3 * kills  # then run to the end
        attempts += 1
        # What a user does: the same command again, with --resume once the stage has started.
        cmd = [*args, "--resume"] if started.exists() else args
        before = len(final_records(trials_file))
        proc = start_hpsearch(*cmd)
        if not last:
            if rng.random() < 0.5:
                delay = rng.uniform(0.2, 4.0)  # any moment: imports, data, planning, a trial, a write
                time.sleep(delay)
                log.append(f"run {attempts}: killed {delay:.2f} s after start")
            else:
                # Inside the search: once this process has recorded a trial (or ended), a moment later.
                wait_for_a_new_record(proc, trials_file, before)
                delay = rng.uniform(0.0, 0.4)
                time.sleep(delay)
                log.append(f"run {attempts}: killed {delay:.2f} s after a new record")
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                hits += 1
            else:
                log.append(f"run {attempts}: ended before its kill")
        _, err = proc.communicate(timeout=PATIENCE)
        if last:
            assert proc.returncode == 0, f"final resume failed: {err}\n" + "\n".join(log)
        finals = final_records(trials_file)
        counts: dict[int, int] = {}
        for r in finals:
            counts[r["trial"]] = counts.get(r["trial"], 0) + 1
            if r["trial"] in seen:
                assert metrics(r) == metrics(seen[r["trial"]]), f"trial {r['trial']} changed\n" + "\n".join(log)
            seen.setdefault(r["trial"], r)
        twice = {t: n for t, n in counts.items() if n > 1}
        assert not twice, f"finished trials trained again: {twice}\n" + "\n".join(log)
        if last:
            return hits, log


def test_kill_9_at_random_moments_then_resume_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("HPSEARCH_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    ref = tmp_path / "uninterrupted"
    assert cli("coarse", SMOKE, "--out", str(ref), *KILL_ARGS).returncode == 0
    run = tmp_path / "killed"
    args = ["coarse", SMOKE, "--out", str(run), *KILL_ARGS]
    hits, log = kill_and_resume(args, run / "coarse/trials.jsonl", kills=4, rng=rng)
    assert hits >= 3, f"only {hits} kills hit a running process (seed {seed})\n" + "\n".join(log)

    finals = final_records(run / "coarse/trials.jsonl")
    expected = {r["trial"]: r for r in final_records(ref / "coarse/trials.jsonl")}
    assert sorted(r["trial"] for r in finals) == list(range(14)), f"seed {seed}"  # each exactly once
    for r in finals:  # same trial parameters, and on a CPU with fixed seeds the same results
        assert r["params"] == expected[r["trial"]]["params"]
        assert metrics(r) == metrics(expected[r["trial"]]), f"trial {r['trial']} differs (seed {seed})"
    ranked = json.loads((run / "coarse/results.json").read_text())["ranked"]
    assert sorted(row["trial"] for row in ranked) == list(range(14))
    assert not list((run / "coarse").glob(".*.tmp")), "temp files of interrupted writes were left behind"
    run_info = json.loads((run / "coarse/run.json").read_text())
    assert run_info["end_time"]
    assert 1 <= len(run_info["resumed"]) <= 3 * 4  # resumes killed before any write leave none

    # refine, killed and resumed the same way: every planned trial once, matching an uninterrupted refine
    assert cli("refine", str(ref), *REFINE_KILL_ARGS).returncode == 0
    refine_args = ["refine", str(run), *REFINE_KILL_ARGS]
    hits, log = kill_and_resume(refine_args, run / "refine-1/trials.jsonl", kills=2, rng=rng)
    assert hits >= 1, f"seed {seed}\n" + "\n".join(log)
    finals = final_records(run / "refine-1/trials.jsonl")
    expected = {r["trial"]: r for r in final_records(ref / "refine-1/trials.jsonl")}
    assert sorted(r["trial"] for r in finals) == sorted(expected), f"seed {seed}"
    for r in finals:
        assert r["params"] == expected[r["trial"]]["params"]
        assert metrics(r) == metrics(expected[r["trial"]]), f"refine trial {r['trial']} differs (seed {seed})"
    assert not (run / "refine-2").exists()


def test_resume_refuses_a_changed_spec_and_names_the_change(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("coarse", SMOKE, "--out", str(run), "--trials", "2", "--epochs", "1").returncode == 0
    before = (run / "coarse/trials.jsonl").read_bytes()
    changed = cli("coarse", SMOKE, "--out", str(run), "--trials", "2", "--epochs", "3", "--resume")
    assert changed.returncode == 1
    assert "cannot resume, the spec changed since this stage started (train.epochs: 1 -> 3)" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1, changed.stderr
    assert "Traceback" not in changed.stderr
    spec = tmp_path / "edited.yaml"
    spec.write_text(Path(SMOKE).read_text().replace("hidden: [32]", "hidden: [64]"))
    edited = cli("coarse", str(spec), "--out", str(run), "--trials", "2", "--epochs", "1", "--resume")
    assert edited.returncode == 1
    assert "model.hidden: [32] -> [64]" in edited.stderr
    assert (run / "coarse/trials.jsonl").read_bytes() == before  # nothing written was lost
    # Asking for a new run (no --resume, another --out) is always allowed.
    new = cli("coarse", str(spec), "--out", str(tmp_path / "new"), "--trials", "2", "--epochs", "1")
    assert new.returncode == 0, new.stderr
    # Resuming a finished stage with the same spec trains nothing and ranks the same trials.
    same = cli("coarse", SMOKE, "--out", str(run), "--trials", "2", "--epochs", "1", "--resume")
    assert same.returncode == 0, same.stderr
    assert "2 of 2 trials already finished, 0 to run" in same.stderr
    assert (run / "coarse/trials.jsonl").read_bytes() == before


def test_a_second_command_on_a_running_stage_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "6", "--epochs", "6", "--population", "1"]
    first = start_hpsearch(*args)  # a real process, holding the stage while this one asks for it
    wait_for(lambda: first.poll() is not None or (run / "coarse/spec.yaml").exists(), "the stage started")
    assert first.poll() is None
    second = cli(*args, "--resume")
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: {run / 'coarse'}: another hpsearch process is running this stage; wait for it to finish or stop it"
    )
    _, err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, err
    assert sorted(r["trial"] for r in records(run / "coarse/trials.jsonl")) == list(range(6))  # each once
    # The lock goes with its holder: a later --resume runs (and finds nothing left to train).
    again = cli(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert "6 of 6 trials already finished, 0 to run" in again.stderr


def _result(trial: int, **extra: Any) -> TrialResult:
    return TrialResult(trial=trial, state=TrialState.COMPLETE, params={"lr": 0.1 * (trial + 1)}, val_acc=0.5, **extra)


def test_a_torn_last_line_is_skipped_reported_and_the_next_append_starts_fresh(tmp_path: Path) -> None:
    store = StageStore(tmp_path)
    for t in range(3):
        store.append_trial(_result(t))
    path = tmp_path / "trials.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last record cut mid-write, as a crash leaves it
    assert [r.trial for r in store.read_trials()] == [0, 1]
    assert store.unreadable_lines == 1
    store.append_trial(_result(2))
    assert [r.trial for r in store.read_trials()] == [0, 1, 2]
    assert store.unreadable_lines == 1  # the cut line stays cut; the new record is whole
    assert path.read_bytes().endswith(b"\n")
    assert path.read_bytes().count(b"\n") == 4


def test_resume_after_a_torn_write_reruns_that_trial_and_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "4", "--epochs", "1", "--population", "1"]
    assert cli(*args).returncode == 0
    path = run / "coarse/trials.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:50])
    torn_trial = json.loads(lines[-1])["trial"]
    (run / "coarse/results.json").unlink()  # the stage did not finish
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{path}: line 4 could not be read as a trial record" in resumed.stderr
    assert "3 of 4 trials already finished" in resumed.stderr
    assert sorted(r["trial"] for r in final_records(path)) == [0, 1, 2, 3]
    assert final_records(path)[-1]["trial"] == torn_trial


def test_a_trials_file_changed_by_hand_is_said_once_by_each_command_that_reads_it(tmp_path: Path) -> None:
    # With the best trial's val_acc set to "high" and a garbage line, report and refine used to
    # drop the best trial without a word, and resume blamed a crash.
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "4", "--epochs", "1"]
    assert cli(*args).returncode == 0
    path = run / "coarse/trials.jsonl"
    lines = path.read_text().splitlines()
    best = max(range(len(lines)), key=lambda i: json.loads(lines[i])["val_acc"])
    best_trial = json.loads(lines[best])["trial"]
    lines[best] = json.dumps({**json.loads(lines[best]), "val_acc": "high"})
    lines.insert(best + 1, "not a record, typed by hand")
    path.write_text("\n".join(lines) + "\n")
    numbers = f"lines {best + 1}, {best + 2}"  # 1-based, as an editor shows them
    only_there = "a trial recorded only there"
    for command, consequence in (
        (["report", str(run)], f"{only_there} is left out of this report"),
        (["refine", str(run), "--dry-run"], f"{only_there} is left out of the plan"),
        (["final", str(run), "--top", "1", "--seeds", "1"], f"{only_there} is not a finalist"),
        (args + ["--resume"], f"{only_there} counts as not run, and is trained again"),  # the best trial
        (args + ["--resume"], "every trial of the plan has a readable record, so none is trained again"),
    ):
        res = cli(*command)
        assert res.returncode == 0, res.stderr
        said = [line for line in res.stderr.splitlines() if "could not be read" in line]
        assert said == [
            f"warning: {path}: {numbers} could not be read as trial records (the file was changed by hand, "
            f"or a write was cut by a crash): {consequence}"
        ], res.stderr
    report = json.loads((run / "report/results.json").read_text())
    assert best_trial not in [r["trial"] for r in report["ranked"]]  # left out, as the report said
    again = [r for r in final_records(path) if r["trial"] == best_trial and isinstance(r["val_acc"], float)]
    assert len(again) == 1  # the first resume's record; the second trained nothing


def _append_many(path: str, writer: int, count: int) -> None:
    store = StageStore(Path(path))
    for k in range(count):
        # Records of very different sizes, so an interleaving would show as a broken line.
        store.append_trial(_result(writer * 1000 + k, losses=[float(k)] * (k % 7 * 300)))


def test_concurrent_writer_processes_lose_and_interleave_nothing(tmp_path: Path) -> None:
    writers, count = 6, 60
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, count)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    store = StageStore(tmp_path)
    got = store.read_trials()
    assert store.unreadable_lines == 0
    assert len(got) == writers * count
    assert sorted(r.trial for r in got) == sorted(w * 1000 + k for w in range(writers) for k in range(count))
    assert all(len(r.losses) == (r.trial % 1000) % 7 * 300 for r in got)


# Each signal once, each kind of execution once: SIGTERM in one process takes the SIGINT path's code
# after its handler (which test_ray's and this SIGTERM-with-workers case also exercise).
@pytest.mark.parametrize(("sig", "code", "workers"), [(signal.SIGINT, 130, "1"), (signal.SIGTERM, 143, "2")])
def test_ctrl_c_and_sigterm_mark_the_running_trial_and_say_how_to_resume(
    tmp_path: Path, sig: signal.Signals, code: int, workers: str
) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "4", "--epochs", "6", "--population", "1"]
    proc = start_hpsearch(*args, "--workers", workers)
    path = run / "coarse/trials.jsonl"
    wait_for(lambda: proc.poll() is not None or bool(final_records(path)), "a first trial finished")
    assert proc.poll() is None, "no trial finished"
    time.sleep(0.1)  # inside the next trial (about 0.3 s each), so one is running when the signal lands
    kids = children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted:")
    assert f"trials finished and saved in {run / 'coarse'}" in last
    assert last.endswith(f"resume with: hpsearch {' '.join(args)} --workers {workers} --resume")
    states = [r["state"] for r in records(path)]
    assert "interrupted" in states
    assert states.index("interrupted") >= 1
    finished_before = {r["trial"]: r for r in final_records(path)}
    interrupted = {r["trial"] for r in records(path) if r["state"] == "interrupted"}
    assert not interrupted & set(finished_before)  # a recorded trial is never also marked interrupted
    assert f"{len(finished_before)} of 4 trials finished" in last
    # The worker processes are stopped, not left training.
    wait_for(lambda: not any(alive(k) for k in kids), f"worker processes {kids} stopped", every=0.05)
    # The resume command, one trial at a time: that worker processes stop is checked above; resuming needs none.
    resumed = cli(*args, "--workers", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    finals = final_records(path)
    assert sorted(r["trial"] for r in finals) == list(range(4))  # each once: none trained twice
    assert all(metrics(r) == metrics(finished_before[r["trial"]]) for r in finals if r["trial"] in finished_before)


def test_sigterm_during_sanity_check_exits_143_with_one_line(tmp_path: Path) -> None:
    # An overfit check that never ends: a learning rate too small to learn 20 examples, for 10^7 epochs.
    spec = tmp_path / "endless.yaml"
    spec.write_text(Path(SMOKE).read_text() + "sanity: {overfit_lr: 1.0e-12, overfit_epochs: 10000000}\n")
    run = tmp_path / "run"
    proc = start_hpsearch("sanity-check", str(spec), "--out", str(run))
    # The stage makes RUN/sanity just before the first check.
    wait_for(lambda: proc.poll() is not None or (run / "sanity").is_dir(), "the checks started")
    assert proc.poll() is None, "sanity-check ended before its checks"
    time.sleep(0.2)  # inside the checks
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert not (run / "sanity/report.json").exists()  # no report of checks that did not finish


def test_a_finished_trial_stays_finished_whatever_is_recorded_after_it(tmp_path: Path) -> None:
    store = StageStore(tmp_path)
    store.append_trial(_result(0))
    store.append_trial(TrialResult(trial=0, state=TrialState.INTERRUPTED, params={"lr": 0.1}))
    store.append_trial(TrialResult(trial=1, state=TrialState.INTERRUPTED, params={"lr": 0.2}))
    done = store.final_trials()
    assert list(done) == [0]
    assert done[0].state is TrialState.COMPLETE
    assert done[0].val_acc == 0.5


def test_kill_9_of_the_driver_takes_its_worker_processes_down(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start_hpsearch(
        "coarse", SMOKE, "--out", str(run), "--trials", "8", "--epochs", "20", "--population", "1", "--workers", "2"
    )
    # The two spawned workers and multiprocessing's resource tracker.
    wait_for(lambda: proc.poll() is not None or len(children(proc.pid)) >= 3, "the workers started", every=0.05)
    assert proc.poll() is None
    time.sleep(random.uniform(0.0, 4.0))  # while the workers start up (importing torch) or train
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=PATIENCE)
    wait_for(lambda: not any(alive(k) for k in kids), f"orphaned workers {kids} ended", every=0.05)


def test_a_diverged_trial_fails_alone_and_ranks_last(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(SMOKE).read_text())
    raw["search"].update(sampler="grid", space={"lr": {"values": [0.01, 1.0e6]}})
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(raw))
    r = cli("coarse", str(spec), "--out", str(tmp_path / "run"), "--trials", "2", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    ranked = json.loads((tmp_path / "run/coarse/results.json").read_text())["ranked"]
    assert [row["state"] for row in ranked] == ["complete", "diverged"]
    assert ranked[0]["val_acc"] > 0.5
    assert ranked[1]["params"]["lr"] == 1e6
    assert r.stdout.strip().splitlines()[-2].split("│")[3].strip() == "diverged"  # the table's last row


_WRITER = """
import sys
from pathlib import Path
from hpsearch.runs.store import atomic_write_text
path = Path(sys.argv[1])
texts = ["A" * 30_000_000 + "\\n", "B" * 40_000_000 + "\\n"]
i = 0
while True:
    atomic_write_text(path, texts[i % 2])
    i += 1
"""


def test_atomic_rewrites_survive_kill_9_whole(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic_write_text(target, "start\n")
    rng = random.Random(0)
    valid = {"start\n", "A" * 30_000_000 + "\n", "B" * 40_000_000 + "\n"}
    cut_mid_write = kills = 0
    while cut_mid_write < 2 and kills < 30:  # until 2 kills have landed inside a write
        kills += 1
        atomic_write_text(target, "start\n")  # so that the wait below sees this writer's first rewrite
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT)
        # This writer has started rewriting (its imports take ~1 s).
        wait_for(lambda p=proc: p.poll() is not None or target.read_text() != "start\n", "a rewrite", every=0.01)
        assert proc.poll() is None, "the writer ended"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(PATIENCE)
        text = target.read_text()
        assert text in valid, f"a half-written file: {len(text)} characters"
        leftovers = list(tmp_path.glob(".results.json.*.tmp"))  # a kill inside a write leaves its temp file
        cut_mid_write += bool(leftovers)
        for tmp in leftovers:
            tmp.unlink()
    assert cut_mid_write == 2, f"only {cut_mid_write} of {kills} kills landed inside a write"


def test_records_of_the_wrong_types_are_unreadable_lines_not_crashes(tmp_path: Path) -> None:
    store = StageStore(tmp_path)
    store.append_trial(_result(0))
    good = json.loads((tmp_path / "trials.jsonl").read_text())
    bad = [
        {**good, "val_acc": "high"},
        {**good, "trial": "x"},
        {**good, "params": []},
        {**good, "losses": ["a"]},
        {**good, "state": "exploded"},
        {**good, "epochs_done": "1.5"},
    ]
    with open(tmp_path / "trials.jsonl", "a") as f:
        for record in bad:
            f.write(json.dumps(record) + "\n")
    assert [r.trial for r in store.read_trials()] == [0]
    assert store.unreadable == list(range(2, 2 + len(bad)))


def test_the_unreadable_lines_are_named_by_number_up_to_ten_and_blank_lines_lose_nothing(tmp_path: Path) -> None:
    store = StageStore(tmp_path)
    store.append_trial(_result(0))
    with open(tmp_path / "trials.jsonl", "a") as f:
        f.write("\n  \n" + "x\n" * 12)  # two blank lines, then twelve that are not records
    assert [r.trial for r in store.read_trials()] == [0]
    assert store.unreadable == list(range(4, 16))
    note = store.unreadable_note("so it goes")
    assert note is not None
    assert note.startswith(f"{tmp_path / 'trials.jsonl'}: lines 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 and 2 more could")
    assert note.endswith(": so it goes")
    assert StageStore(tmp_path / "none").unreadable_note("so it goes") is None


def test_resume_ignores_a_record_whose_parameters_are_not_the_plans(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "3", "--epochs", "1", "--population", "1"]
    assert cli(*args).returncode == 0
    path = run / "coarse/trials.jsonl"
    lines = path.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["params"]["lr"] = 123.0
    forged["val_acc"] = 0.99
    path.write_text("\n".join([lines[0], json.dumps(forged), lines[2]]) + "\n")
    (run / "coarse/results.json").unlink()
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 record(s) with parameters other than the plan's" in resumed.stderr
    ranked = json.loads((run / "coarse/results.json").read_text())["ranked"]
    assert sorted(row["trial"] for row in ranked) == [0, 1, 2]
    assert all(row["params"]["lr"] != 123.0 for row in ranked)


def test_refine_and_report_see_each_planned_trial_once_after_interruptions(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["coarse", SMOKE, "--out", str(run), "--trials", "6", "--epochs", "4", "--population", "1"]
    for _ in range(2):  # Ctrl-C twice, each time after a new record: interrupted records pile up
        proc = start_hpsearch(*args, "--resume")
        before = len(final_records(run / "coarse/trials.jsonl"))
        wait_for_a_new_record(proc, run / "coarse/trials.jsonl", before)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(PATIENCE) == 130
    assert cli(*args, "--resume").returncode == 0
    # Whether a Ctrl-C caught a trial running depends on timing, so the records an interruption
    # leaves are also written outright: an interrupted one, a duplicate, a trial outside the plan.
    store = StageStore(run / "coarse")
    first = store.final_trials()[0]
    store.append_trial(TrialResult(trial=1, state=TrialState.INTERRUPTED, params=first.params))
    store.append_trial(first)
    store.append_trial(_result(99))
    report = cli("report", str(run))
    assert report.returncode == 0, report.stderr
    assert "all stages (coarse): 6 trials" in report.stdout
    refine = cli("refine", str(run), "--epochs", "1", "--population", "1")
    assert refine.returncode == 0, refine.stderr
    assert "refine-1: 6 trials" in refine.stdout  # as many as the coarse stage planned, not its records
    again = cli("refine", str(run), "--resume")
    assert again.returncode == 0, again.stderr
    assert "nothing to resume" in again.stderr
    assert not (run / "refine-2").exists()
