"""A user's own network (`model.kind: python`): loading the factory, the line that says which file
was loaded, the check of one real batch before any trial runs (each bad factory refused with one
line naming `model.factory`, nothing written), the file's hash in run.json and --resume refused when
the file changed, worker processes, and the factory's source shipped to where the file is not."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PATIENCE, ROOT, cli, run_hpsearch

import hpsearch
from hpsearch.data import load_data
from hpsearch.errors import SpecError
from hpsearch.runs.read import stage_num_classes
from hpsearch.runs.records import TrialConfig, TrialState
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import DataSpec
from hpsearch.training.factory import FactorySource, check_model, describe, load_factory, read_source, register_source
from hpsearch.training.trial import run_trial

NET = """\
import torch.nn as nn


def tiny(input_shape, num_classes, hidden=8):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""

SPEC = """\
name: own
data: {{dataset: synthetic, synthetic_train: 300, synthetic_test: 10, val_size: 100}}
model:
  kind: python
  factory: {factory}
  args: {{hidden: 8}}
train: {{epochs: 3, batch_size: 50, device: cpu}}  # enough to learn: refine refuses a stage where nothing did
search:
  trials: 2
  seed: 0
  space:
    lr: {{low: 3.0e-2, high: 3.0e-1, log: true}}
sanity: {{overfit_epochs: 10, probe_lrs: [0.01], probe_iterations: 5}}  # seconds, not a real check
"""


def own_spec(tmp_path: Path, net: str = NET, factory: str = "nets.py:tiny") -> Path:
    """nets.py holding `net` and own.yaml naming `factory`, both in tmp_path."""
    (tmp_path / "nets.py").write_text(net)
    spec = tmp_path / "own.yaml"
    spec.write_text(SPEC.format(factory=factory))
    return spec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- which file was loaded


def test_describe_names_the_function_the_absolute_file_and_its_hash(tmp_path: Path) -> None:
    spec = load_spec(own_spec(tmp_path))
    nets = (tmp_path / "nets.py").resolve()
    assert describe(spec.model) == f"model: tiny from {nets} (sha256 {sha256(nets)[:8]}...)"
    assert describe(spec.model.model_copy(update={"kind": "mlp", "factory": None, "args": {}})) is None


def test_describe_a_module_names_the_module_and_its_file(tmp_path: Path) -> None:
    spec = load_spec(own_spec(tmp_path, factory="hpsearch.training.models:build_builtin"))
    line = describe(spec.model)
    assert line is not None
    assert line.startswith("model: build_builtin from module hpsearch.training.models (")
    assert line.endswith(f"{os.sep}hpsearch{os.sep}training{os.sep}models.py)")


def test_the_commands_print_the_loaded_file_once_on_stderr(tmp_path: Path) -> None:
    spec = own_spec(tmp_path)
    line = f"model: tiny from {(tmp_path / 'nets.py').resolve()} (sha256 {sha256(tmp_path / 'nets.py')[:8]}...)"
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(line) == 1, res.stderr
    assert line not in res.stdout
    res = cli("refine", str(tmp_path / "run"), "--trials", "1")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(line) == 1, res.stderr
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "sane"))
    assert res.stderr.count(line) == 1, res.stderr


# --------------------------------------------------------------------------- refused before any trial

