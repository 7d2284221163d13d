"""A sweep's probe files read back as tables, and each probe's numbers per variant and depth.

Every file is read through the store's validated reader (``store.read_probe``): a damaged one is
left out with a warning naming it. Each row carries the settings its file was measured with as
``probe.*`` columns, so runs probed with different settings are never averaged together.
No torch here: reading results needs only pandas and pyarrow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from degrade import store
from degrade.probes.settings import NAMES
from degrade.store import RunDir, StoreError

log = logging.getLogger("degrade")

# The numbers each probe writes beside its measurements (rows without coordinates).
NUMBERS = {
    "landscape": ("centre_loss", "basin_width", "nonconvex_fraction"),
    "lesion": (
        "base_test_error",
        "single_test_error_mean",
        "single_test_error_max",
        "base_train_error",
        "single_train_error_mean",
    ),
    "gradcorr": ("corr_lag1", "half_lag"),
    "identity": ("ratio",),
}


# Bumped when a probe's measurement changes meaning: files of an older version are measured again.
VERSION = 1
META_KEY = store.PROBE_META_KEY


def path(out: Path, run_id: str, kind: str) -> Path:
    """Where the probe ``kind`` of a run is written (through the store's resolver)."""
    return RunDir(out, run_id).probe_file(kind)


def record(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a probe's file says it measured: the kind, the settings, the probe version."""
    return {"kind": kind, "version": VERSION, "settings": settings}


def setting_columns(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A file's settings as the columns its rows carry, named as their overrides are:
    ``probe.images``, ``probe.landscape.grid``, ..."""
    return {f"probe.{k}" if k == "images" else f"probe.{kind}.{k}": v for k, v in sorted(settings.items())}


def sweep_runs(out: str | Path, name: str | None) -> tuple[Path, str, list[str]]:
    """(store, sweep name, its run ids) of the named (default: latest) sweep; StoreError if none."""
    root = store.store_root(out)
    name = store.chosen_sweep(root, name)
    return root, name, list(store.read_sweep(root, name)["runs"])


def load(out: str | Path, run_ids: list[str], kind: str) -> pd.DataFrame:
    """The rows of probe ``kind`` of the given runs (those that have its file), in one table, each
    with its file's settings as ``probe.*`` columns; a damaged file is left out with a warning."""
    frames = []
    for rid in run_ids:
        try:
            found = store.read_probe(path(store.store_root(out), rid, kind), rid, kind)
        except StoreError as e:
            log.warning(f"left out probe {kind} of run {rid}: {e}")
            continue
        if found is None or found[0].num_rows == 0:
            continue
        table, rec = found
        frames.append(table.to_pandas().assign(**setting_columns(kind, rec["settings"])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# The numbers that are errors or shares (fractions in [0, 1]): the terminal prints them in percent.
FRACTIONS = (
    "base_test_error",
    "single_test_error_mean",
    "single_test_error_max",
    "base_train_error",
    "single_train_error_mean",
    "nonconvex_fraction",
)


def in_percent(table: pd.DataFrame) -> pd.DataFrame:
    """A table of numbers (``numbers``) with its fractions in percent, their quantity named so."""
    share = table["quantity"].isin(FRACTIONS)
    scale = share.map({True: 100.0, False: 1.0})
    return table.assign(
        quantity=table["quantity"].where(~share, table["quantity"] + " (%)"),
        mean=table["mean"] * scale,
        std=table["std"] * scale,
    )


# Coordinates that count something (a block, a layer, blocks removed, a lag, a draw): whole
# numbers, null where a row has none; ``downsampling`` is true or false, null where not asked.
WHOLE = ("block", "layer", "removed", "lag", "draw")
FLAGS = ("downsampling",)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A probe table with its coordinates in their proper dtypes (nullable integers, booleans)."""
    frame = frame.copy()
    for column in WHOLE:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    for column in FLAGS:
        if column in frame:
            frame[column] = frame[column].astype("boolean")
    return frame


def stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Probe tables of several kinds, one under the other. A column that holds whole numbers in
    every table that has it (a kind's own setting, ``probe.lesion.draws``) stays whole: nullable,
    null in the other kinds' rows, as the coordinates are (concatenating makes it float)."""
    import pandas as pd

    columns = dict.fromkeys(c for f in frames for c in f.columns)
    whole = [c for c in columns if all(pd.api.types.is_integer_dtype(f[c]) for f in frames if c in f)]
    out = pd.concat(frames, ignore_index=True)
    for column in whole:
        if not pd.api.types.is_integer_dtype(out[column]):
            out[column] = out[column].astype("Int64")
    return out


def is_number(frame: pd.DataFrame) -> pd.Series:
    """Which rows of a probe table are its summary numbers (the others are its curves)."""
    names = {q for qs in NUMBERS.values() for q in qs}
    return frame["quantity"].isin(names) & frame["kind"].isin(list(NUMBERS))


def kinds_present(out: str | Path, run_ids: list[str]) -> list[str]:
    """The probe kinds at least one of the runs has a file of."""
    root = store.store_root(out)

    def has(rid: str, kind: str) -> bool:
        try:
            return path(root, rid, kind).is_file()
        except StoreError:
            return False

    return [k for k in NAMES if any(has(rid, k) for rid in run_ids)]


def settings_of(frame: pd.DataFrame) -> list[str]:
    """The ``probe.*`` setting columns of a probe table."""
    return [c for c in frame.columns if str(c).startswith("probe.")]
