"""A sweep's probe files read back as tables, and each probe's numbers per variant and depth.

No torch here: reading results needs only pandas and pyarrow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from degrade.probes.settings import NAMES, parse_kinds
from degrade.store import RunDir, StoreError, latest_sweep, read_parquet, read_sweep

# The numbers each probe writes beside its measurements (rows without coordinates).
NUMBERS = {
    "landscape": ("centre_loss", "basin_width", "nonconvex_fraction"),
    "lesion": ("base_test_error", "single_test_error_mean", "single_test_error_max", "base_train_error",
               "single_train_error_mean"),
    "gradcorr": ("corr_lag1", "half_lag"),
    "identity": ("ratio",),
}


# Bumped when a probe's measurement changes meaning: files of an older version are measured again.
VERSION = 1
META_KEY = b"degrade.probe"


def path(out: Path, run_id: str, kind: str) -> Path:
    """Where the probe ``kind`` of a run is written."""
    return RunDir(out, run_id).path / "probes" / f"{kind}.parquet"


def record(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a probe's file says it measured: the kind, the settings, the probe version."""
    return {"kind": kind, "version": VERSION, "settings": settings}


def recorded(where: Path) -> dict[str, Any] | None:
    """The record a probe file holds; None when there is no readable file."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(where).metadata or {}
        return json.loads(meta[META_KEY])
    except Exception:  # noqa: BLE001 - absent, half-written by another tool or damaged: measure again
        return None


def sweep_runs(out: str | Path, name: str | None) -> tuple[Path, str, list[str]]:
    """(store, sweep name, its run ids) of the named (default: latest) sweep; StoreError if none."""
    root = Path(out).expanduser()
    name = name or latest_sweep(root)
    if name is None:
        raise StoreError(f"no sweeps in {root}; run `degrade sweep` first")
    return root, name, list(read_sweep(root, name).get("runs", []))


def load(out: str | Path, run_ids: list[str], kind: str) -> pd.DataFrame:
    """The rows of probe ``kind`` of the given runs (those that have its file), in one table."""
    frames = [f for rid in run_ids if (f := read_parquet(path(Path(out), rid, kind))) is not None]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep_probe(out: str | Path, name: str | None, kind: str) -> pd.DataFrame:
    """The rows of probe ``kind`` of every run of the named (default: latest) sweep."""
    root, _, run_ids = sweep_runs(out, name)
    return load(root, run_ids, parse_kinds([kind])[0])


def kinds_present(out: str | Path, run_ids: list[str]) -> list[str]:
    """The probe kinds at least one of the runs has a file of."""
    return [k for k in NAMES if any(path(Path(out), rid, k).is_file() for rid in run_ids)]


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Each probe's numbers per kind, quantity, weights, variant and depth: mean, std, runs."""
    if frame.empty:
        return pd.DataFrame(columns=["kind", "quantity", "weights", "variant", "depth", "runs", "mean",
                                     "std"])
    parts = []
    for kind, rows in frame.groupby("kind"):
        rows = rows[rows["quantity"].isin(NUMBERS[str(kind)])].copy()
        if rows.empty:
            continue
        rows["weights"] = rows["weights"].fillna("final") if "weights" in rows else "final"
        g = rows.groupby(["kind", "quantity", "weights", "variant", "depth"], sort=False)["value"]
        parts.append(pd.DataFrame({"runs": g.count(), "mean": g.mean(), "std": g.std()}).reset_index())
    if not parts:
        return numbers(pd.DataFrame())
    table = pd.concat(parts, ignore_index=True)
    order = {q: i for qs in NUMBERS.values() for i, q in enumerate(qs)}
    table["_q"] = table["quantity"].map(order)
    table["_k"] = table["kind"].map({k: i for i, k in enumerate(NAMES)})
    table["_w"] = table["weights"].map({"initial": 0, "final": 1})
    table = table.sort_values(["_k", "_q", "_w", "variant", "depth"]).drop(columns=["_q", "_k", "_w"])
    return table.reset_index(drop=True)


def summary(out: str | Path, name: str | None = None, kinds: list[str] | None = None) -> pd.DataFrame:
    """Every probe's numbers the sweep has (or those of ``kinds``), per variant and depth, over seeds."""
    root, _, run_ids = sweep_runs(out, name)
    chosen = kinds_present(root, run_ids) if kinds is None else parse_kinds(kinds)
    frames = [f for k in chosen if not (f := load(root, run_ids, k)).empty]
    return numbers(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