BAD = {
    "missing file": ("nets.py:tiny", None, ["model.factory", "nets.py: no such file"]),
    "module missing": (
        "no_such_package_q7.nets:tiny",
        NET,
        ["model.factory", "no module named 'no_such_package_q7.nets'"],
    ),
    "syntax error": (
        "nets.py:tiny",
        "import torch.nn as nn\n\ndef tiny(:\n",
        ["model.factory", "nets.py:3: syntax error"],
    ),
    "import raises": (
        "nets.py:tiny",
        "import torch.nn as nn\nimport no_such_module_q7\n",
        ["model.factory", "importing it failed", "No module named 'no_such_module_q7'", "nets.py:2"],
    ),
    "function missing": ("nets.py:other", NET, ["model.factory", "has no function 'other'"]),
    "not a module": (
        "nets.py:tiny",
        "def tiny(input_shape, num_classes, hidden=8):\n    return 42\n",
        ["model.factory", "returned int, not a torch.nn.Module"],
    ),
    "wrong output shape": (
        "nets.py:tiny",
        NET.replace("nn.Linear(hidden, num_classes)", "nn.Linear(hidden, 5)"),
        ["model.factory", "output of shape (2, 5)", "expected (2, 10) (batch, num_classes)"],
    ),
    "factory raises": (
        "nets.py:tiny",
        "def tiny(input_shape, num_classes, hidden=8):\n    raise ValueError('hidden must be even')\n",
        ["model.factory", "ValueError: hidden must be even", "nets.py:2"],
    ),
    "forward raises": (
        "nets.py:tiny",
        NET + "\n\ndef broken(input_shape, num_classes, hidden=8):\n    return Broken()\n\n\n"
        "class Broken(nn.Module):\n    def forward(self, x):\n        return x.view(-1, 7)\n",
        ["model.factory", "RuntimeError", "nets.py:15"],
    ),
}
BAD["forward raises"] = ("nets.py:broken", *BAD["forward raises"][1:])

# Layers kept in a plain Python list are invisible to nn.Module: the network has no parameters.
PLAIN_LIST = """\
import torch.nn as nn


class Listed(nn.Module):
    def __init__(self, d, k, hidden):
        super().__init__()
        self.layers = [nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def tiny(input_shape, num_classes, hidden=8):
    c, h, w = input_shape
    return Listed(c * h * w, num_classes, hidden)
"""
NO_PARAMETERS = [
    "model.factory",
    "nets.py:tiny((3, 32, 32), 10, hidden=8)",
    "has no trainable parameters",
    "layers kept in a plain list? use nn.ModuleList",
]
BAD["parameters in a plain list"] = ("nets.py:tiny", PLAIN_LIST, NO_PARAMETERS)
BAD["every parameter frozen"] = (
    "nets.py:frozen",
    NET + "\n\ndef frozen(input_shape, num_classes, hidden=8):\n    return tiny(input_shape, num_classes, hidden)"
    ".requires_grad_(False)\n",
    ["model.factory", "has 4 parameter tensors, none trainable (requires_grad=False on every one)"],
)
PAIR = """

def pair(input_shape, num_classes, hidden=8):
    return Pair(tiny(input_shape, num_classes, hidden))


class Pair(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x), x
"""
BAD["output not a tensor"] = (
    "nets.py:pair",
    NET + PAIR,
    ["model.factory", "gave a tuple, not a tensor", "expected (2, 10) (batch, num_classes)"],
)


def bad_spec(tmp_path: Path, case: str) -> Path:
    factory, net, _ = BAD[case]
    spec = own_spec(tmp_path, NET if net is None else net, factory)
    if net is None:
        (tmp_path / "nets.py").unlink()
    return spec


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_model_refuses_a_bad_factory_naming_the_key_and_reason(tmp_path: Path, case: str) -> None:
    spec_path = bad_spec(tmp_path, case)
    spec = load_spec(spec_path)
    data = load_data(spec, None, None)
    with pytest.raises(SpecError) as info:
        check_model(spec.model, data, str(spec_path))
    message = str(info.value)
    assert message.startswith(f"{spec_path}: model.factory: "), message
    assert "\n" not in message
    for piece in BAD[case][2]:
        assert piece in message, message


@pytest.mark.parametrize("case", sorted(BAD))
def test_coarse_refuses_a_bad_factory_before_writing_anything(tmp_path: Path, case: str) -> None:
    spec = bad_spec(tmp_path, case)
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for piece in BAD[case][2]:
        assert piece in errors[0], res.stderr
    assert not (tmp_path / "run").exists()


def test_sanity_check_refuses_a_bad_factory_before_writing_anything(tmp_path: Path) -> None:
    spec = bad_spec(tmp_path, "wrong output shape")
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1, res.stderr
    assert "expected (2, 10) (batch, num_classes)" in res.stderr
    assert not (tmp_path / "run").exists()


def test_refine_refuses_a_factory_broken_since_coarse_before_the_stage_is_made(tmp_path: Path) -> None:
    spec = own_spec(tmp_path)
    assert cli("coarse", str(spec), "--out", str(tmp_path / "run")).returncode == 0
    (tmp_path / "nets.py").write_text(BAD["wrong output shape"][1] or "")
    res = cli("refine", str(tmp_path / "run"), "--trials", "1")
    assert res.returncode == 1, res.stderr
    assert "model.factory" in res.stderr
    assert "output of shape (2, 5)" in res.stderr
    assert not (tmp_path / "run/refine-1").exists()


