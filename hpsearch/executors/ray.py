"""Trials (or populations) as Ray tasks: `--executor ray`. The driver stays the only writer of the
run directory: results come back here and are recorded by the caller, so resume, edge flags,
refine and report work on a Ray run as on a local one.

Each Ray worker process loads the dataset once, from its own data root (the same DataRecipe the
local worker processes use) and keeps it for every later task. A task whose worker process dies
(killed, out of memory, node lost) is submitted again, at most `max_retries` times; each trial is
recorded once, with the lost attempts kept in its `attempts` list.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hpsearch.data import Dataset
from hpsearch.errors import HpsearchError, first_line
from hpsearch.runs.records import TrialConfig, TrialEvents, TrialResult, TrialState
from hpsearch.spec.options import RayOptions
from hpsearch.training.factory import FactorySource, register_source
from hpsearch.training.populations.group import train_group

_DATA: dict[Any, Dataset] = {}  # per Ray worker process: recipe -> dataset, loaded once


def _train_task(
    pop: list[TrialConfig], make_data: Callable[[], Dataset], threads: int, factory: FactorySource | None
) -> list[TrialResult]:
    """Runs inside a Ray worker process."""
    import torch

    torch.set_num_threads(threads)
    if factory is not None:  # the driver's text of the user's factory file: this node may lack the file
        register_source(factory)
    if make_data not in _DATA:
        _DATA[make_data] = make_data()
    return train_group(pop, _DATA[make_data])


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HpsearchError("--executor ray needs Ray: pip install 'hpsearch[ray]'") from None
    return ray


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, on an address nothing listens at (ray.init would retry for
    minutes). "auto" and None are left to Ray."""
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise HpsearchError(f"--ray-address: expected HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise HpsearchError(
            f"--ray-address: nothing answers at {address} ({e.strerror or e}); is the Ray head running?"
        ) from None


def check_ray(options: RayOptions) -> None:
    """Before a run directory is touched: Ray is installed and the address answers."""
    _ray()
    check_address(options.address)


def execute_on_ray(
    populations: list[list[TrialConfig]],
    make_data: Callable[[], Dataset],
    options: RayOptions,
    events: TrialEvents,
    factory: FactorySource | None = None,
) -> None:
    """Run `populations` as Ray tasks; the caller has run check_ray(options) already. `factory`, a
    user's factory file as the driver read it, travels with every task."""
    with ray_session(options) as ray:
        _check_resources(ray, options)
        _run(ray, populations, make_data, options, events, factory)


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Ray, started (or joined at options.address) here unless it already is, and shut down on the
    way out if it was started here: a stage that executes several times (sampler: tpe's waves)
    starts it once."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        # ray.init installs its own SIGTERM handler: ours (record what ran, exit 143) is put back.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
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
            raise HpsearchError(f"--ray-address: cannot start or join Ray at {where}: {first_line(e)}") from None
        finally:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _check_resources(ray: Any, options: RayOptions) -> None:
    """A task asking for more than the whole cluster has would wait forever."""
    total = ray.cluster_resources()
    for key, asked, name in (("CPU", options.num_cpus, "num_cpus"), ("GPU", options.num_gpus, "num_gpus")):
        if asked > total.get(key, 0):
            raise HpsearchError(
                f"resources.{name}: {asked:g} per task, but the Ray cluster has {total.get(key, 0):g} {key}s in all: "
                "no task could start (lower it, or add nodes)"
            )


def _package_path() -> list[str]:
    """Where this hpsearch is imported from, so workers started elsewhere import the same code."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]


def _run(
    ray: Any,
    populations: list[list[TrialConfig]],
    make_data: Callable[[], Dataset],
    options: RayOptions,
    events: TrialEvents,
    factory: FactorySource | None,
) -> None:
    threads = max(1, int(options.num_cpus))
    task = ray.remote(_train_task).options(
        num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0, name="hpsearch_trials"
    )
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // options.num_cpus))
    queue = list(reversed(populations))
    attempts: dict[int, list[dict[str, Any]]] = {}  # id(population) -> its lost attempts
    pending: dict[Any, list[TrialConfig]] = {}
    try:
        while queue or pending:
            while queue and len(pending) < slots:  # only what can run now is in flight
                pop = queue.pop()
                if not attempts.get(id(pop)):  # a retry is still the same running trials, as prepared
                    pop = events.ready(pop)
                    events.start(pop)
                pending[task.remote(pop, make_data, threads, factory)] = pop
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            pop = pending.pop(ref)
            lost = attempts.setdefault(id(pop), [])
            try:
                results = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # our code raised: retrying would fail the same way
                cause = getattr(e, "cause", None)
                if isinstance(cause, HpsearchError):  # e.g. no dataset under that worker's data root
                    raise type(cause)(f"on a Ray worker: {cause}") from None
                raise HpsearchError(f"a Ray task failed: {first_line(cause or e)}") from None
            except ray.exceptions.RayError as e:  # the worker process or its node died
                lost.append({"attempt": len(lost) + 1, "error": f"{type(e).__name__}: {first_line(e)}"})
                if len(lost) <= options.max_retries:
                    queue.append(pop)
                    continue
                results = [_lost(cfg, lost) for cfg in pop]
            for cfg, r in zip(pop, results, strict=True):
                r.attempts = list(lost)
                events.result(r)
                events.epochs(r.epochs_done - cfg.first_epoch)
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
