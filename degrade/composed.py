"""The runs a sweep's plan composed, offered to Hydra's sweeper and launcher in the same process.

Hydra's multirun composes every job again from its overrides, about 70 ms a job: most of the
time before a sweep's first run starts. A job's overrides are a planned run's overrides plus a
few the sweep adds once it has planned (the thread count, the precision ``auto`` meant, the
store, the sweep's name). Hydra applies such a plain ``key=value`` after composing the config
groups, so the job's config is the planned run's config with those values set: ``take`` gives
that, and None when a job is anything else (then it is composed as Hydra would).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from degrade.config import config_groups

# (a run's overrides, normalised; its config as composed from them, precision not pinned)
_offered: list[tuple[frozenset[str], DictConfig]] = []


def _parsed(overrides: Sequence[str]) -> list[Override] | None:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return None


def _normal(o: Override) -> str:
    # Hydra's basic sweeper writes a job's overrides its own way: `out='a b'` may come back
    # as `out=a\ b`. A value spelled two ways is one value.
    return f"{o.get_key_element()}={o.value()!r}"


@contextlib.contextmanager
def offering(runs: Sequence[tuple[Sequence[str], DictConfig]]) -> Iterator[None]:
    """Within the block, ``take`` derives jobs from ``runs``: each run's overrides and the
    config ``compose_run(overrides, pin=False)`` gave for them (kept as it is, not changed)."""
    offered = []
    for overrides, cfg in runs:
        parsed = _parsed(overrides)
        if parsed is not None:
            offered.append((frozenset(_normal(o) for o in parsed), cfg))
    _offered[:] = offered
    try:
        yield
    finally:
        _offered.clear()


def _plain(o: Override, groups: frozenset[str]) -> bool:
    """Whether Hydra applies ``o`` as a value after composing: not a config group's choice,
    not an addition or deletion, not a sweep, a single value."""
    key = o.key_or_group
    return (
        o.type == OverrideType.CHANGE
        and o.package is None
        and not o.is_sweep_override()
        and "/" not in key
        and key.split(".")[0] not in groups
        and not key.startswith("hydra")
        and not isinstance(o.value(), (list, dict))
    )


def without_hydra(cfg: DictConfig) -> DictConfig:
    """``cfg`` less Hydra's own node: what a job's task function is given."""
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def take(job: Sequence[str]) -> DictConfig | None:
    """The config Hydra composes for the job with overrides ``job``, without its ``hydra`` node,
    derived from an offered run (a copy of its own); None when no run is offered whose
    overrides are all in ``job`` with the rest plain values."""
    parsed = _parsed(job)
    if parsed is None or not _offered:
        return None
    by_normal = {_normal(o): o for o in parsed}
    for normal, cfg in _offered:
        if not normal <= by_normal.keys():
            continue
        rest = [o for n, o in by_normal.items() if n not in normal]
        keys = {n.split("=", 1)[0] for n in normal}
        # A value set under a key the run already sets (or inside it) would depend on the order.
        overlaps = any(
            k == r or k.startswith(r + ".") or r.startswith(k + ".")
            for r in (o.key_or_group for o in rest)
            for k in keys
        )
        if overlaps or not all(_plain(o, config_groups()) for o in rest):
            return None
        derived = copy.deepcopy(cfg)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(rest, derived)
        except (HydraException, OmegaConfBaseException):
            return None  # composed as Hydra would, which says what is wrong with it
        return derived
    return None
