"""Hostile and broken inputs, given the way a user gives them: each is refused with exit code 1 (2 for
a bad command line), one line on stderr naming the file, key or value, no traceback, and nothing
already written is lost. Real files, a real HTTP server on 127.0.0.1; the command runs in this process
(helpers.cli), but in a real one where the point is what the kernel does to it (privileges, a file-size
limit).

The download URL is fixed in the CLI, so hostile downloads go through the library function the CLI
calls (`load_cifar10`, `download_file`) with the URL pointed at the local server.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ROOT, cli, run_hpsearch

from hpsearch.data import download_file, load_cifar10
from hpsearch.errors import DataError

SMOKE_PATH = ROOT / "configs/smoke.yaml"
SMOKE = SMOKE_PATH.read_text()
RECORD = 1 + 3072  # CIFAR-10 binary release: one label byte, then 32x32x3 pixel bytes
FILE_BYTES = 10_000 * RECORD  # every batch file holds exactly 10,000 records
BIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def smoke_with(old: str, new: str, spec: str = SMOKE) -> str:
    """configs/smoke.yaml with one piece of its text replaced."""
    assert old in spec, f"{old!r} is not in the spec"
    return spec.replace(old, new, 1)


def yaml_error_at(piece: str) -> str:
    """The start of the error for invalid YAML on the line of configs/smoke.yaml holding `piece`."""
    return f"invalid YAML at line {SMOKE[: SMOKE.index(piece)].count(chr(10)) + 1}, "


CIFAR_SPEC = smoke_with("  dataset: synthetic\n", "  dataset: cifar10\n  download: false\n")


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def refusal(res: subprocess.CompletedProcess[str], *names: str) -> str:
    """The one stderr line of a refused command (exit 1, no traceback, nothing on stdout), checked
    to name each of `names`."""
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for name in names:
        assert name in lines[0]
    assert res.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-trial coarse run, made once for the module; tests work on copies of it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    res = cli("coarse", str(SMOKE_PATH), "--out", str(run), "--trials", "2", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    return run


@pytest.fixture
def runs(finished_run: Path, tmp_path: Path) -> Path:
    """runs/ holding a copy of the finished run as runs/done, beside which the bad command writes."""
    shutil.copytree(finished_run, tmp_path / "runs" / "done")
    return tmp_path / "runs"


# --------------------------------------------------------------------------- specs

# The billion laughs: 9 nested levels of 9 aliases, a few hundred bytes that name 9^9 numbers.
_LEVELS = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
ALIAS_BOMB = f"[{', '.join(_LEVELS)}]"

# id: (spec text, what its one error line must say besides the spec's path). {marker} is a file that
# must never appear.
SPECS: dict[str, tuple[str, list[str]]] = {
    "malformed-yaml": (smoke_with("  epochs: 2\n", "  epochs: [2\n"), ["invalid YAML at line"]),
    "python-tag-runs-os-system": (
        smoke_with("  epochs: 2\n", '  epochs: !!python/object/apply:os.system ["touch {marker}"]\n'),
        [yaml_error_at("  epochs: 2"), "python/object/apply:os.system"],
    ),
    "wrong-type-int": (smoke_with("  epochs: 2\n", '  epochs: "five"\n'), ["train.epochs", "integer", "'five'"]),
    "wrong-type-range-bound": (
        smoke_with("lr: {low: 1.0e-4", "lr: {low: tiny"),
        ["search.space.lr.low", "number", "'tiny'"],
    ),
    "unknown-key-did-you-mean": (
        smoke_with("  optimizer: momentum\n", "  optimizr: momentum\n"),
        ["train.optimizr: unknown key (did you mean 'optimizer'?)"],
    ),
    "unknown-top-level-key": (
        smoke_with("search:\n", "serach:\n"),
        ["serach: unknown key (did you mean 'search'?)"],
    ),
    "empty-file": ("", ["the spec is empty"]),
    "log-range-low-zero": (
        smoke_with("lr: {low: 1.0e-4", "lr: {low: 0"),
        ["search.space.lr.low: must be > 0 when log is true (got 0)"],
    ),
    "log-range-low-negative": (
        smoke_with("lr: {low: 1.0e-4", "lr: {low: -1.0e-4"),
        ["search.space.lr.low: must be > 0 when log is true (got -0.0001)"],
    ),
    "low-above-high": (
        smoke_with("lr: {low: 1.0e-4, high: 1.0", "lr: {low: 1.0, high: 1.0e-4"),
        ["search.space.lr.high: must be > low (1) (got 0.0001)"],
    ),
    "low-equals-high": (
        smoke_with("lr: {low: 1.0e-4", "lr: {low: 1.0"),
        ["search.space.lr.high: must be > low (1) (got 1)"],
    ),
    "zero-trials-in-spec": (smoke_with("  trials: 8\n", "  trials: 0\n"), ["search.trials", "(got 0)"]),
    # Found writing these tests: each was a hang or a traceback.
    "yaml-alias-bomb": (smoke_with("  lr_decay: 0.95\n", f"  lr_decay: {ALIAS_BOMB}\n"), ["train.lr_decay"]),
    "yaml-alias-bomb-as-enum": (
        smoke_with("  activation: relu\n", f"  activation: {ALIAS_BOMB}\n"),
        ["model.activation: must be one of 'relu'"],
    ),
    "yaml-nested-5000-deep": (
        smoke_with("  epochs: 2\n", f"  epochs: {'[' * 5000}{']' * 5000}\n"),
        ["invalid YAML: nested too deeply"],
    ),
    "integer-of-5000-digits": (
        smoke_with("  epochs: 2\n", f"  epochs: {'9' * 5000}\n"),
        [yaml_error_at("  epochs: 2"), "integer out of range"],
    ),
    "integer-beyond-64-bits": (
        smoke_with("  batch_size: 100\n", f"  batch_size: {2**70}\n"),
        [yaml_error_at("  batch_size: 100"), "integer out of range"],
    ),
    "impossible-date": (
        smoke_with("name: smoke\n", "name: 2001-13-45\n"),
        [yaml_error_at("name: smoke"), "month must be in 1..12"],
    ),
    "synthetic-data-beyond-memory": (
        smoke_with("synthetic_train: 3000", f"synthetic_train: {10**12}"),
        ["data.synthetic_train", "more than this machine can allocate"],
    ),
}


@pytest.mark.parametrize("case", SPECS)
def test_bad_spec_is_refused_before_anything_is_written(runs: Path, case: str) -> None:
    text, expected = SPECS[case]
    marker = runs.parent / "MARKER"
    spec = runs.parent / "spec.yaml"
    spec.write_text(text.replace("{marker}", str(marker)))
    before = tree(runs / "done")
    res = cli("coarse", str(spec), "--out", str(runs / "new"))
    line = refusal(res, str(spec), *expected)
    assert len(line) < 300  # one readable line, not a dump of the value
    assert not marker.exists()
    assert sorted(p.name for p in runs.iterdir()) == ["done"]  # no half-made run
    assert tree(runs / "done") == before


def test_zero_trials_on_the_command_line_is_a_usage_error(runs: Path) -> None:
    res = cli("coarse", str(SMOKE_PATH), "--trials", "0", "--out", str(runs / "new"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if "Invalid value for '--trials'" in line]) == 1
    assert sorted(p.name for p in runs.iterdir()) == ["done"]


# --------------------------------------------------------------------------- data roots


def bin_release(root: Path) -> Path:
    """A well-formed fake binary release (every label 0, every pixel 0) as sparse files: instant."""
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for name in BIN_FILES:
        with open(d / name, "wb") as f:
            f.truncate(FILE_BYTES)
    (d / "batches.meta.txt").write_text("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")
    return d


class RunsCommand:
    """Unpickled with plain pickle, this runs a shell command: what a hostile pickle file holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def hostile_pickle(kind: str, marker: Path) -> bytes:
    payload = RunsCommand(f"touch {marker}")
    if kind == "reduce":
        return pickle.dumps({b"data": payload, b"labels": [0]}, protocol=4)
    # A numpy object array: its elements are pickled inline, behind the allowed array reconstructor.
    return pickle.dumps({b"data": np.array([payload], dtype=object), b"labels": [0]}, protocol=4)


