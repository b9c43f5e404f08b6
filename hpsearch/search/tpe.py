"""Model-based sampling (search.sampler: tpe) through Optuna's ask-and-tell interface, as a library.

hpsearch keeps its stages, populations, records, resume and Ray; the sampler only proposes. A stage
trains its first `startup_trials` as random search would (the same values for the same seed and
trial id), then asks for `wave` trials at a time: a fresh in-memory study is told every finished
trial in trial order and asked `wave` times, TPE's constant liar standing in for the ones asked but
not yet told. Its seed is drawn from (search seed, first trial id of the wave), so the proposals
depend only on the seed and what was told: the same seed and the same results give the same trials.
Each wave is appended to RUN/<stage>/proposals.jsonl (flushed to disk) before it trains; a resumed
stage reads it back, trains the proposals not yet finished and asks for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.errors import SpecError, StoreError
from hpsearch.runs.records import TrialResult, TrialState, jsonable
from hpsearch.runs.store import append_json_line, read_json_lines
from hpsearch.spec.schema import Categorical, NumericRange, SearchSpec, is_int_param

PROPOSALS = "proposals.jsonl"  # one line per wave: {"wave", "told", "trials": [{"trial", "params"}, ...]}


def optuna_module() -> Any:
    """Optuna, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise SpecError(
            "search.sampler: tpe needs Optuna, which is not installed: pip install 'hpsearch[tpe]' "
            "(or use sampler: random)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def describe_tpe(search: SearchSpec) -> str | None:
    """One line saying how a tpe search goes; None for other samplers."""
    if not search.proposed:
        return None
    t = search.tpe_settings
    startup = min(t.startup_trials, search.trials)
    rest = search.trials - startup
    line = f"tpe: {startup} random startup trial{'s' if startup != 1 else ''}"
    if rest:
        line += f", then {rest} proposed by TPE (Optuna), {t.wave} at a time, each wave told every finished trial"
    return line


def _distributions(search: SearchSpec) -> dict[str, Any]:
    """Optuna's distribution for each searched parameter. A categorical's choices are the indices
    of its values (Optuna takes plain scalars only, and hidden layers are lists)."""
    optuna = optuna_module()
    d = optuna.distributions
    out: dict[str, Any] = {}
    for name, dom in sorted(search.space.items()):
        if isinstance(dom, Categorical):
            out[name] = d.CategoricalDistribution(list(range(len(dom.values))))
        elif is_int_param(name, dom):
            out[name] = d.IntDistribution(int(dom.low), int(dom.high), log=dom.log)
        else:
            out[name] = d.FloatDistribution(float(dom.low), float(dom.high), log=dom.log)
    return out


def _to_optuna(search: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dom in search.space.items():
        value = params[name]
        if isinstance(dom, Categorical):
            out[name] = [jsonable(v) for v in dom.values].index(jsonable(value))
        elif isinstance(dom, NumericRange) and is_int_param(name, dom):
            out[name] = int(value)
        else:  # 10 ** log10(high) may come out a rounding above high: Optuna refuses a value outside
            out[name] = min(max(float(value), float(dom.low)), float(dom.high))
    return out


def _from_optuna(search: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(search.space):
        dom = search.space[name]
        out[name] = dom.values[params[name]] if isinstance(dom, Categorical) else params[name]
    return out


def typed_params(search: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Values read back from JSON as the spec types them (a categorical's own value: an enum, a tuple)."""
    return _from_optuna(search, _to_optuna(search, params))


def told_value(r: TrialResult) -> float | None:
    """What a finished trial tells the model: its validation accuracy; a diverged trial (or one
    whose accuracy is not a number) the worst there is, 0; None for a failure (told as FAIL: a
    crash says nothing about the configuration's accuracy)."""
    if r.state is TrialState.FAILED:
        return None
    if r.val_acc is None or not math.isfinite(r.val_acc):
        return 0.0
    return float(r.val_acc)


def _optuna_trial(optuna: Any, search: SearchSpec, r: TrialResult, dists: dict[str, Any]) -> Any:
    """A finished trial as Optuna's record of it. Stopped by median_stop: PRUNED with its accuracy
    at each epoch it trained, which TPE ranks below the complete trials, later stops above earlier."""
    states = optuna.trial.TrialState
    params = _to_optuna(search, r.params)
    if r.state is TrialState.STOPPED and r.rung is None and r.val_acc_per_epoch:
        steps = dict(enumerate(r.val_acc_per_epoch))
        return optuna.trial.create_trial(
            state=states.PRUNED, params=params, distributions=dists, intermediate_values=steps
        )
    value = told_value(r)
    state = states.FAIL if value is None else states.COMPLETE
    return optuna.trial.create_trial(state=state, value=value, params=params, distributions=dists)


def wave_seed(seed: int, first_trial: int) -> int:
    return int(np.random.SeedSequence([seed, first_trial]).generate_state(1)[0])


def propose(
    search: SearchSpec, told: list[TrialResult], first_trial: int, count: int, shared: Collection[str] = ()
) -> list[dict[str, Any]]:
    """`count` proposals for trials first_trial, first_trial + 1, ...: a TPE study told `told`
    (finished trials, in trial order) and asked `count` times; the asks after the first with the
    first's values of the `shared` parameters fixed (Optuna samples the others)."""
    optuna = optuna_module()
    dists = _distributions(search)
    settings = search.tpe_settings
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=settings.startup_trials,
        multivariate=True,
        constant_liar=True,
        seed=wave_seed(search.seed, first_trial),
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for r in sorted(told, key=lambda r: r.trial):
        study.add_trial(_optuna_trial(optuna, search, r, dists))
    # Asked one after another: each later ask sees the earlier ones as running (the constant liar).
    asked = [study.ask(dists).params]
    fixed = {name: asked[0][name] for name in shared if name in asked[0]}
    for _ in range(count - 1):
        if fixed:
            study.enqueue_trial(fixed)
        asked.append(study.ask(dists).params)
    return [_from_optuna(search, params) for params in asked]


def read_proposals(stage_dir: Path) -> dict[int, dict[str, Any]]:
    """The proposals recorded for a stage, by trial id (JSON lists back to the tuples they were).
    A wave is one line, written whole: a line cut by a crash is skipped, and that wave is asked
    again from the same seed and the same told trials (none of it trained before its line was
    written, so nothing is lost)."""
    path = stage_dir / PROPOSALS
    lines, _ = read_json_lines(path)
    out: dict[int, dict[str, Any]] = {}
    for doc in lines:
        trials = doc.get("trials")
        if not isinstance(trials, list) or not all(_is_proposal(t) for t in trials):
            raise StoreError(f"{path}: a line is not a wave of proposals ({{'trials': [{{'trial', 'params'}}, ...]}})")
        for t in trials:
            out.setdefault(t["trial"], {k: tuple(v) if isinstance(v, list) else v for k, v in t["params"].items()})
    return out


def _is_proposal(t: Any) -> bool:
    return isinstance(t, dict) and isinstance(t.get("trial"), int) and isinstance(t.get("params"), dict)


def record_wave(stage_dir: Path, wave: int, first_trial: int, proposals: list[dict[str, Any]], told: int) -> None:
    """One line for the wave: which trials, their proposed values, and how many finished trials
    the model was told when it proposed them."""
    trials = [{"trial": first_trial + i, "params": jsonable(p)} for i, p in enumerate(proposals)]
    append_json_line(stage_dir / PROPOSALS, {"wave": wave, "told": told, "trials": trials})
