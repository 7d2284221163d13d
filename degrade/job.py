"""One job of a sweep: train one run into the store under the run's lock, or skip it when done.

It runs in whatever process a launcher gives it (the sweep's own, a pool worker, a joblib or
SLURM job) and never raises for the run's own sake. Torch is imported only when a run trains.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from degrade import compute, store, tblog
from degrade.runids import run_id

T = TypeVar("T")
# Training one step at a time: yields after every optimizer step, returns what the whole does.
# Runs trained together (`degrade sweep --together`) are interleaved from one thread so.
Steps = Generator[None, None, T]
# What trains one run into the store (``degrade.train.run_steps``), given by the caller: training
# is the floor above this one, so a job is handed it rather than importing it.
Training = Callable[[DictConfig, Path], Steps["RunResult"]]


@dataclass
class RunResult:
    """What one run ended with."""

    run_id: str
    state: str  # done | diverged | failed | skipped
    epochs_done: int  # as the status file's ``epochs_done`` (its ``epochs`` is the run's total)
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain values, as a job returns it across processes."""
        return {
            "run_id": self.run_id,
            "state": self.state,
            "epochs_done": self.epochs_done,
            "final": self.final,
            "error": self.error,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, r: dict[str, Any], out: Path) -> RunResult:
        """The result a job returned, with its run folder in the store ``out``."""
        return cls(
            r["run_id"],
            r["state"],
            r["epochs_done"],
            r["final"] or {},
            r["error"],
            store.RunDir(out, r["run_id"]).path,
            list(r.get("warnings") or []),
        )


def process_started() -> float:
    """When this process started (Unix time), from the kernel where it says; else when this
    module was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # start, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()


def _exit_with_parent() -> None:
    """End this joblib worker when the sweep that started it dies (even by SIGKILL).

    The sweep's pid comes from the environment the worker was started with, so a worker whose
    sweep died before this point (it has been handed to init already) ends before its job.
    Every file a run writes is replaced atomically and its lock is the kernel's, so ending
    mid-epoch loses only that epoch, which a rerun trains again.
    """
    parent = int(os.environ.get(compute.SWEEP_PID_ENV) or os.getppid())
    if parent == os.getpid():
        return  # joblib runs a lone job (one core: n_jobs 1) in the sweep's own process
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="degrade-parent-watch").start()


def _settle_joblib_worker() -> None:
    """Once per joblib worker process: end it with its sweep, and keep it to one GPU.

    The GPU is chosen before CUDA starts in the worker, from the number of its first job:
    jobs 0..n-1 start on n different workers, so n workers spread over the GPUs.
    """
    if "DEGRADE_WORKER_SETTLED" in os.environ or "hydra" not in sys.modules:
        return  # not a joblib worker: Hydra runs those jobs, so it is imported there
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if "joblib" not in str(hc.launcher.get("_target_", "")):
        return
    os.environ["DEGRADE_WORKER_SETTLED"] = "1"
    _exit_with_parent()
    from degrade import accel

    gpu = accel.gpu_for_job(hc.job.num, os.environ.get("CUDA_VISIBLE_DEVICES"), accel.gpu_count())
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def drain(steps: Steps[T]) -> T:
    """Run ``steps`` to the end and return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def run_job(cfg: DictConfig, train: Training) -> dict[str, Any]:
    """One job: train the run ``cfg`` describes into the store with ``train``, never raising
    for the run's sake.

    A run folder this process may not write fails the run with that said (a rerun cannot help
    until its permissions change); the folder cannot record it.
    """
    return drain(job_steps(cfg, train))


def job_steps(cfg: DictConfig, train: Training, settle: bool = True) -> Steps[dict[str, Any]]:
    """``run_job`` one optimizer step at a time, holding the run's lock throughout.

    ``settle=False`` when the caller interleaves several runs in its own process (``--together``)
    rather than being a launcher's worker.
    """
    if settle:
        _settle_joblib_worker()
    compute.pin_precision(cfg)  # as the sweep planned it; a launcher's worker composes "auto" anew
    out = Path(cfg.out)
    rid = run_id(cfg)
    try:
        # The sweep checked the run's folder before launching; a link planted since is refused here.
        run = store.RunDir(out, rid)
    except store.StoreError as e:
        return RunResult(rid, "failed", 0, error=str(e)).as_dict()
    try:
        with run.lock():
            result = yield from _under_lock(cfg, out, run, train)
    except OSError as e:
        if e.errno not in _UNWRITABLE:
            raise
        result = RunResult(
            rid,
            "failed",
            0,
            path=run.path,
            error=(f"cannot write to run folder {run.path}: {e.strerror}; make it writable, then rerun"),
        )
    return result.as_dict()


def _under_lock(cfg: DictConfig, out: Path, run: store.RunDir, train: Training) -> Steps[RunResult]:
    # Under the lock: another sweep may have finished this run while we waited.
    final = run.finished()
    if final is not None:
        log_finished(cfg, run)
        done = int(run.status().get("epochs_done", 0))
        return RunResult(run.id, "skipped", done, final=final, path=run.path)
    try:
        return (yield from train(cfg, out))
    except OSError as e:
        if e.errno in _UNWRITABLE:
            raise
        return _failed(run, e)
    except Exception as e:  # noqa: BLE001 - one failed run must not end the sweep
        return _failed(run, e)


def log_finished(cfg: DictConfig, run: store.RunDir) -> None:
    """The TensorBoard events of a finished run's epochs that its folder lacks, when ``cfg``
    switches TensorBoard on: a run done before the switch was on is shown like the others."""
    if not tblog.wanted(cfg):
        return
    metrics, layers = run.metrics_table(), run.layers_table()
    rows = [] if metrics is None else metrics.to_pylist()
    tblog.catch_up(cfg, run.path, rows, [] if layers is None else layers.to_pylist())


def _failed(run: store.RunDir, e: BaseException) -> RunResult:
    msg = f"{e.__class__.__name__}: {e}"
    run.set_status("failed", error=msg, traceback=traceback.format_exc())
    return RunResult(run.id, "failed", 0, error=msg, path=run.path)
