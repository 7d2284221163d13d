"""Which probe files a sweep needs (and which are there already), without torch.

The unit of work (and of resuming) is one probe of one run: its file is written atomically when
it is measured, and skipped on the next call while the settings it records are the ones asked
for, so a second call with nothing to do answers at once. Only finished runs (state ``done``,
with a checkpoint) are probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from degrade.config import compose_run
from degrade.probes.settings import ProbeError, parse_kinds, settings_of
from degrade.probes.tables import path, record, recorded, sweep_runs
from degrade.store import RunDir


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
    unfinished: list[str] = field(default_factory=list)  # runs not probed: not done or no checkpoint

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if not j.current]

    @property
    def evaluations(self) -> int:
        """Evaluations the jobs still to do take (the progress bar's total)."""
        return sum(j.evaluations for j in self.todo)


def plan(out: str | Path, name: str | None, kinds: list[str] | None,
         probe: DictConfig | dict[str, Any]) -> Plan:
    """The probes of sweep ``name`` (default: the latest) to measure with settings ``probe``."""
    kinds = parse_kinds(kinds)
    settings = {k: settings_of(probe, k) for k in kinds}
    root, name, run_ids = sweep_runs(out, name)
    jobs, unfinished = [], []
    for rid in run_ids:
        run = RunDir(root, rid)
        if run.status().get("state") != "done" or not run.checkpoint.is_file():
            unfinished.append(rid)
            continue
        for kind in kinds:
            where = path(root, rid, kind)
            current = recorded(where) == record(kind, settings[kind])
            jobs.append(Job(rid, kind, settings[kind], 0, where, current))
    return Plan(name, root, jobs, unfinished)


def plan_asked(out: str | Path, name: str | None, kinds: list[str] | None, overrides: list[str]) -> Plan:
    """``plan`` with the settings of the ``probe`` config group and the user's ``probe.*``
    overrides; ProbeError for an override of anything else (a run's settings are its own)."""
    bad = [o for o in overrides if not o.lstrip("+~").startswith("probe.")]
    if bad:
        raise ProbeError(f"degrade probe takes probe.* overrides only, got {bad[0]!r}")
    return plan(out, name, kinds, compose_run(list(overrides)).probe)
