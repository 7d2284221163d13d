"""Hydra's task function: one job of a sweep (see ``degrade.job``), trained with ``degrade.train``.

A module of its own, above both and importing neither Hydra nor the sweep's planning: a pool
worker imports it (and torch) before its first job, and Hydra would add 0.2 s to that.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from degrade import job


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One job of the sweep; torch is imported only when a job gets this far, in whichever process."""
    from degrade.train import run_steps

    return job.run_job(cfg, run_steps)