def test_a_network_without_parameters_is_refused_by_every_command_before_it_writes(tmp_path: Path) -> None:
    # One check (search.prepare_model) before anything is written, whichever command builds the network.
    spec = own_spec(tmp_path, PLAIN_LIST)
    for command in (["sanity-check", str(spec)], ["coarse", str(spec), "--population", "1"]):
        res = cli(*command, "--out", str(tmp_path / "run"))
        assert res.returncode == 1, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, res.stderr
        for piece in NO_PARAMETERS:
            assert piece in errors[0], res.stderr
        assert not (tmp_path / "run").exists()
    (tmp_path / "nets.py").write_text(NET)
    assert cli("coarse", str(spec), "--out", str(tmp_path / "run")).returncode == 0
    (tmp_path / "nets.py").write_text(PLAIN_LIST)
    for command in (["refine", str(tmp_path / "run"), "--trials", "1"], ["final", str(tmp_path / "run")]):
        res = cli(*command)
        assert res.returncode == 1, res.stderr
        assert "has no trainable parameters" in res.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["coarse"]


FLAKY = """

def flaky(input_shape, num_classes, hidden=8):
    return Flaky(tiny(input_shape, num_classes, hidden))


class Flaky(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        import torch

        if torch.is_grad_enabled():
            raise RuntimeError('no training today')
        return self.inner(x)
"""


def test_a_network_that_raises_in_training_fails_its_trials_at_the_users_line(tmp_path: Path) -> None:
    # Passes the check (which runs without grad), then raises in every training step.
    net = NET + FLAKY
    spec = own_spec(tmp_path, net, "nets.py:flaky")
    line = net.splitlines().index("            raise RuntimeError('no training today')") + 1
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 3, res.stderr  # no trial completed
    assert f"RuntimeError: no training today at nets.py:{line}" in res.stderr
    records = [json.loads(x) for x in (tmp_path / "run/coarse/trials.jsonl").read_text().splitlines()]
    assert [r["state"] for r in records] == ["failed", "failed"]
    assert {r["error_at"] for r in records} == {f"nets.py:{line}"}


# --------------------------------------------------------------------------- a script's import-time code

SCRIPT = """\
import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.parse_args()  # a training script's command line, parsed at import
with open(sys.argv[0] + ".argv.json", "w") as f:
    json.dump(sys.argv, f)

"""


def test_a_factory_file_that_parses_its_command_line_at_import_sees_a_clean_argv(tmp_path: Path) -> None:
    # A real process: what the file must not see is hpsearch's own command line.
    spec = own_spec(tmp_path, SCRIPT + NET)
    res = run_hpsearch("coarse", str(spec), "--out", str(tmp_path / "run"), "--population", "1")
    assert res.returncode == 0, res.stderr
    nets = (tmp_path / "nets.py").resolve()
    assert json.loads((tmp_path / "nets.py.argv.json").read_text()) == [str(nets)]  # as `python nets.py` gives


