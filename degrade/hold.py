"""A pause point that lets a test interrupt a run at a known step; unset, it costs one check.

With ``DEGRADE_HOLD_RUN=ITERATION:PATH`` in a run's environment (it reaches launcher workers and
SLURM jobs with the rest of the environment), a run that has just taken optimizer step
ITERATION while the file PATH exists writes its pid to ``PATH.held`` and waits until PATH is
removed. A test creates PATH, starts a sweep, waits for ``PATH.held`` and then kills, requeues
or cancels the run knowing exactly how far it got, on a fast CPU or a slow one alike.

`degrade probe` counts probe files written instead of optimizer steps: with ITERATION 1 it
holds right after its first file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

ENV = "DEGRADE_HOLD_RUN"


def from_env() -> Callable[[int], None] | None:
    """The hold to call after each optimizer step with the run's iteration count, or None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    at, _, path = spec.partition(":")
    target, gate = int(at), Path(path)

    def hold(iteration: int) -> None:
        if iteration != target or not gate.exists():
            return
        gate.with_name(gate.name + ".held").write_text(str(os.getpid()))
        while gate.exists():
            time.sleep(0.05)

    return hold
