"""The refine planner: the next stage, planned from the last finished one, without training.

Ranges around the top-k complete trials (or, when more trials are tied for best within the noise of
the validation accuracy, around all of those), with a margin, narrower than before when the best is
interior; moved outward past an edge where the stage's verdict says accuracy points past it
("careful with best values on border"; verdicts.py). A stage where nothing learned is not refined:
its best trials are noise. Longer training, no lr decay, a new seed, and no configuration trained twice at the same
budget. `plan_refine` reads the run and returns a RefinePlan that can be printed (`refine --dry-run`)
or run (stages.refine.run_refine).
"""

from __future__ import annotations

import decimal
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types

from hpsearch.analysis.rank import fmt_value, rank, tied_with_best
from hpsearch.analysis.verdicts import Edge, RangeVerdict, Verdict, edges, range_verdicts
from hpsearch.errors import StoreError
from hpsearch.runs.read import how_to_start, load_stage, stage_curve_data, stages
from hpsearch.runs.records import TrialConfig, TrialResult, TrialState, jsonable
from hpsearch.search.space import planned_trials, trial_configs
from hpsearch.spec.choices import Sampler
from hpsearch.spec.options import RefineOptions
from hpsearch.spec.schema import (
    SEARCHABLE,
    Categorical,
    ModelSpec,
    NumericRange,
    SearchSpec,
    Spec,
    TrainSpec,
    is_int_param,
)

MARGIN = 0.25  # the top-k span grows by this fraction of itself on each side
MIN_WIDTH = 0.1  # ... and is at least this fraction of the previous range wide
MAX_WIDTH = 0.5  # an interior refinement is at most this fraction of the previous range wide


@dataclass(frozen=True)
class RangePlan:
    """How one parameter's range changes from one stage to the next, and why."""

    name: str
    old: NumericRange | Categorical
    new: NumericRange | Categorical | None  # None: no longer searched (the rule says what it is fixed at)
    rule: str  # human-readable: the span of the top-k and what was done at an edge

    def describe(self) -> str:
        return f"{self.name}: {_show(self.old)} → {_show(self.new)} ({self.rule})"

    def to_dict(self) -> dict[str, Any]:
        return {"old": _dump(self.old), "new": None if self.new is None else _dump(self.new), "rule": self.rule}


def _show(dom: NumericRange | Categorical | None) -> str:
    if dom is None:
        return "not searched"
    if isinstance(dom, Categorical):
        return "{" + ", ".join(fmt_value(v) for v in dom.values) + "}"
    return f"[{fmt_value(dom.low)}, {fmt_value(dom.high)}]"


def _dump(dom: NumericRange | Categorical) -> dict[str, Any]:
    return dom.model_dump(mode="json", exclude_none=True)


def top_complete(results: list[TrialResult], k: int) -> list[TrialResult]:
    """The best k complete trials, in the ranking's order (ties broken as rank() breaks them)."""
    return [r for r in rank(results) if r.state is TrialState.COMPLETE and r.val_acc is not None][:k]


def planning_set(results: list[TrialResult], k: int, val_size: int) -> tuple[list[TrialResult], list[TrialResult]]:
    """(the trials to plan around, best first; the trials tied for best): the tied set when it holds
    more than k trials (the best k would be a pick made by noise), else the top k."""
    tied = tied_with_best(rank(results), val_size)
    return (tied if len(tied) > k else top_complete(results, k)), tied


def plan_ranges(
    space: dict[str, NumericRange | Categorical],
    top: list[TrialResult],
    edges: list[Edge],
    keep: list[TrialResult] | None = None,
) -> list[RangePlan]:
    """The next stage's range for every searched parameter. `top` is best first; every trial of
    `keep` (the trials tied with the best) lies inside each new range, and so does the best."""
    flags = {e.name: e.flag for e in edges if e.verdict is Verdict.EDGE}
    toward = {e.name: e.flag for e in edges if e.verdict is Verdict.UNSAMPLED}
    kept = [top[0], *(keep or [])] if top else list(keep or [])
    plans = []
    for name, dom in sorted(space.items()):
        if isinstance(dom, Categorical):
            plans.append(_plan_categorical(name, dom, top))
        else:
            must = [float(r.params[name]) for r in kept if isinstance(r.params.get(name), (int, float))]
            plans.append(_plan_numeric(name, dom, top, flags.get(name), toward.get(name), must))
    return plans


