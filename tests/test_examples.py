"""The examples/ folder: the spec loads and names the factory beside it, the cs231n three-layer
convnet maps a CIFAR-shaped batch to 10 scores starting at ln 10, and a coarse search of the
example trains on synthetic data (the example itself reads CIFAR-10)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import ROOT, cli

from hpsearch.data import load_data
from hpsearch.sanity.activations import check_activations
from hpsearch.sanity.initial import check_initial_loss
from hpsearch.sanity.results import CheckVerdict
from hpsearch.spec.load import load_spec, parse_spec
from hpsearch.spec.schema import Categorical, Spec
from hpsearch.training.factory import load_factory

EXAMPLE = ROOT / "examples/cifar10_convnet.yaml"
TINY_DATA = {"dataset": "synthetic", "synthetic_train": 400, "synthetic_test": 50, "val_size": 100}


def test_example_spec_loads_and_names_the_factory_beside_it() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.model.kind == "python"
    assert spec.model.factory == f"{ROOT / 'examples/nets.py'}:three_layer_convnet"
    assert spec.data.dataset == "cifar10"
    assert set(spec.search.space) == {"lr", "weight_decay", "filters"}
    filters = spec.search.space["filters"]
    assert isinstance(filters, Categorical)
    assert filters.values == (16, 32, 64)
    assert spec.search.space["lr"].log  # type: ignore[union-attr]
    assert spec.search.space["weight_decay"].log  # type: ignore[union-attr]


@pytest.mark.parametrize("filters", [16, 32, 64])
def test_three_layer_convnet_scores_a_cifar_batch_starting_at_ln_10(filters: int) -> None:
    factory = load_factory(load_spec(EXAMPLE).model.factory or "")
    torch.manual_seed(0)
    net = factory((3, 32, 32), 10, filters=filters, hidden=100)
    assert isinstance(net, torch.nn.Module)
    x, y = torch.randn(200, 3, 32, 32), torch.randint(0, 10, (200,))
    with torch.no_grad():
        scores = net(x)
    assert scores.shape == (200, 10)
    assert float(F.cross_entropy(scores, y)) == pytest.approx(math.log(10), abs=0.1)  # small scores at init
    conv = net[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.out_channels == filters
    assert conv.kernel_size == (7, 7)


def _on_synthetic(spec: Spec) -> Spec:
    doc = spec.model_dump(mode="json")
    doc["data"] = TINY_DATA
    doc["train"]["device"] = "cpu"
    return parse_spec(doc)


def test_example_network_passes_the_initial_loss_and_activation_checks() -> None:
    spec = _on_synthetic(load_spec(EXAMPLE))
    data = load_data(spec, None, None)
    initial = check_initial_loss(spec, data)
    assert initial.verdict is CheckVerdict.PASS, initial.diagnosis
    activations, layers = check_activations(spec, data)
    assert activations.verdict is CheckVerdict.PASS, activations.diagnosis
    assert [s.label for s in layers] == ["1 (1: ReLU)", "2 (5: ReLU)"]


def test_a_one_trial_coarse_search_of_the_example_trains(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data"] = TINY_DATA
    doc["train"]["device"] = "cpu"
    (tmp_path / "nets.py").write_text((ROOT / "examples/nets.py").read_text())  # the factory beside the spec
    spec = tmp_path / "convnet.yaml"
    spec.write_text(yaml.safe_dump(doc))
    res = cli("coarse", str(spec), "--trials", "1", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "run/coarse/results.json").read_text())
    (trial,) = results["ranked"]
    assert trial["state"] == "complete"
    assert trial["params"]["filters"] in (16, 32, 64)
    assert 1e-4 <= trial["params"]["lr"] <= 1e-1
    assert trial["val_acc"] is not None
