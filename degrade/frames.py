"""A store's files as pandas tables: per-epoch metrics, per-layer diagnostics, the run listing
and the run configs, each read through the store's validated readers.

Where a table can do without a run's file it leaves the run out and says so on the ``degrade``
logger (the CLI prints it as a warning line): never a silent drop, never a junk row.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from degrade import store
from degrade.store import RENAMED_COLUMNS, RunDir, StoreError

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

log = logging.getLogger("degrade")


def current_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``metrics.parquet`` of any version under today's column names (old and new rows merged)."""
    for old, new in RENAMED_COLUMNS.items():
        if old in frame and new in frame:  # a run resumed across versions: rows of both
            frame = frame.assign(**{new: frame[new].fillna(frame[old])}).drop(columns=[old])
        elif old in frame:
            frame = frame.rename(columns={old: new})
    return frame


def left_out(rid: str, e: StoreError, run: RunDir | None = None) -> None:
    """Say on the ``degrade`` logger that run ``rid`` is left out of a table, why, and (for a run
    whose files a rerun of its sweep mends) what mends it."""
    damage = run.damage() if run is not None else None
    mend = ""
    if damage is not None and damage.files:
        mend = (
            "; rerunning its sweep rebuilds it from the checkpoint"
            if damage.rebuildable
            else "; rerunning its sweep trains it again"
        )
    log.warning(f"left out run {rid}: {e}{mend}")


def load_metrics(out: Path, run_ids: list[str]) -> pd.DataFrame:
    """Per-epoch metrics of the given runs, with each run's state in a ``state`` column.

    A run whose files cannot be read is left out, with a warning naming the file.
    """
    import pandas as pd

    frames = []
    for rid in run_ids:
        run: RunDir | None = None
        try:
            run = RunDir(out, rid)
            state = run.state()
            if state == "damaged":
                run.read_status()  # raises, naming the file
            table = run.metrics_table()
            if table is None or table.num_rows == 0:
                if state not in ("diverged", "failed"):
                    continue
                # No finished epoch, but the run must still be shown for what it is.
                frame = _empty_row(run)
            else:
                frame = current_metrics(table.to_pandas())
        except StoreError as e:
            left_out(rid, e, run)
            continue
        frames.append(frame.assign(state=state))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _empty_row(run: RunDir) -> pd.DataFrame:
    import pandas as pd

    nan = float("nan")
    return pd.DataFrame(
        [
            {
                "run_id": run.id,
                **run.record(),
                "epoch": 0,
                "train_error": nan,
                "test_error": nan,
                "train_loss": nan,
                "test_loss": nan,
            }
        ]
    )


def sweep_metrics(out: str | Path, name: str | None = None) -> tuple[str, pd.DataFrame]:
    """The named (default: latest) sweep's per-epoch metrics; StoreError when there are none."""
    root = store.store_root(out)
    name = store.chosen_sweep(root, name)
    record = store.read_sweep(root, name)
    metrics = load_metrics(root, record["runs"])
    if metrics.empty:
        raise StoreError(f"sweep {name!r} in {root} has no finished runs or epochs yet")
    return name, metrics


def list_runs(out: str | Path, name: str | None = None) -> pd.DataFrame:
    """One row per run of sweep ``name`` (default: every run in the store) with its state.

    A run with files that cannot be read has state ``damaged`` and says why in ``damaged``.
    """
    import pandas as pd

    root = store.store_root(out)
    rows = []
    for rid in store.run_ids(root, name):
        try:
            run = RunDir(root, rid)
            damage = run.damage()
        except StoreError as e:
            run, damage = None, store.Damage(rid, (), False, str(e))
        status = run.status() if run is not None and damage is None else {}
        try:
            what = run.record() if run is not None else {}
        except StoreError:  # a damaged config still lists the run
            what = {}
        rows.append(
            {
                "run_id": rid,
                "state": "damaged" if damage else run.state() if run else "damaged",
                **what,
                "epochs_done": status.get("epochs_done", 0),
                "epochs": status.get("epochs"),
                "train_error": status.get("train_error"),
                "test_error": status.get("test_error"),
                "error": status.get("error"),
                "updated": status.get("updated"),
                "damaged": damage.note() if damage else None,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = [c for c in ("family", "variant", "depth", "seed", "run_id") if c in frame]
    frame = frame.sort_values(order, na_position="last").reset_index(drop=True)
    for c in ("depth", "seed", "epochs"):  # whole numbers, None where unknown (not NaN floats)
        if c in frame:
            frame[c] = pd.Series([None if pd.isna(v) else int(v) for v in frame[c]], dtype=object)
    return frame


def load_configs(out: str | Path, run_ids: list[str]) -> dict[str, DictConfig]:
    """The resolved config of each run that has a readable one, read-only (shared with every
    reader of that file); a damaged one is left out with a warning (a missing one silently: the
    run never started)."""
    configs = {}
    for rid in run_ids:
        try:
            cfg = store.read_config(RunDir(Path(out), rid).config, shared=True)
        except StoreError as e:
            left_out(rid, e)
            continue
        if cfg is not None:
            configs[rid] = cfg
    return configs


def load_layers(out: str | Path, run_ids: list[str]) -> pd.DataFrame:
    """Per-layer diagnostics of the given runs in one table (a damaged file is left out with a
    warning); empty when no run recorded any."""
    import pandas as pd

    frames = []
    for rid in run_ids:
        try:
            table = RunDir(store.store_root(out), rid).layers_table()
        except StoreError as e:
            left_out(rid, e)
            continue
        if table is not None and table.num_rows:
            frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
