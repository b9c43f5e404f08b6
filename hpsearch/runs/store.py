"""The run directory: resolved spec, run.json, append-only trials.jsonl, atomic rewrites. POSIX only (fcntl)."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpsearch.errors import StoreError
from hpsearch.runs.records import TrialResult, TrialState

TRIALS_FILE = "trials.jsonl"
LOCK_FILE = ".lock"
MOST_LINES_NAMED = 10  # unreadable lines named by number; beyond, a count


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers see old or new, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, fsynced before returning. Safe with several writing processes: an
    exclusive lock, O_APPEND, and the whole line in one write. A line cut by an earlier crash is
    closed first, so the new record starts on a fresh line."""
    line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
    except OSError as e:
        raise StoreError(f"{path}: cannot append: {e.strerror or e}") from None


def read_json_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a .jsonl file in order, and how many lines could not be read (a line cut
    by a crash, or not an object); ([], 0) when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as e:
        raise StoreError(f"{path}: cannot read: {e.strerror or e}") from None
    out, bad = [], 0
    for line in raw.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if isinstance(record, dict):
            out.append(record)
        elif line.strip():
            bad += 1
    return out, bad


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """atomic_write_text for bytes: temp file in the same folder, fsync, rename."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise StoreError(f"{path}: cannot write: {e.strerror or e}") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: cannot read: {e}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def pick_run_dir(runs: Path, name: str, stage: str = "coarse") -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... when that already holds `stage`: never overwrite one."""
    candidate, n = runs / name, 1
    while (candidate / stage).exists():
        n += 1
        candidate = runs / f"{name}-{n}"
    return candidate


def is_stage_dir(folder: Path) -> bool:
    """A folder hpsearch wrote as a stage: trials.jsonl, or run.json beside spec.yaml (a spec.yaml
    alone is any project's), or RUN/sanity/report.json."""
    return (
        (folder / TRIALS_FILE).is_file()
        or ((folder / "run.json").is_file() and (folder / "spec.yaml").is_file())
        or (folder.name == "sanity" and (folder / "report.json").is_file())
    )


def refuse_nested_run(out: Path) -> None:
    """--out must not put a run inside another run's stage folder (RUN/coarse/coarse/...)."""
    path = Path(os.path.abspath(out))
    for folder in (path, *path.parents):
        if is_stage_dir(folder):
            raise StoreError(
                f"--out {out}: {folder} is a stage of another run, and a run inside it would mix the two; "
                f"choose a folder outside it (or its run folder {folder.parent}, with --resume to continue that run)"
            )


def _supersedes(new: TrialResult, old: TrialResult) -> bool:
    if new.rung is None or old.rung is None:
        return False
    return new.rung > old.rung or (
        new.rung == old.rung and new.state is TrialState.STOPPED and old.state is TrialState.COMPLETE
    )