def _plan_categorical(name: str, dom: Categorical, top: list[TrialResult]) -> RangePlan:
    seen = [v for v in dom.values if any(_same(r.params.get(name), v) for r in top)]
    new = Categorical(values=tuple(seen)) if seen else dom
    return RangePlan(name, dom, new, f"values of the top-{len(top)}")


def _same(a: Any, b: Any) -> bool:
    return bool(jsonable(a) == jsonable(b))


def _plan_numeric(
    name: str,
    dom: NumericRange,
    top: list[TrialResult],
    flag: str | None,
    toward: str | None = None,
    must: list[float] | None = None,
) -> RangePlan:
    """`flag`: the bound accuracy points past (edge); `toward`: the bound of a part no trial sampled
    that the fit rises toward (unsampled); `must`: values the new range holds whatever the rule."""
    to, back = (math.log10, lambda u: 10.0**u) if dom.log else (float, float)
    values = [float(r.params[name]) for r in top]
    old_lo, old_hi = to(dom.low), to(dom.high)
    width = old_hi - old_lo
    span_lo, span_hi = to(min(values)), to(max(values))
    margin = max(MARGIN * (span_hi - span_lo), MIN_WIDTH * width / 2)
    lo, hi = span_lo - margin, span_hi + margin
    best = to(values[0])
    span = f"top-{len(top)} span {fmt_value(min(values))}..{fmt_value(max(values))}"
    if flag in ("high", "low"):
        # Centre the new range on the edge the verdict points past, reaching as far inside as the top
        # trials (plus the margin), but never wider than MAX_WIDTH of the old range.
        edge = old_hi if flag == "high" else old_lo
        reach = (edge - lo) if flag == "high" else (hi - edge)
        half = min(max(reach, margin), MAX_WIDTH * width / 2)
        lo, hi = edge - half, edge + half
        rule = f"{span}; accuracy points past the {flag} edge: extended {'upward' if flag == 'high' else 'downward'}"
    elif toward in ("high", "low"):
        # Accuracy rises toward a part of the range no trial reached: search it, up to the old bound.
        lo, hi = (max(lo, old_lo), old_hi) if toward == "high" else (old_lo, min(hi, old_hi))
        part = "upper" if toward == "high" else "lower"
        rule = f"{span}; the {part} part was not sampled: reaching to the old {toward} edge"
    else:
        lo, hi = max(lo, old_lo), min(hi, old_hi)
        if hi - lo > MAX_WIDTH * width:
            # The top trials are spread out: zoom in around the best one instead.
            half = MAX_WIDTH * width / 2
            centre = min(max(best, old_lo + half), old_hi - half)
            lo, hi = centre - half, centre + half
            rule = f"{span} too wide; {MAX_WIDTH:.0%} of the range around the best"
        else:
            rule = span
    if must:  # the best, and the trials noise cannot tell from it, are never planned out
        if min(must) < back(lo) or max(must) > back(hi):
            rule += f"; widened to hold the best and its ties ({fmt_value(min(must))}..{fmt_value(max(must))})"
        lo, hi = min(lo, to(min(must))), max(hi, to(max(must)))
    low, high = _clamp(name, back(lo), back(hi), dom, must or [])
    return RangePlan(name, dom, NumericRange(low=low, high=high, log=dom.log, integer=dom.integer), rule)