@pytest.mark.parametrize("script", ["raise SystemExit(3)\n", "import sys\n\nsys.exit(0)\n"])
def test_a_factory_file_that_exits_while_imported_is_refused_naming_it(tmp_path: Path, script: str) -> None:
    spec = own_spec(tmp_path, NET + script)
    res = run_hpsearch("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    line = len(NET.splitlines()) + len(script.splitlines())  # the script's last line: where it exited
    assert f"model.factory: nets.py exited while being imported (at nets.py:{line})" in errors[0]
    assert 'put the script part under `if __name__ == "__main__":`' in errors[0]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- recorded source, resume


def test_run_json_records_the_factory_hash_and_the_loaded_class_count(tmp_path: Path) -> None:
    spec = own_spec(tmp_path)
    assert cli("coarse", str(spec), "--out", str(tmp_path / "run")).returncode == 0
    info = json.loads((tmp_path / "run/coarse/run.json").read_text())
    assert info["factory_sha256"] == sha256(tmp_path / "nets.py")
    assert info["num_classes"] == 10


def test_resume_refuses_a_changed_factory_file_naming_it_and_resumes_once_restored(tmp_path: Path) -> None:
    spec = own_spec(tmp_path)
    run = ["--out", str(tmp_path / "run")]
    assert cli("coarse", str(spec), *run).returncode == 0
    before = (tmp_path / "run/coarse/trials.jsonl").read_bytes()
    (tmp_path / "nets.py").write_text(NET.replace("hidden=8", "hidden=9"))
    res = cli("coarse", str(spec), *run, "--resume")
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert str((tmp_path / "nets.py").resolve()) in errors[0]
    assert "changed since this stage started" in errors[0]
    assert (tmp_path / "run/coarse/trials.jsonl").read_bytes() == before
    (tmp_path / "nets.py").write_text(NET)
    res = cli("coarse", str(spec), *run, "--resume")
    assert res.returncode == 0, res.stderr
    assert "2 of 2 trials already finished" in res.stderr


# --------------------------------------------------------------------------- workers, shipped source


def records_by_trial(path: Path) -> dict[int, dict[str, object]]:
    return {r["trial"]: r for r in map(json.loads, path.read_text().splitlines()) if r["state"] != "interrupted"}


def test_worker_processes_train_a_user_network_like_this_process(tmp_path: Path) -> None:
    spec = own_spec(tmp_path)
    here = cli("coarse", str(spec), "--out", str(tmp_path / "here"), "--workers", "1")
    assert here.returncode == 0, here.stderr
    workers = cli("coarse", str(spec), "--out", str(tmp_path / "workers"), "--workers", "2")
    assert workers.returncode == 0, workers.stderr
    a = records_by_trial(tmp_path / "here/coarse/trials.jsonl")
    b = records_by_trial(tmp_path / "workers/coarse/trials.jsonl")
    assert sorted(a) == sorted(b) == [0, 1]
    for t in a:
        assert a[t]["state"] == b[t]["state"] == "complete"
        assert a[t]["params"] == b[t]["params"]
        # Each worker runs torch on one thread, this process on all cores: the same arithmetic up
        # to the order of float sums.
        assert a[t]["train_loss"] == pytest.approx(b[t]["train_loss"], rel=1e-4)
        assert a[t]["val_acc"] == pytest.approx(b[t]["val_acc"], abs=0.02)


def test_a_shipped_source_is_used_where_the_file_is_missing_or_differs(tmp_path: Path) -> None:
    text = NET + "\n\ndef failing(input_shape, num_classes):\n    raise ValueError('shipped code ran')\n"
    gone = tmp_path / "elsewhere/nets.py"  # the driver's path, absent on this "node"
    register_source(FactorySource.of(str(gone), text))
    net = load_factory(f"{gone}:tiny")((3, 32, 32), 10)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError) as info:
        load_factory(f"{gone}:failing")((3, 32, 32), 10)
    frame = info.traceback[-1]
    assert (str(frame.path), frame.lineno + 1) == (str(gone), len(NET.splitlines()) + 4)
    assert "raise ValueError('shipped code ran')" in str(info.getrepr())  # the source line, from the text

    here = tmp_path / "nets.py"  # a file that differs from what the driver shipped: the shipped text wins
    here.write_text(NET.replace("hidden=8", "hidden=3"))
    register_source(FactorySource.of(str(here), NET))
    net = load_factory(f"{here}:tiny")((3, 32, 32), 10)
    assert net[1].out_features == 8


def test_a_trial_failing_in_shipped_code_records_the_users_line(tmp_path: Path) -> None:
    spec = load_spec(own_spec(tmp_path, factory="nets.py:tiny"))
    shipped = NET.replace("    c, h, w = input_shape\n", "    c, h, w = input_shape\n    assert hidden < 0, 'no'\n")
    register_source(FactorySource.of(str((tmp_path / "nets.py").resolve()), shipped))
    data = load_data(spec, None, None)
    cfg = TrialConfig(0, {}, spec.model, spec.train, 0)
    result = run_trial(cfg, data)
    assert result.state is TrialState.FAILED
    assert result.error_at == "nets.py:6"


# --------------------------------------------------------------------------- a factory importing its neighbours

