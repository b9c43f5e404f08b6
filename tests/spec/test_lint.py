"""Settings that make no sense: each is one warning line naming the key, the value and what happens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PATIENCE, ROOT

from hpsearch.spec.lint import data_warnings, execution_warnings, spec_warnings, split_note, training_examples
from hpsearch.spec.load import load_spec, parse_spec
from hpsearch.spec.schema import DataSize

SYNTHETIC = {"dataset": "synthetic", "synthetic_train": 3000, "val_size": 500}  # 2500 training examples


def spec_with(data: dict[str, Any] | None = None, **sections: Any) -> Any:
    return parse_spec({"name": "l", "data": data or SYNTHETIC, **sections})


def test_training_examples_follow_the_validation_split() -> None:
    assert training_examples(parse_spec({"name": "c"}).data) == 49_000  # CIFAR-10's 50,000 less val_size 1000
    assert training_examples(spec_with().data) == 2500
    assert training_examples(spec_with({**SYNTHETIC, "train_subset": 2000}).data) == 2000
    assert training_examples(spec_with({**SYNTHETIC, "val_size": 3000}).data) is None  # the loader refuses it


def test_the_shipped_configs_raise_no_warning() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert spec_warnings(load_spec(path)) == [], path.name


def test_a_batch_larger_than_the_training_set_warns() -> None:
    spec = spec_with(train={"batch_size": 4096})
    assert spec_warnings(spec) == [
        "train.batch_size 4096 is larger than the 2500 training examples: "
        "every step sees the whole set, one step per epoch"
    ]
    assert spec_warnings(spec_with(train={"batch_size": 2500}))[0].startswith("train.batch_size 2500 equals the 2500")
    assert spec_warnings(spec_with(train={"batch_size": 2499})) == []


def test_the_loaded_training_set_size_is_used_when_given() -> None:
    spec = spec_with(train={"batch_size": 1000})
    assert spec_warnings(spec) == []
    (warning,) = spec_warnings(spec, n_train=800)
    assert warning.startswith("train.batch_size 1000 is larger than the 800 training examples")


@pytest.mark.parametrize(
    "searched",
    [{"low": 16, "high": 4096, "log": True}, {"values": [64, 4096, 128]}],
)
def test_the_largest_searched_batch_size_is_checked(searched: dict[str, Any]) -> None:
    spec = spec_with(train={"batch_size": 10}, search={"space": {"batch_size": searched}})
    assert spec_warnings(spec) == [
        "search.space.batch_size 4096 (the largest searched) is larger than the 2500 training examples: "
        "every step sees the whole set, one step per epoch"
    ]


def test_a_fixed_batch_size_that_the_search_replaces_is_not_checked() -> None:
    spec = spec_with(train={"batch_size": 4096}, search={"space": {"batch_size": {"values": [64, 128]}}})
    assert spec_warnings(spec) == []


def test_a_validation_split_leaving_almost_no_training_data_warns() -> None:
    (warning,) = spec_warnings(spec_with({**SYNTHETIC, "val_size": 2900}, train={"batch_size": 50}))
    assert warning == (
        "data.val_size 2900 holds out most of the 3000 training examples: only 100 are left to train on "
        "(the lecture holds out 1000 of 50000)"
    )
    assert spec_warnings(spec_with({**SYNTHETIC, "val_size": 1500})) == []  # half and half: odd, not broken


def test_searching_init_std_with_an_init_that_ignores_it_warns() -> None:
    space = {"init_std": {"low": 1e-3, "high": 1e-1, "log": True}}
    assert spec_warnings(spec_with(model={"init": "kaiming"}, search={"space": space})) == [
        "search.space.init_std is searched but model.init is kaiming, which ignores it (its std is sqrt(2/fan_in)): "
        "every trial trains the same init; search it with init: small_random"
    ]
    (xavier,) = spec_warnings(spec_with(model={"init": "xavier"}, search={"space": space}))
    assert xavier.startswith("search.space.init_std is searched but model.init is xavier, which ignores it (its std")
    assert spec_warnings(spec_with(model={"init": "small_random"}, search={"space": space})) == []


def test_searching_init_std_with_searched_inits_that_all_ignore_it_warns() -> None:
    space: dict[str, Any] = {"init_std": {"low": 1e-3, "high": 1e-1, "log": True}}
    ignoring = spec_with(search={"space": {**space, "init": {"values": ["xavier", "kaiming"]}}})
    assert spec_warnings(ignoring) == [
        "search.space.init_std is searched but search.space.init tries only xavier, kaiming, which ignore it: "
        "every trial trains the same init; search it with init: small_random"
    ]
    using = spec_with(
        model={"init": "kaiming"}, search={"space": {**space, "init": {"values": ["small_random", "kaiming"]}}}
    )
    assert spec_warnings(using) == []


def test_more_workers_than_cores_warns() -> None:
    assert execution_warnings(workers=8, cores=4) == [
        "--workers 8 is above the 4 cores: the workers share cores and each trains slower; use at most 4"
    ]
    assert execution_warnings(workers=4, cores=4) == []
    assert execution_warnings(workers=None, cores=4) == []  # the default is chosen from the cores
    assert execution_warnings(workers=8, cores=None) == []  # the core count is unknown


def test_lint_imports_no_torch() -> None:
    code = "import sys, hpsearch.spec.lint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=PATIENCE)
    assert out.stdout.strip() == "False"


def test_a_python_models_init_std_argument_and_user_data_are_not_linted_as_builtin() -> None:
    from hpsearch.spec.load import parse_spec

    spec = parse_spec(
        {
            "name": "u",
            "data": {"dataset": "npz", "path": "/tmp/none.npz"},
            "model": {"kind": "python", "factory": "nets.py:net", "init": "kaiming"},
            "search": {"space": {"lr": {"low": 0.01, "high": 0.1}, "init_std": {"low": 0.01, "high": 0.1}}},
        }
    )
    assert spec_warnings(spec) == []  # init_std is the factory's argument; the npz's size is unknown here


def test_the_validation_split_warning_counts_an_npz_and_a_folder(tmp_path: Path) -> None:
    from PIL import Image

    from hpsearch.data import training_set_size

    np.savez(tmp_path / "d.npz", x_train=np.zeros((1500, 2), np.float32), y_train=np.arange(1500) % 3)
    npz = spec_with({"dataset": "npz", "path": str(tmp_path / "d.npz"), "val_size": 1000})
    assert spec_warnings(npz) == []  # before it loads, its size is unknown
    assert data_warnings(npz, training_set_size(npz.data)) == [
        "data.val_size 1000 holds out most of the 1500 training examples: only 500 are left to train on "
        "(the lecture holds out 1000 of 50000)"
    ]
    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((1500, 2)),
        y_train=np.arange(1500) % 3,
        x_val=np.zeros((9, 2)),
        y_val=np.arange(9) % 3,
    )
    assert data_warnings(npz, training_set_size(npz.data)) == []  # its own x_val: val_size holds out nothing
    for cls in "ab":
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(15):  # 30 images: counted from the listing, none decoded
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "imgs" / "train" / cls / f"{i}.png")
    folder = spec_with({"dataset": "folder", "path": str(tmp_path / "imgs"), "val_size": 20})
    assert training_set_size(folder.data) == DataSize(train=30, own_val=False)
    split, batch = data_warnings(folder, training_set_size(folder.data))
    assert split.startswith("data.val_size 20 holds out most of the 30 training examples: only 10 are left")
    assert batch.startswith("train.batch_size 100 is larger than the 10 training examples")  # counted too


def test_an_automatic_val_size_is_said_in_one_line_for_a_small_set_only() -> None:
    small = spec_with({"dataset": "npz", "path": "/tmp/d.npz"}).data  # val_size left out
    assert split_note(small, DataSize(train=1500, own_val=False)) == (
        "data: validating on 150 of 1,500 training examples (10%; set data.val_size to choose)"
    )
    assert split_note(small, DataSize(train=10_000, own_val=False)) is None  # 1000, as for CIFAR-10: nothing new
    assert split_note(small, DataSize(train=1500, own_val=True)) is None  # its own x_val: val_size is unused
    assert split_note(spec_with({**SYNTHETIC}).data) is None  # val_size set: the user chose
    assert split_note(spec_with({"dataset": "synthetic"}).data) == (
        "data: validating on 500 of 5,000 training examples (10%; set data.val_size to choose)"
    )
