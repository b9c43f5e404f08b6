"""Successive halving: rungs, promotions, trials that go on from where they stopped (in every
training loop, bit for bit where the loop is the same), stages that replay their decisions on
resume, and a search whose populations shrink to the trials still running."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import configs, max_relative_difference

from hpsearch.data import Dataset, build_dataset
from hpsearch.errors import SpecError, StageStopped
from hpsearch.runs.records import TrialConfig, TrialResult, TrialStart, TrialState
from hpsearch.search.halving import RungLeaders, keep_count, planned_counts, promoted, replay, rung_epochs, trial_epochs
from hpsearch.spec.load import parse_spec, with_overrides
from hpsearch.spec.options import ExecOptions, StageOptions
from hpsearch.spec.schema import DataSpec, HalvingSpec, ModelSpec, Spec
from hpsearch.stages.coarse import run_coarse
from hpsearch.training.checkpoint import unpack
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.trial import run_trial

# 1,000 training images in batches of 20: one epoch is exactly 50 steps.
DATA = DataSpec(dataset="synthetic", synthetic_train=1100, synthetic_test=100, val_size=100)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(DATA)


# --------------------------------------------------------------------------- rungs and decisions


@pytest.mark.parametrize(
    ("epochs", "eta", "min_epochs", "rungs"),
    [(9, 3, 1, [1, 3, 9]), (5, 3, 1, [1, 3, 5]), (5, 6, 1, [1, 5]), (10, 2, 2, [2, 4, 8, 10]), (2, 3, 1, [1, 2])],
)
def test_rungs_grow_by_eta_up_to_the_stages_epochs(epochs: int, eta: int, min_epochs: int, rungs: list[int]) -> None:
    assert rung_epochs(epochs, HalvingSpec(eta=eta, min_epochs=min_epochs)) == rungs


@pytest.mark.parametrize(
    ("eta", "min_epochs", "rungs"), [(3, 0.25, [0.25, 0.75, 2.25, 4]), (2, 0.5, [0.5, 1, 2, 4]), (2, 2.0, [2, 4])]
)
def test_a_fractional_first_rung_grows_by_eta_too(eta: int, min_epochs: float, rungs: list[float]) -> None:
    assert rung_epochs(4, HalvingSpec(eta=eta, min_epochs=min_epochs)) == rungs


def test_a_whole_rung_is_an_int_whatever_min_epochs_was() -> None:
    """So that it trains to an epoch's end, and prints '1', not '1.0'."""
    assert [type(e) for e in rung_epochs(4, HalvingSpec(eta=2, min_epochs=0.5))] == [float, int, int, int]


def test_trial_epochs_of_a_plan() -> None:
    """27 trials, eta 3, rungs 1/3/9: 27 x 1 + 9 x 2 + 3 x 6 = 63 trial-epochs (random search: 243)."""
    counts = planned_counts(27, [1, 3, 9], 3)
    assert counts == [27, 9, 3]
    assert trial_epochs(counts, [1, 3, 9]) == 63
    assert keep_count(2, 3) == 1  # at least one goes on


def result(trial: int, acc: float | None, state: TrialState = TrialState.COMPLETE, rung: int = 0) -> TrialResult:
    return TrialResult(trial=trial, state=state, params={"lr": trial}, val_acc=acc, train_loss=1.0, rung=rung)


def test_the_best_third_of_complete_trials_go_on() -> None:
    rung = [result(t, 0.1 * t) for t in range(6)] + [result(6, None, TrialState.DIVERGED)]
    assert promoted(rung, 3) == [4, 5]  # 7 // 3 = 2 go on; the diverged one never does
    only_diverged = [result(0, None, TrialState.DIVERGED), result(1, None, TrialState.FAILED)]
    assert promoted(only_diverged, 3) == []