LENET = """\
import torch.nn as nn


class LeNet(nn.Sequential):
    def __init__(self, d, k, hidden):
        super().__init__(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))
"""
ZOO_NET = """\
from lenet import LeNet


def tiny(input_shape, num_classes, hidden=8):
    c, h, w = input_shape
    return LeNet(c * h * w, num_classes, hidden)
"""


def zoo_spec(tmp_path: Path) -> Path:
    """nets.py importing LeNet from the lenet.py beside it, as a model zoo's first try does."""
    (tmp_path / "lenet.py").write_text(LENET)
    return own_spec(tmp_path, ZOO_NET)


def test_a_factory_importing_its_neighbour_trains_here_and_in_worker_processes(tmp_path: Path) -> None:
    spec = zoo_spec(tmp_path)  # run from the repository, not the factory's folder
    nets = (tmp_path / "nets.py").resolve()
    for workers in ("1", "2"):  # one trial per population: two populations, one per worker process
        out = tmp_path / f"workers-{workers}"
        res = cli("coarse", str(spec), "--out", str(out), "--population", "1", "--workers", workers)
        assert res.returncode == 0, res.stderr
        assert f"model: tiny from {nets} (sha256 " in res.stderr
        assert "..., with lenet.py)" in res.stderr
    a = records_by_trial(tmp_path / "workers-1/coarse/trials.jsonl")
    b = records_by_trial(tmp_path / "workers-2/coarse/trials.jsonl")
    assert sorted(a) == sorted(b) == [0, 1]
    for t in a:
        assert a[t]["state"] == b[t]["state"] == "complete", (a[t].get("error"), b[t].get("error"))
        assert a[t]["train_loss"] == pytest.approx(b[t]["train_loss"], rel=1e-4)


def test_the_hash_covers_the_neighbour_and_resume_refuses_it_edited_naming_it(tmp_path: Path) -> None:
    spec = zoo_spec(tmp_path)
    run = ["--out", str(tmp_path / "run")]
    assert cli("coarse", str(spec), *run).returncode == 0
    info = json.loads((tmp_path / "run/coarse/run.json").read_text())
    nets, lenet = (tmp_path / "nets.py").resolve(), (tmp_path / "lenet.py").resolve()
    assert info["factory_files"] == {str(nets): sha256(nets), str(lenet): sha256(lenet)}
    assert info["factory_sha256"] != sha256(nets)  # the file alone is not what the stage ran
    before = (tmp_path / "run/coarse/trials.jsonl").read_bytes()
    lenet.write_text(LENET.replace("nn.ReLU()", "nn.Tanh()"))
    res = cli("coarse", str(spec), *run, "--resume")
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert f"model.factory: {lenet} (imported by nets.py): cannot resume" in errors[0]
    assert f"changed since this stage started (sha256 {info['factory_files'][str(lenet)][:8]}... then" in errors[0]
    assert (tmp_path / "run/coarse/trials.jsonl").read_bytes() == before
    lenet.write_text(LENET)
    res = cli("coarse", str(spec), *run, "--resume")
    assert res.returncode == 0, res.stderr
    assert "2 of 2 trials already finished" in res.stderr


def test_an_edited_neighbour_is_imported_again_and_a_pinned_one_wins_over_the_disk(tmp_path: Path) -> None:
    spec = load_spec(zoo_spec(tmp_path))
    reference = spec.model.factory or ""
    assert isinstance(load_factory(reference)((3, 32, 32), 10)[2], torch.nn.ReLU)
    (tmp_path / "lenet.py").write_text(LENET.replace("nn.ReLU()", "nn.Tanh()"))
    assert isinstance(load_factory(reference)((3, 32, 32), 10)[2], torch.nn.Tanh)  # not the module imported before
    source = read_source(spec.model)  # what a driver pins and ships: Tanh
    assert source is not None
    assert [m.name for m in source.modules] == ["lenet"]
    register_source(source)
    (tmp_path / "lenet.py").write_text(LENET.replace("nn.ReLU()", "nn.Sigmoid()"))
    assert isinstance(load_factory(reference)((3, 32, 32), 10)[2], torch.nn.Tanh)


