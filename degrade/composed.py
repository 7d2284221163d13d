"""The runs a sweep's plan composed, offered to Hydra's sweeper and launcher in the same process.

Hydra's multirun composes every job again from its overrides, about 70 ms a job: most of the
time before a sweep's first run starts. A job's overrides are a planned run's plus a few plain
values the sweep adds once it has planned (the thread count, the precision ``auto`` meant,
the store, the sweep's name), so its config is the planned run's with those values set
(``config.derive``): ``take`` gives that, and None for any other job, which is then composed
as Hydra composes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from omegaconf import DictConfig, open_dict, read_write

from degrade.config import derive, normal_overrides

# (a run's overrides, their normal spellings; its config as composed, precision not pinned)
_offered: list[tuple[frozenset[str], DictConfig]] = []


@contextlib.contextmanager
def offering(runs: Sequence[tuple[Sequence[str], DictConfig]]) -> Iterator[None]:
    """Within the block, ``take`` derives jobs from ``runs``: each run's overrides and the
    config ``compose_run(overrides, pin=False)`` gave for them (left as it is)."""
    offered = []
    for overrides, cfg in runs:
        normal = normal_overrides(overrides)
        if normal is not None:
            offered.append((frozenset(normal), cfg))
    _offered[:] = offered
    try:
        yield
    finally:
        _offered.clear()


def without_hydra(cfg: DictConfig) -> DictConfig:
    """``cfg`` less Hydra's own node: what a job's task function is given."""
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def take(job: Sequence[str]) -> DictConfig | None:
    """The config Hydra composes for the job with overrides ``job``, without its ``hydra`` node,
    derived from an offered run (a copy of its own); None when no offered run's overrides are
    all in ``job`` with the rest plain values."""
    parsed = normal_overrides(job) if _offered else None
    if parsed is None:
        return None
    for normal, cfg in _offered:
        if normal <= parsed.keys():
            return derive(parsed, normal, cfg)
    return None
