"""hpsearch sanity-check: the lecture's checks before a search (hpsearch.stages.sanity)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hpsearch.cli.console import err, note, out, say_model, warn
from hpsearch.cli.exits import guarded
from hpsearch.cli.options import DataRootOption, OutOption, SpecArgument
from hpsearch.cli.progress import TrialProgress
from hpsearch.cli.render import preflight, summary
from hpsearch.spec.options import StageOptions

if TYPE_CHECKING:
    from hpsearch.spec.schema import Spec
    from hpsearch.stages.sanity import SanityOutcome


def sanity_check(
    spec_path: SpecArgument,
    out_dir: OutOption = None,
    data_root: DataRootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    write_spec: Annotated[
        Optional[Path], typer.Option("--write-spec", help="Write a copy of the spec with the recommended lr range.")
    ] = None,
    junit: Annotated[
        Optional[Path],
        typer.Option("--junit", metavar="FILE", help="Also write the checks as JUnit XML (one testcase per check)."),
    ] = None,
) -> None:
    """The lecture's checks before a search: initial loss = ln(C), activation statistics at init,
    overfitting 20 examples, and a learning-rate probe. Exit code 1 if any check FAILs.

    Example: hpsearch sanity-check configs/cifar10_coarse.yaml --write-spec configs/next.yaml
    """
    started = time.perf_counter()
    with guarded():
        from hpsearch.spec.load import load_spec

        spec = load_spec(spec_path)
        preflight(spec, str(spec_path))
        from hpsearch.stages.sanity import run_sanity

        with TrialProgress() as progress:
            outcome = run_sanity(
                spec,
                str(spec_path),
                StageOptions(out=out_dir, data_root=data_root, command=tuple(sys.argv)),
                write_spec=write_spec,
                on_data=progress.on_data,
                on_step=progress.on_step,
                on_model=say_model,
                on_warning=warn,
                on_note=note,
            )
        render_sanity(outcome, spec, as_json, write_spec, junit, started)
    if outcome.report.failed:
        raise typer.Exit(code=1)


def render_sanity(
    outcome: SanityOutcome, spec: Spec, as_json: bool, write_spec: Path | None, junit: Path | None, started: float
) -> None:
    """The checks' tables (or JSON) on stdout; where the report, the JUnit file and the written spec
    are, or a hint at the lr range to search, on stderr; the checks in the CI step summary. `started`:
    the command's perf_counter at its start, for the JUnit file's time."""
    from hpsearch.output.ci import junit_xml, sanity_markdown, summary_section, write_junit
    from hpsearch.output.report import sanity_tables
    from hpsearch.sanity.probe import lr_range_hint

    if as_json:
        out.print_json(json.dumps(outcome.report.to_dict()))
    else:
        for table in sanity_tables(outcome.report):
            out.print(table)
    err.print(f"report: {outcome.report_path}", highlight=False)
    if junit is not None:
        write_junit(junit, junit_xml(outcome.report, spec.name, time.perf_counter() - started))
        err.print(f"junit: {junit}", highlight=False)
    verdict = "FAILED" if outcome.report.failed else "passed"
    summary(summary_section(f"hpsearch sanity-check: {spec.name} ({verdict})", sanity_markdown(outcome.report), []))
    if outcome.written_spec:
        # Quoted as the resume command is: a path with a space or a quote pastes into a shell whole.
        command = shlex.join(["hpsearch", "coarse", str(outcome.written_spec)])
        err.print(f"wrote {outcome.written_spec}: run {command}", highlight=False, soft_wrap=True)
    elif write_spec:
        warn(f"no lr range to recommend, so {write_spec} was not written")
    elif hint := lr_range_hint(spec, outcome.report.recommended_lr):
        err.print(f"hint: {hint}", highlight=False, soft_wrap=True)
