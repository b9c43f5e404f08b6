#!/usr/bin/env python3
"""Search quality at an equal wall-clock budget: hpsearch's methods against Optuna, over search seeds.

    pip install -e ".[bench]"                                    # Optuna: this benchmark only
    python benchmarks/search_quality.py --data-root DIR          # configs/cifar10_hard.yaml, 3 seeds
    python benchmarks/search_quality.py --data-root DIR --spec configs/cifar10_coarse.yaml --budget 60
    python benchmarks/search_quality.py --synthetic --budget 10 --seeds 0   # seconds: a check of the script

Every method gets the same wall-clock budget per search seed (--budget seconds, counted from when
the data is in memory: loading it is the same for all and not counted) and the same data:
- `random`: hpsearch's random search, run as a stage that grows in chunks of 12 trials (each chunk
  trained in populations) until the budget is spent; the chunk running at the deadline is stopped.
- `halving`: one hpsearch stage with successive halving (eta 3, min_epochs 1), as many
  configurations as the trial-epochs random search trained in the same budget allow (its trials
  stopped at the deadline included: that is the machine's pace); stopped at the deadline if not done.
- `median`: `random` with `search.median_stop` (the defaults: 5 startup trials, 1 warm-up epoch):
  a trial below the median of the complete trials' accuracies at an epoch stops there.
- `coarse+refine`: random chunks of 6 for half the budget, then `refine` (planned as `hpsearch
  refine` plans it: around the tied set or the top-k, 3x the epochs, no lr decay) until the deadline.
- `tpe`: one hpsearch stage with `sampler: tpe` (10 random startup trials, then waves of 4 TPE
  proposals), stopped at the deadline.
- `tpe+halving`: `halving`, its first rung proposed by `sampler: tpe`.
- `tpe+median`: `tpe` with `search.median_stop`; stopped trials are told to TPE as pruned.
- `tpe-pop+median`: `tpe+median` with `tpe: {same_shape: true}`: each wave's trials share the
  first's shape (hidden layers, activation, batch size), so a wave trains as one population.
- `tpe+refine`, `tpe+refine-kept`: coarse+refine with a tpe coarse stage (grown a wave at a time);
  its refine stage restarts (random search in the narrowed ranges) or keeps the model
  (`refine.sampler: tpe`: TPE told the coarse trials inside the narrowed ranges).
- `probe+halving`, `probe+random`: the lecture's recipe: hpsearch's learning-rate probe (sanity-check's
  ~100 iterations at each of sanity.probe_lrs, its time counted in the budget) narrows the lr range
  as `hpsearch sanity-check --write-spec` does, then `halving` (sized as `halving` is) or `random`
  searches the narrowed space until the deadline.
- `probe+halving-bf16`: `probe+halving` with `train.precision: bf16` (the probe stays fp32).
- `optuna-tpe`: Optuna's TPE sampler (multivariate, seeded) with its median pruner, driving the same
  network (hpsearch.training.models.build_model) on the same tensors in a plain PyTorch loop written as a
  careful Optuna user would (minibatch SGD with momentum, lr decay per epoch, validation accuracy
  reported each epoch, pruned when the median rule says so, NaN loss pruned), `study.optimize`
  with `timeout=budget`. `optuna-tpe-bf16`: the same loop with the same bf16 autocast.
Each method's chosen configuration (its best validation accuracy) is then trained again under one
final protocol, the spec's epochs and data with 3 new seeds, and scored once on the test set. One
table on stdout (method x seed: configurations tried, trial-epochs, best validation accuracy, final
test accuracy mean and std, wall time), then the means over seeds; every row as JSON with --json.
Methods run one after the other in one process, in a fixed order per seed: load affects them alike,
but the budget is wall-clock, so run it on an otherwise idle machine.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from hpsearch.analysis.rank import rank
from hpsearch.data import Dataset, load_data
from hpsearch.data.cifar10 import load_cifar10, resolve_data_root
from hpsearch.errors import StageStopped
from hpsearch.runs.read import COARSE
from hpsearch.runs.records import TrialConfig, TrialResult, TrialState
from hpsearch.runs.store import StageStore
from hpsearch.search.halving import planned_counts, rung_epochs, trial_epochs
from hpsearch.search.refine import plan_refine
from hpsearch.spec.choices import Precision, Sampler
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import RefineOptions, StageOptions
from hpsearch.spec.schema import Categorical, HalvingSpec, MedianStopSpec, NumericRange, Spec, TpeSpec
from hpsearch.stages.base import Stage
from hpsearch.stages.stage import run_stage, with_proposals
from hpsearch.training.models import build_model
from hpsearch.training.precision import machine
from hpsearch.training.trial import batch_order, init_seed, make_optimizer, run_trial, training_loss

CHUNK = 12  # trials a random-search stage grows by at a time
COARSE_CHUNK = 6  # coarse+refine's: its coarse half ends at a chunk's end, so smaller chunks waste less
FINAL_SEEDS = (1000, 1001, 1002)
METHODS = (
    "random",
    "halving",
    "median",
    "coarse+refine",
    "tpe",
    "tpe+halving",
    "tpe+median",
    "tpe-pop+median",
    "tpe+refine",
    "tpe+refine-kept",
    "probe+halving",
    "probe+halving-bf16",
    "probe+random",
    "optuna-tpe",
    "optuna-tpe-bf16",
)
# They plan their trials from random search's trial-epochs in the same budget:
SIZED_BY_RANDOM = ("halving", "tpe+halving", "probe+halving", "probe+halving-bf16")
TPE = TpeSpec()  # the tpe methods' settings (--tpe-startup changes its startup trials)


def _tpe(spec: Spec, **search: Any) -> Spec:
    return _with(spec, sampler=Sampler.TPE, tpe=TPE, **search)


class OutOfTime(KeyboardInterrupt):
    """The budget is spent: stops a stage the way Ctrl-C does (finished trials are kept)."""


class Deadline:
    """Stage progress that stops the stage once the wall-clock deadline has passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.epochs = 0  # trial-epochs trained, finished trials or not

    def check(self) -> None:
        if time.perf_counter() > self.deadline:
            raise OutOfTime

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None:
        self.check()

    def epochs_done(self, count: int) -> None:
        self.epochs += count
        self.check()

    def rung(self, text: str) -> None:
        self.check()

    def trial_done(self, result: object, done: int, total: int, best: object) -> None:
        self.check()