def test_replay_finds_the_first_rung_with_trials_left_and_stops_the_outranked() -> None:
    rungs = [1, 3, 9]
    records = {t: {0: result(t, 0.1 * t)} for t in range(9)}
    standing = replay(records, list(range(9)), rungs, 3)
    assert (standing.rung, standing.todo, standing.size) == (1, [6, 7, 8], 3)
    assert standing.starts[8].epochs_done == records[8][0].epochs_done
    assert {t for t, r in standing.results.items() if r.state is TrialState.STOPPED} == set(range(6))
    records[8][1] = result(8, 0.9, rung=1)
    records[7][1] = result(7, 0.95, rung=1)
    records[6][1] = result(6, 0.5, rung=1)
    standing = replay(records, list(range(9)), rungs, 3)
    assert (standing.rung, standing.todo) == (2, [7])  # 3 // 3 = 1 goes on: the best at rung 1
    records[7][2] = result(7, 0.97, rung=2)
    done = replay(records, list(range(9)), rungs, 3)
    assert done.rung is None
    assert done.results[7].state is TrialState.COMPLETE
    assert done.results[7].rung == 2
    assert done.results[8].state is TrialState.STOPPED
    assert done.results[8].rung == 1


def test_only_trials_that_can_still_go_on_keep_their_state() -> None:
    top = RungLeaders(2, [result(0, 0.5)])
    assert top.admit(result(1, 0.6)) == (True, [])
    assert top.admit(result(2, 0.4)) == (False, [])  # below two better ones: can never go on
    assert top.admit(result(3, 0.7)) == (True, [0])  # pushes trial 0 out
    assert top.trials == {1, 3}


# --------------------------------------------------------------------------- going on from a rung


def two_epochs(cs: list[TrialConfig]) -> list[TrialConfig]:
    return [dataclasses.replace(c, train=c.train.model_copy(update={"epochs": 2})) for c in cs]


def go_on(cs: list[TrialConfig], first: list[TrialResult]) -> list[TrialConfig]:
    assert all(r.checkpoint for r in first)
    return [dataclasses.replace(c, start=TrialStart(r, r.checkpoint)) for c, r in zip(cs, first, strict=True)]  # type: ignore[arg-type]


CASES = [
    (ModelSpec(hidden=(32,)), "momentum"),
    (ModelSpec(hidden=(24,)), "adam"),
    (ModelSpec(kind="convnet", hidden=(6,)), "nesterov"),
]


@pytest.mark.parametrize(("model", "optimizer"), CASES, ids=[f"{m.kind}-{o}" for m, o in CASES])
def test_a_trial_stopped_at_a_rung_goes_on_as_if_never_stopped(data: Dataset, model: ModelSpec, optimizer: str) -> None:
    """1 epoch, stopped, then on to 2 epochs: the same records as 2 epochs straight; bit for bit in
    the same loop (the state saved is the state), to float rounding across loops (a population's
    trial may go on alone, and the other way)."""
    lrs = [1e-3, 3e-4, 2e-3] if optimizer == "adam" else [0.02, 0.01, 0.005]
    cs = two_epochs(configs(model, optimizer, lrs, [1e-3, 0.0, 1e-2], [0.9, 0.5, 0.8]))
    straight = run_population(cs, data)
    first = run_population([dataclasses.replace(c, until=1) for c in cs], data)
    assert [r.epochs_done for r in first] == [1, 1, 1]
    assert all(r.checkpoint is None for r in straight)  # only a rung's end keeps a state
    together = run_population(go_on(cs, first), data)
    assert [r.to_dict() | {"wall_time": 0} for r in together] == [r.to_dict() | {"wall_time": 0} for r in straight]
    alone = [run_trial(c, data) for c in go_on(cs, first)]
    assert max_relative_difference(straight, alone) <= 2e-4
    first_alone = [run_trial(dataclasses.replace(c, until=1), data) for c in cs]
    straight_alone = [run_trial(c, data) for c in cs]
    assert [r.to_dict() | {"wall_time": 0} for r in (run_trial(c, data) for c in go_on(cs, first_alone))] == [
        r.to_dict() | {"wall_time": 0} for r in straight_alone
    ]
    for r in together:
        assert (r.epochs_done, r.iterations, len(r.val_acc_per_epoch)) == (2, 100, 2)
        assert r.wall_time > first[0].wall_time  # the earlier rung's time counts


# --------------------------------------------------------------------------- going on from inside an epoch


def forty_steps(cs: list[TrialConfig], epochs: int = 2) -> list[TrialConfig]:
    """Batches of 25 of the 1,000 training images: 40 steps an epoch, so 0.25 epoch is 10 steps."""
    train = {"batch_size": 25, "epochs": epochs}
    return [dataclasses.replace(c, train=c.train.model_copy(update=train), keep_final=True) for c in cs]


Train = Callable[[list[TrialConfig]], list[TrialResult]]


