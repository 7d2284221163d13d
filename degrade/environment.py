"""The software and hardware a run trains with (kept in its status.json), and the same for the
machine that writes a report."""

from __future__ import annotations

import platform
from typing import Any

import torch

from degrade.accel import Accel
from degrade.compute import cpu_features, cpuinfo
from degrade.version import __version__


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """A person's name for ``device``: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS) on {platform.machine()}"
    return cpu_name()


def software() -> dict[str, str]:
    """Versions of degrade, torch and Python."""
    return {"degrade": __version__, "torch": torch.__version__, "python": platform.python_version()}


def of_run(acc: Accel) -> dict[str, Any]:
    """What a run trains with: software, device, precision, threads, numerics-changing CPU features."""
    return {
        **software(),
        "device": acc.device.type,
        "device_name": device_name(acc.device),
        "precision": acc.precision,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
    }


def this_machine() -> dict[str, Any]:
    """The machine calling this: software, CPU, its numerics-changing features, any GPU."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        **software(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "gpus": gpus,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