@dataclasses.dataclass
class Searched:
    """What a method found: its chosen configuration and what it spent."""

    configs: int  # configurations that finished training (or were pruned, for Optuna)
    trial_epochs: int
    best_val_acc: float | None
    chosen: TrialConfig | None
    trained_epochs: int = 0  # every trial-epoch trained, a trial stopped at the deadline included
    refined: int | None = None  # coarse+refine: the refine stage's finished trials


# --------------------------------------------------------------------------- hpsearch methods


def _with(spec: Spec, **search: Any) -> Spec:
    return spec.model_copy(update={"search": spec.search.model_copy(update=search)})


def _stage(store: StageStore, spec: Spec, configs: list[TrialConfig], name: str = COARSE) -> Stage:
    history = [{"stage": name, "planned_from": None, "trials": len(configs), "epochs": spec.train.epochs}]
    return Stage(store, spec, "benchmark", configs, history)


def _finished(store: StageStore) -> list[TrialResult]:
    return list(store.final_trials().values())


def _grown_stage(
    spec: Spec, data: Dataset, run: Path, grow_until: float, deadline: float, chunk: int = CHUNK
) -> tuple[list[TrialConfig], int]:
    """Grow a coarse stage `chunk` trials at a time (sampler tpe: its startup trials first) while
    time is before `grow_until`, the chunk running at `deadline` stopped; returns every planned
    config and the trial-epochs trained."""
    from hpsearch.search.space import trial_configs

    store = StageStore(run / COARSE)
    store.create()
    n, progress, planned = 0, Deadline(deadline), []
    first = spec.search.tpe_settings.startup_trials if spec.search.sampler is Sampler.TPE else chunk
    while time.perf_counter() < grow_until:
        n = first if n == 0 else n + chunk
        chunk_spec = _with(spec, trials=n)
        stage = with_proposals(_stage(store, chunk_spec, trial_configs(chunk_spec)))
        planned = stage.configs  # a tpe stage's grow in place as it proposes
        try:
            with store.lock():
                run_stage(stage, data, StageOptions(out=run), progress, resuming=n > first)  # type: ignore[arg-type]
        except StageStopped:
            break
    return planned, progress.epochs