def in_pieces(cs: list[TrialConfig], train: Train) -> list[list[TrialResult]]:
    """0.25 epoch, then on to 1.5 (from inside epoch 0 to inside epoch 1), then on to 2: each piece's results."""
    pieces = [train([dataclasses.replace(c, until=0.25) for c in cs])]
    pieces.append(train([dataclasses.replace(c, until=1.5) for c in go_on(cs, pieces[-1])]))
    pieces.append(train(go_on(cs, pieces[-1])))
    return pieces


def without_time(results: list[TrialResult]) -> list[dict[str, object]]:
    return [r.to_dict() | {"wall_time": 0} for r in results]


def same_state(a: TrialResult, b: TrialResult) -> bool:
    """Bit for bit the same weights, optimizer buffers, learning rate and place in the epoch."""
    x, y = unpack(a.checkpoint or b""), unpack(b.checkpoint or b"")
    weights = x.model.keys() == y.model.keys() and all(torch.equal(x.model[k], y.model[k]) for k in x.model)
    buffers = x.optim.keys() == y.optim.keys() and all(
        x.optim[k].keys() == y.optim[k].keys() and all(torch.equal(x.optim[k][b], y.optim[k][b]) for b in x.optim[k])
        for k in x.optim
    )
    return weights and buffers and (x.lr, x.epoch_step, x.epoch_loss_sum) == (y.lr, y.epoch_step, y.epoch_loss_sum)


ONE_EACH = ["momentum", "adam"]


@pytest.mark.parametrize("optimizer", ONE_EACH)
def test_a_trial_stopped_inside_an_epoch_goes_on_bit_for_bit(data: Dataset, optimizer: str) -> None:
    """Stopped after 0.25 epoch and after 1.5, going on each time: the same record, weights and
    optimizer state as 2 epochs straight, bit for bit, one trial at a time (no dropout: the global
    RNG is not carried across a rung, see training.trial)."""
    lrs = [1e-3, 3e-4] if optimizer == "adam" else [0.02, 0.005]
    cs = forty_steps(configs(ModelSpec(hidden=(32,)), optimizer, lrs, [1e-3, 1e-2]))
    straight = [run_trial(c, data) for c in cs]
    pieces = in_pieces(cs, lambda pop: [run_trial(c, data) for c in pop])
    assert without_time(pieces[-1]) == without_time(straight)
    assert all(same_state(a, b) for a, b in zip(pieces[-1], straight, strict=True))


def test_a_rung_inside_an_epoch_records_its_fraction_and_accuracy_but_no_epochs_end(data: Dataset) -> None:
    cs = forty_steps(configs(ModelSpec(hidden=(32,)), "momentum", [0.02], [1e-3]))
    quarter, one_and_a_half, _ = (piece[0] for piece in in_pieces(cs, lambda pop: [run_trial(c, data) for c in pop]))
    assert quarter.epochs_done == 0.25
    assert quarter.iterations == 10
    assert quarter.val_acc is not None  # what the rung ranks it by
    assert quarter.val_acc_per_epoch == []  # an epoch's end records the curve's points, and none ended
    assert quarter.train_loss is None
    assert unpack(quarter.checkpoint or b"").epoch_step == 10
    assert unpack(quarter.checkpoint or b"").lr == 0.02  # lr decays at an epoch's end only
    assert one_and_a_half.epochs_done == 1.5
    assert len(one_and_a_half.val_acc_per_epoch) == 1
    assert unpack(one_and_a_half.checkpoint or b"").lr == pytest.approx(0.02 * 0.9)


def test_a_checkpoint_at_another_step_than_its_record_fails_the_trial(data: Dataset) -> None:
    cs = forty_steps(configs(ModelSpec(hidden=(32,)), "momentum", [0.02], [1e-3]))
    quarter = run_trial(dataclasses.replace(cs[0], until=0.25), data)
    elsewhere = dataclasses.replace(quarter, iterations=12, epochs_done=0.3)
    result = run_trial(dataclasses.replace(cs[0], start=TrialStart(elsewhere, quarter.checkpoint or b"")), data)
    assert result.state is TrialState.FAILED


