"""What importing hpsearch costs and touches: reading a run needs no torch, --help neither torch nor
matplotlib, the host's matplotlib backend is left alone, and no module reaches into another's
private names. Each check runs in a fresh interpreter: import state is the point."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers import PATIENCE, ROOT

PACKAGE = ROOT / "hpsearch"


def loaded_after(code: str) -> list[str]:
    """The heavy libraries loaded by a fresh interpreter after running `code`."""
    probe = f"{code}\nimport sys; print(' '.join(m for m in ('torch', 'matplotlib', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=PATIENCE)
    return out.stdout.split()


def test_reading_a_run_needs_no_torch() -> None:
    modules = (
        "hpsearch.runs.store",
        "hpsearch.analysis.rank",
        "hpsearch.output.report",
        "hpsearch.search.refine",
        "hpsearch.runs.records",
        "hpsearch.analysis.curves",
    )
    code = "import " + ", ".join(modules)
    assert "torch" not in loaded_after(code)


def test_the_cli_module_loads_neither_torch_nor_matplotlib() -> None:
    assert loaded_after("import hpsearch.cli") == []


def test_help_runs_without_torch() -> None:
    code = "from typer.testing import CliRunner; from hpsearch.cli import app; CliRunner().invoke(app, ['--help'])"
    assert loaded_after(code) == []


def test_importing_the_plots_leaves_the_hosts_matplotlib_backend_alone() -> None:
    code = (
        "import matplotlib; matplotlib.use('svg'); import hpsearch.output.plots, sys;"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=PATIENCE)
    assert out.stdout.split() == ["svg", "False"]


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpsearch"):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names if _private(a.name)]
    assert offenders == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")  # __version__ is public


def test_a_process_pays_its_one_time_costs_before_the_first_trials_clock_starts() -> None:
    """The first trial's wall time had torch._dynamo's import in it (the first
    torch.optim optimizer pulls it in), so it read ~2 s slower than the others."""
    code = (
        "import sys, hpsearch.training.recorder as rec, hpsearch.training.populations.group as pop\n"
        "from hpsearch.data.dataset import build_dataset\n"
        "from hpsearch.search.space import trial_configs\n"
        "from hpsearch.spec.load import parse_spec\n"
        "seen = []\n"
        "start = rec.TrialRecorder.__init__\n"
        "def spy(self, *a, **k):\n"
        "    seen.append('torch._dynamo' in sys.modules)\n"
        "    start(self, *a, **k)\n"
        "rec.TrialRecorder.__init__ = spy\n"
        "spec = parse_spec({'name': 'w', 'data': {'dataset': 'synthetic', 'synthetic_train': 300,"
        " 'synthetic_test': 10, 'val_size': 100}, 'train': {'epochs': 1, 'device': 'cpu'}, 'search': {'trials': 1}})\n"
        "data = build_dataset(spec.data, None, None)\n"
        "pop.train_group(trial_configs(spec), data)\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[True]"]
