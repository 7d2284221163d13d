"""A sweep's files loaded for the summary, the verdict, the figures and the report: its per-epoch
metrics with one column per setting it varied, its run configs and its record. The Python API
(``degrade.results.Sweep``) is built on it; this is its data, not a second Sweep."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from degrade import frames, store
from degrade.flat import flatten, setting_column, varied_keys
from degrade.runids import identity_config

log = logging.getLogger("degrade")


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every run."""
    if metrics.empty:
        return metrics
    last = metrics.sort_values("epoch").groupby("run_id", sort=False).tail(1)
    return last.sort_values(["variant", "depth", "seed"]).reset_index(drop=True)


@dataclass
class SweepData:
    """One sweep's files as the reports read them (``load``)."""

    name: str
    out: Path
    record: dict[str, Any]  # sweep.json: run ids, overrides, command
    metrics: pd.DataFrame  # per-epoch rows with a ``state`` column and one column per varied key
    keys: list[str]  # the settings the sweep varied besides depth, variant and seed
    configs: dict[str, DictConfig] = field(default_factory=dict)  # run id -> resolved config


def load(out: str | Path, name: str | None = None) -> SweepData:
    """The named (default: latest) sweep's metrics, configs and the settings it varied.

    StoreError when there is no such sweep or nothing of it has finished an epoch.
    """
    root = store.store_root(out)
    name, metrics = frames.sweep_metrics(root, name)
    record = store.read_sweep(root, name)
    present = list(metrics["run_id"].unique())
    # Only the runs the metrics hold: one left out of them was named as it was left out.
    for rid in present:
        damage = store.RunDir(root, rid).damage()
        if damage is not None:
            log.warning(str(damage))
    configs = frames.load_configs(root, present)
    flat = {rid: flatten(identity_config(cfg)) for rid, cfg in configs.items()}
    keys = varied_keys(list(flat.values()))
    for key in keys:
        metrics[key] = setting_column([flat.get(rid, {}).get(key) for rid in metrics["run_id"]])
    return SweepData(name, root, record, metrics, keys, configs)


def describe(sweep: SweepData) -> str:
    """What a sweep trained, in a few words: data, epochs, seeds, and where and how it computed."""
    metrics = sweep.metrics
    last = final_rows(metrics)
    epochs = sorted({int(e) for e in last["epoch"]})
    span = str(epochs[-1]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
    seeds = metrics["seed"].nunique()
    return (
        f"{_values(metrics, 'dataset')}, {span} epoch{'s' if epochs[-1] != 1 else ''}, "
        f"{seeds} seed{'s' if seeds != 1 else ''}, {numerics(sweep)}"
    )


def numerics(sweep: SweepData) -> str:
    """Where and how the runs computed, e.g. ``cpu, bf16, 1 thread per run``: the device type,
    the precision (what ``auto`` became) and the CPU threads each run had."""
    threads = sorted(
        {
            int(c.trainer.threads)
            for c in sweep.configs.values()
            if c.get("trainer", {}).get("threads") is not None
        }
    )
    said = [_values(sweep.metrics, "device"), _values(sweep.metrics, "precision")]
    if threads:
        count = str(threads[0]) if len(threads) == 1 else f"{threads[0]}-{threads[-1]}"
        said.append(f"{count} thread{'s' if threads[-1] != 1 else ''} per run")
    return ", ".join(said)


def _values(metrics: pd.DataFrame, column: str) -> str:
    if column not in metrics:
        return "?"
    return "/".join(sorted({str(v) for v in metrics[column].dropna()})) or "?"