class Checkpoints:
    """A halving stage's trial states between rungs: RUN/<stage>/checkpoints/trial-<t>-rung-<k>.pt,
    each written whole (temp file, fsync, rename) before the record that needs it is appended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, trial: int, rung: int) -> Path:
        return self.path / f"trial-{trial}-rung-{rung}.pt"

    def write(self, trial: int, rung: int, data: bytes) -> None:
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create: {e.strerror or e}") from None
        atomic_write_bytes(self.file(trial, rung), data)

    def read(self, trial: int, rung: int) -> bytes | None:
        """The trial's state at that rung's end, or None when it is not there (removed, never kept)."""
        try:
            return self.file(trial, rung).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.file(trial, rung)}: cannot read: {e.strerror or e}") from None

    def remove(self, trial: int, rung: int) -> None:
        self.file(trial, rung).unlink(missing_ok=True)

    def kept(self) -> set[tuple[int, int]]:
        """(trial, rung) of every checkpoint on disk."""
        out = set()
        for f in self.path.glob("trial-*-rung-*.pt") if self.path.is_dir() else []:
            trial, _, rung = f.stem.removeprefix("trial-").partition("-rung-")
            if trial.isdigit() and rung.isdigit():
                out.add((int(trial), int(rung)))
        return out

    def remove_all(self) -> None:
        """The stage finished: no trial trains on, so no state is needed."""
        if self.path.is_dir():
            for f in self.path.iterdir():
                f.unlink(missing_ok=True)
            self.path.rmdir()


class StageStore:
    """One stage's directory, e.g. RUN/coarse/."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable: list[int] = []  # set by read_trials: the numbers (from 1) of the lines it could not read

    @property
    def unreadable_lines(self) -> int:
        return len(self.unreadable)

    def unreadable_note(self, consequence: str) -> str | None:
        """One line on the lines of trials.jsonl that read_trials could not read, by number, then the
        command's `consequence` ('a trial recorded only there is left out of this report'); None when
        every line was read."""
        if not self.unreadable:
            return None
        shown = ", ".join(str(n) for n in self.unreadable[:MOST_LINES_NAMED])
        more = len(self.unreadable) - MOST_LINES_NAMED
        many = len(self.unreadable) > 1
        numbers = f"line{'s' if many else ''} {shown}" + (f" and {more} more" if more > 0 else "")
        records = "trial records" if many else "a trial record"
        return (
            f"{self.path / TRIALS_FILE}: {numbers} could not be read as {records} (the file was changed by hand, "
            f"or a write was cut by a crash): {consequence}"
        )

    @property
    def started(self) -> bool:
        """A stage exists to resume once its resolved spec is written (before any trial runs)."""
        return (self.path / "spec.yaml").is_file() or (self.path / TRIALS_FILE).is_file()

    def create(self) -> None:
        """Make the directory; refuse one that already holds trials (nothing written is ever lost)."""
        if (self.path / TRIALS_FILE).exists():
            raise StoreError(f"{self.path}: already holds a search; continue it with --resume, or choose another --out")
        self.make_dir()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a command runs this stage, so a second one (say, two --resume at once) is
        refused instead of training the same trials twice. An flock: the kernel drops it when the
        holder dies, even by kill -9, so no stale lock is ever left behind."""
        self.make_dir()
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StoreError(f"{self.path / LOCK_FILE}: cannot open: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"{self.path}: another hpsearch process is running this stage; wait for it to finish or stop it"
                ) from None
            yield
        finally:
            os.close(fd)

    def make_dir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the run directory: {e.strerror or e}") from None
        if not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path}: the run directory is not writable")

    def append_trial(self, result: TrialResult) -> None:
        """One JSON line per finished trial (append_json_line)."""
        append_json_line(self.path / TRIALS_FILE, result.to_dict())

    def final_trials(self) -> dict[int, TrialResult]:
        """Each trial's first record with a final state (not interrupted): the trials that are done
        and never trained again, whatever was recorded about them later. Successive halving records
        a trial once per rung: there its record at the highest rung counts, and at one rung the
        decision to stop it (a STOPPED record) replaces its rung result."""
        done: dict[int, TrialResult] = {}
        for r in self.read_trials():
            if r.state.final and (r.trial not in done or _supersedes(r, done[r.trial])):
                done[r.trial] = r
        return done

    def read_trials(self) -> list[TrialResult]:
        """Every readable record, in file order; a line that is not one (cut mid-write by a crash,
        or edited by hand) is skipped and its number kept in `unreadable`."""
        path = self.path / TRIALS_FILE
        if not path.exists():
            return []
        out = []
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise StoreError(f"{path}: cannot read: {e.strerror or e}") from None
        self.unreadable = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue  # holds no record, so none is lost (as read_json_lines)
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not a record")
                out.append(TrialResult.from_dict(record))
            except (UnicodeDecodeError, ValueError, KeyError, TypeError):
                self.unreadable.append(number)  # a line cut by a crash, or edited by hand: skipped, kept
        return out

    def remove_stale_temp_files(self) -> None:
        """Temp files of atomic writes that a kill -9 left behind (the real files are intact)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def write_json(self, name: str, data: Any) -> None:
        write_json(self.path / name, data)


def utc_now() -> str:
    """The time a record is stamped with: UTC, to the second, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