def _clamp(name: str, low: float, high: float, dom: NumericRange, must: list[float]) -> tuple[float, float]:
    """Keep the bounds inside what the field accepts (lr > 0, dropout < 1, ...), integers whole,
    and rounded to 3 significant digits outward where rounding would leave a value of `must` out."""
    nearest_low, nearest_high = _round_sig(low), _round_sig(high)
    low = _round_sig(low, rounding=decimal.ROUND_FLOOR) if must and nearest_low > min(must) else nearest_low
    high = _round_sig(high, rounding=decimal.ROUND_CEILING) if must and nearest_high < max(must) else nearest_high
    section = SEARCHABLE.get(name) if dom.integer is None else None  # a factory argument has no field
    owner = TrainSpec if section == "train" else ModelSpec if section == "model" else None
    # A factory argument has no field, so no bounds but its range's own.
    for bound in owner.model_fields[name].metadata if owner else []:
        if isinstance(bound, annotated_types.Gt):
            low = max(low, math.nextafter(float(bound.gt), math.inf))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Ge):
            low = max(low, float(bound.ge))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Lt):
            high = min(high, math.nextafter(float(bound.lt), -math.inf))  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Le):
            high = min(high, float(bound.le))  # type: ignore[arg-type]
    if is_int_param(name, dom):
        low, high = float(max(1, math.floor(low))), float(math.ceil(high))
    if high <= low:  # squeezed against a field limit: fall back to the old range
        return dom.low, dom.high
    return low, high


def _round_sig(v: float, digits: int = 3, rounding: str | None = None) -> float:
    """Ranges read better as 2.1e-04 than 2.0893e-04; three significant digits lose nothing useful.
    `rounding`: a decimal rounding mode (ROUND_FLOOR, ROUND_CEILING); nearest when None."""
    if v == 0 or not math.isfinite(v):
        return v
    if rounding is None:
        return float(f"{v:.{digits - 1}e}")
    d = decimal.Decimal(repr(v))
    return float(d.quantize(decimal.Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=rounding))


# --------------------------------------------------------------------------- the stages of a run


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RefinePlan:
    """The next stage of a run, as planned from its latest finished stage; nothing trained yet."""

    run_dir: Path
    previous: str  # the stage planned from
    stage: str  # the new stage's name: refine-1, refine-2, ...
    spec: Spec  # the new stage's resolved spec
    top: list[TrialResult]  # the trials the ranges are planned around, best first: the top-k or the tied set
    top_k: int
    tied: list[TrialResult]  # the previous stage's trials tied for best (95% intervals overlap the best's)
    val_size: int  # the validation examples its accuracies were measured on
    ranges: list[RangePlan]
    configs: list[TrialConfig]  # to train (refine.sampler tpe: the first; the model proposes the rest)
    skipped: list[TrialConfig]  # already trained at this budget (or drawn twice)
    history: list[dict[str, Any]]  # every stage's plan so far, this one last
    prior: list[TrialResult] = field(default_factory=list)  # refine.sampler tpe: earlier trials told the model
    notes: list[str] = field(default_factory=list)  # warnings on the stages read (lines that could not be)

    @property
    def spec_path(self) -> str:
        """The file errors about the new stage's spec name: the previous stage's spec.yaml."""
        return str(self.run_dir / self.previous / "spec.yaml")

    def epochs_shown(self) -> str:
        """The epochs the planned trials train: '4', or '6-12' when epochs are searched."""
        counts = sorted({c.train.epochs for c in self.configs}) or [self.spec.train.epochs]
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

    @property
    def trials(self) -> int:
        """The trials the stage trains (refine.sampler tpe: search.trials, most of them proposed later)."""
        return planned_trials(self.spec.search, self.configs)

    @property
    def from_tied(self) -> bool:
        """Planned around the trials tied for best: more of them than top-k."""
        return len(self.tied) > self.top_k

    def basis(self) -> str:
        """What the ranges were planned around: 'top 5 (trials 3, 1, ...)', or '12 trials tied for
        best, more than its top 5 (trials 3, 1, ...: their 95% intervals overlap, 1000 validation
        examples)'."""
        trials = ", ".join(str(r.trial) for r in self.top)
        if self.from_tied:
            return (
                f"{len(self.top)} trials tied for best, more than its top {self.top_k} "
                f"(trials {trials}: their 95% intervals overlap, {self.val_size} validation examples)"
            )
        return f"top {len(self.top)} (trials {trials})"

    def describe(self) -> list[str]:
        """The plan in lines a person reads: each range and why, then the stage's size."""
        train = self.spec.train
        lines = [p.describe() for p in self.ranges]
        lines.append(
            f"{self.stage}: {self.trials} trials x {self.epochs_shown()} epochs (lr decay {train.lr_decay:g}), "
            f"planned from {self.previous}'s {self.basis()}"
        )
        if self.spec.search.proposed:
            lines.append(
                f"{self.stage}: proposed by TPE after its first trial, told the {len(self.prior)} earlier trials "
                "inside the new ranges (at their shorter budget) and every trial of its own"
            )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} configurations already trained at this budget (or drawn twice)")
        return lines