def _searched(results: list[TrialResult], configs: dict[int, TrialConfig]) -> Searched:
    ranked = rank(results)
    best = next((r for r in ranked if r.state is TrialState.COMPLETE), None)  # not one stopped early
    return Searched(
        configs=len(results),
        trial_epochs=sum(r.epochs_done for r in results),
        best_val_acc=best.val_acc if best else None,
        chosen=configs.get(best.trial) if best else None,
    )


def search_random(spec: Spec, data: Dataset, budget: float, run: Path) -> Searched:
    deadline = time.perf_counter() + budget
    planned, trained = _grown_stage(spec, data, run, deadline, deadline)
    found = _searched(_finished(StageStore(run / COARSE)), {c.trial_id: c for c in planned})
    found.trained_epochs = trained
    return found


def _one_stage(stage_spec: Spec, data: Dataset, deadline: float, run: Path) -> tuple[Stage, Deadline]:
    """One stage of `stage_spec` trained until it ends or the deadline stops it."""
    from hpsearch.search.space import trial_configs

    store = StageStore(run / COARSE)
    store.create()
    stage = _stage(store, stage_spec, trial_configs(stage_spec))  # tpe: its configs grow as it proposes
    progress = Deadline(deadline)
    try:
        with store.lock():
            run_stage(stage, data, StageOptions(out=run), progress, False)  # type: ignore[arg-type]
    except StageStopped:
        pass
    return stage, progress


def search_halving(
    spec: Spec, data: Dataset, budget: float, run: Path, trial_epoch_budget: int, sampler: Sampler = Sampler.RANDOM
) -> Searched:
    """One halving stage (eta 3), as many trials as `trial_epoch_budget` (what random search
    trained in the same budget) allows; stopped at the deadline if it is not done."""
    deadline = time.perf_counter() + budget
    halving = HalvingSpec(eta=3, min_epochs=1)
    rungs = rung_epochs(spec.train.epochs, halving)
    n = 2
    while trial_epochs(planned_counts(n + 1, rungs, halving.eta), rungs) <= trial_epoch_budget:
        n += 1
    stage, progress = _one_stage(_with(spec, trials=n, halving=halving, sampler=sampler), data, deadline, run)
    finished = _finished(stage.store)
    results = [r for r in finished if r.state is not TrialState.STOPPED]  # the last rung's, or what finished
    out = _searched(results or finished, {c.trial_id: c for c in stage.configs})
    out.configs = len(finished)
    out.trial_epochs = sum(r.epochs_done for r in _latest_records(stage.store))
    out.trained_epochs = progress.epochs
    return out


def search_tpe(spec: Spec, data: Dataset, budget: float, run: Path, same_shape: bool = False) -> Searched:
    """hpsearch's sampler: tpe (default startup trials and wave), one stage until the deadline."""
    deadline = time.perf_counter() + budget
    tpe = TPE.model_copy(update={"same_shape": same_shape})
    stage, progress = _one_stage(_with(spec, sampler=Sampler.TPE, tpe=tpe, trials=10_000), data, deadline, run)
    found = _searched(_finished(stage.store), {c.trial_id: c for c in stage.configs})
    found.trained_epochs = progress.epochs
    return found


def _latest_records(store: StageStore) -> list[TrialResult]:
    """Each trial's last record (halving records a trial once per rung): the epochs it trained."""
    last: dict[int, TrialResult] = {}
    for r in store.read_trials():
        if r.state.final and (r.trial not in last or r.epochs_done >= last[r.trial].epochs_done):
            last[r.trial] = r
    return list(last.values())


