"""`hpsearch final`: train the latest stage's best configurations with several seeds, score each on
the test set once, keep the best network.

The lecture's rule: choose on validation data, touch the test set once, at the very end. So the
finalists are chosen from the validation ranking (the trials tied with the best, or the top K), each
is trained with S seeds (on train + validation by default) and scored on the test split; every test
evaluation is appended to RUN/final/test_ledger.jsonl before it is shown, and a second `final` on a
run whose test set was seen is refused unless asked for (`again`).

Files under RUN/final/: plan.json (the attempt being run), runs.jsonl (each finished run's record,
after its network is saved under models/), test_ledger.jsonl (one line per test evaluation, all
attempts), results.json/.md/.csv, and model.pt + model.json (the best network, saved_model.py).
A run interrupted anywhere resumes without training a finished run again or scoring any run twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hpsearch.analysis.rank import rank, tied_with_best
from hpsearch.data import DataRecipe, Dataset, ProgressFn, load_final_data
from hpsearch.errors import NothingToResume, StageStopped, StoreError, interrupt_exit_code
from hpsearch.executors.local import execute
from hpsearch.output.final import final_document, final_markdown
from hpsearch.runs.final import (
    LEDGER,
    MODELS,
    PLAN,
    RUNS,
    Finalist,
    FinalOutcome,
    FinalPlan,
    FinalRow,
    attempts_that_tested,
    ledger_entries,
)
from hpsearch.runs.read import (
    RESULTS,
    how_to_start,
    load_stage,
    previous_data_root,
    read_document,
    recorded_precision,
    stage_curve_data,
    stages,
)
from hpsearch.runs.records import PrecisionChoice, TrialEvents, TrialResult, TrialState, jsonable
from hpsearch.runs.store import (
    StageStore,
    append_json_line,
    atomic_write_bytes,
    read_json,
    read_json_lines,
    utc_now,
    write_json,
)
from hpsearch.search.refine import trained_configs
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.options import FinalOptions, FitOn
from hpsearch.spec.schema import Spec
from hpsearch.stages.base import TrainingProgress
from hpsearch.stages.prepare import prepare_model, say_warnings
from hpsearch.training.checkpoint import unpack
from hpsearch.training.factory import FactorySource
from hpsearch.training.models import build_model
from hpsearch.training.precision import choice_for, resolved
from hpsearch.training.saved_model import save_model
from hpsearch.training.trial import accuracy

FINAL = "final"
DEFAULT_SEEDS = 3  # runs per finalist
MAX_TIED = 10  # finalists by default at most, however many trials are tied
PREDICTIONS_KEPT = 64  # test (or validation) predictions model.json keeps, to check a reload against


# --------------------------------------------------------------------------- planning


def plan_final(
    run_dir: Path, options: FinalOptions, attempt: int = 1, stored: dict[str, Any] | None = None
) -> FinalPlan:
    """The finalists of the latest finished stage: `options.top` best, or by default the trials tied
    with the best (at most MAX_TIED). `stored`: the plan.json of an attempt being resumed."""
    done = stages(run_dir)
    if not done:
        raise StoreError(f"{run_dir}: no finished stage to take finalists from; {how_to_start(run_dir)}")
    stage = stored["stage"] if stored else done[-1]
    spec, results, _, store = load_stage(run_dir, stage)
    notes = [n for n in [store.unreadable_note("a trial recorded only there is not a finalist")] if n]
    ranked = [r for r in rank(results) if r.state is TrialState.COMPLETE and r.val_acc is not None]
    if not ranked:
        raise StoreError(f"{run_dir / stage}: no trial completed, so there is nothing to train again")
    val_size = stage_curve_data(run_dir / stage, spec.data).val_size
    if stored:
        by_trial = {r.trial: r for r in ranked}
        picked = [by_trial[t] for t in stored["trials"] if t in by_trial]
        basis = str(stored["basis"])
    elif options.top is not None:
        picked = ranked[: options.top]
        basis = f"the top {len(picked)} of {stage}"
    else:
        tied = tied_with_best(ranked, val_size)
        picked = tied[:MAX_TIED]
        if len(tied) == 1:
            basis = f"the best of {stage} (it leads beyond noise)"
        elif len(tied) > MAX_TIED:
            basis = f"the best {MAX_TIED} of the {len(tied)} trials of {stage} tied for best (--top K for more)"
        else:
            basis = f"the {len(picked)} trials of {stage} tied for best"
    epochs = int(stored["epochs"]) if stored else options.epochs or spec.train.epochs
    fit_on = FitOn(stored["fit_on"]) if stored else options.fit_on or FitOn.TRAIN_VAL
    base = spec.search.seed
    seeds = [int(s) for s in stored["seeds"]] if stored else [base + i for i in range(options.seeds or DEFAULT_SEEDS)]
    finalists = [_finalist(spec, r, epochs) for r in picked]
    return FinalPlan(run_dir, stage, spec, finalists, seeds, fit_on, epochs, basis, attempt, notes)


def _finalist(spec: Spec, r: TrialResult, epochs: int) -> Finalist:
    (cfg,) = trained_configs(spec, [r])
    train = cfg.train.model_copy(update={"epochs": epochs})
    return Finalist(r.trial, cfg.params, r.val_acc, replace(cfg, train=train))


# --------------------------------------------------------------------------- the ledger


def _refuse_second_look(final_dir: Path, seen: dict[int, str]) -> None:
    n = len(seen)
    last = max(seen.values())
    raise StoreError(
        f"{final_dir}: the test set was already evaluated by {n} final{'s' if n != 1 else ''} (last {last}); "
        "another is another look at it: pass --again to evaluate it anyway (the table will say how many times it "
        "was seen), or --resume to finish an interrupted final"
    )


# --------------------------------------------------------------------------- running


def run_final(
    run_dir: Path,
    options: FinalOptions,
    *,
    on_data: ProgressFn | None = None,
    progress: TrainingProgress | None = None,
    on_plan: Callable[[FinalPlan], None] | None = None,
    on_model: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> FinalOutcome:
    """Plan (or, with options.resume, pick up) a final, train its runs, score each on the test set
    once, write the results and keep the best network. Ctrl-C / SIGTERM raise StageStopped.
    `on_model`, `on_warning`, `on_note`: as for stages.coarse.run_coarse."""
    final_dir = run_dir / FINAL
    store = StageStore(final_dir)
    plan = _plan_or_resume(run_dir, final_dir, options)
    if on_plan:
        on_plan(plan)
    stage_dir = run_dir / plan.stage
    spec_path = str(stage_dir / "spec.yaml")
    data_root = options.data_root or previous_data_root(stage_dir)
    with_val = plan.fit_on is FitOn.TRAIN_VAL
    data, test = load_final_data(plan.spec, data_root, on_data, with_val, spec_path)
    say_warnings(data, on_warning)
    if test is None and with_val:
        raise StoreError(
            f"{spec_path}: the data has no test split (synthetic_test: 0, or an npz without x_test), so there is "
            "nothing to test on; hpsearch final --fit-on train still trains the finalists and reports their "
            "validation accuracy"
        )
    factory = prepare_model(plan.finalists[0].config.model, data, spec_path, on_model)
    # The finalists train as their stage trained them (its run.json's choice), else as a stage would now.
    first = plan.config(plan.finalists[0], plan.seeds[0])
    precision = choice_for(first, data, recorded_precision(stage_dir), plan.stage)
    if precision.said and on_note is not None:
        on_note(precision.line())
    with store.lock():
        store.make_dir()
        store.remove_stale_temp_files()
        if not options.resume:
            _start_attempt(final_dir, plan, options)
        recorder = _FinalRecorder(final_dir, plan, data, test, options.command)
        resumed = recorder.restore_finished_runs()
        try:
            _train(plan, data, options, recorder, progress, factory, data_root, resumed, precision)
        except KeyboardInterrupt as e:
            raise StageStopped(interrupt_exit_code(e), final_dir, len(recorder.done), plan.runs, final=True) from None
        return _finish(plan, recorder, data, test, factory, resumed)


def _plan_or_resume(run_dir: Path, final_dir: Path, options: FinalOptions) -> FinalPlan:
    stored = _stored_plan(final_dir)
    unfinished = stored is not None and not _finished(final_dir, stored["attempt"])
    if options.resume:
        if not unfinished:
            raise NothingToResume(
                f"nothing to resume in {final_dir}: no final was interrupted there"
                + ("" if stored is None else f" (attempt {stored['attempt']} finished)")
            )
        assert stored is not None
        _refuse_other_options(final_dir, stored, options)
        return plan_final(run_dir, options, stored["attempt"], stored)
    if unfinished and not options.again:
        raise StoreError(
            f"{final_dir}: an earlier final did not finish; hpsearch final {run_dir} --resume finishes it "
            "(--again starts another, which is another look at the test set)"
        )
    seen = attempts_that_tested(ledger_entries(final_dir))
    if seen and not options.again:
        _refuse_second_look(final_dir, seen)
    attempt = max([*seen, stored["attempt"] if stored else 0]) + 1
    return plan_final(run_dir, options, attempt)


def _stored_plan(final_dir: Path) -> dict[str, Any] | None:
    if not (final_dir / PLAN).is_file():
        return None
    doc = read_json(final_dir / PLAN)
    keys = ("attempt", "stage", "trials", "seeds", "fit_on", "epochs", "basis")
    if not isinstance(doc, dict) or any(k not in doc for k in keys):
        raise StoreError(
            f"{final_dir / PLAN}: not a plan hpsearch final wrote (missing keys); remove it to start again"
        )
    return doc


def _finished(final_dir: Path, attempt: int) -> bool:
    doc = read_document(final_dir, RESULTS)
    return doc is not None and doc.get("attempt") == attempt


def _refuse_other_options(final_dir: Path, stored: dict[str, Any], options: FinalOptions) -> None:
    """--resume finishes the interrupted plan: options that would change it are refused."""
    given = {
        "--top": (options.top, len(stored["trials"])),
        "--seeds": (options.seeds, len(stored["seeds"])),
        "--epochs": (options.epochs, stored["epochs"]),
        "--fit-on": (options.fit_on and options.fit_on.value, stored["fit_on"]),
    }
    for name, (now, then) in given.items():
        if now is not None and now != then:
            raise StoreError(
                f"{final_dir / PLAN}: cannot resume with {name} {now}: the interrupted final planned {then}; "
                "resume with the same options (or leave them out)"
            )


def _start_attempt(final_dir: Path, plan: FinalPlan, options: FinalOptions) -> None:
    """A new attempt: its plan written, the previous attempt's unfinished runs set aside."""
    shutil.rmtree(final_dir / MODELS, ignore_errors=True)
    write_json(final_dir / PLAN, plan.to_dict() | {"command": list(options.command) or None, "start_time": utc_now()})