def py_release(root: Path, first_batch: bytes) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (d / "data_batch_1").write_bytes(first_batch)
    return d


def evil_tar(path: Path, name: str) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return path.read_bytes()


def wrong_size(root: Path, marker: Path) -> list[str]:
    path = bin_release(root) / "data_batch_2.bin"
    os.truncate(path, FILE_BYTES + RECORD)  # one record too many
    return [f"{path}: expected {FILE_BYTES} bytes, found {FILE_BYTES + RECORD}"]


def label_above_9(root: Path, marker: Path) -> list[str]:
    path = bin_release(root) / "data_batch_3.bin"
    with open(path, "r+b") as f:
        f.seek(1234 * RECORD)
        f.write(bytes([10]))
    return [f"{path}: record 1234 has label 10, expected 0-9"]


def truncated(root: Path, marker: Path) -> list[str]:
    path = bin_release(root) / "test_batch.bin"
    os.truncate(path, FILE_BYTES - 1000)  # cut inside the last record
    return [f"{path}: expected {FILE_BYTES} bytes, found {FILE_BYTES - 1000} (truncated"]


def pickle_reduce(root: Path, marker: Path) -> list[str]:
    d = py_release(root, hostile_pickle("reduce", marker))
    return [f"{d / 'data_batch_1'}: refusing to unpickle", ".system'"]