@pytest.mark.parametrize("optimizer", ONE_EACH)
def test_a_population_stopped_inside_an_epoch_goes_on_as_if_never_stopped(data: Dataset, optimizer: str) -> None:
    """The same pieces in a population: bit for bit as the population trained straight, and to
    float rounding as the trials trained alone."""
    lrs = [1e-3, 3e-4, 2e-3] if optimizer == "adam" else [0.02, 0.01, 0.005]
    cs = forty_steps(configs(ModelSpec(hidden=(32,)), optimizer, lrs, [1e-3, 0.0, 1e-2], [0.9, 0.5, 0.8]))
    straight = run_population(cs, data)
    pieces = in_pieces(cs, lambda pop: run_population(pop, data))
    assert without_time(pieces[-1]) == without_time(straight)
    assert [r.epochs_done for r in pieces[0]] == [0.25, 0.25, 0.25]
    assert max_relative_difference(pieces[-1], [run_trial(c, data) for c in cs]) <= 2e-4


# --------------------------------------------------------------------------- a halving stage


def halving_spec(trials: int = 8, eta: int = 2, epochs: int = 4, **search: object) -> Spec:
    body = {
        "trials": trials,
        "seed": 3,
        "halving": {"eta": eta, "min_epochs": 1},
        "space": {"lr": {"low": 1e-3, "high": 3.0, "log": True}},
        **search,
    }
    return parse_spec(
        {
            "name": "h",
            "data": {"dataset": "synthetic", "synthetic_train": 1200, "synthetic_test": 100, "val_size": 200},
            "model": {"hidden": [16]},
            "train": {"epochs": epochs, "batch_size": 50, "device": "cpu", "optimizer": "momentum"},
            "search": body,
        }
    )


ONE_AT_A_TIME = ExecOptions(population=1)


def records(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "coarse/trials.jsonl").read_text().splitlines()]


def fates(outcome_ranked: list[TrialResult]) -> dict[int, tuple[str, int | None, int]]:
    return {r.trial: (r.state.value, r.rung, r.epochs_done) for r in outcome_ranked}


def test_a_halving_stage_trains_the_best_half_on_and_stops_the_rest(tmp_path: Path) -> None:
    """8 trials, eta 2, rungs at 1, 2 and 4 epochs: 8 -> 4 -> 2 trials (16 trial-epochs, not 32).
    The trials that reach the last rung train exactly as they would have without halving."""
    run = tmp_path / "run"
    spec = halving_spec()
    outcome = run_coarse(spec, "h.yaml", StageOptions(out=run))
    by_rung: dict[int | None, int] = {}
    for r in outcome.ranked:
        if r.state is not TrialState.DIVERGED:
            by_rung[r.rung] = by_rung.get(r.rung, 0) + 1
        if r.state is TrialState.STOPPED:
            assert r.epochs_done == [1, 2][r.rung or 0]
            assert len(r.val_acc_per_epoch) == r.epochs_done
    final = [r for r in outcome.ranked if r.state is TrialState.COMPLETE]
    assert [r.rung for r in final] == [2, 2]
    assert all(r.epochs_done == 4 for r in final)
    assert outcome.best is final[0]
    # Ranked by rung first: every trial that reached rung 2 above every one stopped earlier.
    rungs = [r.rung for r in outcome.ranked if r.state in (TrialState.COMPLETE, TrialState.STOPPED)]
    assert rungs == sorted(rungs, reverse=True)
    # Each rung's decision is on disk: a STOPPED record per stopped trial, after its rung result.
    lines = records(run)
    stopped = [x for x in lines if x["state"] == "stopped"]
    assert len(stopped) == sum(1 for r in outcome.ranked if r.state is TrialState.STOPPED)
    assert not (run / "coarse/checkpoints").exists()  # no trial trains on: no state is kept
    # The finalists against the same trials trained 4 epochs straight, without halving.
    plain = with_overrides(spec.model_copy(update={"search": spec.search.model_copy(update={"halving": None})}))
    straight = run_coarse(plain, "h.yaml", StageOptions(out=tmp_path / "plain"))
    by_trial = {r.trial: r for r in straight.ranked}
    for r in final:
        assert r.val_acc == pytest.approx(by_trial[r.trial].val_acc, abs=1 / 200 + 1e-9)  # one example at most
        assert max_relative_difference([r], [by_trial[r.trial]]) <= 2e-4


