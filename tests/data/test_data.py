"""hpsearch.data on real files: hand-built releases, real pickles, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import socket
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpsearch.data import (
    CIFAR10_CLASSES,
    DATA_ROOT_ENV,
    RawSplits,
    build_dataset,
    default_data_root,
    download_file,
    load_cifar10,
    make_synthetic,
    read_cifar10_bin,
    read_cifar10_py,
    resolve_data_root,
    safe_extract,
    split_and_preprocess,
)
from hpsearch.errors import DataError
from hpsearch.spec.choices import Preprocess
from hpsearch.spec.schema import DataSpec

N = 10_000  # records per batch file
FILE_BYTES = N * 3073  # 30,730,000: each record is 1 label byte + 3072 pixel bytes
BIN_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
PY_NAMES = [name.removesuffix(".bin") for name in BIN_NAMES]
MARKED = (2, 1234, (2, 5, 7), 200)  # data_batch_3.bin, record 1234, pixel [c=2, h=5, w=7] = 200


def offset(c: int, h: int, w: int) -> int:
    """Byte offset of pixel [c, h, w] within an image in the release: planes R, G, B, each row-major."""
    return c * 1024 + h * 32 + w


def batch(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, pixels (N, 3072)) of batch file k (0-4 train, 5 test), every record distinguishable."""
    i = np.arange(N)
    labels = ((i + k) % 10).astype(np.uint8)
    pixels = np.zeros((N, 3072), np.uint8)
    pixels[:, offset(0, 0, 0)] = k + 1  # which file
    pixels[:, offset(1, 2, 3)] = i % 251  # which record
    pixels[:, offset(2, 31, 30)] = i // 256
    if k == MARKED[0]:
        pixels[MARKED[1], offset(*MARKED[2])] = MARKED[3]
    return labels, pixels


def write_bin_file(path: Path, labels: np.ndarray, pixels: np.ndarray) -> None:
    np.concatenate([labels[:, None], pixels], axis=1).tofile(path)


