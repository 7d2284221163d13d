"""Hydra's basic sweeper, launching only the jobs whose runs the store does not hold finished.

A run is finished when its status is final and its files read (``RunDir.finished``); such a
job would only be skipped where it lands, after a launcher spent a process (or a SLURM array
task) on it. Jobs keep the grid's order; the skipped ones simply are not launched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobStatus


class RemainingSweeper(BasicSweeper):
    """BasicSweeper whose job list leaves out the runs already finished in the run store.

    ``check_store=false`` launches every job: for a caller that has just found none finished.
    ``applicable_only=true`` also leaves out the jobs whose cure is not defined for their variant
    (a grid crossing cures with variants; the sweep's plan left them out too).
    """

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        check_store: bool = True,
        applicable_only: bool = False,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.check_store = check_store
        self.applicable_only = applicable_only

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """The basic sweeper's set-up; a failed job's own error is then raised as it is.

        Hydra's sweeper would first write "Error executing job with overrides: [...]" on stderr,
        a second line beside the one degrade says about the failure.
        """
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        launcher = self.launcher
        assert launcher is not None  # the basic sweeper's setup has made it
        launch = launcher.launch

        def launch_raising(job_overrides: Any, initial_job_idx: int) -> Any:
            results = launch(job_overrides, initial_job_idx=initial_job_idx)
            for r in results:
                if r.status == JobStatus.FAILED:
                    raise r._return_value
            return results

        launcher.launch = launch_raising  # type: ignore[method-assign]  # wrapping one instance's method

    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]  # Hydra's own is typed looser
        """The basic sweeper's batches of jobs, less those whose runs are finished, the costliest
        first: the cores stay busy to the end, and the last run to finish is a short one."""
        from degrade.footprint import training_cost

        every = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        composed = [(job, self._compose(job)) for job in every]
        kept = [(job, cfg) for job, cfg in composed if not self._left_out(cfg)]
        if not kept:
            return []
        kept.sort(key=lambda jc: -training_cost(jc[1]))
        known = getattr(self.launcher, "composed", None)
        if isinstance(known, dict):
            # A launcher that composes each job (degrade's pool) takes these instead of
            # composing them again: Hydra's composition is most of a sweep's start.
            known.update((tuple(job), cfg) for job, cfg in kept)
        jobs = [job for job, _ in kept]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def _compose(self, job: list[str]) -> Any:
        """The job's config without Hydra's node: the sweep's plan's, when it offered the run
        (``degrade.composed``), else composed as Hydra's launchers compose it."""
        from degrade import composed

        assert self.hydra_context is not None and self.config is not None
        planned = composed.take(job)
        if planned is not None:
            return planned
        return composed.without_hydra(
            self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        )

    def validate_batch_is_legal(self, batch: Any) -> None:
        """Nothing left to check: ``split_arguments`` composed every job, and a job that cannot
        compose failed there (Hydra's own check would compose each job once more)."""

    def _left_out(self, cfg: Any) -> bool:
        """Whether the job is not launched: its run is finished, or its cure does not apply."""
        if not (self.check_store or self.applicable_only):
            return False
        from degrade import config, store
        from degrade.runids import run_id

        if self.applicable_only and config.inapplicable(cfg):
            return True
        return self.check_store and store.RunDir(Path(str(cfg.out)), run_id(cfg)).finished() is not None