class StopInRung:
    """Stage progress that presses Ctrl-C once `n` trials of rung `rung` are recorded."""

    def __init__(self, rung: int, n: int) -> None:
        self.target, self.n, self.rung_now = rung, n, -1

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None:
        pass

    def epochs_done(self, count: int) -> None:
        pass

    def rung(self, text: str) -> None:
        self.rung_now += 1

    def trial_done(self, result: object, done: int, total: int, best: object) -> None:
        if self.rung_now == self.target and done >= self.n:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> list[TrialResult]:
    """The halving stage run without a stop, one trial at a time (the same bits on every run)."""
    out = tmp_path_factory.mktemp("whole")
    return run_coarse(halving_spec(), "h.yaml", StageOptions(out=out, execution=ONE_AT_A_TIME)).ranked


@pytest.mark.parametrize(("rung", "n"), [(0, 3), (1, 1), (2, 1)], ids=["inside-rung-0", "inside-rung-1", "inside-last"])
def test_a_halving_stage_stopped_anywhere_resumes_to_the_same_decisions_and_results(
    tmp_path: Path, whole: list[TrialResult], rung: int, n: int
) -> None:
    spec = halving_spec()
    run = tmp_path / "cut"
    with pytest.raises(StageStopped):
        run_coarse(spec, "h.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopInRung(rung, n))  # type: ignore[arg-type]
    partial = json.loads((run / "coarse/results.json").read_text())
    assert partial["partial"] is True
    if rung:  # states are kept for the trials that may still go on, no more: 4 went on from rung 0
        kept = [f.name for f in (run / "coarse/checkpoints").glob("*.pt")]
        went_on = {r.trial for r in whole if (r.rung or 0) >= 1}
        assert {n for n in kept if n.endswith("rung-0.pt")} <= {f"trial-{t}-rung-0.pt" for t in went_on}
        assert 0 < len(kept) <= 4 + 2
    resumed = run_coarse(spec, "h.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert fates(resumed.ranked) == fates(whole)
    want = {r.trial: r.to_dict() | {"wall_time": 0, "attempts": []} for r in whole}
    got = {r.trial: r.to_dict() | {"wall_time": 0, "attempts": []} for r in resumed.ranked}
    assert got == want  # one trial at a time: the same bits
    assert not (run / "coarse/checkpoints").exists()


def test_a_missing_state_trains_that_trial_again_from_the_start(tmp_path: Path, whole: list[TrialResult]) -> None:
    spec = halving_spec()
    run = tmp_path / "cut"
    with pytest.raises(StageStopped):
        run_coarse(spec, "h.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME), progress=StopInRung(1, 1))  # type: ignore[arg-type]
    for f in (run / "coarse/checkpoints").glob("*.pt"):
        f.unlink()
    resumed = run_coarse(spec, "h.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME, resume=True))
    assert fates(resumed.ranked) == fates(whole)
    assert any("missing; those trials trained again from the start" in w for w in resumed.warnings)
    assert (
        max_relative_difference(sorted(resumed.ranked, key=lambda r: r.trial), sorted(whole, key=lambda r: r.trial))
        <= 1e-5
    )


def test_populations_shrink_to_the_trials_still_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rung after rung, the trials that go on are stacked into populations of their own: no trial
    stopped at a rung trains masked inside a population afterwards."""
    import hpsearch.executors.local as executor

    sizes: list[tuple[int, int]] = []
    real = executor.train_group

    def spy(pop: list[TrialConfig], data: Dataset, on_epoch: object = None) -> list[TrialResult]:
        sizes.append((len(pop), pop[0].last_epoch))
        return real(pop, data, on_epoch)  # type: ignore[arg-type]

    monkeypatch.setattr(executor, "train_group", spy)
    outcome = run_coarse(
        halving_spec(), "h.yaml", StageOptions(out=tmp_path / "run", execution=ExecOptions(population=8))
    )
    alive = [
        sum(1 for r in outcome.ranked if (r.rung or 0) >= k and r.state is not TrialState.DIVERGED) for k in (1, 2)
    ]
    assert sizes[0] == (8, 1)
    assert sizes[1:] == [(min(4, alive[0]), 2), (min(2, alive[1]), 4)]


def test_halving_spec_mistakes_are_one_line_errors() -> None:
    with pytest.raises(SpecError, match=r"search.halving.min_epochs.*must be below train.epochs \(4\)"):
        halving_spec(halving={"eta": 3, "min_epochs": 4})
    with pytest.raises(SpecError, match=r"search.space.epochs.*cannot be searched with search.halving"):
        halving_spec(space={"epochs": {"values": [1, 2]}})
    with pytest.raises(SpecError, match=r"search.halving.eta"):
        halving_spec(halving={"eta": 1})


def test_min_epochs_takes_a_fraction_above_zero_and_below_train_epochs() -> None:
    assert halving_spec(halving={"eta": 3, "min_epochs": 0.25}).search.halving == HalvingSpec(eta=3, min_epochs=0.25)
    with pytest.raises(SpecError, match=r"^[^\n]*search.halving.min_epochs: input should be greater than 0 \(got 0\)$"):
        halving_spec(halving={"eta": 3, "min_epochs": 0})
    with pytest.raises(SpecError, match=r"search.halving.min_epochs.*must be below train.epochs \(4\).*\(got 4.5\)"):
        halving_spec(halving={"eta": 3, "min_epochs": 4.5})


def test_median_stop_is_refused_with_a_fractional_first_rung_as_with_any_halving() -> None:
    with pytest.raises(SpecError, match=r"search.median_stop: give search.median_stop or search.halving, not both"):
        halving_spec(halving={"eta": 3, "min_epochs": 0.25}, median_stop={})


def test_a_halving_stage_cannot_grow(tmp_path: Path) -> None:
    spec = halving_spec(trials=4)
    run_coarse(spec, "h.yaml", StageOptions(out=tmp_path / "run", execution=ONE_AT_A_TIME))
    with pytest.raises(SpecError, match="cannot add trials to a halving stage"):
        run_coarse(with_overrides(spec, trials=6), "h.yaml", StageOptions(out=tmp_path / "run", resume=True))


def test_refine_and_report_read_a_halving_stage(tmp_path: Path) -> None:
    """Refine plans from the trials that reached the last rung (a stopped trial never trained at the
    stage's budget) and halves again; the report shows every trial's rung."""
    from hpsearch.output.report import run_report
    from hpsearch.spec.options import RefineOptions
    from hpsearch.stages.refine import run_refine

    run = tmp_path / "run"
    coarse = run_coarse(halving_spec(), "h.yaml", StageOptions(out=run, execution=ONE_AT_A_TIME))
    finalists = {r.trial for r in coarse.ranked if r.state is TrialState.COMPLETE}
    refined = run_refine(run, RefineOptions(trials=4, epochs=2, execution=ONE_AT_A_TIME))
    assert set(refined.plan.history[-1]["top_trials"]) <= finalists
    assert refined.outcome is not None
    assert {r.rung for r in refined.outcome.ranked if r.state is not TrialState.DIVERGED} <= {0, 1}
    report = run_report(run)
    doc = json.loads((run / "report/results.json").read_text())
    assert {row["rung"] for row in doc["ranked"]} >= {0, 2}
    assert report is not None


USER_NETS = """
from torch import nn


def frozen_mlp(input_shape, num_classes, hidden=16):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    net[1].bias.requires_grad_(False)  # a frozen parameter rides with the buffers in a torch.func population
    return net
"""


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_user_network_goes_on_from_a_rung_in_a_torch_func_population_and_alone(
    data: Dataset, tmp_path: Path, optimizer: str
) -> None:
    from hpsearch.training.populations.funcpop import run_func_population

    (tmp_path / "nets.py").write_text(USER_NETS)
    model = ModelSpec(kind="python", factory=f"{tmp_path / 'nets.py'}:frozen_mlp")
    lrs = [1e-3, 3e-4, 2e-3] if optimizer == "adam" else [0.02, 0.01, 0.005]
    cs = two_epochs(configs(model, optimizer, lrs, [1e-3, 0.0, 1e-2], [0.9, 0.5, 0.8]))
    straight = run_func_population(cs, data)
    first = run_func_population([dataclasses.replace(c, until=1) for c in cs], data)
    together = run_func_population(go_on(cs, first), data)
    assert [r.to_dict() | {"wall_time": 0} for r in together] == [r.to_dict() | {"wall_time": 0} for r in straight]
    alone = [run_trial(c, data) for c in go_on(cs, first)]
    assert all(r.state is TrialState.COMPLETE and r.epochs_done == 2 for r in alone)
    assert max_relative_difference(straight, alone) <= 2e-4