class _FinalRecorder:
    """Records a final's runs: each run's network saved, its record appended, then its test score
    measured once and appended to the ledger, in that order, so a crash anywhere resumes cleanly."""

    def __init__(
        self,
        final_dir: Path,
        plan: FinalPlan,
        data: Dataset,
        test: tuple[torch.Tensor, torch.Tensor] | None,
        command: tuple[str, ...],
    ) -> None:
        self.final_dir, self.plan, self.data, self.test, self.command = final_dir, plan, data, test, command
        self.done: dict[tuple[int, int], TrialResult] = {}  # (trial, seed) -> record
        self.scores: dict[tuple[int, int], float] = {}  # (trial, seed) -> test accuracy
        self.by_trial = {f.trial: f for f in plan.finalists}

    def model_file(self, trial: int, seed: int) -> Path:
        return self.final_dir / MODELS / f"trial-{trial}-seed-{seed}.pt"

    def restore_finished_runs(self) -> int:
        """A resumed attempt: its finished runs read back, and one recorded but not yet scored scored
        now (its first time). Returns how many runs were already finished."""
        attempt = self.plan.attempt
        for e in ledger_entries(self.final_dir):
            if e.get("attempt") == attempt and isinstance(e.get("test_acc"), (int, float)):
                self.scores[(int(e["trial"]), int(e["seed"]))] = float(e["test_acc"])
        records, _ = read_json_lines(self.final_dir / RUNS)
        for line in records:
            if line.get("attempt") != attempt or not isinstance(line.get("record"), dict):
                continue
            try:
                r = TrialResult.from_dict(line["record"])
            except ValueError:
                continue
            key = (r.trial, int(line.get("seed", -1)))
            if key[0] not in self.by_trial or key[1] not in self.plan.seeds or key in self.done:
                continue
            if r.state is TrialState.COMPLETE and not self.model_file(*key).is_file() and key not in self.scores:
                continue  # its network was lost before it was scored: trained again
            self.done[key] = r
            if r.state is TrialState.COMPLETE and self.test is not None and key not in self.scores:
                self.score(r, key[1])
        return len(self.done)

    def record(self, r: TrialResult, seed: int) -> None:
        key = (r.trial, seed)
        model = None
        if r.state is TrialState.COMPLETE and r.checkpoint is not None:
            model = unpack(r.checkpoint).model
            path = self.model_file(*key)
            path.parent.mkdir(exist_ok=True)
            atomic_write_bytes(path, _state_bytes(model))
        r.checkpoint = None
        if self.plan.fit_on is FitOn.TRAIN_VAL:  # no validation examples were held out
            r.val_acc, r.val_acc_per_epoch = None, []
        append_json_line(self.final_dir / RUNS, {"attempt": self.plan.attempt, "seed": seed, "record": r.to_dict()})
        self.done[key] = r
        if r.state is TrialState.COMPLETE and self.test is not None:
            self.score(r, seed, model)

    def network(self, trial: int, seed: int, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """The run's trained network in eval mode, from `state` or else its saved weights."""
        cfg = self.by_trial[trial].config
        net = build_model(cfg.model, self.data.input_shape, self.data.num_classes)
        if state is None:
            state = torch.load(self.model_file(trial, seed), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        return net.to(self.data.x_train.device).eval()

    def score(self, r: TrialResult, seed: int, state: dict[str, torch.Tensor] | None = None) -> None:
        """The run's one evaluation on the test set, appended to the ledger."""
        assert self.test is not None
        device = self.data.x_train.device
        x, y = self.test[0].to(device), self.test[1].to(device)
        acc = accuracy(self.network(r.trial, seed, state), self.data, x, y)
        f = self.by_trial[r.trial]
        entry = {
            "attempt": self.plan.attempt,
            "time": utc_now(),
            "command": list(self.command) or None,
            "stage": self.plan.stage,
            "trial": r.trial,
            "params": jsonable(f.params),
            "seed": seed,
            "fit_on": self.plan.fit_on.value,
            "epochs": self.plan.epochs,
            "test_acc": acc,
            "test_size": len(y),
            "val_acc": r.val_acc,
        }
        append_json_line(self.final_dir / LEDGER, entry)
        self.scores[(r.trial, seed)] = acc


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, buf)
    return buf.getvalue()


def _train(
    plan: FinalPlan,
    data: Dataset,
    options: FinalOptions,
    recorder: _FinalRecorder,
    progress: TrainingProgress | None,
    factory: FactorySource | None,
    data_root: Path | None,
    resumed: int,
    precision: PrecisionChoice,
) -> None:
    """Each seed's runs as one batch of trials (populations where the network allows: a seed fixes
    the batch order, so runs of one seed train together), in the finalists' stage's precision."""
    todo = {
        s: resolved([plan.config(f, s) for f in plan.finalists if (f.trial, s) not in recorder.done], precision)
        for s in plan.seeds
    }
    if progress:
        progress.start(plan.runs, sum(len(c) for c in todo.values()) * plan.epochs, resumed)
    root = data_root.resolve() if data_root else None
    recipe = DataRecipe(spec_to_yaml(plan.spec), root, with_val=plan.fit_on is FitOn.TRAIN_VAL)
    for seed, configs in todo.items():

        def on_result(r: TrialResult, seed: int = seed) -> None:
            recorder.record(r, seed)
            if progress:
                progress.trial_done(r, len(recorder.done), plan.runs, None)

        events = TrialEvents(on_result=on_result, on_epoch=progress.epochs_done if progress else None)
        execute(configs, data, options.execution, events, recipe, factory)


def _rows(plan: FinalPlan, recorder: _FinalRecorder, has_test: bool) -> list[FinalRow]:
    rows = []
    for f in plan.finalists:
        row = FinalRow(f)
        for s in plan.seeds:
            r = recorder.done.get((f.trial, s))
            if r is None:
                continue
            row.states[s] = r.state
            row.test[s] = recorder.scores.get((f.trial, s))
            row.val[s] = r.val_acc if r.state is TrialState.COMPLETE else None
        rows.append(row)

    def key(row: FinalRow) -> tuple[float, int]:
        score = row.test_mean if has_test else row.val_mean
        return (-(score if score is not None else -1.0), row.finalist.trial)

    return sorted(rows, key=key)


def _finish(
    plan: FinalPlan,
    recorder: _FinalRecorder,
    data: Dataset,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    factory: FactorySource | None,
    resumed: int,
) -> FinalOutcome:
    final_dir = plan.run_dir / FINAL
    rows = _rows(plan, recorder, test is not None)
    seen = len(attempts_that_tested(ledger_entries(final_dir)))
    outcome = FinalOutcome(
        plan, rows, len(test[1]) if test is not None else None, seen, None, final_dir, resumed=resumed
    )
    if test is None:
        outcome.notes.append(
            "the data has no test split: the finalists are ranked by validation accuracy and nothing was tested"
        )
    best = outcome.best
    if best is not None:
        outcome.model_path = _keep_model(plan, recorder, best, data, test, factory)
    _write_results(outcome)
    shutil.rmtree(final_dir / MODELS, ignore_errors=True)
    return outcome


def _keep_model(
    plan: FinalPlan,
    recorder: _FinalRecorder,
    best: FinalRow,
    data: Dataset,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    factory: FactorySource | None,
) -> Path:
    """The best configuration's network: of its seeds, the one with the best validation accuracy when
    validation was held out, else the first seed (choosing a seed by test accuracy would be one more
    look at the test set)."""
    done = [
        s
        for s in plan.seeds
        if best.states.get(s) is TrialState.COMPLETE and recorder.model_file(best.finalist.trial, s).is_file()
    ]
    if not done:
        folder, trial = recorder.final_dir / MODELS, best.finalist.trial
        raise StoreError(f"{folder}: the best configuration's (trial {trial}) networks are missing")
    if plan.fit_on is FitOn.TRAIN and any(best.val.get(s) is not None for s in done):
        seed = max(done, key=lambda s: (best.val.get(s) or -1.0, -s))
        why = "the best validation accuracy of its seeds"
    else:
        seed = done[0]
        why = "its first seed (no validation held out; a seed chosen by test accuracy would be another look at it)"
    trial = best.finalist.trial
    net = recorder.network(trial, seed)
    x, y = test if test is not None else (data.x_val.cpu(), data.y_val.cpu())
    x = x[:PREDICTIONS_KEPT].to(data.x_train.device)
    with torch.no_grad():
        predictions = net(data.normalize(x)).argmax(1).cpu().tolist()
    resolved = plan.spec.resolved(best.finalist.params)
    resolved = resolved.model_copy(update={"train": resolved.train.model_copy(update={"epochs": plan.epochs})})
    info = {
        "stage": plan.stage,
        "trial": trial,
        "params": jsonable(best.finalist.params),
        "seed": seed,
        "seed_chosen_by": why,
        "fit_on": plan.fit_on.value,
        "epochs": plan.epochs,
        "test_acc": recorder.scores.get((trial, seed)),
        "test_size": len(test[1]) if test is not None else None,
        "val_acc": best.val.get(seed) if plan.fit_on is FitOn.TRAIN else None,
        "predictions": {
            "split": "test" if test is not None else "val",
            "first": len(predictions),
            "classes": predictions,
        },
        "attempt": plan.attempt,
    }
    return save_model(
        plan.run_dir / FINAL, recorder.model_file(trial, seed).read_bytes(), resolved, data, factory, info
    )


def _write_results(outcome: FinalOutcome) -> None:
    store = StageStore(outcome.final_dir)
    store.write_json(RESULTS, final_document(outcome))
    store.write_text("results.md", final_markdown(outcome))
