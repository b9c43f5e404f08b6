"""`train.precision: auto` made a choice, once per stage, before any trial trains.

bf16 autocast pays only where the device multiplies bfloat16 natively: CUDA from compute capability
8.0 (tensor cores), a CPU whose flags show avx512_bf16 or amx_bf16. Elsewhere torch emulates it and a
step runs slower than in fp32, so auto takes fp32 without timing anything. Where the hardware has it,
a few timed steps of the stage's first trial in each precision decide: bf16 only if it is faster.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hpsearch.data import Dataset
from hpsearch.runs.records import PrecisionChoice, TrialConfig
from hpsearch.spec.choices import Precision
from hpsearch.training.populations.group import step_seconds

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
FASTER = 1.05  # bf16 must beat fp32 by this much: a tie on a noisy machine is not worth the rounding


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (lscpu's "Model name"); "unknown" where /proc/cpuinfo has none."""
    return _field(cpuinfo, "model name") or "unknown"


def machine() -> dict[str, Any]:
    """What a speed figure was measured on: the CPU model, its bf16 flags, torch's threads and version."""
    return {
        "cpu": cpu_model(),
        "bf16_flags": sorted(cpu_flags() & set(CPU_BF16_FLAGS)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (an empty set where /proc/cpuinfo lists none: another OS, say)."""
    return set((_field(cpuinfo, "flags") or _field(cpuinfo, "Features") or "").split())


def _field(cpuinfo: str | None, key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo's text (read from the file when None)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def native_bf16(device: torch.device, flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively, and the evidence in a few words."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return True, f"CUDA capability {major}.{minor} has bf16 tensor cores"
        return False, f"CUDA capability {major}.{minor} is below 8.0: no native bf16"
    found = sorted((cpu_flags() if flags is None else flags) & set(CPU_BF16_FLAGS))
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, f"this CPU has no native bf16: no {' or '.join(CPU_BF16_FLAGS)} in its flags"


def choose_precision(cfg: TrialConfig, data: Dataset, flags: set[str] | None = None) -> PrecisionChoice:
    """The precision trials of `cfg`'s kind train in: the spec's own, or for auto the measured
    choice. `flags`: the CPU's (cpu_flags() when None)."""
    if cfg.train.precision is not Precision.AUTO:
        return PrecisionChoice(cfg.train.precision, "set in the spec", asked=cfg.train.precision)
    native, why = native_bf16(data.x_train.device, flags)
    if not native:
        return PrecisionChoice(Precision.FP32, f"auto: {why}")
    fp32 = step_seconds([with_precision(cfg, Precision.FP32)], data)[0]
    bf16 = step_seconds([with_precision(cfg, Precision.BF16)], data)[0]
    speedup = fp32 / bf16
    chosen = Precision.BF16 if speedup >= FASTER else Precision.FP32
    return PrecisionChoice(chosen, f"auto: {why}; a bf16 step took {1 / speedup:.2f}x fp32's time", round(speedup, 3))


def choice_for(cfg: TrialConfig, data: Dataset, recorded: dict[str, Any] | None, source: str) -> PrecisionChoice:
    """The choice an earlier stage recorded (`source`'s run.json), else one made now."""
    if recorded is None:
        return choose_precision(cfg, data)
    earlier = PrecisionChoice.from_document(recorded)
    return replace(earlier, reason=f"as {source} trained: {earlier.reason}")


def with_precision(cfg: TrialConfig, precision: Precision) -> TrialConfig:
    return replace(cfg, train=cfg.train.model_copy(update={"precision": precision}))


def resolved(configs: list[TrialConfig], choice: PrecisionChoice | None) -> list[TrialConfig]:
    """The configs with auto replaced by the stage's choice (a searched precision's other values kept)."""
    if choice is None:
        return configs
    return [with_precision(c, choice.precision) if c.train.precision is Precision.AUTO else c for c in configs]
