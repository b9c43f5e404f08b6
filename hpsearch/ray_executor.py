"""Trials (or populations) as Ray tasks: `--executor ray`. The driver stays the only writer of the
run directory: results come back here and are recorded by the caller, so resume, edge flags,
refine and report work on a Ray run as on a local one.

Each Ray worker process loads the dataset once, from its own data root (the same DataRecipe the
local worker processes use) and keeps it for every later task. A task whose worker process dies
(killed, out of memory, node lost) is submitted again, at most `max_retries` times; each trial is
recorded once, with the lost attempts kept in its `attempts` list."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpsearch.data import Dataset
from hpsearch.errors import HpsearchError
from hpsearch.trial import EpochCallback, TrialConfig, TrialResult, TrialState

_DATA: dict[Any, Dataset] = {}  # per Ray worker process: recipe -> dataset, loaded once


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray instance (or join $RAY_ADDRESS)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2


def _train_task(pop: list[TrialConfig], make_data: Callable[[], Dataset], threads: int) -> list[TrialResult]:
    """Runs inside a Ray worker process."""
    import torch

    from hpsearch.executor import _train

    torch.set_num_threads(threads)
    if make_data not in _DATA:
        _DATA[make_data] = make_data()
    return _train(pop, _DATA[make_data])


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HpsearchError("--executor ray needs Ray: pip install 'hpsearch[ray]'") from None
    return ray


def execute_on_ray(
    populations: list[list[TrialConfig]],
    make_data: Callable[[], Dataset],
    options: RayOptions,
    on_result: Callable[[TrialResult], None],
    on_epoch: EpochCallback | None,
    on_start: Callable[[list[TrialConfig]], None] | None,
) -> None:
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=options.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_package_path())}},
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = options.address or "a local instance"
            raise HpsearchError(f"--ray-address: cannot start or join Ray at {where}: {e}") from None
    try:
        _run(ray, populations, make_data, options, on_result, on_epoch, on_start)
    finally:
        if started_here:
            ray.shutdown()


def _package_path() -> list[str]:
    """Where this hpsearch is imported from, so workers started elsewhere import the same code."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]


def _run(
    ray: Any,
    populations: list[list[TrialConfig]],
    make_data: Callable[[], Dataset],
    options: RayOptions,
    on_result: Callable[[TrialResult], None],
    on_epoch: EpochCallback | None,
    on_start: Callable[[list[TrialConfig]], None] | None,
) -> None:
    threads = max(1, int(options.num_cpus))
    task = ray.remote(_train_task).options(
        num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0, name="hpsearch_trials"
    )
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // options.num_cpus))
    queue = list(reversed(populations))
    attempts: dict[int, list[dict[str, Any]]] = {}  # population index -> lost attempts
    index = {id(pop): i for i, pop in enumerate(populations)}
    pending: dict[Any, list[TrialConfig]] = {}
    try:
        while queue or pending:
            while queue and len(pending) < slots:  # only what can run now is in flight
                pop = queue.pop()
                if on_start and not attempts.get(index[id(pop)]):
                    on_start(pop)
                pending[task.remote(pop, make_data, threads)] = pop
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            pop = pending.pop(ref)
            lost = attempts.setdefault(index[id(pop)], [])
            try:
                results = ray.get(ref)
            except ray.exceptions.RayTaskError:
                raise  # our own code failed: not a lost worker, retrying would fail the same way
            except ray.exceptions.RayError as e:  # the worker process or its node died
                lost.append({"attempt": len(lost) + 1, "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
                if len(lost) <= options.max_retries:
                    queue.append(pop)
                    continue
                results = [_lost(cfg, lost) for cfg in pop]
            for r in results:
                r.attempts = list(lost)
                on_result(r)
                if on_epoch:
                    on_epoch(r.epochs_done)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _lost(cfg: TrialConfig, lost: list[dict[str, Any]]) -> TrialResult:
    return TrialResult(
        trial=cfg.trial_id,
        state=TrialState.FAILED,
        params=dict(cfg.params),
        error=f"its worker process died {len(lost)} times; last: {lost[-1]['error']}",
    )
