"""Local parallel jobs for Hydra: ``hydra/launcher=local_parallel``, degrade's process pool.

Each job's config is composed here, in the sweep's process, as Hydra's own launchers do; the
pool's workers receive the job's config ready to run and call the task function on it.
Workers end with the sweep's process however it ends (see ``degrade.pool``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class LocalParallelLauncher(Launcher):
    """Up to ``n_jobs`` jobs at once in worker processes on this machine (-1: one per core)."""

    def __init__(self, n_jobs: int = -1) -> None:
        super().__init__()
        self.n_jobs = int(n_jobs)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        # Jobs' configs, without Hydra's node, that the sweeper has already (degrade's sweeper
        # fills it), by their overrides: each is used once, for the job it was composed for.
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep what Hydra gives every launcher: its context, the task and the sweep's config."""
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs in the pool's workers; their returns in the order of ``job_overrides``."""
        from degrade import headstart, pool
        from degrade.compute import jobs_at_once, usable_cores

        setup_globals()
        assert self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        cores = usable_cores()
        at_once = jobs_at_once(self.n_jobs, len(job_overrides), cores)
        # Started first (or taken from those the sweep started ahead): a worker takes a second
        # to import torch, and the jobs are composed meanwhile.
        env = _worker_env(self.config, at_once, cores)
        with pool.Pool(at_once, env=env, preload=headstart.WORKER_IMPORTS) as workers:
            tasks = self._compose(job_overrides)
            outcomes = workers.map(self.task_function, [(t,) for t in tasks])
        failed = [o.error for o in outcomes if o.error is not None]
        if failed:
            # As joblib's launcher does: the sweep sees the job's own error (a full disk, a
            # worker killed), raised here once every other job has had its turn.
            raise failed[0]
        returns = []
        for overrides, task, outcome in zip(job_overrides, tasks, outcomes, strict=True):
            # No per-job Hydra config: a worker runs the task without Hydra's job runtime.
            ret = JobReturn(
                overrides=list(overrides),
                cfg=task,
                working_dir=os.getcwd(),
                task_name=self.config.hydra.job.name,
                status=JobStatus.COMPLETED,
            )
            ret.return_value = outcome.value
            returns.append(ret)
        return returns

    def _compose(self, job_overrides: Sequence[Sequence[str]]) -> list[DictConfig]:
        """Each job's config without Hydra's part, as Hydra's launchers compose it."""
        from degrade.composed import without_hydra

        assert self.config is not None and self.hydra_context is not None
        tasks = []
        loader = self.hydra_context.config_loader
        for overrides in job_overrides:
            task = self.composed.pop(tuple(overrides), None)
            if task is None:
                task = without_hydra(loader.load_sweep_config(self.config, list(overrides)))
            # Resolved here, where Hydra's resolvers and degrade's are registered.
            OmegaConf.resolve(task)
            tasks.append(task)
        return tasks


def _worker_env(config: DictConfig, at_once: int, cores: int) -> Callable[[int], dict[str, str]]:
    """Each worker's environment: BLAS/OpenMP pools sized to its share of the cores, and on
    several GPUs, one GPU per worker (chosen before CUDA starts in it)."""
    from degrade.compute import device_type, worker_env

    base = worker_env(at_once, cores)
    gpus = 0
    if device_type(str(config.trainer.device)) == "cuda":
        from degrade import accel

        gpus = accel.gpu_count()

    def env(k: int) -> dict[str, str]:
        if not gpus:
            return base
        from degrade.accel import gpu_for_job

        gpu = gpu_for_job(k, base.get("CUDA_VISIBLE_DEVICES"), gpus)
        return {**base, "CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else base

    return env
