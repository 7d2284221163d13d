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

import pandas as pd
from omegaconf import DictConfig

from degrade import hold
from degrade.models import build_model
from degrade.probes import common, gradcorr, identity, landscape, lesion
from degrade.probes.common import Tick
from degrade.probes.settings import NAMES, parse_kinds, settings_of
from degrade.spec import model_spec
from degrade.store import RunDir, StoreError, latest_sweep, read_parquet, read_sweep

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


def sweep_runs(out: str | Path, name: str | None) -> tuple[Path, str, list[str]]:
    """(store, sweep name, its run ids) of the named (default: latest) sweep; StoreError if none."""
    root = Path(out).expanduser()
    name = name or latest_sweep(root)
    if name is None:
        raise StoreError(f"no sweeps in {root}; run `degrade sweep` first")
    return root, name, list(read_sweep(root, name).get("runs", []))


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
        cfg = common.run_config(root, rid)
        # Only the blocks matter for counting evaluations: any input shape builds them.
        shape = (3, 32, 32) if cfg.model.family == "cnn" else (64,)
        skeleton = build_model(model_spec(cfg), shape, 10)
        for kind in kinds:
            where = common.path(root, rid, kind)
            current = common.recorded(where) == common.record(kind, settings[kind])
            jobs.append(Job(rid, kind, settings[kind], KINDS[kind].evaluations(settings[kind], skeleton),
                            where, current))
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


# --------------------------------------------------------------------------- reading


def load(out: str | Path, run_ids: list[str], kind: str) -> pd.DataFrame:
    """The rows of probe ``kind`` of the given runs (those that have its file), in one table."""
    frames = [f for rid in run_ids if (f := read_parquet(common.path(Path(out), rid, kind))) is not None]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep_probe(out: str | Path, name: str | None, kind: str) -> pd.DataFrame:
    """The rows of probe ``kind`` of every run of the named (default: latest) sweep."""
    root, _, run_ids = sweep_runs(out, name)
    return load(root, run_ids, parse_kinds([kind])[0])


def kinds_present(out: str | Path, run_ids: list[str]) -> list[str]:
    """The probe kinds at least one of the runs has a file of."""
    return [k for k in KINDS if any(common.path(Path(out), rid, k).is_file() for rid in run_ids)]


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Each probe's numbers per kind, quantity, weights, variant and depth: mean, std, runs."""
    if frame.empty:
        return pd.DataFrame(columns=["kind", "quantity", "weights", "variant", "depth", "runs", "mean",
                                     "std"])
    parts = []
    for kind, rows in frame.groupby("kind"):
        rows = rows[rows["quantity"].isin(KINDS[str(kind)].NUMBERS)].copy()
        if rows.empty:
            continue
        rows["weights"] = rows["weights"].fillna("final") if "weights" in rows else "final"
        g = rows.groupby(["kind", "quantity", "weights", "variant", "depth"], sort=False)["value"]
        parts.append(pd.DataFrame({"runs": g.count(), "mean": g.mean(), "std": g.std()}).reset_index())
    if not parts:
        return numbers(pd.DataFrame())
    table = pd.concat(parts, ignore_index=True)
    order = {q: i for m in KINDS.values() for i, q in enumerate(m.NUMBERS)}
    table["_q"] = table["quantity"].map(order)
    table["_k"] = table["kind"].map({k: i for i, k in enumerate(KINDS)})
    table["_w"] = table["weights"].map({"initial": 0, "final": 1})
    table = table.sort_values(["_k", "_q", "_w", "variant", "depth"]).drop(columns=["_q", "_k", "_w"])
    return table.reset_index(drop=True)


def summary(out: str | Path, name: str | None = None, kinds: list[str] | None = None) -> pd.DataFrame:
    """Every probe's numbers the sweep has (or those of ``kinds``), per variant and depth, over seeds."""
    root, _, run_ids = sweep_runs(out, name)
    chosen = kinds_present(root, run_ids) if kinds is None else parse_kinds(kinds)
    frames = [f for k in chosen if not (f := load(root, run_ids, k)).empty]
    return numbers(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
