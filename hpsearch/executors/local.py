"""Running a stage's trials: populations in this process, or spread over worker processes.

Defaults, measured on the 2-core machine this was built on (benchmarks/search_speed.py): one
process training populations with both cores beats two single-threaded worker processes running
side by side by a little (0.24 vs 0.25 s per trial-epoch of the two-layer net) and skips their
start-up, so `workers` defaults to 1. On a many-core machine one population's matmuls (about 1
GFLOP a step for 16 two-layer nets) stop scaling past roughly 8 threads, so the default there is one
worker per 8 cores, each with cores / workers threads; that part is reasoning, not a measurement.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

import torch

from hpsearch.data import Dataset
from hpsearch.executors.ray import execute_on_ray
from hpsearch.runs.records import TrialConfig, TrialEvents, TrialResult
from hpsearch.spec.options import ExecOptions
from hpsearch.training.factory import FactorySource, register_source
from hpsearch.training.models import build_model
from hpsearch.training.populations.group import train_group
from hpsearch.training.populations.plan import plan_populations

CPU_POPULATION_BYTES = 64 * 2**20  # weights + grads + optimizer state of one population on a CPU:
# larger populations fall out of cache and got slower per trial (P=16: 0.24 s, P=64: 0.28 s,
# P=100: 0.32 s per trial-epoch of the two-layer net)
GPU_MEMORY_FRACTION = 0.25  # of the free GPU memory for one population
THREADS_PER_WORKER = 8


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1) // THREADS_PER_WORKER)


def auto_population(cfg: TrialConfig, data: Dataset, trials: int | None = None) -> int:
    """How many trials of this shape to train together, from the memory one trial needs; for a
    user's network, measured: a few steps together against one trial alone (funcpop)."""
    if cfg.model.kind == "convnet" and data.x_train.device.type == "cpu":
        # Grouped convolutions on a CPU measured slower than one trial at a time (0.66x for 8 trials
        # of a 16-32 channel convnet on 2 cores), so convnets train one at a time there.
        return 1
    try:
        params = sum(p.numel() for p in build_model(cfg.model, data.input_shape, data.num_classes).parameters())
    except (RuntimeError, MemoryError):  # too large to build even once: each trial fails on its own
        return 1
    copies = 4 if cfg.train.optimizer.value == "adam" else 3  # weights, grads, 1-2 optimizer buffers
    per_trial = params * 4 * copies
    if data.x_train.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(data.x_train.device)
        budget = GPU_MEMORY_FRACTION * free
    else:
        budget = CPU_POPULATION_BYTES
    size = max(1, min(256, int(budget // per_trial)))
    if cfg.model.kind == "python":
        from hpsearch.training.populations.funcpop import measured_population

        return measured_population(cfg, data, size if trials is None else min(size, trials))
    return size


def planned_populations(configs: list[TrialConfig], data: Dataset, options: ExecOptions) -> list[list[TrialConfig]]:
    """The populations `execute` trains `configs` in: --population, else the size from memory."""
    size = options.population if options.population is not None else auto_population(configs[0], data, len(configs))
    return plan_populations(configs, size)


def execute(
    configs: list[TrialConfig],
    data: Dataset,
    options: ExecOptions,
    events: TrialEvents,
    worker_data: Callable[[], Dataset] | None = None,
    factory: FactorySource | None = None,
) -> None:
    """Train every config, reporting each population's start, finished trial-epochs and each trial's
    result (in this process) through `events`. `worker_data` builds the dataset inside a worker
    process (each loads it once); `factory`, a user's factory file as the stage read it, is what
    every process runs for that file. On Ctrl-C or SIGTERM the worker processes are stopped at once."""
    if not configs:
        return
    if factory is not None:
        register_source(factory)
    populations = planned_populations(configs, data, options)
    if options.ray is not None and worker_data is not None:
        execute_on_ray(populations, worker_data, options.ray, events, factory)
        return
    workers = options.workers if options.workers is not None else default_workers()
    if workers <= 1 or len(populations) == 1 or worker_data is None:
        for pop in populations:
            pop = events.ready(pop)
            events.start(pop)
            for result in train_group(pop, data, events.on_epoch):
                events.result(result)
        return
    _execute_in_workers(populations, workers, worker_data, events, factory)


# --------------------------------------------------------------------------- worker processes

_WORKER_DATA: Dataset | None = None


def _worker_init(
    make_data: Callable[[], Dataset], threads: int, driver: int, factory: FactorySource | None = None
) -> None:
    global _WORKER_DATA
    # Ctrl-C reaches the whole process group: the driver alone handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(driver)
    torch.set_num_threads(threads)  # cores / workers: the workers must not oversubscribe the cores
    if factory is not None:  # the text the driver read, even if the file was edited since
        register_source(factory)
    _WORKER_DATA = make_data()  # once per process, never once per trial


def _worker_train(pop: list[TrialConfig]) -> list[TrialResult]:
    assert _WORKER_DATA is not None
    return train_group(pop, _WORKER_DATA)


def _execute_in_workers(
    populations: list[list[TrialConfig]],
    workers: int,
    make_data: Callable[[], Dataset],
    events: TrialEvents,
    factory: FactorySource | None = None,
) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_worker_init,
        initargs=(make_data, threads, os.getpid(), factory),
    )
    queue = list(reversed(populations))
    pending: set[Future[list[TrialResult]]] = set()
    running: dict[Future[list[TrialResult]], list[TrialConfig]] = {}
    try:
        while queue or pending:
            while queue and len(pending) < workers:  # one population per worker in flight: the
                pop = events.ready(queue.pop())  # ones on_start has seen are the ones running
                events.start(pop)
                future = pool.submit(_worker_train, pop)
                running[future] = pop
                pending.add(future)
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pop = running.pop(future)
                for cfg, result in zip(pop, future.result(), strict=True):
                    events.result(result)
                    # a worker's epochs are known when its population returns
                    events.epochs(result.epochs_done - cfg.first_epoch)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the workers now rather than wait for their populations to finish."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    for proc in processes:
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent(driver: int) -> None:
    """Linux: a worker is killed when the driver dies, even by kill -9, instead of training on."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != driver:  # the driver died while this worker was still starting up
        os._exit(1)
