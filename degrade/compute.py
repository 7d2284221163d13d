"""Compute settings by name (device, precision, step path) and what this machine offers.

A config names its device, precision and step path; they are checked here on those names, so
a bad one is refused before torch is imported. Torch is asked about a GPU only when the torch
installed here could have one (a CPU-only build says so in its version).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
PATHS = ("auto", "exact", "eager", "graph")
# Set by a sweep for the processes it starts: the pid its workers must outlive no longer than.
SWEEP_PID_ENV = "DEGRADE_SWEEP_PID"


class AccelError(ValueError):
    """A device or precision that this machine cannot give."""


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def jobs_at_once(n_jobs: int, jobs: int, cores: int) -> int:
    """How many of ``jobs`` a local launcher runs at once, reading ``n_jobs`` as joblib does:
    -1 is one per core, -2 all cores but one, and so on."""
    return max(1, min(jobs, cores + 1 + n_jobs if n_jobs < 0 else n_jobs))


def worker_env(at_once: int, cores: int) -> dict[str, str]:
    """This process's environment for a worker process that trains beside ``at_once - 1``
    others on ``cores`` cores: its BLAS/OpenMP pools sized to its share (unless set already)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(max(1, cores // max(at_once, 1))))
    return env


def torch_may_have_gpu() -> bool:
    """False only for a CPU-only torch build away from macOS: no CUDA and no MPS to ask about."""
    if sys.platform == "darwin":
        return True
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return True  # unknown build: let torch answer
    # CPU-only wheels carry the local version label "+cpu" (e.g. 2.13.0+cpu).
    return not version.endswith("+cpu")


def device_type(name: str) -> str:
    """The device type (``cpu``, ``cuda``, ``mps``) the device name ``name`` resolves to.

    ``auto`` picks CUDA, then MPS, then the CPU; a named device must be present (AccelError).
    """
    if name not in DEVICES:
        raise AccelError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch_may_have_gpu()):
        return "cpu"
    if not torch_may_have_gpu():
        if name == "cuda":
            raise AccelError("device cuda was asked for but no CUDA GPU is available")
        raise AccelError("device mps was asked for but MPS is not available")
    return resolve_device(name).type


def resolve_device(name: str) -> torch.device:
    """The torch device for the name ``name``: ``auto`` picks CUDA, then MPS, then the CPU; a
    named device must be present (AccelError). Imports torch: only here is a GPU asked about."""
    if name not in DEVICES:
        raise AccelError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AccelError("device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not has_mps:
        raise AccelError("device mps was asked for but MPS is not available")
    return torch.device(name)


def check_precision(name: str) -> None:
    """AccelError unless ``name`` is a precision there is."""
    if name not in PRECISIONS:
        raise AccelError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")


# CPU features that change a run's numbers: with one of them `trainer.precision=auto` is bf16.
NUMERICS_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_features() -> list[str]:
    """The CPU features of NUMERICS_FLAGS this machine has."""
    words = set(cpuinfo().split())
    return [f for f in NUMERICS_FLAGS if f in words]


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), per /proc/cpuinfo."""
    return bool(cpu_features())


def resolve_precision(name: str, device: str) -> str:
    """The precision a run on device type ``device`` computes in: ``auto`` is bf16 on CUDA and
    on CPUs with native bf16, fp32 elsewhere; ``fp32`` and ``bf16`` are themselves."""
    check_precision(name)
    if name != "auto":
        return name
    if device == "cuda" or (device == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def pin_precision(cfg: DictConfig) -> DictConfig:
    """Resolve ``trainer.precision=auto`` in place to what this machine computes the run in.

    The run's identity then names the numerics that actually ran: a store shared by machines
    with and without native bf16 keeps their runs apart, and a run never changes precision
    when it resumes elsewhere.
    """
    t = cfg.trainer
    t.precision = resolve_precision(str(t.precision), device_type(str(t.device)))
    return cfg


def check_path(name: str, device: str) -> None:
    """AccelError unless step path ``name`` exists and can run on device type ``device``."""
    if name not in PATHS:
        raise AccelError(f"unknown step path {name!r}; choose one of {', '.join(PATHS)}")
    if name == "graph" and device != "cuda":
        raise AccelError(f"trainer.path=graph needs a CUDA device, this run is on {device}")


def step_path(name: str, device: str) -> str:
    """The step path a run on device type ``device`` takes for ``name`` (checked by ``check_path``):
    ``auto`` is ``graph`` on CUDA and ``exact`` elsewhere."""
    check_path(name, device)
    if name == "auto":
        return "graph" if device == "cuda" else "exact"
    return name