def plan_refine(run_dir: Path, options: RefineOptions) -> RefinePlan:
    """Plan the next stage from the latest finished one (narrower around its top-k, or its trials
    tied for best when there are more, outward at an edge), longer training without lr decay; reads
    the run, writes nothing."""
    done = stages(run_dir)
    if not done:
        raise StoreError(f"{run_dir}: no finished stage to refine; {how_to_start(run_dir)}")
    previous = done[-1]
    loaded = {name: load_stage(run_dir, name) for name in done}  # each stage read once
    spec, results, previous_doc, _ = loaded[previous]
    left_out = "a trial recorded only there is left out of the plan"
    notes = [n for stage in loaded.values() if (n := stage.store.unreadable_note(left_out))]
    top_k = options.top_k or spec.refine.top_k
    data = stage_curve_data(run_dir / previous, spec.data)
    val_size = data.val_size
    verdicts = range_verdicts(results, spec.search, data)
    refuse_nothing_learned(run_dir / previous, verdicts)
    top, tied = planning_set(results, top_k, val_size)
    if not top:
        raise StoreError(f"{run_dir / previous}: no complete trial to refine around")
    stage_edges = edges(spec.search.space, top[0], verdicts)
    ranges = _longer_epochs(plan_ranges(spec.search.space, top, stage_edges, keep=tied), spec, options)
    new_spec = refined_spec(spec, ranges, options, previous_trials=len(results))
    configs, skipped = _not_yet_trained(
        trial_configs(new_spec, str(run_dir / previous / "spec.yaml"), one_config_ok=True),
        {
            config_key(c)
            for stage_spec, stage_results, _, _ in loaded.values()
            for c in trained_configs(stage_spec, stage_results)
        },
    )
    stage = f"refine-{len(done)}"
    entry = {
        "stage": stage,
        "planned_from": previous,
        "top_k": top_k,
        "top_trials": [r.trial for r in top],  # planned from: the top-k, or the tied set when larger
        "tied_trials": [r.trial for r in tied],
        "planned_from_tied": len(tied) > top_k,
        "val_size": val_size,
        "trials": planned_trials(new_spec.search, configs),
        "epochs": new_spec.train.epochs,
        "lr_decay": new_spec.train.lr_decay,
        "ranges": {p.name: p.to_dict() for p in ranges},
        "skipped_already_trained": [c.params for c in skipped],
    }
    prior = []
    if new_spec.search.proposed:  # the model kept: told the earlier trials before the stage's own
        prior = inside(new_spec.search, [r for stage in loaded.values() for r in stage.results])
        entry["told_earlier_trials"] = len(prior)
    history = [*previous_doc.get("history", []), jsonable(entry)]
    return RefinePlan(
        run_dir, previous, stage, new_spec, top, top_k, tied, val_size, ranges, configs, skipped, history, prior, notes
    )


def inside(search: SearchSpec, results: list[TrialResult]) -> list[TrialResult]:
    """The trials whose every searched value lies in `search`'s space (what a model over it can be told)."""
    return [
        r
        for r in results
        if all(name in r.params and _holds(dom, r.params[name]) for name, dom in search.space.items())
    ]


def _holds(dom: NumericRange | Categorical, value: Any) -> bool:
    if isinstance(dom, Categorical):
        return jsonable(value) in [jsonable(v) for v in dom.values]
    return isinstance(value, (int, float)) and dom.low <= value <= dom.high