def write_py_file(path: Path, labels: np.ndarray, pixels: np.ndarray, protocol: int = 4) -> None:
    # Protocol 4 explicitly: it names arrays the way the real files do (_reconstruct); protocol 5,
    # Python 3.14's default, would name numpy._core.numeric._frombuffer instead.
    content = {b"batch_label": path.name.encode(), b"labels": labels.tolist(), b"data": pixels}
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def linked_copy(src: Path, dst: Path, replace: dict[str, bytes] | None = None) -> Path:
    """dst/ holding symlinks to src's files, except those in `replace`, written with the given bytes."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    for name, data in (replace or {}).items():
        (dst / name).unlink(missing_ok=True)
        (dst / name).write_bytes(data)
    return dst


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def bin_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake binary release: six files of the exact real size with known labels and pixels."""
    d = tmp_path_factory.mktemp("release") / "cifar-10-batches-bin"
    d.mkdir()
    for k, name in enumerate(BIN_NAMES):
        write_bin_file(d / name, *batch(k))
    (d / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return d


@pytest.fixture(scope="session")
def py_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same content as bin_release, as the python release's pickles."""
    d = tmp_path_factory.mktemp("release") / "cifar-10-batches-py"
    d.mkdir()
    for k, name in enumerate(PY_NAMES):
        write_py_file(d / name, *batch(k))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return d


@pytest.fixture(scope="session")
def release_archive(bin_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin_release packed like cifar-10-binary.tar.gz."""
    archive = tmp_path_factory.mktemp("archive") / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(bin_release, arcname="cifar-10-batches-bin")
    return archive


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(directory, base URL) of a real HTTP server on 127.0.0.1 serving that directory."""
    directory = tmp_path_factory.mktemp("www")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-binary.tar.gz"


# --------------------------------------------------------------------------- binary release


def test_binary_reader_puts_each_byte_at_its_image_channel_row_column(bin_release: Path) -> None:
    raw = read_cifar10_bin(bin_release)

    assert raw.x_train.shape == (50_000, 3, 32, 32)
    assert raw.x_test.shape == (10_000, 3, 32, 32)
    assert raw.x_train.dtype == torch.uint8
    assert raw.y_train.dtype == torch.int64
    assert raw.x_train.is_contiguous()
    assert raw.x_test.is_contiguous()
    k, record, (c, h, w), value = MARKED
    assert raw.x_train[k * N + record, c, h, w] == value
    assert raw.x_train[k * N + record, c, w, h] == 0  # rows and columns not swapped
    i = torch.arange(N)
    for k in range(5):
        block = raw.x_train[k * N : (k + 1) * N]
        assert torch.all(block[:, 0, 0, 0] == k + 1)
        assert torch.equal(block[:, 1, 2, 3], (i % 251).to(torch.uint8))
        assert torch.equal(block[:, 2, 31, 30], (i // 256).to(torch.uint8))
        assert torch.equal(raw.y_train[k * N : (k + 1) * N], (i + k) % 10)
    assert torch.all(raw.x_test[:, 0, 0, 0] == 6)
    assert torch.equal(raw.y_test, (i + 5) % 10)
    assert raw.classes == CIFAR10_CLASSES


def test_binary_reader_takes_class_names_from_batches_meta_txt(bin_release: Path, tmp_path: Path) -> None:
    names = [f"thing{i}" for i in range(10)]
    d = linked_copy(bin_release, tmp_path / "bin", {"batches.meta.txt": ("\n".join(names) + "\n\n").encode()})
    assert read_cifar10_bin(d).classes == tuple(names)


@pytest.mark.parametrize("size", [FILE_BYTES - 3073 * 17, FILE_BYTES + 1, 1234])
def test_binary_file_of_the_wrong_size_is_refused(bin_release: Path, tmp_path: Path, size: int) -> None:
    d = linked_copy(bin_release, tmp_path / "bin", {"data_batch_3.bin": bytes(size)})
    with pytest.raises(DataError) as e:
        read_cifar10_bin(d)
    assert str(e.value) == (
        f"{d / 'data_batch_3.bin'}: expected 30730000 bytes, found {size} (truncated or not CIFAR-10)"
    )


def test_binary_label_above_9_is_refused_naming_file_and_record(bin_release: Path, tmp_path: Path) -> None:
    labels, pixels = batch(3)
    labels[777] = 10
    d = linked_copy(bin_release, tmp_path / "bin")
    (d / "data_batch_4.bin").unlink()
    write_bin_file(d / "data_batch_4.bin", labels, pixels)
    with pytest.raises(DataError, match=r"data_batch_4\.bin: record 777 has label 10, expected 0-9$"):
        read_cifar10_bin(d)


def test_binary_missing_file_is_named(bin_release: Path, tmp_path: Path) -> None:
    d = linked_copy(bin_release, tmp_path / "bin")
    (d / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"test_batch\.bin: missing"):
        read_cifar10_bin(d)


# --------------------------------------------------------------------------- python release


def test_python_reader_gives_the_same_tensors_as_the_binary_reader(bin_release: Path, py_release: Path) -> None:
    from_bin, from_py = read_cifar10_bin(bin_release), read_cifar10_py(py_release)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(from_bin, name), getattr(from_py, name)
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name
    assert from_py.classes == CIFAR10_CLASSES


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_python_reader_reads_arrays_pickled_by_numpy_1_and_2(py_release: Path, tmp_path: Path, module: str) -> None:
    # Protocol 3 names globals as text lines, so the reconstructor's module can be rewritten in place.
    write_py_file(tmp_path / "data_batch_1", *batch(0), protocol=3)
    blob = (tmp_path / "data_batch_1").read_bytes()
    for name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        blob = blob.replace(f"c{name}\n_reconstruct\n".encode(), f"c{module}\n_reconstruct\n".encode())
    assert f"c{module}\n_reconstruct\n".encode() in blob
    d = linked_copy(py_release, tmp_path / "py", {"data_batch_1": blob})
    assert torch.all(read_cifar10_py(d).x_train[:N, 0, 0, 0] == 1)


class Payload:
    """Pickles as a call of `func(*args)`: what a malicious file runs when it is unpickled."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


PAYLOADS: dict[str, tuple[Callable[[Path], Payload], str]] = {
    "Path.touch": (lambda m: Payload(Path.touch, m), f"{Path.touch.__module__}.Path.touch"),
    "os.system": (lambda m: Payload(os.system, f"touch '{m}'"), f"{os.system.__module__}.system"),
    "eval": (lambda m: Payload(eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
    "subprocess.call": (lambda m: Payload(subprocess.call, ["touch", str(m)]), "subprocess.call"),
}


@pytest.mark.parametrize("kind", PAYLOADS)
def test_python_reader_refuses_a_malicious_pickle_without_running_it(tmp_path: Path, kind: str) -> None:
    make, global_name = PAYLOADS[kind]
    # The payload is live: plain pickle runs it and creates the marker file.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({b"data": make(control)}, protocol=4))
    assert control.exists()

    marker = tmp_path / "marker"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(pickle.dumps({b"labels": [0] * N, b"data": make(marker)}, protocol=4))
    with pytest.raises(DataError) as e:
        read_cifar10_py(d)
    assert str(e.value) == (
        f"{d / 'data_batch_1'}: refusing to unpickle '{global_name}' (only numpy arrays are allowed)"
    )
    assert not marker.exists()


def test_python_batch_of_the_wrong_shape_is_refused(py_release: Path, tmp_path: Path) -> None:
    labels, pixels = batch(5)
    d = linked_copy(py_release, tmp_path / "py")
    (d / "test_batch").unlink()
    write_py_file(d / "test_batch", labels[:-1], pixels[:-1])
    with pytest.raises(
        DataError, match=r"test_batch: 'data' must be uint8 \(10000, 3072\), found uint8 \(9999, 3072\)"
    ):
        read_cifar10_py(d)


def test_python_truncated_pickle_is_refused(py_release: Path, tmp_path: Path) -> None:
    blob = (py_release / "data_batch_2").read_bytes()
    d = linked_copy(py_release, tmp_path / "py", {"data_batch_2": blob[: len(blob) // 2]})
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR-10 pickle"):
        read_cifar10_py(d)


# --------------------------------------------------------------------------- download, verify, extract


def test_load_cifar10_downloads_verifies_and_extracts(
    www: tuple[Path, str], release_archive: Path, bin_release: Path, tmp_path: Path
) -> None:
    served, base = www
    (served / "release.tar.gz").write_bytes(release_archive.read_bytes())
    root = tmp_path / "data"  # does not exist yet
    calls: list[tuple[str, int, int | None]] = []

    raw = load_cifar10(
        root,
        binary_url=f"{base}/release.tar.gz",
        binary_md5=md5_of(release_archive),
        progress=lambda what, done, total: calls.append((what, done, total)),
    )

    expected = read_cifar10_bin(bin_release)
    assert torch.equal(raw.x_train, expected.x_train)
    assert torch.equal(raw.y_test, expected.y_test)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
    assert md5_of(root / "cifar-10-binary.tar.gz") == md5_of(release_archive)
    size = release_archive.stat().st_size
    assert calls[-1] == ("downloading cifar-10-binary.tar.gz", size, size)
    # The second time it reads what is on disk: a dead URL does not matter.
    again = load_cifar10(root, binary_url=closed_port_url(), binary_md5=md5_of(release_archive))
    assert torch.equal(again.y_train, expected.y_train)


def test_download_reports_progress_in_increasing_bytes(www: tuple[Path, str], tmp_path: Path) -> None:
    served, base = www
    content = np.random.default_rng(0).bytes(3_500_000)  # several 1 MiB chunks
    (served / "blob.bin").write_bytes(content)
    calls: list[tuple[str, int, int | None]] = []

    dest = download_file(
        f"{base}/blob.bin",
        tmp_path / "blob.bin",
        hashlib.md5(content).hexdigest(),
        progress=lambda what, done, total: calls.append((what, done, total)),
    )

    assert dest.read_bytes() == content
    done = [d for _, d, _ in calls]
    assert done[0] == 0
    assert done[-1] == len(content)
    assert len(done) >= 4
    assert done == sorted(set(done))  # strictly increasing
    assert {total for _, _, total in calls} == {len(content)}
    assert os.listdir(tmp_path) == ["blob.bin"]


def test_checksum_mismatch_leaves_no_file(www: tuple[Path, str], release_archive: Path, tmp_path: Path) -> None:
    served, base = www
    (served / "release.tar.gz").write_bytes(release_archive.read_bytes())
    url, root = f"{base}/release.tar.gz", tmp_path / "data"
    with pytest.raises(DataError) as e:
        load_cifar10(root, binary_url=url, binary_md5="0" * 32)
    assert str(e.value) == (
        f"checksum mismatch for {url}: expected {'0' * 32}, got {md5_of(release_archive)}; the partial file was removed"
    )
    assert not root.exists()  # no partial file, and no data root left made for it


def test_unreachable_server_says_where_to_put_the_archive(tmp_path: Path) -> None:
    root = tmp_path / "data"
    url = closed_port_url()
    with pytest.raises(DataError) as e:
        load_cifar10(root, binary_url=url)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download {url}: Connection refused.")
    assert message.endswith(
        f"put it at {root / 'cifar-10-binary.tar.gz'} (or its extracted cifar-10-batches-bin/ under {root})"
    )
    assert not root.exists()  # no partial file, and no data root left made for it


def test_http_error_is_reported(www: tuple[Path, str], tmp_path: Path) -> None:
    _, base = www
    with pytest.raises(DataError, match=r": HTTP 404 File not found\. Without network"):
        download_file(f"{base}/no-such-file.tar.gz", tmp_path / "x.tar.gz", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_archive_placed_by_hand_is_verified_and_used_without_network(release_archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").symlink_to(release_archive)
    raw = load_cifar10(root, binary_url=closed_port_url(), binary_md5=md5_of(release_archive))
    assert raw.x_train.shape == (50_000, 3, 32, 32)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


def test_corrupt_archive_placed_by_hand_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz: checksum mismatch: .*delete it to download again"):
        load_cifar10(tmp_path, binary_url=closed_port_url())


def test_missing_data_without_download_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"CIFAR-10 not found in {tmp_path}: put cifar-10-batches-bin/"):
        load_cifar10(tmp_path, download=False)


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"/file: is not a directory$"):
        load_cifar10(tmp_path / "file")


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


# case: (member type, member name, link target, the problem our error names); {tmp} is the test's tmp_path.
UNSAFE: dict[str, tuple[bytes, str, str, str]] = {
    "parent": (tarfile.REGTYPE, "../evil", "", "'..' path component"),
    "nested parent": (tarfile.REGTYPE, "sub/../../evil", "", "'..' path component"),
    "absolute": (tarfile.REGTYPE, "{tmp}/abs-evil", "", "absolute path"),
    "symlink": (tarfile.SYMTYPE, "link", "{tmp}", "link to '{tmp}'"),
    "hardlink": (tarfile.LNKTYPE, "hard", "{tmp}/victim", "link to '{tmp}/victim'"),
    "device": (tarfile.CHRTYPE, "dev", "", "device or fifo"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_safe_extract_refuses_unsafe_members_before_writing_anything(tmp_path: Path, case: str) -> None:
    kind, *texts = UNSAFE[case]
    name, linkname, problem = (text.format(tmp=tmp_path) for text in texts)
    archive = tar_gz(
        tmp_path / "evil.tar.gz",
        [(member("ok.txt"), b"harmless"), (member(name, kind, linkname), b"evil" if kind == tarfile.REGTYPE else None)],
    )
    target = tmp_path / "target"
    with pytest.raises(DataError) as e:
        safe_extract(archive, target)
    assert str(e.value) == f"{archive}: refusing to extract member '{name}': {problem}"
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "abs-evil").exists()
    assert not target.exists()  # not even the harmless member before it


def test_safe_extract_refuses_a_path_through_a_symlink_already_in_target(tmp_path: Path) -> None:
    outside, target = tmp_path / "outside", tmp_path / "target"
    outside.mkdir()
    target.mkdir()
    (target / "escape").symlink_to(outside)
    archive = tar_gz(tmp_path / "a.tar.gz", [(member("escape/evil"), b"evil")])
    with pytest.raises(DataError, match=r"refusing to extract member 'escape/evil': resolves outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []


def test_safe_extract_writes_regular_files_and_directories(tmp_path: Path) -> None:
    archive = tar_gz(
        tmp_path / "a.tar.gz",
        [(member("d", tarfile.DIRTYPE), None), (member("d/f.txt"), b"hello"), (member("top.bin"), b"\x00\x01")],
    )
    safe_extract(archive, tmp_path / "target")
    assert (tmp_path / "target/d/f.txt").read_bytes() == b"hello"
    assert (tmp_path / "target/top.bin").read_bytes() == b"\x00\x01"


def test_safe_extract_refuses_a_truncated_archive(release_archive: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(release_archive.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: not a readable tar archive"):
        safe_extract(archive, tmp_path / "target")


def test_load_cifar10_refuses_a_traversal_archive_from_the_server(www: tuple[Path, str], tmp_path: Path) -> None:
    served, base = www
    archive = tar_gz(served / "evil.tar.gz", [(member("cifar-10-batches-bin/x"), b""), (member("../../evil"), b"")])
    root = tmp_path / "a" / "data"
    with pytest.raises(DataError, match=r"refusing to extract member '\.\./\.\./evil': '\.\.' path component"):
        load_cifar10(root, binary_url=f"{base}/evil.tar.gz", binary_md5=md5_of(archive))
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-binary.tar.gz"]  # no half-extracted release


# --------------------------------------------------------------------------- data root


def test_data_root_precedence_is_cli_then_env_then_spec_then_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli, env, spec = tmp_path / "cli", tmp_path / "env", tmp_path / "spec"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert resolve_data_root(None, None) == tmp_path / "xdg/hpsearch/cifar10"
    assert resolve_data_root(None, spec) == spec
    monkeypatch.setenv(DATA_ROOT_ENV, str(env))
    assert resolve_data_root(None, spec) == env
    assert resolve_data_root(cli, spec) == cli
    assert default_data_root() == env


def test_default_data_root_ignores_a_relative_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert default_data_root() == Path.home() / ".cache/hpsearch/cifar10"


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_determined_by_its_seed() -> None:
    a, b, c = make_synthetic(200, 50, seed=1), make_synthetic(200, 50, seed=1), make_synthetic(200, 50, seed=2)
    assert torch.equal(a.x_train, b.x_train)
    assert torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_synthetic_is_cifar_shaped_and_balanced() -> None:
    raw = make_synthetic(1005, 300, seed=0, num_classes=10)
    assert raw.x_train.shape == (1005, 3, 32, 32)
    assert raw.x_test.shape == (300, 3, 32, 32)
    assert raw.x_train.dtype == torch.uint8
    assert raw.y_train.dtype == torch.int64
    assert raw.x_train.is_contiguous()
    assert raw.y_train.bincount().tolist() == [101] * 5 + [100] * 5
    assert raw.y_test.bincount().tolist() == [30] * 10
    assert len(raw.classes) == 10


def test_synthetic_is_learnable_in_one_epoch_but_not_trivially() -> None:
    ds = split_and_preprocess(make_synthetic(5000, 10, seed=0), 1000, None, Preprocess.MEAN_IMAGE)
    torch.manual_seed(0)
    model = torch.nn.Linear(3072, 10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    accuracies = []
    for _ in range(3):
        for idx in torch.randperm(len(ds.y_train)).split(100):
            loss = torch.nn.functional.cross_entropy(model(ds.normalize(ds.x_train[idx]).flatten(1)), ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracies.append((model(ds.normalize(ds.x_val).flatten(1)).argmax(1) == ds.y_val).float().mean().item())
    assert accuracies[0] > 0.5  # chance is 0.1
    assert max(accuracies) < 0.95  # classes overlap: there is something left for a search to find


# --------------------------------------------------------------------------- split and preprocess


def raw_splits(x_train: torch.Tensor) -> RawSplits:
    n = len(x_train)
    return RawSplits(x_train, torch.arange(n) % 10, x_train[:2], torch.zeros(2, dtype=torch.int64), CIFAR10_CLASSES)


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_validation_is_the_last_val_size_examples_and_subset_the_first(tmp_path: Path) -> None:
    raw = raw_splits(random_images(100))
    ds = split_and_preprocess(raw, val_size=30, train_subset=50, preprocess=Preprocess.NONE)
    assert torch.equal(ds.x_val, raw.x_train[70:])
    assert torch.equal(ds.y_val, raw.y_train[70:])
    assert torch.equal(ds.x_train, raw.x_train[:50])
    assert torch.equal(ds.y_train, raw.y_train[:50])
    assert ds.x_train.data_ptr() == raw.x_train.data_ptr()  # a view: the dataset is not copied
    whole = split_and_preprocess(raw, val_size=30, train_subset=None, preprocess=Preprocess.NONE)
    assert len(whole.y_train) == 70


@pytest.mark.parametrize(
    ("preprocess", "shape"),
    [(Preprocess.MEAN_IMAGE, (1, 3, 32, 32)), (Preprocess.PER_CHANNEL_MEAN, (1, 3, 1, 1))],
)
def test_statistics_come_from_the_training_split_only(preprocess: Preprocess, shape: tuple[int, ...]) -> None:
    x = torch.full((100, 3, 32, 32), 10, dtype=torch.uint8)
    x[80:] = 200  # validation pixels differ: they must not move the mean
    ds = split_and_preprocess(raw_splits(x), val_size=20, train_subset=None, preprocess=preprocess)
    assert ds.shift.shape == shape
    assert ds.shift.dtype == torch.float32
    assert torch.all(ds.shift == torch.tensor(10 / 255, dtype=torch.float32))
    assert torch.all(ds.scale == 1)


def test_mean_image_is_the_mean_training_image() -> None:
    x = random_images(300)
    ds = split_and_preprocess(raw_splits(x), val_size=100, train_subset=150, preprocess=Preprocess.MEAN_IMAGE)
    expected = x[:150].double().mean(dim=0, keepdim=True) / 255
    torch.testing.assert_close(ds.shift, expected.float(), rtol=0, atol=1e-7)


def test_per_channel_standardize_gives_zero_mean_unit_std_on_train() -> None:
    x = random_images(200)
    x[:, 1] //= 4  # channels with different ranges
    ds = split_and_preprocess(
        raw_splits(x), val_size=50, train_subset=None, preprocess=Preprocess.PER_CHANNEL_STANDARDIZE
    )
    z = ds.normalize(ds.x_train).double()
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        z.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5
    )


def test_constant_channel_is_not_divided_by_zero() -> None:
    x = random_images(20)
    x[:, 2] = 7
    ds = split_and_preprocess(
        raw_splits(x), val_size=5, train_subset=None, preprocess=Preprocess.PER_CHANNEL_STANDARDIZE
    )
    assert ds.scale[0, 2, 0, 0] == 1
    assert torch.isfinite(ds.normalize(ds.x_val)).all()


@pytest.mark.parametrize("preprocess", list(Preprocess))
def test_normalize_is_x_over_255_minus_shift_over_scale(preprocess: Preprocess) -> None:
    ds = split_and_preprocess(raw_splits(random_images(64)), val_size=16, train_subset=None, preprocess=preprocess)
    x = ds.x_val
    out = ds.normalize(x)
    assert out.dtype == torch.float32
    assert out.shape == x.shape
    torch.testing.assert_close(out, (x.float() / 255 - ds.shift) / ds.scale, rtol=1e-5, atol=1e-5)
    if preprocess is Preprocess.NONE:
        torch.testing.assert_close(out, x.float() / 255)


@pytest.mark.parametrize(
    ("val_size", "train_subset", "message"),
    [
        (100, None, "data.val_size: 100 must be at least 1 and less than the 100 training examples"),
        (0, None, "data.val_size: 0 must be at least 1 and less than the 100 training examples"),
        (30, 71, "data.train_subset: 71 must be between 1 and the 70 training examples left after data.val_size=30"),
    ],
)
def test_impossible_split_is_refused_naming_the_key(val_size: int, train_subset: int | None, message: str) -> None:
    with pytest.raises(DataError) as e:
        split_and_preprocess(raw_splits(random_images(100)), val_size, train_subset, Preprocess.NONE)
    assert str(e.value) == message


def test_dataset_describes_itself_and_moves_to_a_device() -> None:
    ds = build_dataset(DataSpec(dataset="synthetic", synthetic_train=120, synthetic_test=10, val_size=20, seed=3))
    assert (len(ds.y_train), len(ds.y_val)) == (100, 20)
    assert ds.num_classes == 10
    assert ds.input_shape == (3, 32, 32)
    moved = ds.to(torch.device("cpu"))
    assert torch.equal(moved.x_train, ds.x_train)
    assert torch.equal(moved.normalize(ds.x_val), ds.normalize(ds.x_val))
    assert torch.equal(
        build_dataset(DataSpec(dataset="synthetic", seed=3)).x_val[:20],
        make_synthetic(5000, 1000, 3).x_train[4500:4520],  # val_size left out: the last tenth, 500 of 5000
    )


# --------------------------------------------------------------------------- the real CIFAR-10


def test_real_cifar10_loads_with_the_release_sizes_and_class_counts(
    cifar10_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = load_cifar10(cifar10_root, download=False)
    assert raw.x_train.shape == (50_000, 3, 32, 32)
    assert raw.x_test.shape == (10_000, 3, 32, 32)
    assert raw.y_train.bincount().tolist() == [5000] * 10
    assert raw.y_test.bincount().tolist() == [1000] * 10
    assert raw.classes == CIFAR10_CLASSES

    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)  # the spec's root must be the one used
    ds = build_dataset(DataSpec(root=cifar10_root, download=False))
    assert (len(ds.y_train), len(ds.y_val)) == (49_000, 1_000)
    assert torch.equal(ds.x_val, raw.x_train[49_000:])
    z = ds.normalize(ds.x_train[:2000])
    assert abs(z.mean().item()) < 0.05  # mean-image preprocessing centres the training images


@pytest.mark.parametrize("release", ["bin_release", "py_release"])
def test_a_data_root_that_is_the_release_folder_itself_is_read_not_downloaded_into(
    release: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """--data-root .../cifar-10-batches-bin (the folder itself, not its parent) is recognised."""
    folder = request.getfixturevalue(release)
    before = sorted(p.name for p in folder.iterdir())
    raw = load_cifar10(folder, binary_url=closed_port_url())
    assert raw.x_train.shape == (50_000, 3, 32, 32)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing downloaded or extracted into it
