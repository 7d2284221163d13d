"""Which probe files a sweep needs (and which are there already), without torch.

The unit of work (and of resuming) is one probe of one run: its file is written atomically when
it is measured, and skipped on the next call while the settings it records are the ones asked
for, so a second call with nothing to do answers at once. Only finished runs (state ``done``,
with a checkpoint) are probed; every other run is named with the reason. Every setting, and the
size it asks for, is checked here, before anything is read or measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from degrade import footprint, memory
from degrade.config import compose_run
from degrade.probes.settings import ProbeError, check_size, parse_kinds, settings_of
from degrade.probes.tables import path, record, sweep_runs
from degrade.store import RunDir, StoreError, probe_record, store_root


@dataclass
class Job:
    """One probe of one run: its file, its settings, its cost, and whether it is there already."""

    run_id: str
    kind: str
    settings: dict[str, Any]
    evaluations: int  # filled in by runner.count for a job still to do
    path: Path
    current: bool  # the file is there with these settings: skipped


@dataclass
class Plan:
    """What ``degrade probe`` will measure in one sweep."""

    name: str
    out: Path
    jobs: list[Job]
    # Runs not probed, with why: not done, diverged, no checkpoint, a damaged file.
    unfinished: dict[str, str] = field(default_factory=dict)

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if not j.current]

    @property
    def evaluations(self) -> int:
        """Evaluations the jobs still to do take (the progress bar's total)."""
        return sum(j.evaluations for j in self.todo)


def is_current(job: Job) -> bool:
    """Whether the job's file is there with the settings it asks for (another call measured it)."""
    return probe_record(job.path, job.run_id, job.kind) == record(job.kind, job.settings)


def _not_probed(run: RunDir) -> str | None:
    """Why the run cannot be probed, or None when it can."""
    status = run.status()
    state = run.state() if status.get("state") != "damaged" else "damaged"
    if state == "damaged":
        return f"its status cannot be read ({status.get('error')})"
    if state == "diverged":
        return "it diverged (its loss stopped being finite): there are no final weights worth probing"
    if state != "done":
        return f"it is not finished ({state})"
    if not run.checkpoint.is_file():
        return "it has no checkpoint.pt (its final weights)"
    return None


def plan(
    out: str | Path, name: str | None, kinds: list[str] | None, probe: DictConfig | dict[str, Any]
) -> Plan:
    """The probes of sweep ``name`` (default: the latest) to measure with settings ``probe``.

    ProbeError for a setting that is not allowed or a size that would not fit (naming the
    largest that does), before anything is measured.
    """
    kinds = parse_kinds(kinds)
    settings = {k: settings_of(probe, k) for k in kinds}
    root, name, run_ids = sweep_runs(out, name)
    available = memory.available_bytes("cpu")
    jobs, unfinished = [], {}
    for rid in run_ids:
        try:
            run = RunDir(root, rid)
            why = _not_probed(run)
            cfg = run.read_config() if why is None else None
        except StoreError as e:
            why, cfg = str(e), None
        if why is not None or cfg is None:
            unfinished[rid] = why or "it has no config"
            continue
        shapes = footprint.data_shapes(cfg.data)
        for kind in kinds:
            check_size(
                kind,
                settings[kind],
                int(cfg.model.depth),
                prod(shapes.in_shape),
                shapes.train_images or shapes.images,
                available,
            )
            job = Job(rid, kind, settings[kind], 0, path(root, rid, kind), False)
            job.current = is_current(job)
            jobs.append(job)
    return Plan(name, root, jobs, unfinished)


def plan_asked(out: str | Path, name: str | None, kinds: list[str] | None, overrides: list[str]) -> Plan:
    """``plan`` with the settings of the ``probe`` config group and the user's ``probe.*``
    overrides; ProbeError for an override of anything else (a run's settings are its own)."""
    bad = [o for o in overrides if not o.lstrip("+~").startswith("probe.")]
    if bad:
        raise ProbeError(f"degrade probe takes probe.* overrides only, got {bad[0]!r}")
    return plan(store_root(out), name, kinds, compose_run(list(overrides)).probe)
