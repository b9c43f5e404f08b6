"""`hpsearch sanity-check`: the lecture's checks on the spec's data, their report written under
RUN/sanity, and optionally the spec rewritten with the probe's lr range."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpsearch.data import ProgressFn, load_data
from hpsearch.errors import StoreError
from hpsearch.runs.store import StageStore, atomic_write_text, refuse_nested_run
from hpsearch.sanity.checks import StepCallback, run_sanity_checks
from hpsearch.sanity.probe import spec_with_lr_range, written_lr_range
from hpsearch.sanity.results import SanityReport
from hpsearch.spec.edit import rewritten_spec, spec_to_yaml
from hpsearch.spec.load import IN_CODE
from hpsearch.spec.options import StageOptions
from hpsearch.spec.schema import Spec
from hpsearch.stages.base import RUNS_DIR
from hpsearch.stages.prepare import new_run_info, prepare_model, say_data


@dataclass
class SanityOutcome:
    report: SanityReport
    report_path: Path
    written_spec: Path | None


def run_sanity(
    spec: Spec,
    spec_path: str | None,
    options: StageOptions,
    *,
    write_spec: Path | None = None,
    on_data: ProgressFn | None = None,
    on_step: StepCallback | None = None,
    on_model: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SanityOutcome:
    """Run the four sanity checks, write RUN/sanity/report.json and, if asked and the probe
    recommends a range, a copy of the spec with that lr range. `on_model`, `on_warning`, `on_note`:
    as for run_coarse, and `spec_path` (None: a Spec built in code; the spec written is then
    spec_to_yaml's, without comments)."""
    where = spec_path if spec_path is not None else IN_CODE
    if write_spec is not None and write_spec.exists():
        raise StoreError(f"{write_spec}: already exists; choose another --write-spec path")
    if write_spec is not None and not (write_spec.parent.is_dir() and os.access(write_spec.parent, os.W_OK)):
        raise StoreError(f"{write_spec}: its folder {write_spec.parent} does not exist or is not writable")
    if options.out is not None:
        refuse_nested_run(options.out)
    run_dir = options.out if options.out is not None else RUNS_DIR / spec.name
    store = StageStore(run_dir / "sanity")
    data = load_data(spec, options.data_root, on_data, where)
    say_data(spec, data, on_warning, on_note)
    source = prepare_model(spec.model, data, where, on_model)  # the network sanity-check builds
    store.make_dir()  # before the checks run: an unwritable --out fails at once
    report = run_sanity_checks(spec, data, on_step)
    run = new_run_info(spec, spec_path, options)
    run["num_classes"] = data.num_classes
    if source is not None:
        run["factory_sha256"] = source.sha256
    doc = {"spec_path": spec_path, **report.to_dict(), "run": run}
    store.write_json("report.json", doc)
    written = None
    if write_spec is not None and report.recommended_lr is not None:
        low, high = written_lr_range(*report.recommended_lr)
        header = f"# Written by hpsearch sanity-check from {where}: lr range from the learning-rate probe.\n"
        new = spec_with_lr_range(spec, low, high)
        # A spec file keeps its comments; a Spec built in code is written as its set keys.
        kept = rewritten_spec(Path(spec_path), new, write_spec, "lr") if spec_path else None
        text = kept if kept is not None else spec_to_yaml(new, as_written=True)
        atomic_write_text(write_spec, header + text)
        written = write_spec
    return SanityOutcome(report, store.path / "report.json", written)