def pickle_object_array(root: Path, marker: Path) -> list[str]:
    d = py_release(root, hostile_pickle("object-array", marker))
    return [f"{d / 'data_batch_1'}: refusing to unpickle", ".system'"]


def pickle_petabyte(root: Path, marker: Path) -> list[str]:
    # Protocol 4, BINBYTES8 of 2**50 bytes, then 2 bytes: the unpickler allocates before it reads.
    d = py_release(root, b"\x80\x04\x8e" + struct.pack("<Q", 1 << 50) + b"xx")
    return [f"{d / 'data_batch_1'}: not a CIFAR-10 pickle", "too large"]


def archive_placed_in_root(root: Path, marker: Path) -> list[str]:
    root.mkdir()
    evil_tar(root / "cifar-10-binary.tar.gz", f"../{marker.name}")
    return [f"{root / 'cifar-10-binary.tar.gz'}: checksum mismatch"]


def root_is_a_file(root: Path, marker: Path) -> list[str]:
    root.write_text("not a directory")
    return [f"{root}: is not a directory"]


# id: builds the data root and returns what the error line must say.
DATA_ROOTS: dict[str, Callable[[Path, Path], list[str]]] = {
    "root-is-a-regular-file": root_is_a_file,
    "bin-file-of-wrong-size": wrong_size,
    "bin-label-above-9": label_above_9,
    "bin-file-truncated": truncated,
    "pickle-reduce-runs-os-system": pickle_reduce,
    "pickle-object-array-runs-os-system": pickle_object_array,
    "pickle-declaring-a-petabyte": pickle_petabyte,
    "hostile-archive-placed-in-root": archive_placed_in_root,
}


def sizes(path: Path) -> dict[str, int]:
    """Every file under `path` (or `path` itself) by relative path, with its size."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): p.stat().st_size for p in files}


@pytest.mark.parametrize("case", DATA_ROOTS)
def test_bad_data_root_is_refused_without_running_anything(runs: Path, case: str) -> None:
    root, marker = runs.parent / "data", runs.parent / "MARKER"
    expected = DATA_ROOTS[case](root, marker)
    spec = runs.parent / "cifar.yaml"
    spec.write_text(CIFAR_SPEC)
    data_before, run_before = sizes(root), tree(runs / "done")
    res = cli("coarse", str(spec), "--out", str(runs / "new"), "--data-root", str(root))
    refusal(res, *expected)
    assert not marker.exists()  # the pickle's command never ran, the archive never extracted
    assert sizes(root) == data_before
    assert sorted(p.name for p in runs.iterdir()) == ["done"]
    assert tree(runs / "done") == run_before


def test_missing_data_root_without_download_says_where_to_put_the_data(runs: Path) -> None:
    missing = runs.parent / "nonexistent"
    assert not missing.exists()
    spec = runs.parent / "cifar.yaml"
    spec.write_text(CIFAR_SPEC)
    res = cli("coarse", str(spec), "--out", str(runs / "new"), "--data-root", str(missing))
    refusal(res, f"CIFAR-10 not found in {missing}", "cifar-10-batches-bin/", "data.download: true")
    assert not missing.exists()
    assert sorted(p.name for p in runs.iterdir()) == ["done"]


@pytest.mark.parametrize("kind", ["reduce", "object-array"])
def test_the_hostile_pickles_do_run_their_command_when_unpickled_plainly(tmp_path: Path, kind: str) -> None:
    """The control for the pickle cases above: their payloads are live, so refusing them means something."""
    marker = tmp_path / "control"
    pickle.loads(hostile_pickle(kind, marker))
    assert marker.exists()


# --------------------------------------------------------------------------- downloads


class Served(BaseHTTPRequestHandler):
    """Serves server.routes: path -> (body, the Content-Length it declares)."""

    def do_GET(self) -> None:
        routes: dict[str, tuple[bytes, int]] = self.server.routes  # type: ignore[attr-defined]
        if self.path not in routes:
            self.send_error(404)
            return
        body, length = routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # a body shorter than declared ends with the connection

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def www() -> Iterator[tuple[dict[str, tuple[bytes, int]], str]]:
    """(routes, base URL) of a real HTTP server on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Served)
    server.routes = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.routes, f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# id: (member name, member type, link target, the problem the error names). {out} is a folder