def search_coarse_refine(spec: Spec, data: Dataset, budget: float, run: Path) -> Searched:
    """A coarse stage grown for half the budget, then refine until the deadline; the coarse stage
    with the spec's sampler, refine with its refine.sampler."""
    start = time.perf_counter()
    deadline = start + budget
    chunk = spec.search.tpe_settings.wave if spec.search.sampler is Sampler.TPE else COARSE_CHUNK
    planned, _ = _grown_stage(spec, data, run, start + budget / 2, deadline, chunk)
    coarse = _finished(StageStore(run / COARSE))
    configs = {c.trial_id: c for c in planned}
    found = _searched(coarse, configs)
    if time.perf_counter() >= deadline:
        return found
    try:
        plan = plan_refine(run, RefineOptions(trials=max(4, len(coarse) // 3)))
    except Exception as e:  # e.g. nothing learned: refine refuses; the coarse pick stands
        print(f"  refine not planned: {e}", file=sys.stderr)
        return found
    store = StageStore(run / plan.stage)
    store.create()
    try:
        with store.lock():
            stage = Stage(store, plan.spec, "benchmark", plan.configs, plan.history, prior=tuple(plan.prior))
            run_stage(stage, data, StageOptions(out=run), Deadline(deadline), False)  # type: ignore[arg-type]
    except StageStopped:
        pass
    refined = _finished(store)
    both = _searched(refined, {c.trial_id: c for c in stage.configs})
    total = Searched(
        len(coarse) + len(refined), found.trial_epochs + both.trial_epochs, None, None, refined=len(refined)
    )
    # The stage that trained longer decides when it has a complete trial; else the coarse pick.
    pick = both if both.chosen is not None else found
    total.best_val_acc, total.chosen = pick.best_val_acc, pick.chosen
    return total


def _in_bf16(spec: Spec) -> Spec:
    return spec.model_copy(update={"train": spec.train.model_copy(update={"precision": Precision.BF16})})


def probed(spec: Spec, data: Dataset) -> Spec:
    """The spec with the lr range sanity-check's probe recommends (unchanged if it recommends none)."""
    from hpsearch.sanity.probe import probe_learning_rates, spec_with_lr_range

    _, _, lr_range = probe_learning_rates(spec, data)
    return spec if lr_range is None else spec_with_lr_range(spec, *lr_range)


# --------------------------------------------------------------------------- Optuna, as its user writes it


def _suggest(trial: Any, name: str, dom: NumericRange | Categorical) -> Any:
    if isinstance(dom, Categorical):
        labels = [json.dumps(v) for v in dom.values]  # Optuna's choices are plain scalars: lists go as text
        return json.loads(trial.suggest_categorical(name, labels))
    if isinstance(dom.low, int) and isinstance(dom.high, int) and not isinstance(dom.low, bool):
        return trial.suggest_int(name, dom.low, dom.high, log=dom.log)
    return trial.suggest_float(name, float(dom.low), float(dom.high), log=dom.log)


@torch.no_grad()
def _val_accuracy(net: torch.nn.Module, data: Dataset) -> float:
    net.eval()
    correct = sum(
        int((net(data.normalize(data.x_val[i : i + 1000])).argmax(1) == data.y_val[i : i + 1000]).sum())
        for i in range(0, len(data.y_val), 1000)
    )
    net.train()
    return correct / len(data.y_val)


def search_optuna(spec: Spec, data: Dataset, budget: float, seed: int, bf16: bool = False) -> Searched:
    """`bf16`: the same loop with torch.autocast to bfloat16 around the forward pass (the loss and
    the weights fp32), as a careful Optuna user on a bf16 machine would write it."""
    import optuna

    precision = Precision.BF16 if bf16 else Precision.FP32
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs_run = 0
    configs: dict[int, TrialConfig] = {}

    def objective(trial: Any) -> float:
        nonlocal epochs_run
        params = {name: _suggest(trial, name, dom) for name, dom in sorted(spec.search.space.items())}
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        resolved = spec.resolved(params)
        cfg = TrialConfig(trial.number, params, resolved.model, resolved.train, seed)
        configs[trial.number] = cfg
        train = cfg.train
        torch.manual_seed(init_seed(seed, trial.number))
        net = build_model(cfg.model, data.input_shape, data.num_classes)
        opt = make_optimizer(net, train)
        n = len(data.y_train)
        acc = 0.0
        for epoch in range(train.epochs):
            order = batch_order(n, seed, epoch, data.x_train.device)
            for start in range(0, n, train.batch_size):
                idx = order[start : start + train.batch_size]
                x, y = data.normalize(data.x_train[idx]), data.y_train[idx]
                loss, _ = training_loss(net, x, y, train.weight_decay, precision)
                if not math.isfinite(float(loss.detach())):
                    epochs_run += 1
                    raise optuna.TrialPruned()  # diverged
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            for group in opt.param_groups:
                group["lr"] *= train.lr_decay
            epochs_run += 1
            acc = _val_accuracy(net, data)
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(objective, timeout=budget, gc_after_trial=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value) if done else None
    return Searched(
        configs=len([t for t in study.trials if t.state.is_finished()]),
        trial_epochs=epochs_run,
        best_val_acc=best.value if best else None,
        chosen=configs[best.number] if best else None,
    )


# --------------------------------------------------------------------------- the final protocol


def final_test(spec: Spec, chosen: TrialConfig | None, test_data: Dataset) -> list[float]:
    """The chosen configuration trained again with FINAL_SEEDS (the spec's epochs and data; lr decay
    and epochs as the spec has them, whatever stage picked it) and scored once on the test set."""
    if chosen is None:
        return []
    resolved = spec.resolved(chosen.params)
    out = []
    for s in FINAL_SEEDS:
        cfg = TrialConfig(chosen.trial_id, chosen.params, resolved.model, resolved.train, s)
        r = run_trial(cfg, test_data)  # its "validation" split is the test set
        out.append(r.val_acc if r.state is TrialState.COMPLETE and r.val_acc is not None else 0.0)
    return out


def run_method(
    method: str, spec: Spec, seed: int, data: Dataset, test_data: Dataset, budget: float, trial_epoch_budget: int
) -> dict[str, Any]:
    seeded = _with(spec, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        if method == "random":
            found = search_random(seeded, data, budget, run)
        elif method == "median":
            found = search_random(_with(seeded, median_stop=MedianStopSpec()), data, budget, run)
        elif method in ("tpe+median", "tpe-pop+median"):
            ruled = _with(seeded, median_stop=MedianStopSpec())
            found = search_tpe(ruled, data, budget, run, same_shape=method == "tpe-pop+median")
        elif method == "halving":
            found = search_halving(seeded, data, budget, run, trial_epoch_budget)
        elif method == "tpe+halving":
            found = search_halving(_tpe(seeded), data, budget, run, trial_epoch_budget, Sampler.TPE)
        elif method in ("probe+halving", "probe+halving-bf16", "probe+random"):
            narrowed = probed(seeded, data)  # the probe is a sanity check: fp32 whatever the search trains in
            left = budget - (time.perf_counter() - start)
            if method == "probe+halving-bf16":
                found = search_halving(_in_bf16(narrowed), data, left, run, trial_epoch_budget)
            elif method == "probe+halving":
                found = search_halving(narrowed, data, left, run, trial_epoch_budget)
            else:
                found = search_random(narrowed, data, left, run)
        elif method == "tpe":
            found = search_tpe(seeded, data, budget, run)
        elif method == "coarse+refine":
            found = search_coarse_refine(seeded, data, budget, run)
        elif method in ("tpe+refine", "tpe+refine-kept"):
            refine = Sampler.TPE if method == "tpe+refine-kept" else Sampler.RANDOM
            tpe = _tpe(seeded)
            found = search_coarse_refine(
                tpe.model_copy(update={"refine": tpe.refine.model_copy(update={"sampler": refine})}), data, budget, run
            )
        else:
            found = search_optuna(seeded, data, budget, seed, bf16=method == "optuna-tpe-bf16")
        wall = time.perf_counter() - start
    tests = final_test(seeded, found.chosen, test_data)
    return {
        "method": method,
        "seed": seed,
        "configurations": found.configs,
        "trial_epochs": found.trial_epochs,
        "trained_epochs": found.trained_epochs,
        "refine_trials": found.refined,
        "wall_s": round(wall, 1),
        "best_val_acc": found.best_val_acc,
        "chosen": {k: getattr(v, "value", v) for k, v in found.chosen.params.items()} if found.chosen else None,
        "chosen_trial": found.chosen.trial_id if found.chosen else None,  # below 10: a random startup trial
        "test_acc": tests,
        "test_mean": statistics.fmean(tests) if tests else None,
        "test_std": statistics.stdev(tests) if len(tests) > 1 else None,
    }


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(rows: list[dict[str, Any]], methods: list[str]) -> None:
    columns = f"{'configs':>7} {'trial-ep':>8} {'wall_s':>7} {'best val':>8} {'test mean':>9}"
    print(f"{'method':<15} {'seed':>4} {columns} {'std':>6}")
    for r in rows:
        print(
            f"{r['method']:<15} {r['seed']:>4} {r['configurations']:>7} {r['trial_epochs']:>8} {r['wall_s']:>7.1f} "
            f"{_fmt(r['best_val_acc']):>8} {_fmt(r['test_mean'], 4):>9} {_fmt(r['test_std'], 4):>6}"
        )
    print()
    print(f"{'mean over seeds':<15} {'runs':>4} {columns} {'sd':>6}")
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        means = [r["test_mean"] for r in mine if r["test_mean"] is not None]
        vals = [r["best_val_acc"] for r in mine if r["best_val_acc"] is not None]
        configs = statistics.fmean(r["configurations"] for r in mine)
        epochs = statistics.fmean(r["trial_epochs"] for r in mine)
        wall = statistics.fmean(r["wall_s"] for r in mine)
        val = _fmt(statistics.fmean(vals) if vals else None)
        test = _fmt(statistics.fmean(means) if means else None, 4)
        sd = _fmt(statistics.stdev(means) if len(means) > 1 else None, 4)
        print(f"{m:<15} {len(mine):>4} {configs:>7.1f} {epochs:>8.1f} {wall:>7.1f} {val:>8} {test:>9} {sd:>6}")
    print("(sd: of the per-seed test means across search seeds)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=ROOT / "configs/cifar10_hard.yaml")
    p.add_argument("--data-root", type=Path, help="folder holding cifar-10-batches-bin (or -py)")
    p.add_argument("--synthetic", action="store_true", help="CIFAR-shaped random data (a quick check of the script)")
    p.add_argument("--budget", type=float, default=100.0, help="wall-clock seconds per search (default 100)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--json", type=Path, help="write every row here")
    p.add_argument("--tpe-startup", type=int, help="startup trials of the tpe methods (default: sampler tpe's, 10)")
    args = p.parse_args()
    for m in SIZED_BY_RANDOM:
        if m in args.methods and ("random" not in args.methods or args.methods.index("random") > args.methods.index(m)):
            p.error(f"{m} sizes itself by random search's trial-epochs in the same budget: list random before it")
    spec = load_spec(args.spec)
    global TPE
    if args.tpe_startup:
        TPE = TpeSpec(startup_trials=args.tpe_startup)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": "cpu"})})
    if args.synthetic:
        synthetic = spec.data.model_copy(
            update={
                "dataset": "synthetic",
                "synthetic_train": 3000,
                "synthetic_test": 500,
                "val_size": 500,
                "train_subset": None,
            }
        )
        spec = spec.model_copy(update={"data": synthetic})
    data = load_data(spec, args.data_root, None)
    if args.synthetic:
        test_x, test_y = data.x_val, data.y_val  # synthetic: scored on the validation split
    else:
        raw = load_cifar10(resolve_data_root(args.data_root, spec.data.root), download=False)
        test_x, test_y = raw.x_test, raw.y_test
    test_data = dataclasses.replace(data, x_val=test_x, y_val=test_y)
    torch.set_num_threads(torch.get_num_threads())
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        trial_epoch_budget = 0
        for method in args.methods:
            row = run_method(method, spec, seed, data, test_data, args.budget, trial_epoch_budget or 10**9)
            if method == "random":
                trial_epoch_budget = row["trained_epochs"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"spec {args.spec.name}, budget {args.budget:.0f} s per search, final: {len(FINAL_SEEDS)} seeds, test set")
    print_table(rows, args.methods)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "budget_s": args.budget, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
