"""What memory the machine still has for a run: the kernel's free memory, the room a memory
cgroup (a SLURM job's or a container's limit) leaves, and a GPU's free memory."""

from __future__ import annotations

import os
from pathlib import Path

# Where the kernel says which control groups this process is in, and where their files are.
# Module-level so that tests can point them at a fake hierarchy.
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a huge number (the largest page-aligned 64-bit value).
_V1_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    """The whole number in ``path``; None when it is absent, unreadable or ``max`` (no limit)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_dirs(base: Path, inner: str) -> list[Path]:
    """The folder of cgroup ``inner`` under ``base`` and each one above it, up to ``base``.

    Inside a container the path the kernel gives may not exist in its view of the hierarchy,
    whose root is then the container's own group: ``base`` is always looked at.
    """
    here = base / inner.strip("/")
    dirs = []
    while here != base and base in here.parents:
        dirs.append(here)
        here = here.parent
    return [*dirs, base]


def cgroup_available(proc_cgroup: Path | None = None, root: Path | None = None) -> int | None:
    """Bytes this process's memory cgroups still allow (the smallest room left under a limit on
    the way up to the root), or None when no limit is set or none can be read.

    cgroup v2: ``memory.max`` minus ``memory.current``; v1: ``memory.limit_in_bytes`` minus
    ``memory.usage_in_bytes``, in the ``memory`` hierarchy.
    """
    proc_cgroup = PROC_CGROUP if proc_cgroup is None else proc_cgroup
    root = CGROUP_ROOT if root is None else root
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    room: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, inner = parts
        if controllers == "":  # v2: one unified hierarchy
            files, base = ("memory.max", "memory.current"), root
        elif "memory" in controllers.split(","):
            files, base = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / controllers
        else:
            continue
        for folder in _cgroup_dirs(base, inner):
            limit, used = _read_int(folder / files[0]), _read_int(folder / files[1])
            if limit is not None and limit < _V1_UNLIMITED:
                room.append(max(0, limit - (used or 0)))
    return min(room) if room else None


def available_bytes(device: str) -> int | None:
    """Memory the device type ``device`` can still give, in bytes; None when it cannot be told.

    CPU: the smaller of MemAvailable of /proc/meminfo (else the free pages) and what the memory
    cgroup still allows (a SLURM job's or a container's limit; see ``cgroup_available``). CUDA:
    the free memory of the current GPU, asked of torch only here, when CUDA is the device.
    """
    if device == "cpu":
        have = [n for n in (_machine_available(), cgroup_available()) if n is not None]
        return min(have) if have else None
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return None


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
