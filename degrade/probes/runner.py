"""Measuring what a plan (``planning``) says is still to do: the cost of each job up front, then
the jobs, run by run, in worker processes on the CPU."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from degrade import hold
from degrade.compute import usable_cores
from degrade.models import build_model
from degrade.pool import Outcome, Pool, WorkerDied
from degrade.probes import common, gradcorr, identity, landscape, lesion
from degrade.probes.common import Tick
from degrade.probes.planning import Job, Plan, is_current
from degrade.probes.settings import NAMES, ProbeError
from degrade.probes.tables import record
from degrade.spec import model_spec
from degrade.store import RunDir, StoreError

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
    common.write(
        subject.out, job.run_id, job.kind, [{**head, **r} for r in rows], record(job.kind, job.settings)
    )


def measure_run(
    out: Path,
    run_id: str,
    jobs: list[Job],
    tick: Tick | None = None,
    done: Callable[[Job], None] | None = None,
    cache: common.DataCache | None = None,
) -> list[Job]:
    """Measure ``jobs`` (all of run ``run_id``) holding the run's lock, writing each file; return
    those measured here.

    Under the lock a job whose file another call has measured meanwhile (with the same settings)
    is skipped: two ``degrade probe`` calls never measure the same file twice. A test's pause
    point (``degrade.hold``) counts the files this process has written, so a test can stop a
    probe between two files.
    """
    tick = tick or (lambda n: None)
    measured: list[Job] = []
    with RunDir(out, run_id).lock():
        left = [j for j in jobs if not is_current(j)]
        if not left:
            return measured
        subject = common.subject(out, run_id, left[0].settings["images"], cache or common.DataCache())
        for job in left:
            subject.images = job.settings["images"]
            measure(job, subject, tick)
            measured.append(job)
            if done is not None:
                done(job)
            pause = hold.from_env()
            written = next(_WRITTEN)
            if pause is not None:
                pause(written)
    return measured


# Probe files this process has written: what a test's pause point counts.
_WRITTEN = itertools.count(1)


def workers(p: Plan) -> int:
    """Processes to measure with: one per core on the CPU (each one thread, which small
    convolutions use better than threads sharing a process), none where a run is on a GPU (the
    calling process measures there)."""
    runs = {j.run_id for j in p.todo}
    if any(common.probe_device(p.out, rid).type != "cpu" for rid in runs):
        return 0
    return max(1, min(usable_cores(), len(runs)))


@dataclass
class Measured:
    """What ``run`` did: the files it measured, and the runs it could not probe, with why."""

    jobs: list[Job] = field(default_factory=list)
    not_probed: dict[str, str] = field(default_factory=dict)


def run(
    p: Plan, tick: Tick | None = None, done: Callable[[Job], None] | None = None, processes: int | None = None
) -> Measured:
    """Measure every job of ``p`` not there yet, run by run, the costliest first.

    On the CPU every run is measured in a worker process of one thread, the last one as much as
    the first, so a file's numbers do not depend on how many runs were left to measure (after a
    kill, say). ``tick(n)`` is called after n more evaluations and ``done(job)`` after each file
    is written (with several processes, as each run's files arrive). A run whose weights cannot
    be read is named in the result's ``not_probed``; the others go on.
    """
    by_run: dict[str, list[Job]] = {}
    for job in p.todo:
        by_run.setdefault(job.run_id, []).append(job)
    order = sorted(by_run, key=lambda rid: -sum(j.evaluations for j in by_run[rid]))
    n = workers(p) if processes is None else processes
    result = Measured()
    if n == 0:
        cache = common.DataCache()
        for rid in order:
            try:
                result.jobs += measure_run(p.out, rid, by_run[rid], tick, done, cache)
            except ProbeError as e:
                result.not_probed[rid] = str(e)
        return result
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def arrived(index: int, outcome: Outcome) -> None:
        for job in outcome.value if outcome.error is None else []:
            result.jobs.append(job)
            if tick is not None:
                tick(job.evaluations)
            if done is not None:
                done(job)

    with Pool(n, env=lambda _: env) as pool:
        outcomes = pool.map(measure_run, [(p.out, rid, by_run[rid]) for rid in order], on_result=arrived)
    for rid, outcome in zip(order, outcomes, strict=True):
        if isinstance(outcome.error, (ProbeError, StoreError)):
            result.not_probed[rid] = str(outcome.error)
        elif isinstance(outcome.error, WorkerDied):
            raise ProbeError(
                f"the process measuring run {rid} died ({outcome.error}); what it finished is "
                "kept: rerun `degrade probe` to measure the rest"
            ) from None
        elif outcome.error is not None:
            raise outcome.error
    return result