def test_the_local_modules_are_the_folders_modules_its_import_statements_name(tmp_path: Path) -> None:
    # A package with a relative import, a module imported inside a function, an installed package and
    # a standard-library name shadowed by a file beside it (never taken for a local module).
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "__init__.py").write_text("")
    (zoo / "layers.py").write_text("import torch.nn as nn\n\n\ndef head(d, k):\n    return nn.Linear(d, k)\n")
    (zoo / "lenet.py").write_text(
        "import torch.nn as nn\n\nfrom .layers import head\n\n\ndef lenet(d, k, hidden):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), head(hidden, k))\n"
    )
    (tmp_path / "widths.py").write_text("WIDTH = 8\n")
    (tmp_path / "random.py").write_text("raise RuntimeError('not the standard library')\n")
    (tmp_path / "unused.py").write_text("")
    net = (
        "import random\n\nimport torch\n\nfrom zoo.lenet import lenet\n\n\n"
        "def tiny(input_shape, num_classes, hidden=8):\n    from widths import WIDTH\n\n"
        "    c, h, w = input_shape\n    return lenet(c * h * w, num_classes, WIDTH + random.randint(0, 0))\n"
    )
    spec = load_spec(own_spec(tmp_path, net))
    line = describe(spec.model)
    assert line is not None
    assert line.endswith("..., with widths.py, zoo/__init__.py, zoo/layers.py, zoo/lenet.py)"), line
    model = load_factory(spec.model.factory or "")((3, 32, 32), 10)
    assert model[1].out_features == 8  # widths.WIDTH
    assert model[3].out_features == 10  # zoo.layers.head


def test_load_model_rebuilds_a_network_importing_its_neighbour_elsewhere_without_the_files(tmp_path: Path) -> None:
    (tmp_path / "zoo").mkdir()
    spec = zoo_spec(tmp_path / "zoo")
    run = tmp_path / "run"
    assert cli("coarse", str(spec), "--out", str(run)).returncode == 0
    res = cli("final", str(run), "--top", "1", "--seeds", "1")
    assert res.returncode == 0, res.stderr
    images = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32).remainder(256).to(torch.uint8)
    model, preprocess = hpsearch.load_model(run)
    with torch.no_grad():
        expected = model(preprocess(images)).tolist()
    for name in ("nets.py", "lenet.py"):
        (tmp_path / "zoo" / name).unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A new process: this one has lenet imported already.
    script = (
        "import json, sys, torch, hpsearch\n"
        "model, preprocess = hpsearch.load_model(sys.argv[1])\n"
        "images = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32).remainder(256).to(torch.uint8)\n"
        "print(json.dumps(model(preprocess(images)).tolist()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(run)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert np.allclose(got, expected, rtol=1e-6, atol=0), (got, expected)


# --------------------------------------------------------------------------- classes of a user's data


def test_a_users_npz_records_its_class_count_and_the_advice_judges_chance_by_it(tmp_path: Path) -> None:
    # Three classes and labels that are noise: every trial stays at 1/3, which only the loaded
    # data's class count (the spec says none for an npz) lets the range verdict call chance.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x_train=x, y_train=rng.integers(0, 3, 300))
    spec = own_spec(tmp_path)
    spec.write_text(
        spec.read_text()
        .replace("{dataset: synthetic, synthetic_train: 300, synthetic_test: 10,", "{dataset: npz, path: noise.npz,")
        .replace("epochs: 3", "epochs: 1")  # too short to memorise the noise
    )
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run/coarse/run.json").read_text())["num_classes"] == 3
    assert "lr: nothing learned: all 2 trials had a flat loss or stayed at chance" in res.stderr
    assert res.stdout.count("at chance") == 2  # each trial's curve label, in the table
    assert (tmp_path / "run/coarse/results.md").read_text().count("| at chance |") == 2


def test_stage_num_classes_is_the_specs_else_the_recorded_count(tmp_path: Path) -> None:
    npz = DataSpec(dataset="npz", path=tmp_path / "d.npz")
    assert stage_num_classes(tmp_path, DataSpec(dataset="synthetic")) == 10
    assert stage_num_classes(tmp_path, npz) is None  # no run.json yet
    (tmp_path / "run.json").write_text(json.dumps({"num_classes": 7}))
    assert stage_num_classes(tmp_path, npz) == 7