def refuse_nothing_learned(stage_dir: Path, verdicts: dict[str, RangeVerdict]) -> None:
    """Nothing learned in the stage: its best trials are noise, and a range narrowed around them
    would be too. Refine stops and says what to change instead of guessing a new range."""
    said = next((v for v in verdicts.values() if v.verdict is Verdict.NOTHING_LEARNED and v.warning), None)
    if said is not None:
        raise StoreError(
            f"{stage_dir}: {said.warning}. Refine would narrow around noise: change the range in the spec "
            "and run coarse again"
        )


def _not_yet_trained(planned: list[TrialConfig], trained: set[str]) -> tuple[list[TrialConfig], list[TrialConfig]]:
    """(to train, skipped): a configuration already trained, or drawn twice in this stage, trains once."""
    configs: list[TrialConfig] = []
    skipped: list[TrialConfig] = []
    for cfg in planned:
        key = config_key(cfg)
        (skipped if key in trained else configs).append(cfg)
        trained.add(key)
    return configs, skipped


def _longer_epochs(plans: list[RangePlan], spec: Spec, options: RefineOptions) -> list[RangePlan]:
    """A searched epochs range would override the longer training: --epochs fixes epochs (and a
    list of values is dropped for the stage's fixed epochs); otherwise the planned range itself is
    stretched by epochs_factor. The plan then says what the new stage trains."""
    out = []
    for p in plans:
        if p.name == "epochs" and p.new is not None:
            if options.epochs or isinstance(p.new, Categorical):
                why = "--epochs" if options.epochs else "refine trains longer"
                p = RangePlan(p.name, p.old, None, f"fixed at {_stage_epochs(spec, options)} by {why}")
            else:
                factor = spec.refine.epochs_factor
                low = max(1, round(p.new.low * factor))
                high = max(round(p.new.high * factor), low + 1)
                stretched = NumericRange(low=low, high=high, log=p.new.log)
                p = RangePlan(p.name, p.old, stretched, f"{p.rule}; x{factor:g} epochs_factor")
        out.append(p)
    return out


def _stage_epochs(spec: Spec, options: RefineOptions) -> int:
    return options.epochs or max(1, round(spec.train.epochs * spec.refine.epochs_factor))


def refined_spec(spec: Spec, plans: list[RangePlan], options: RefineOptions, previous_trials: int) -> Spec:
    """The new stage's spec: the planned ranges, more epochs, refine's lr decay, the next seed."""
    data = spec.model_dump()
    data["search"]["space"] = {p.name: p.new.model_dump(exclude_none=True) for p in plans if p.new is not None}
    data["search"]["trials"] = options.trials or spec.refine.trials or previous_trials
    # A new seed per stage: the same seed would redraw the same positions in the new ranges.
    data["search"]["seed"] = spec.search.seed + 1
    data["search"]["sampler"] = spec.refine.sampler
    # The model kept: its first trial random search's, then proposals told the earlier trials too.
    wave = spec.search.tpe_settings.wave
    data["search"]["tpe"] = {"startup_trials": 1, "wave": wave} if spec.refine.sampler is Sampler.TPE else None
    data["train"]["epochs"] = _stage_epochs(spec, options)
    data["train"]["lr_decay"] = spec.refine.lr_decay
    return Spec.model_validate(data)


def trained_configs(spec: Spec, results: list[TrialResult]) -> list[TrialConfig]:
    """The configurations a finished stage trained, rebuilt from its spec and records."""
    out = []
    for r in results:
        if r.state is TrialState.STOPPED:  # stopped by halving short of its planned epochs: not trained at them
            continue
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in r.params.items()}  # JSON lists were tuples
        resolved = spec.resolved(params)
        out.append(TrialConfig(r.trial, params, resolved.model, resolved.train, spec.search.seed))
    return out


def config_key(cfg: TrialConfig) -> str:
    """What makes two trainings the same: the whole model and training setup, budget included."""
    return json.dumps(
        {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")}, sort_keys=True
    )