# outside the data root that must stay as it was.
ARCHIVES: dict[str, tuple[str, bytes, str, str]] = {
    "dotdot-member": ("cifar-10-batches-bin/../../evil", tarfile.REGTYPE, "", "'..' path component"),
    "absolute-member": ("{out}/evil", tarfile.REGTYPE, "", "absolute path"),
    "symlink-member": ("cifar-10-batches-bin/link", tarfile.SYMTYPE, "{out}", "link to '{out}'"),
    "hardlink-member": ("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "{out}/victim", "link to '{out}/victim'"),
}


@pytest.mark.parametrize("case", ARCHIVES)
def test_downloaded_archive_never_writes_outside_the_data_root(
    www: tuple[dict[str, tuple[bytes, int]], str], tmp_path: Path, case: str
) -> None:
    routes, base = www
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim").write_text("already written")
    name, kind, link, problem = ARCHIVES[case]
    name, link, problem = (text.format(out=out) for text in (name, link, problem))
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        good.size = 5
        tar.addfile(good, io.BytesIO(b"ship\n"))
        evil = tarfile.TarInfo(name)
        evil.type, evil.linkname, evil.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
        tar.addfile(evil, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
        if kind == tarfile.SYMTYPE:  # then a file through the link
            through = tarfile.TarInfo(f"{name}/evil")
            through.size = 4
            tar.addfile(through, io.BytesIO(b"evil"))
    routes[f"/{case}.tar.gz"] = (archive.read_bytes(), archive.stat().st_size)
    root = tmp_path / "deep" / "data"
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("already written")
    with pytest.raises(DataError) as e:
        load_cifar10(root, binary_url=f"{base}/{case}.tar.gz", binary_md5=md5(archive.read_bytes()))
    assert str(e.value) == f"{root / 'cifar-10-binary.tar.gz'}: refusing to extract member '{name}': {problem}"
    assert tree(out) == {"victim": b"already written"}
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "deep" / "evil").exists()
    # The verified archive stays (no second download); nothing was extracted, no staging folder is left.
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-binary.tar.gz", "notes.txt"]


@pytest.mark.parametrize("case", ["checksum-mismatch", "connection-cut-short"])
def test_failed_download_leaves_no_partial_file_and_keeps_the_old_one(
    www: tuple[dict[str, tuple[bytes, int]], str], tmp_path: Path, case: str
) -> None:
    routes, base = www
    body = b"not the CIFAR-10 release\n" * 4000
    if case == "checksum-mismatch":
        routes[f"/{case}"], expected_md5 = (body, len(body)), md5(body[::-1])
        message = f"checksum mismatch for {base}/{case}: expected {expected_md5}, got {md5(body)}"
    else:  # declares the whole body, sends a tenth of it and hangs up
        routes[f"/{case}"], expected_md5 = (body[: len(body) // 10], len(body)), md5(body)
        message = f"cannot download {base}/{case}: the connection closed after {len(body) // 10} of {len(body)} bytes"
    dest = tmp_path / "data" / "cifar-10-binary.tar.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"an earlier download")
    with pytest.raises(DataError) as e:
        download_file(f"{base}/{case}", dest, expected_md5)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
    assert tree(dest.parent) == {"cifar-10-binary.tar.gz": b"an earlier download"}  # no .part file left


# --------------------------------------------------------------------------- output that cannot be written

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a child between fork and exec must not load it
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1  # <linux/prctl.h>, <linux/capability.h>


def without_dac_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE, so file modes bind it like any user.
    Dropped from the bounding set, which exec cannot give back. (setuid to nobody cannot work here:
    the interpreter lives under root's 0700 home.)"""
    if _LIBC.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_out_under_a_regular_file_is_refused(runs: Path) -> None:
    blocker = runs / "blocker"
    blocker.write_text("not a directory")
    before = tree(runs)
    res = cli("coarse", str(SMOKE_PATH), "--out", str(blocker / "run"), "--trials", "2", "--epochs", "1")
    refusal(res, str(blocker / "run"), "cannot create the run directory")
    assert tree(runs) == before


def test_out_in_a_read_only_folder_is_refused(runs: Path) -> None:
    before = tree(runs)
    args = ("coarse", str(SMOKE_PATH), "--out", str(runs / "new"), "--trials", "2", "--epochs", "1")
    runs.chmod(0o555)
    try:
        try:  # a real process: it drops a privilege that this one must keep
            res = run_hpsearch(*args, preexec=without_dac_override if os.geteuid() == 0 else None)
        except subprocess.SubprocessError as e:  # prctl refused: no CAP_SETPCAP in this container
            pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here: {e}")
    finally:
        runs.chmod(0o755)
    refusal(res, str(runs / "new"), "Permission denied")
    assert tree(runs) == before


@pytest.mark.parametrize("command", ["coarse", "sanity-check"])
@pytest.mark.parametrize("option", ["--out", "--data-root"])
def test_an_empty_path_is_a_usage_error_not_the_current_directory(
    runs: Path, monkeypatch: pytest.MonkeyPatch, command: str, option: str
) -> None:
    monkeypatch.chdir(runs)
    before = tree(runs)
    res = cli(command, str(SMOKE_PATH), option, "", "--out" if option != "--out" else "--data-root", str(runs / "x"))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert option in res.stderr
    assert "an empty path" in res.stderr
    assert tree(runs) == before


@pytest.mark.parametrize("inside", ["coarse", "coarse/deeper/still"])
def test_out_inside_another_runs_stage_is_refused(runs: Path, inside: str) -> None:
    before = tree(runs)
    out = runs / "done" / inside
    res = cli("coarse", str(SMOKE_PATH), "--out", str(out), "--trials", "2", "--epochs", "1")
    line = refusal(res, f"--out {out}", str(runs / "done" / "coarse"), "is a stage of another run")
    assert f"its run folder {runs / 'done'}" in line
    assert tree(runs) == before
    assert not (runs / "done" / "coarse" / "coarse").exists()
    assert not (runs / "done" / "coarse" / "deeper").exists()


def test_out_below_a_folder_holding_a_users_own_spec_yaml_is_not_a_nested_run(runs: Path) -> None:
    project = runs / "project"
    project.mkdir()
    (project / "spec.yaml").write_text(SMOKE)
    (project / "run.json").mkdir()  # a folder, not hpsearch's file
    res = cli("coarse", str(project / "spec.yaml"), "--out", str(project / "runs/a"), "--trials", "2", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    assert (project / "runs/a/coarse/results.json").is_file()


def test_full_disk_while_writing_trials_keeps_every_record_written(finished_run: Path, runs: Path) -> None:
    # A file-size limit that spec.yaml and run.json fit in, and trials.jsonl after one record and
    # half of the next: the second record's write fails part-way (EFBIG, as on a full disk).
    first, second = (finished_run / "coarse/trials.jsonl").read_bytes().splitlines(keepends=True)[:2]
    limit = len(first) + len(second) // 2
    assert max(len(SMOKE), (finished_run / "coarse/run.json").stat().st_size) < limit - 200

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process

    before = tree(runs / "done")
    run = runs / "new"
    args = ("--trials", "3", "--epochs", "1", "--population", "1")
    res = run_hpsearch("coarse", str(SMOKE_PATH), "--out", str(run), *args, preexec=full_disk)  # limits: a process
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert str(run / "coarse/trials.jsonl") in errors[0]
    assert "File too large" in errors[0]
    others = [line for line in res.stderr.splitlines() if not line.startswith("error:")]
    assert all(line.startswith("search ") for line in others), res.stderr  # the progress bar, drawn before
    lines = (run / "coarse/trials.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines if line.endswith(b"\n")]
    assert [(r["trial"], r["state"]) for r in records] == [(0, "complete")]
    assert len(lines) - len(records) <= 1  # at most the record cut by the failed write
    assert tree(runs / "done") == before


def test_report_on_a_full_disk_is_one_line_and_keeps_the_report_drawn_before(runs: Path) -> None:
    # It used to print a 79-line matplotlib traceback and leave the first PNG cut where the disk filled.
    run = runs / "done"
    assert cli("report", str(run)).returncode == 0
    before = tree(run)
    pngs = [p for p in (run / "report").iterdir() if p.suffix == ".png"]
    assert len(pngs) == 4
    limit = min(p.stat().st_size for p in pngs) // 2  # every picture is cut part-way (EFBIG, as ENOSPC)

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process

    res = run_hpsearch("report", str(run), preexec=full_disk)  # limits: a process
    line = refusal(res, str(run / "report"), "cannot write", "File too large")
    assert line.startswith("error: ")
    assert tree(run) == before  # the report drawn before, whole; no temp file left beside it


# ------------------------------------------------------------- shapes too large for memory, or for the data


def test_layer_too_wide_to_allocate_fails_its_trials_not_the_command(runs: Path) -> None:
    spec = runs.parent / "wide.yaml"
    spec.write_text(smoke_with("  hidden: [32]\n", "  hidden: [1000000000]\n"))
    res = cli("coarse", str(spec), "--out", str(runs / "new"), "--trials", "2", "--epochs", "1")
    assert "Traceback" not in res.stderr
    assert res.returncode == 3, res.stderr  # no trial completed
    assert "2 of 2 trials failed (first: trial 0, RuntimeError: " in res.stderr
    records = [json.loads(line) for line in (runs / "new/coarse/trials.jsonl").read_text().splitlines()]
    assert [r["state"] for r in records] == ["failed", "failed"]


def test_batch_size_above_the_training_set_trains_full_batch(runs: Path) -> None:
    spec = runs.parent / "full_batch.yaml"
    spec.write_text(smoke_with("  batch_size: 100\n", "  batch_size: 100000000\n"))
    res = cli("coarse", str(spec), "--out", str(runs / "new"), "--trials", "2", "--epochs", "1")
    assert "Traceback" not in res.stderr
    assert res.returncode == 0, res.stderr
    assert len((runs / "new/coarse/trials.jsonl").read_text().splitlines()) == 2
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: train.batch_size")]
    assert len(warnings) == 1, res.stderr  # said once, before training
    assert "every step sees the whole set" in warnings[0]


def test_a_grid_search_says_what_grid_it_built_and_workers_above_the_cores_warn(runs: Path) -> None:
    spec = runs.parent / "grid.yaml"
    spec.write_text(smoke_with("  sampler: random\n", "  sampler: grid\n"))
    cores = os.cpu_count() or 1
    workers = str(cores + 1)
    res = cli("coarse", str(spec), "--out", str(runs / "g"), "--trials", "9", "--epochs", "1", "--workers", workers)
    assert res.returncode == 0, res.stderr
    assert "grid: lr 3 points x weight_decay 3 points = 9 trials (search.trials 9)" in res.stderr
    assert f"warning: --workers {cores + 1} is above the {cores} cores" in res.stderr
    refused = cli("coarse", str(spec), "--out", str(runs / "h"), "--trials", "5", "--epochs", "1")
    refusal(refused, str(spec), "search.trials: 5 trials leave 2 grid points on lr and weight_decay")
    assert not (runs / "h").exists()


# --------------------------------------------------------------------------- a user's npz file or image folder
# (data.dataset npz and folder). Each builder writes the data under `d` and returns the spec's data
# section and what the one error line must say; nothing may run, no run directory may appear.

_USER_DATA = SMOKE[SMOKE.index("data:\n") : SMOKE.index("model:\n")]


def _npz(d: Path, **arrays: Any) -> Path:
    path = d / "d.npz"
    np.savez(path, **arrays)
    return path


def _x(n: int = 60, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _y(n: int = 60) -> np.ndarray:
    return np.arange(n) % 3


def _npz_case(path: Path, *says: str) -> tuple[str, list[str]]:
    return f"data:\n  dataset: npz\n  path: {path}\n  val_size: 10\n", [str(path), *says]


def _with_label(i: int, value: int) -> np.ndarray:
    y = _y()
    y[i] = value
    return y


def _nan_at(i: int) -> np.ndarray:
    x = np.ones((60, 4), np.float32)
    x[i, 2] = np.nan
    return x


def npz_missing_y(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x()), "has x_train but no y_train")


def npz_missing_x(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, y_train=_y()), "has y_train but no x_train")


def npz_unknown_array(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x(), y_train=_y(), x_valid=_x(5)), "unknown array 'x_valid'")


def npz_object_array(d: Path, marker: Path) -> tuple[str, list[str]]:
    hostile = np.array([RunsCommand(f"touch {marker}")] * 60, dtype=object)
    return _npz_case(_npz(d, x_train=_x(), y_train=hostile), "y_train is an object array", "unpickle")


def npz_lengths_differ(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x(), y_train=_y(59)), "x_train has 60 examples but y_train has 59")


def npz_float_labels(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x(), y_train=_y().astype(float)), "y_train is float64", "integers")


def npz_negative_label(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x(), y_train=_with_label(7, -1)), "y_train[7] is -1")


def npz_label_out_of_range(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = _npz(d, x_train=_x(), y_train=_with_label(3, 10**6))
    return _npz_case(path, "y_train[3] is 1000000, which makes 1000001 classes for 60 labels")


def npz_one_class(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_x(), y_train=np.zeros(60, int)), "every label is 0", "at least 2 classes")


def npz_nan_feature(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(_npz(d, x_train=_nan_at(5), y_train=_y()), "x_train[5] holds NaN or infinity")


def npz_inf_in_val(d: Path, marker: Path) -> tuple[str, list[str]]:
    x_val = np.ones((4, 4))
    x_val[1, 0] = np.inf
    path = _npz(d, x_train=np.ones((60, 4)), y_train=_y(), x_val=x_val, y_val=_y(4))
    return _npz_case(path, "x_val[1] holds NaN or infinity")


def npz_val_of_another_size(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = _npz(d, x_train=_x(), y_train=_y(), x_val=_x(5, size=4), y_val=_y(5))
    return _npz_case(path, "x_val holds uint8 examples of shape (3, 4, 4), but x_train holds uint8 of shape (3, 8, 8)")


def npz_flat_uint8(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = _npz(d, x_train=np.zeros((60, 64), np.uint8), y_train=_y())
    return _npz_case(path, "x_train is uint8 of shape (60, 64)", "store other features as float32")


def npz_not_a_zip(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = d / "d.npz"
    path.write_text("x_train,y_train\n1,2\n")
    return _npz_case(path, "not an .npz file (neither a zip archive of arrays nor a .npy array)")


def npz_is_a_pickle(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = d / "d.npz"
    path.write_bytes(pickle.dumps({"x_train": RunsCommand(f"touch {marker}")}))
    return _npz_case(path, "not an .npz file", "pickled data")


def npz_is_one_npy(d: Path, marker: Path) -> tuple[str, list[str]]:
    path = d / "d.npz"
    with open(path, "wb") as f:
        np.save(f, _x())
    return _npz_case(path, "a single .npy array, not an .npz file")


def npz_missing(d: Path, marker: Path) -> tuple[str, list[str]]:
    return _npz_case(d / "nowhere.npz", "no such file")


def _pngs(split: Path, per_class: dict[str, int], size: tuple[int, int] = (8, 8)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in per_class.items():
        (split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(split / cls / f"{i}.png")


def _folder_case(root: Path, *says: str) -> tuple[str, list[str]]:
    return f"data:\n  dataset: folder\n  path: {root}\n  val_size: 4\n", list(says)


def folder_without_train(d: Path, marker: Path) -> tuple[str, list[str]]:
    (d / "imgs" / "training").mkdir(parents=True)
    return _folder_case(d / "imgs", f"{d / 'imgs'}: no train/ folder")


def folder_without_classes(d: Path, marker: Path) -> tuple[str, list[str]]:
    (d / "imgs" / "train").mkdir(parents=True)
    return _folder_case(d / "imgs", f"{d / 'imgs' / 'train'}: no class folders")


def folder_one_class(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5})
    return _folder_case(d / "imgs", f"{d / 'imgs' / 'train'}: only the class folder 'cat'", "at least 2")


def folder_empty_class(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5})
    (d / "imgs" / "train" / "emu").mkdir()
    return _folder_case(d / "imgs", f"{d / 'imgs' / 'train' / 'emu'}: empty class folder")


def folder_corrupt_image(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5})
    bad = d / "imgs" / "train" / "dog" / "3.png"
    bad.write_bytes(b"not a png at all")
    return _folder_case(d / "imgs", f"{bad}: not a readable image")


def folder_truncated_image(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5}, size=(32, 32))
    cut = d / "imgs" / "train" / "dog" / "4.png"
    cut.write_bytes(cut.read_bytes()[:200])  # the header reads; the pixels do not
    return _folder_case(d / "imgs", f"{cut}: not a readable image")


def folder_non_image_file(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5})
    notes = d / "imgs" / "train" / "cat" / "notes.txt"
    notes.write_text("where these came from")
    return _folder_case(d / "imgs", f"{notes}: not a .png, .jpg or .jpeg image")


def folder_mixed_sizes(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5})
    _pngs(d / "imgs" / "test", {"dog": 1}, size=(6, 10))
    small, other = d / "imgs" / "train" / "cat" / "0.png", d / "imgs" / "test" / "dog" / "0.png"
    return _folder_case(d / "imgs", "images of mixed sizes", f"{small} is 8x8", f"{other} is 6x10", "data.resize")


def folder_val_class_train_lacks(d: Path, marker: Path) -> tuple[str, list[str]]:
    _pngs(d / "imgs" / "train", {"cat": 5, "dog": 5})
    _pngs(d / "imgs" / "val", {"cat": 1, "zebra": 1})
    return _folder_case(d / "imgs", f"{d / 'imgs' / 'val' / 'zebra'}: class 'zebra' is not in train/")


# id: writes the data under a folder and returns (the spec's data section, what the error line must say).
USER_DATA: dict[str, Callable[[Path, Path], tuple[str, list[str]]]] = {
    "npz-missing-y_train": npz_missing_y,
    "npz-missing-x_train": npz_missing_x,
    "npz-unknown-array": npz_unknown_array,
    "npz-object-array-runs-os-system": npz_object_array,
    "npz-lengths-differ": npz_lengths_differ,
    "npz-float-labels": npz_float_labels,
    "npz-negative-label": npz_negative_label,
    "npz-label-out-of-range": npz_label_out_of_range,
    "npz-one-class": npz_one_class,
    "npz-nan-feature": npz_nan_feature,
    "npz-inf-in-val": npz_inf_in_val,
    "npz-val-images-of-another-size": npz_val_of_another_size,
    "npz-flat-uint8": npz_flat_uint8,
    "npz-not-a-zip": npz_not_a_zip,
    "npz-is-a-pickle-running-os-system": npz_is_a_pickle,
    "npz-is-one-npy-array": npz_is_one_npy,
    "npz-missing-file": npz_missing,
    "folder-without-train": folder_without_train,
    "folder-without-class-folders": folder_without_classes,
    "folder-one-class": folder_one_class,
    "folder-empty-class": folder_empty_class,
    "folder-corrupt-image": folder_corrupt_image,
    "folder-truncated-image": folder_truncated_image,
    "folder-non-image-file": folder_non_image_file,
    "folder-mixed-sizes": folder_mixed_sizes,
    "folder-val-class-train-lacks": folder_val_class_train_lacks,
}


@pytest.mark.parametrize("case", USER_DATA)
def test_bad_user_data_is_refused_naming_the_file_before_anything_runs(runs: Path, case: str) -> None:
    d, marker = runs.parent / "data", runs.parent / "MARKER"
    d.mkdir()
    data, expected = USER_DATA[case](d, marker)
    spec = runs.parent / "user.yaml"
    spec.write_text(SMOKE.replace(_USER_DATA, data))
    data_before, run_before = sizes(d), tree(runs / "done")
    res = cli("coarse", str(spec), "--out", str(runs / "new"))
    line = refusal(res, *expected)
    assert len(line) < 400  # one readable line
    assert not marker.exists()  # a pickle inside the file never ran
    assert sizes(d) == data_before  # refused data is never cached
    assert sorted(p.name for p in runs.iterdir()) == ["done"]
    assert tree(runs / "done") == run_before


# --------------------------------------------------------------------------- a user's factory file

FACTORY_SPEC = """\
name: own
data: {dataset: synthetic, synthetic_train: 200, synthetic_test: 10, val_size: 50}
model: {kind: python, factory: nets.py:tiny}
train: {epochs: 1, batch_size: 50, device: cpu}
search: {trials: 1, space: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}}
"""


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "cannot read: Is a directory"),
        (lambda p: p.write_bytes(b"\xff\xfe def tiny(): pass\n"), "not UTF-8 text"),
        (
            lambda p: p.write_text("import torch.nn as nn\ntiny = nn.Linear(3, 4)\n"),
            "nets.py:tiny((3, 32, 32), 10) raised TypeError",
        ),
    ],
    ids=["a folder", "not text", "a module, not a function"],
)
def test_a_factory_file_that_is_no_python_function_is_refused(
    tmp_path: Path, make: Callable[[Path], None], reason: str
) -> None:
    make(tmp_path / "nets.py")
    spec = tmp_path / "own.yaml"
    spec.write_text(FACTORY_SPEC)
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    refusal(res, "model.factory", "nets.py", reason)
    assert not (tmp_path / "run").exists()
