"""Probing a sweep: which files to measure (and which are there already), measuring them, and
reading them back as tables.

The unit of work (and of resuming) is one probe of one run: its file is written atomically when
it is measured, and skipped on the next call while the settings it records are the ones asked
for. Only finished runs (state ``done``, with a checkpoint) are probed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from degrade import hold
from degrade.models import build_model
from degrade.probes import common, gradcorr, identity, landscape, lesion
from degrade.probes.common import Tick
from degrade.probes.settings import NAMES, parse_kinds, settings_of
from degrade.probes.tables import path, sweep_runs
from degrade.spec import model_spec
from degrade.store import RunDir

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (landscape, lesion, gradcorr, identity)}
assert tuple(KINDS) == NAMES


@dataclass
class Job:
    """One probe of one run: its file, its settings, its cost, and whether it is there already."""

    run_id: str
    kind: str
    settings: dict[str, Any]
    evaluations: int
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
        skeleton = None
        for kind in kinds:
            where = path(root, rid, kind)
            if common.recorded(where) == common.record(kind, settings[kind]):
                jobs.append(Job(rid, kind, settings[kind], 0, where, current=True))
                continue
            if skeleton is None:
                cfg = common.run_config(root, rid)
                # Only the blocks matter for counting evaluations: any input shape builds them.
                shape = (3, 32, 32) if cfg.model.family == "cnn" else (64,)
                skeleton = build_model(model_spec(cfg), shape, 10)
            cost = KINDS[kind].evaluations(settings[kind], skeleton)
            jobs.append(Job(rid, kind, settings[kind], cost, where, current=False))
    return Plan(name, root, jobs, unfinished)


def measure(job: Job, subject: common.Subject, tick: Tick) -> None:
    """Measure one job on its run and write its file."""
    rows = KINDS[job.kind].measure(subject, job.settings, tick)
    head = {**subject.header(), "kind": job.kind}
    common.write(job.path, [{**head, **r} for r in rows], common.record(job.kind, job.settings))


def run(p: Plan, tick: Tick | None = None, done: Callable[[Job], None] | None = None) -> list[Job]:
    """Measure every job of ``p`` not there yet, run by run; return the jobs measured.

    ``tick(n)`` is called after each n evaluations, ``done(job)`` after each file is written. A
    test's pause point (``degrade.hold``) counts written files, so a test can stop a probe between
    two files.
    """
    tick = tick or (lambda n: None)
    pause = hold.from_env()
    cache = common.DataCache()
    measured: list[Job] = []
    subjects: dict[str, common.Subject] = {}
    for job in p.todo:
        if job.run_id not in subjects:
            subjects.clear()  # one run's weights in memory at a time
            subjects[job.run_id] = common.subject(p.out, job.run_id, job.settings["images"], cache)
        subject = subjects[job.run_id]
        subject.images = job.settings["images"]
        measure(job, subject, tick)
        measured.append(job)
        if done is not None:
            done(job)
        if pause is not None:
            pause(len(measured))
    return measured
