"""The command line as a user runs it: exit codes, stdout vs stderr, help everywhere. In this process
(helpers.cli), but for `python -m hpsearch --help`, which shows the entry point works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT, cli, run_hpsearch

from hpsearch.cli import app
from hpsearch.cli.console import out
from hpsearch.output.report import rich_table
from hpsearch.runs.records import TrialResult


def command_names() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]


def test_every_command_has_help_with_an_example() -> None:
    top = run_hpsearch("--help")  # a real process: `python -m hpsearch` itself works
    assert top.returncode == 0
    assert "Example" in top.stdout
    assert command_names(), "no commands registered"
    for name in command_names():
        res = cli(name, "--help")
        assert res.returncode == 0, name
        assert "Example: hpsearch " + name in " ".join(res.stdout.split()), name
        assert app.registered_commands[command_names().index(name)].callback.__doc__  # type: ignore[union-attr]


def test_smoke_config_end_to_end(tmp_path: Path) -> None:
    res = cli("coarse", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    # The ranked table goes to stdout, progress and diagnostics to stderr.
    assert "val_acc" in res.stdout
    assert "rank" in res.stdout
    assert "trial 8/8" in res.stderr
    assert "results:" in res.stderr
    assert "trials.jsonl" not in res.stdout
    doc = json.loads((tmp_path / "run/coarse/results.json").read_text())
    assert len(doc["ranked"]) == 8
    best = doc["ranked"][0]
    assert best["state"] == "complete"
    assert best["val_acc"] > 0.3  # synthetic data is learnable
    # Every edge verdict is warned about on stderr, and nothing is warned that is not an edge.
    flagged = [name for name, e in doc["edges"].items() if e["verdict"] == "edge"]
    assert res.stderr.count("warning:") == len(flagged)
    for name in flagged:
        assert f"{name}: accuracy points past the {doc['edges'][name]['flag']} edge" in res.stderr


def test_default_out_never_overwrites(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text((ROOT / "configs/smoke.yaml").read_text().replace("trials: 8", "trials: 1"))
    first = cli("coarse", str(spec), cwd=tmp_path)
    second = cli("coarse", str(spec), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "runs/smoke/coarse/results.json").is_file()
    assert (tmp_path / "runs/smoke-2/coarse/results.json").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "name: x\nsearch:\n  space:\n    lr: {low: 0, high: 1, log: true}\n",
            "search.space.lr.low: must be > 0 when log is true (got 0)",
        ),
        ("name: x\ntrain: {epochs: 3\n", "invalid YAML"),
        ("name: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
        ("", "the spec is empty"),
        ("name: x\nmodel: {activaton: relu}\n", "model.activaton: unknown key (did you mean 'activation'?)"),
    ],
)
def test_bad_spec_is_one_line_exit_1(tmp_path: Path, content: str, message: str) -> None:
    spec = tmp_path / "x.yaml"
    spec.write_text(content)
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0]
    assert str(spec) in lines[0]
    assert res.stdout == ""


def test_missing_spec_file_and_usage_errors() -> None:
    res = cli("coarse", "no/such.yaml")
    assert res.returncode == 1
    assert "no/such.yaml: no such file" in res.stderr
    assert "Traceback" not in res.stderr
    assert cli("coarse").returncode == 2  # missing argument
    assert cli("coarse", "configs/smoke.yaml", "--trials", "0").returncode == 2
    assert cli("nonsense").returncode == 2


def test_unwritable_output_is_one_line_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = cli("coarse", str(ROOT / "configs/smoke.yaml"), "--out", str(blocker / "run"))
    assert res.returncode == 1
    assert "cannot create the run directory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert blocker.read_text() == "not a directory"


def test_data_errors_are_one_line_and_leave_no_run_behind(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text("name: c\ndata: {dataset: cifar10, download: false}\nsearch: {trials: 1}\n")
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "empty"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(tmp_path / "empty") in res.stderr
    broken = tmp_path / "broken/cifar-10-batches-bin"
    broken.mkdir(parents=True)
    (broken / "data_batch_1.bin").write_bytes(bytes(1000))
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "broken"))
    assert res.returncode == 1
    assert "data_batch_1.bin: expected 30730000 bytes, found 1000" in res.stderr
    assert not (tmp_path / "run").exists()


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = tmp_path / "c.yaml"
    spec.write_text((ROOT / "configs/smoke.yaml").read_text().replace("device: cpu", "device: cuda"))
    res = cli("coarse", str(spec), "--out", str(tmp_path / "run"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert f"{spec}: train.device: 'cuda' was asked for but no CUDA device is available" in res.stderr


def test_sanity_write_spec_into_a_missing_folder_fails_before_any_check(tmp_path: Path) -> None:
    res = cli(
        "sanity-check",
        str(ROOT / "configs/smoke.yaml"),
        "--out",
        str(tmp_path / "r"),
        "--write-spec",
        str(tmp_path / "nope/next.yaml"),
    )
    assert res.returncode == 1
    assert "does not exist or is not writable" in res.stderr
    assert not (tmp_path / "r").exists()


def test_messages_are_printed_verbatim_not_as_markup(tmp_path: Path) -> None:
    odd = tmp_path / "runs [bold]x:smile:"
    r = cli("report", str(odd))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"{odd}: no finished stage to report on" in r.stderr
    r = cli("coarse", str(tmp_path / "conf[/]ig.yaml"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "conf[/]ig.yaml" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_bad_seed_on_the_command_line_is_one_line_exit_1(tmp_path: Path) -> None:
    res = cli("coarse", str(ROOT / "configs/smoke.yaml"), "--seed", "-1", "--out", str(tmp_path / "run"))
    assert res.returncode == 1
    assert res.stderr.strip() == "error: --seed -1: search.seed: input should be greater than or equal to 0 (got -1)"
    assert not (tmp_path / "run").exists()


def test_the_progress_bar_shows_planning_at_once_then_an_eta() -> None:
    """Something on screen while a large search is planned, and time left."""
    import io

    from rich.console import Console

    from hpsearch.cli.progress import TrialProgress

    clock = [0.0]
    progress = TrialProgress()
    progress.progress.get_time = lambda: clock[0]  # a fake clock: the ETA is the rate's arithmetic

    def screen() -> str:
        console = Console(file=io.StringIO(), width=160, color_system=None)
        console.print(progress.progress.get_renderable())
        return console.file.getvalue()  # type: ignore[attr-defined]

    progress.planning("planning 1,000,000 trials")
    assert "planning 1,000,000 trials" in screen()
    progress.start(trials=4, trial_epochs=8)
    assert "planning" not in screen()
    for _ in range(4):  # 4 of 8 trial-epochs, one every 10 s: 40 s left
        clock[0] += 10.0
        progress.epochs_done(1)
    assert "eta 0:00:40" in screen()
    progress.progress.stop()


def test_no_line_of_a_tables_output_ends_in_spaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Rich pads a table's title and caption to the table's width; piped into a file, every command's
    # output must be what a person would type: no trailing spaces (diff and git flag them).
    spec = tmp_path / "s.yaml"
    spec.write_text(
        (ROOT / "configs/smoke.yaml").read_text().replace("trials: 8", "trials: 4").replace("epochs: 2", "epochs: 1")
        + "sanity: {overfit_epochs: 2, probe_iterations: 5}\n"
    )
    run = tmp_path / "run"
    commands = {
        "coarse": ["coarse", str(spec), "--out", str(run)],
        "refine": ["refine", str(run), "--trials", "2", "--epochs", "1"],
        "report": ["report", str(run)],
        "final": ["final", str(run), "--top", "1", "--seeds", "1"],
        "sanity-check": ["sanity-check", str(spec), "--out", str(tmp_path / "sane")],
    }
    for name, args in commands.items():
        res = cli(*args)
        assert res.returncode in (0, 1), (name, res.stderr)  # sanity-check may FAIL this tiny budget
        assert "─" in res.stdout or "━" in res.stdout, (name, res.stdout)  # a table was printed
        padded = [line for line in res.stdout.splitlines() if line.endswith(" ")]
        assert padded == [], name
    # A narrow terminal's layout has no side borders: each of its lines was padded to the table's width.
    results = [TrialResult.from_dict(r) for r in json.loads((run / "coarse/results.json").read_text())["ranked"]]
    capsys.readouterr()  # what the commands printed is not this check's
    saved = out.width
    out.width = 60
    try:
        out.print(rich_table("coarse", results, ["lr", "weight_decay"]))
    finally:
        out.width = saved
    printed = capsys.readouterr().out
    assert "weight" in printed
    assert "│" not in printed  # the borderless layout
    assert [line for line in printed.splitlines() if line.endswith(" ")] == []
