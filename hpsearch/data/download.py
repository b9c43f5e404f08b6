"""Downloading a file with its md5 verified, and extracting a tar archive without writing outside its target.

The network and archive layer of `hpsearch.data`: it knows nothing of CIFAR-10 (the caller passes the URL,
the checksum and where to tell the user to put the file by hand). It imports only the standard library and
`hpsearch.errors`; every other module of the package may import it, it imports none of them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from hpsearch.errors import DataError

ProgressFn = Callable[[str, int, int | None], None]  # (description, done, total), e.g. bytes downloaded
_CHUNK = 1 << 20  # bytes per read when downloading or hashing


def download_file(
    url: str,
    dest: Path,
    md5: str,
    progress: ProgressFn | None = None,
    timeout: float = 30,
    *,
    manual: str | None = None,
) -> Path:
    """Stream `url` to `dest`, verifying its md5; `dest` appears only complete and verified.

    `manual` tells the user where to put the file by hand when the network fails (default: "put it at
    `dest`"). A failed download leaves nothing behind: no partial file, no directory made for it.
    """
    with _new_dirs_removed_on_failure(dest.parent):
        return _fetch(url, dest, md5, progress, timeout, manual or f"put it at {dest}")


@contextlib.contextmanager
def _new_dirs_removed_on_failure(directory: Path) -> Iterator[None]:
    """If the block fails, the directories it made on the way to `directory` are removed again
    (those still empty)."""
    made = [d for d in (directory, *directory.parents) if not d.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _fetch(url: str, dest: Path, md5: str, progress: ProgressFn | None, timeout: float, manual: str) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name in dest's directory: concurrent downloads don't mix, and the final
        # rename is atomic (same filesystem).
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write the download there: {e.strerror or e}") from None
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, part, progress, timeout, dest.name, manual)
        if got != md5.lower():
            raise DataError(f"checksum mismatch for {url}: expected {md5}, got {got}; the partial file was removed")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a partial file behind, whatever stopped us
        raise
    return dest


def _stream(
    url: str, out: IO[bytes], part: Path, progress: ProgressFn | None, timeout: float, what: str, manual: str
) -> str:
    """Copy url's body to `out`; the md5 hex digest of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(f"downloading {what}", 0, total)
            while chunk := response.read(_CHUNK):
                _write(out, chunk, part)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(f"downloading {what}", done, total)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, resets are OSErrors
        reason = _network_reason(e, timeout)
    else:
        if total is None or done >= total:
            return digest.hexdigest()
        # http.client ends a body cut short as if it were complete: without this, a dropped connection
        # would be reported as a checksum mismatch.
        reason = f"the connection closed after {done} of {total} bytes"
    raise DataError(
        f"cannot download {url}: {reason}. Without network, download {url.rsplit('/', 1)[-1]} elsewhere and {manual}"
    )


def _write(out: IO[bytes], chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as e:  # a local failure (disk full), not a network one: raised as ours, not caught above
        raise DataError(f"{part}: cannot write: {e.strerror or e}") from None


def _network_reason(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason  # the socket error underneath: refused, timed out, unknown host
    if isinstance(e, TimeoutError):
        return f"no response within {timeout:g} s"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def file_md5(path: Path) -> str:
    """The md5 hex digest of the file at `path`."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    return digest.hexdigest()


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive's regular files and directories under `target`, never writing outside it.

    Every member is checked before anything is written: absolute paths, '..' components, links,
    device files and anything resolving outside `target` are refused with the member's name.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            root = target.resolve()
            for member in members:
                problem = _member_problem(member, root)
                if problem:
                    raise DataError(f"{archive}: refusing to extract member '{member.name}': {problem}")
            target.mkdir(parents=True, exist_ok=True)
            # Our checks come first so the error is ours; the stdlib's "data" filter is a second layer.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4, where our checks are the only layer
                tar.extractall(target, members=members)
    except FileNotFoundError:
        raise DataError(f"{archive}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:  # truncated or corrupt archive
        raise DataError(f"{archive}: not a readable tar archive: {e}") from None
    except OSError as e:  # disk full, permissions
        raise DataError(f"{archive}: cannot extract to {target}: {e.strerror or e}") from None


def _member_problem(member: tarfile.TarInfo, root: Path) -> str | None:
    name = member.name
    if PurePosixPath(name).is_absolute():
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' path component"
    if member.issym() or member.islnk():
        return f"link to '{member.linkname}'"
    if member.isdev():
        return "device or fifo"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or directory"
    # Catches what the rules above cannot: a symlink already inside target that points out of it,
    # and platform quirks (a drive letter or backslashes on Windows).
    if not (root / name).resolve().is_relative_to(root):
        return f"resolves outside {root}"
    return None
