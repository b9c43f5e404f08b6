"""A user's own data: `data.dataset: npz` (named arrays) and `data.dataset: folder` (train/<class>/*.png), loaded
into the same in-memory Dataset as CIFAR-10, the folder decoded once and cached. Tiny data written by each test.
Bad inputs given through the CLI are in test_hostile_inputs.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli
from PIL import Image

from hpsearch.data import DataRecipe, build_dataset
from hpsearch.errors import DataError, SpecError
from hpsearch.spec.choices import Preprocess
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import DataSpec


def images_nhwc(n: int, h: int = 8, w: int = 8, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def labels(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


def npz_spec(path: Path, **data: object) -> DataSpec:
    return DataSpec.model_validate({"dataset": "npz", "path": path, "val_size": 10, "preprocess": "none", **data})


def write_pngs(root: Path, split: str, per_class: dict[str, list[np.ndarray]]) -> None:
    for cls, arrays in per_class.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / split / cls / f"{i:03d}.png")


def rgb_folder(root: Path, per_class: int = 10, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """train/ with three classes of `per_class` random 8x8 RGB PNGs; returns what was written."""
    rng = np.random.default_rng(seed)
    written = {cls: [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(per_class)] for cls in "bac"}
    write_pngs(root, "train", written)
    return written


def folder_spec(root: Path, **data: object) -> DataSpec:
    return DataSpec.model_validate({"dataset": "folder", "path": root, "val_size": 6, "preprocess": "none", **data})


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((60, 8, 8, 3), (3, 8, 8)),  # NHWC: moved to NCHW
        ((60, 3, 8, 8), (3, 8, 8)),  # NCHW: kept
        ((60, 8, 8, 1), (1, 8, 8)),  # NHWC grayscale
        ((60, 1, 8, 8), (1, 8, 8)),  # NCHW grayscale
        ((60, 8, 8), (1, 8, 8)),  # (N, H, W): grayscale
        ((60, 3, 8, 3), (3, 8, 3)),  # both ends could be channels: the second wins (NCHW)
    ],
)
def test_npz_images_are_nchw_uint8_with_the_same_pixels(
    tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels(60))
    ds = build_dataset(npz_spec(tmp_path / "d.npz"))
    assert ds.input_shape == expected
    assert ds.x_train.dtype == torch.uint8
    nchw = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2) if expected[0] == shape[3] != shape[1] else x
    assert np.array_equal(ds.x_train.numpy(), nchw[:50])
    assert np.array_equal(ds.x_val.numpy(), nchw[50:])  # val_size from the end of train, as for CIFAR-10
    assert ds.y_train.tolist() == labels(60)[:50].tolist()


def test_npz_classes_are_the_largest_label_plus_one_and_one_seen_only_in_test_is_warned(tmp_path: Path) -> None:
    y_test = np.array([0, 3])  # label 3 only in the test split: 4 classes, one the network never trains on
    np.savez(tmp_path / "d.npz", x_train=images_nhwc(60), y_train=labels(60), x_test=images_nhwc(2), y_test=y_test)
    ds = build_dataset(npz_spec(tmp_path / "d.npz"))
    assert ds.classes == ("0", "1", "2", "3")
    assert ds.y_train.dtype == torch.int64
    assert ds.warnings == (
        f"{tmp_path / 'd.npz'}: class 3 has no training examples (1 in y_test); "
        "a class without training examples cannot be learned",
    )
    np.savez(tmp_path / "d.npz", x_train=images_nhwc(60), y_train=labels(60))
    assert build_dataset(npz_spec(tmp_path / "d.npz")).warnings == ()  # every class trained on: nothing to say


def stray(n: int = 60, at: int = 17, label: int = 7) -> np.ndarray:
    """labels 0..2 and one stray label: the example once reported."""
    y = labels(n)
    y[at] = label
    return y


def test_npz_labels_that_skip_classes_are_refused_naming_the_stray_label(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images_nhwc(60), y_train=stray())
    with pytest.raises(DataError) as e:
        build_dataset(npz_spec(path))
    assert str(e.value) == (
        f"{path}: no example has label 3, 4, 5 or 6, yet y_train[17] is 7 (1 example of label 7): labels must be "
        "0..C-1 with examples of each; fix the labels, or set data.num_classes: 8 to train with classes that have "
        "no examples"
    )
    np.savez(path, x_train=images_nhwc(60), y_train=np.arange(60) % 2 * 5)  # labels {0, 5}
    with pytest.raises(DataError, match=r"no example has label 1, 2, 3 or 4, yet y_train\[1\] is 5 \(30 examples"):
        build_dataset(npz_spec(path))


def test_npz_num_classes_refuses_a_label_outside_it_naming_the_label_and_its_count(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images_nhwc(60), y_train=stray(), x_test=images_nhwc(3), y_test=np.array([7, 9, 1]))
    with pytest.raises(DataError) as e:
        build_dataset(npz_spec(path, num_classes=3))
    assert str(e.value) == (
        f"{path}: y_train[17] is 7, outside data.num_classes 3 (labels 0..2): 2 examples of label 7, and 1 more "
        "with labels >= 3; fix the labels or raise data.num_classes"
    )


def test_npz_num_classes_keeps_classes_without_examples_and_warns_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images_nhwc(60), y_train=np.arange(60) % 2 * 5)  # labels {0, 5}, as the user says
    ds = build_dataset(npz_spec(path, num_classes=6))
    assert ds.num_classes == 6  # the network has 6 outputs; sanity-check's initial loss is judged by ln 6
    assert ds.warnings == (
        f"{path}: classes 1, 2, 3, 4 have no examples at all (data.num_classes is 6: labels 0..5); "
        "lower it or fix the labels",
    )


def test_num_classes_is_for_npz_only(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "  dataset: folder\n  path: imgs\n  num_classes: 3\n")
    with pytest.raises(SpecError, match="data.num_classes: is for dataset npz only, not folder"):
        load_spec(spec)


def test_npz_own_validation_split_is_used_instead_of_val_size(tmp_path: Path) -> None:
    x, xv = images_nhwc(60), images_nhwc(7, seed=1)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels(60), x_val=xv, y_val=labels(7).astype(np.uint8))
    ds = build_dataset(npz_spec(tmp_path / "d.npz", train_subset=40, preprocess="mean_image"))
    assert len(ds.y_train) == 40
    assert len(ds.y_val) == 7
    assert np.array_equal(ds.x_val.numpy(), xv.transpose(0, 3, 1, 2))
    assert ds.y_val.dtype == torch.int64
    expected_mean = x[:40].transpose(0, 3, 1, 2).mean(axis=0, keepdims=True) / 255  # the 40 training images only
    torch.testing.assert_close(ds.shift, torch.from_numpy(expected_mean).float(), rtol=0, atol=1e-6)


def test_val_size_left_out_holds_out_a_tenth_of_the_training_set_at_most_1000(tmp_path: Path) -> None:
    for n, held in ((1500, 150), (12_000, 1000), (15, 1)):
        np.savez(tmp_path / "d.npz", x_train=np.zeros((n, 2), np.float32), y_train=np.arange(n) % 3)
        ds = build_dataset(DataSpec(dataset="npz", path=tmp_path / "d.npz"))
        assert (len(ds.y_train), len(ds.y_val)) == (n - held, held), n
    ds = build_dataset(npz_spec(tmp_path / "d.npz", val_size=5))  # given: respected
    assert len(ds.y_val) == 5


def features(n: int = 60, d: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, d)) * np.arange(1, d + 1) + np.arange(d) * 10).astype(np.float64)


def test_float_features_stay_float_and_are_not_divided_by_255(tmp_path: Path) -> None:
    x = features()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels(60))
    ds = build_dataset(npz_spec(tmp_path / "d.npz"))
    assert ds.x_train.dtype == torch.float32
    assert ds.input_shape == (5,)
    torch.testing.assert_close(ds.normalize(ds.x_val), torch.from_numpy(x[50:]).float())  # preprocess none


def test_float_features_standardize_per_feature_on_the_training_split(tmp_path: Path) -> None:
    x = features()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels(60))
    ds = build_dataset(npz_spec(tmp_path / "d.npz", preprocess="per_channel_standardize"))
    z = ds.normalize(ds.x_train).double()
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.std(dim=0, correction=0), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-5)
    mean_image = build_dataset(npz_spec(tmp_path / "d.npz", preprocess="mean_image"))
    torch.testing.assert_close(mean_image.shift, torch.from_numpy(x[:50].mean(axis=0, keepdims=True)).float())
    torch.testing.assert_close(mean_image.normalize(mean_image.x_train).mean(dim=0), torch.zeros(5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("preprocess", list(Preprocess))
def test_float_images_get_every_preprocess_per_channel_or_per_pixel(tmp_path: Path, preprocess: Preprocess) -> None:
    x = np.random.default_rng(0).normal(size=(60, 2, 4, 4)).astype(np.float32) + np.array([0, 100])[:, None, None]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels(60))
    ds = build_dataset(npz_spec(tmp_path / "d.npz", preprocess=preprocess.value))
    out = ds.normalize(ds.x_train)
    assert out.shape == (50, 2, 4, 4)
    expected_shift_shape = {Preprocess.MEAN_IMAGE: (1, 2, 4, 4)}.get(preprocess, (1, 2, 1, 1))
    assert ds.shift.shape == expected_shift_shape
    if preprocess is not Preprocess.NONE:  # every option removes the channels' means (0 and 100)
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_uint8_images_still_normalize_as_x_over_255(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x_train=images_nhwc(60), y_train=labels(60))
    ds = build_dataset(npz_spec(tmp_path / "d.npz"))
    torch.testing.assert_close(ds.normalize(ds.x_val), ds.x_val.float() / 255)


# --------------------------------------------------------------------------- folder


def test_folder_decodes_classes_sorted_by_name_into_nchw_uint8(tmp_path: Path) -> None:
    written = rgb_folder(tmp_path)
    ds = build_dataset(folder_spec(tmp_path))
    assert ds.classes == ("a", "b", "c")
    assert ds.input_shape == (3, 8, 8)
    every = [(a, label) for label, cls in enumerate("abc") for a in written[cls]]  # file order: class, then name
    x = np.stack([a.transpose(2, 0, 1) for a, _ in every])
    y = [label for _, label in every]
    assert np.array_equal(ds.x_train.numpy(), x[:24])
    assert np.array_equal(ds.x_val.numpy(), x[24:])  # no val/: val_size from the end, as for npz and CIFAR-10
    assert ds.y_train.tolist() == y[:24]


def test_folder_of_grayscale_images_has_one_channel_and_a_color_image_makes_all_rgb(tmp_path: Path) -> None:
    gray = {cls: [np.full((6, 6), 10 * i, np.uint8) for i in range(5)] for cls in ("x", "y")}
    write_pngs(tmp_path, "train", gray)
    ds = build_dataset(folder_spec(tmp_path, val_size=2))
    assert ds.input_shape == (1, 6, 6)
    assert ds.x_train[3].unique().tolist() == [30]
    write_pngs(tmp_path, "test", {"x": [np.zeros((6, 6, 3), np.uint8)]})  # one colour image anywhere
    ds = build_dataset(folder_spec(tmp_path, val_size=2))
    assert ds.input_shape == (3, 6, 6)
    assert ds.x_train[3].unique().tolist() == [30]  # gray copied to R, G and B


def test_folder_val_split_and_resize(tmp_path: Path) -> None:
    rgb_folder(tmp_path)
    write_pngs(tmp_path, "val", {"c": [np.full((16, 12, 3), 200, np.uint8)]})  # a class may be missing from val/
    ds = build_dataset(folder_spec(tmp_path, resize=[4, 6]))
    assert ds.input_shape == (3, 4, 6)
    assert len(ds.y_train) == 30
    assert ds.y_val.tolist() == [2]
    assert ds.x_val.unique().tolist() == [200]  # a constant image resizes to the same constant


def test_folder_class_that_the_validation_split_takes_whole_is_warned(tmp_path: Path) -> None:
    rgb_folder(tmp_path)  # 10 images each of a, b, c, read class by class: the last 10 are all of c
    ds = build_dataset(folder_spec(tmp_path, val_size=10))
    assert ds.y_val.unique().tolist() == [2]
    assert ds.warnings == (
        f"{tmp_path}: class c has no training examples (10 in the validation split, the last 10 training "
        "examples); a folder's images are read class by class: add a val/ folder",
    )
    assert build_dataset(folder_spec(tmp_path, val_size=9)).warnings == ()  # one c left to train on


def test_folder_is_decoded_once_then_read_from_the_cache_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgb_folder(tmp_path)
    first = build_dataset(folder_spec(tmp_path))
    caches = list(tmp_path.glob(".hpsearch-cache-*.npz"))
    assert len(caches) == 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded an image although the cache is current")

    with monkeypatch.context() as m:
        m.setattr(Image, "open", no_decoding)
        again = build_dataset(folder_spec(tmp_path))
    assert torch.equal(again.x_train, first.x_train)
    assert torch.equal(again.y_val, first.y_val)

    changed = tmp_path / "train" / "a" / "000.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new size and time: a new key
    fresh = build_dataset(folder_spec(tmp_path))
    assert fresh.x_train[0].unique().tolist() == [0]
    assert [p.name for p in tmp_path.glob(".hpsearch-cache-*.npz")] != [caches[0].name]  # replaced, not added
    assert len(list(tmp_path.glob(".hpsearch-cache-*"))) == 1


def test_folder_cache_goes_to_the_user_cache_dir_when_the_folder_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpsearch.data import folder as folder_module

    data = tmp_path / "data"
    rgb_folder(data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    save = folder_module._save_atomically

    def read_only_data(path: Path, arrays: dict[str, np.ndarray]) -> None:
        if path.parent == data:
            raise PermissionError(13, "Permission denied", str(path))
        save(path, arrays)

    monkeypatch.setattr(folder_module, "_save_atomically", read_only_data)
    first = build_dataset(folder_spec(data))
    assert list(data.glob(".hpsearch-*")) == []
    assert len(list((tmp_path / "cache" / "hpsearch" / "folders").glob("*.npz"))) == 1
    monkeypatch.setattr(Image, "open", None)  # a second load must not decode
    assert torch.equal(build_dataset(folder_spec(data)).x_train, first.x_train)


def test_a_cut_cache_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    rgb_folder(tmp_path)
    first = build_dataset(folder_spec(tmp_path))
    (cache,) = tmp_path.glob(".hpsearch-cache-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    assert torch.equal(build_dataset(folder_spec(tmp_path)).x_train, first.x_train)
    assert cache.stat().st_size > 100


# --------------------------------------------------------------------------- through the spec and the CLI


def write_spec(path: Path, data: str) -> Path:
    path.write_text(
        f"name: user\ndata:\n{data}"
        "model: {kind: mlp, hidden: [8]}\n"
        "train: {epochs: 1, batch_size: 10, device: cpu}\n"
        "search: {trials: 2, seed: 0, space: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}}\n"
    )
    return path


def test_worker_recipe_rebuilds_the_same_npz_and_folder_datasets(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x_train=images_nhwc(60), y_train=labels(60))
    rgb_folder(tmp_path / "imgs")
    (tmp_path / "specs").mkdir()
    for data in ("  dataset: npz\n  path: ../d.npz\n", "  dataset: folder\n  path: ../imgs\n"):
        spec = load_spec(write_spec(tmp_path / "specs" / "s.yaml", data + "  val_size: 10\n"))
        assert spec.data.path is not None
        assert spec.data.path.is_absolute()  # the stored spec works from anywhere
        here = build_dataset(spec.data)
        there = DataRecipe(spec_to_yaml(spec), None)()
        assert torch.equal(there.x_train, here.x_train)
        assert torch.equal(there.shift, here.shift)


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_coarse_on_user_data_completes_and_ranks(tmp_path: Path, kind: str) -> None:
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x_train=images_nhwc(60), y_train=labels(60))
        data = "  dataset: npz\n  path: d.npz\n"
    else:
        rgb_folder(tmp_path / "imgs", per_class=20)
        data = "  dataset: folder\n  path: imgs\n"
    spec = write_spec(tmp_path / "spec.yaml", data + "  val_size: 10\n")
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "run" / "coarse" / "results.json").read_text())
    ranked = results["ranked"]
    assert [(t["rank"], t["state"]) for t in ranked] == [(1, "complete"), (2, "complete")]
    accs = [t["val_acc"] for t in ranked]
    assert accs == sorted(accs, reverse=True)


def test_a_class_without_training_examples_is_warned_in_every_command_that_loads_the_data(tmp_path: Path) -> None:
    y, y_test = labels(300), np.array([0, 1, 2, 3])  # class 3 is tested but never trained on
    x = (images_nhwc(300) // 4 + 60 * y[:, None, None, None]).astype(np.uint8)  # learnable: brighter by class
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=images_nhwc(4), y_test=y_test)
    spec = write_spec(tmp_path / "spec.yaml", "  dataset: npz\n  path: d.npz\n  val_size: 100\n")
    warning = f"warning: {tmp_path / 'd.npz'}: class 3 has no training examples (1 in y_test)"
    run = str(tmp_path / "run")
    commands = {
        "sanity-check": ("sanity-check", str(spec), "--out", str(tmp_path / "sanity")),
        "coarse": ("coarse", str(spec), "--out", run),
        "refine": ("refine", run, "--trials", "1", "--epochs", "1"),
        "final": ("final", run, "--top", "1", "--seeds", "1"),
    }
    for name, args in commands.items():
        res = cli(*args)
        assert res.returncode in (0, 1), (name, res.stderr)  # sanity-check exits 1 when a check FAILs
        assert res.stderr.count(warning) == 1, (name, res.stderr)


def test_coarse_says_the_automatic_split_records_it_and_resumes_with_it(tmp_path: Path) -> None:
    y = labels(1500)
    np.savez(tmp_path / "d.npz", x_train=(np.eye(3)[y] + 0.1 * features(1500, 3)).astype(np.float32), y_train=y)
    given = write_spec(tmp_path / "given.yaml", "  dataset: npz\n  path: d.npz\n  val_size: 1000\n")
    res = cli("coarse", str(given), "--out", str(tmp_path / "given"), "--trials", "1")
    assert res.returncode == 0, res.stderr
    assert "warning: data.val_size 1000 holds out most of the 1500 training examples: only 500 are left" in res.stderr
    assert "data: validating" not in res.stderr  # the user chose the split
    spec = write_spec(tmp_path / "spec.yaml", "  dataset: npz\n  path: d.npz\n")  # val_size left out
    run = tmp_path / "run"
    res = cli("coarse", str(spec), "--out", str(run))
    assert res.returncode == 0, res.stderr
    assert "data: validating on 150 of 1,500 training examples (10%; set data.val_size to choose)\n" in res.stderr
    assert json.loads((run / "coarse" / "run.json").read_text())["val_size"] == 150
    assert load_spec(run / "coarse" / "spec.yaml").data.val_size == 150  # the split it trained on, not "auto"
    first = json.loads((run / "coarse" / "trials.jsonl").read_text().splitlines()[0])
    assert first["iterations"] == 135  # 1350 training examples in batches of 10, one epoch
    res = cli("coarse", str(spec), "--out", str(run), "--trials", "3", "--resume")  # the same spec: resumed
    assert res.returncode == 0, res.stderr
    assert len(json.loads((run / "coarse" / "results.json").read_text())["ranked"]) == 3


def test_a_run_recorded_with_val_size_1000_resumes_from_a_spec_that_leaves_it_out(tmp_path: Path) -> None:
    # Runs before val_size could be left out recorded 1000; CIFAR-10's automatic split is still 1000.
    y = labels(10_000)
    np.savez(tmp_path / "d.npz", x_train=features(10_000, 3).astype(np.float32), y_train=y)
    data = "  dataset: npz\n  path: d.npz\n"
    run = str(tmp_path / "run")
    old = write_spec(tmp_path / "old.yaml", data + "  val_size: 1000\n")
    assert cli("coarse", str(old), "--out", run, "--trials", "1").returncode == 0
    new = write_spec(tmp_path / "new.yaml", data)
    res = cli("coarse", str(new), "--out", run, "--trials", "2", "--resume")
    assert res.returncode == 0, res.stderr
    assert "data: validating" not in res.stderr  # 1000 of 10,000: what a large set always held out
