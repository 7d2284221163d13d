"""Measuring what a plan (``planning``) says is still to do: the cost of each job up front, then
the jobs, run by run, in worker processes on the CPU."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from degrade import hold
from degrade.compute import usable_cores
from degrade.models import build_model
from degrade.pool import Outcome, Pool
from degrade.probes import common, gradcorr, identity, landscape, lesion
from degrade.probes.common import Tick
from degrade.probes.planning import Job, Plan
from degrade.probes.settings import NAMES
from degrade.probes.tables import record
from degrade.spec import model_spec

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (landscape, lesion, gradcorr, identity)}
assert tuple(KINDS) == NAMES


def count(p: Plan) -> Plan:
    """Fill in the evaluations each job still to do takes (the progress bar's total); ``p``."""
    skeletons: dict[str, Any] = {}
    for job in p.todo:
        if job.run_id not in skeletons:
            cfg = common.run_config(p.out, job.run_id)
            # Only the blocks matter for counting evaluations: any input shape builds them.
            shape = (3, 32, 32) if cfg.model.family == "cnn" else (64,)
            skeletons[job.run_id] = build_model(model_spec(cfg), shape, 10)
        job.evaluations = KINDS[job.kind].evaluations(job.settings, skeletons[job.run_id])
    return p


def measure(job: Job, subject: common.Subject, tick: Tick) -> None:
    """Measure one job on its run and write its file."""
    rows = KINDS[job.kind].measure(subject, job.settings, tick)
    head = {**subject.header(), "kind": job.kind}
    common.write(job.path, [{**head, **r} for r in rows], record(job.kind, job.settings))


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
