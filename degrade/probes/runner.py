"""Probing a sweep: which files to measure (and which are there already), measuring them, and
reading them back as tables.

The unit of work (and of resuming) is one probe of one run: its file is written atomically when
it is measured, and skipped on the next call while the settings it records are the ones asked
for. Only finished runs (state ``done``, with a checkpoint) are probed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from degrade import hold
from degrade.compute import usable_cores
from degrade.models import build_model
from degrade.pool import Outcome, Pool
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


def measure_run(out: Path, run_id: str, jobs: list[Job], tick: Tick | None = None,
                done: Callable[[Job], None] | None = None,
                cache: common.DataCache | None = None) -> list[Job]:
    """Measure ``jobs`` (all of run ``run_id``), writing each file; return them.

    A test's pause point (``degrade.hold``) counts the files this process has written, so a test
    can stop a probe between two files.
    """
    tick = tick or (lambda n: None)
    subject = common.subject(out, run_id, jobs[0].settings["images"], cache or common.DataCache())
    for job in jobs:
        subject.images = job.settings["images"]
        measure(job, subject, tick)
        if done is not None:
            done(job)
        pause = hold.from_env()
        written = next(_WRITTEN)
        if pause is not None:
            pause(written)
    return jobs


# Probe files this process has written: what a test's pause point counts.
_WRITTEN = itertools.count(1)


def workers(p: Plan) -> int:
    """Processes to measure with: one per core on the CPU (each one thread, which small
    convolutions use better than threads sharing a process), one where a run is on a GPU."""
    runs = {j.run_id for j in p.todo}
    if any(common.probe_device(p.out, rid).type != "cpu" for rid in runs):
        return 1
    return min(usable_cores(), len(runs))


def run(p: Plan, tick: Tick | None = None, done: Callable[[Job], None] | None = None,
        processes: int | None = None) -> list[Job]:
    """Measure every job of ``p`` not there yet, run by run, the costliest first; return them.

    ``tick(n)`` is called after n more evaluations and ``done(job)`` after each file is written
    (with several processes, as each run's files arrive).
    """
    by_run: dict[str, list[Job]] = {}
    for job in p.todo:
        by_run.setdefault(job.run_id, []).append(job)
    order = sorted(by_run, key=lambda rid: -sum(j.evaluations for j in by_run[rid]))
    n = workers(p) if processes is None else processes
    if n <= 1:
        cache = common.DataCache()
        return [j for rid in order for j in measure_run(p.out, rid, by_run[rid], tick, done, cache)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    measured: list[Job] = []

    def arrived(_: int, outcome: Outcome) -> None:
        for job in outcome.value if outcome.error is None else []:
            measured.append(job)
            if tick is not None:
                tick(job.evaluations)
            if done is not None:
                done(job)

    with Pool(n, env=lambda _: env) as pool:
        outcomes = pool.map(measure_run, [(p.out, rid, by_run[rid]) for rid in order], on_result=arrived)
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return measured
