"""What ``degrade sweep`` starts before it has parsed its arguments: its pool's workers.

A pool worker spends about a second importing torch before it can train, and the sweep's own
process spends about half a second (Typer, Hydra, the plan) before it knows which workers it
wants. Where torch has no GPU to offer, the sweep on more than one core nearly always wants one
worker per core. All but one of those are started first thing, so that their imports overlap
the plan on the cores the sweep's process leaves free: a sweep that trains nothing (finished,
or refused) then answers as soon as it would without them. The plan takes them and starts the
rest where it wants workers like these (``degrade.pool.ahead``), and stops them where it wants
others or none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from degrade import compute, pool

# What a pool worker imports before its first job arrives: the task function's module and the
# trainer (torch), about a second that then overlaps the sweep's own start.
WORKER_IMPORTS = ("degrade.task", "degrade.train")


def worker_env(at_once: int) -> dict[str, str]:
    """The environment of each of a sweep's ``at_once`` CPU pool workers (see
    ``compute.worker_env``), which end with this process."""
    return {
        **compute.worker_env(at_once, compute.usable_cores()),
        compute.SWEEP_PID_ENV: str(os.getpid()),
    }


def _trains_in_a_pool(args: Sequence[str], cores: int) -> bool:
    """Whether the command line ``args`` asks for a sweep that would likely train in degrade's
    pool on this machine's ``cores`` CPU cores (asked before anything else is parsed, so only
    roughly: a wrong guess costs the workers' start, never a wrong run)."""
    if list(args[:1]) != ["sweep"]:
        return False
    if any(a in ("--help", "--together") or a.startswith("--together=") for a in args):
        return False
    return cores > 1 and not compute.torch_may_have_gpu()


def sweep_workers(args: Sequence[str]) -> contextlib.AbstractContextManager[None]:
    """For the command line ``args`` (without the program's name), a block in which all but one
    of the pool workers its sweep will want are already starting; those no pool took stop when
    it ends."""
    cores = compute.usable_cores()
    if not _trains_in_a_pool(args, cores):
        return contextlib.nullcontext()
    return pool.ahead(cores - 1, worker_env(cores), WORKER_IMPORTS)
