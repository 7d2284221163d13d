"""The notebook's face: a run store and its sweeps as tidy pandas DataFrames.

    import degrade
    store = degrade.open("outputs")
    sweep = store.sweep()            # the latest sweep; store.sweep("name") for another
    sweep.metrics()                  # one row per run and epoch

Every table has one row per observation and one column per variable: a run's settings (the
keys a sweep varied, by their dotted names such as ``optim.lr``) sit beside its per-epoch
numbers, so ``groupby`` and ``pivot_table`` need no joins. Errors are fractions in [0, 1]
everywhere (0.25 is 25 %); only the terminal prints percent. ``degrade summary``, ``plot``,
``report`` and ``export`` read through the same functions, so terminal and notebook agree.
Anything that cannot be read raises ``StoreError`` (a ``ValueError``) with one line saying why.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from degrade import flat, frames, store, sweepdata, verdict
from degrade.atomic import atomic_write, write_parquet_atomic
from degrade.probes import tables as probe_tables
from degrade.probes.settings import NAMES as PROBE_KINDS
from degrade.runids import identity_config
from degrade.store import STATES, StoreError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "STATES", "TABLES", "Store", "StoreError", "Sweep", "export", "open_store"]

# What ``degrade export --table`` offers: the tables a sweep gives.
TABLES = ("metrics", "layers", "summary", "runs", "probes", "probe_summary")
# What a run is, as columns, before the settings the sweep varied.
_WHAT = ("family", "variant", "depth", "seed", "dataset")
# The configured learning rate is always a column (beside the per-epoch ``scheduled_lr``).
_ALWAYS = ("optim.lr",)


def open_store(path: str | Path = "outputs") -> Store:
    """The run store at ``path`` (a folder ``degrade sweep --out`` wrote); StoreError when it is none."""
    return Store(path)


class Store:
    """A run store: the sweeps recorded in it and their runs."""

    def __init__(self, path: str | Path = "outputs") -> None:
        self.path = store.store_root(path)
        if not store.resolve(self.path, "sweeps").is_dir():
            raise StoreError(f"no sweeps in {self.path} (it is not a run store); run `degrade sweep` first")

    def __repr__(self) -> str:
        return f"<degrade store {str(self.path)!r}: {len(self.names())} sweeps, latest {self.latest()!r}>"

    def names(self) -> list[str]:
        """The names of the sweeps in the store, sorted."""
        return store.sweep_names(self.path)

    def latest(self) -> str | None:
        """The sweep last started, the one ``sweep()`` opens by default."""
        name = store.latest_sweep(self.path)
        return name if name in self.names() else None

    def sweep(self, name: str | None = None) -> Sweep:
        """The sweep called ``name`` (default: the latest); StoreError, naming those there are, when
        there is no such sweep."""
        name = store.chosen_sweep(self.path, name)
        store.read_sweep(self.path, name)  # a clear error for a name that is not there
        return Sweep(self.path, name)

    def sweeps(self) -> pd.DataFrame:
        """One row per sweep: its name, how many runs it has, how many are in each state
        (done, running, interrupted, diverged, failed, new, damaged), whether it is the latest,
        and when and how it was started."""
        import pandas as pd

        latest = self.latest()
        rows = []
        for name in self.names():
            record = store.read_sweep(self.path, name)
            listing = frames.list_runs(self.path, name)
            states = listing["state"].value_counts() if not listing.empty else pd.Series(dtype=int)
            rows.append(
                {
                    "sweep": name,
                    "runs": len(record.get("runs", [])),
                    **{s: int(states.get(s, 0)) for s in STATES},
                    "latest": name == latest,
                    "started": record.get("started"),
                    "command": record.get("command"),
                }
            )
        columns = ["sweep", "runs", *STATES, "latest", "started", "command"]
        return pd.DataFrame(rows, columns=columns)


class Sweep:
    """One sweep of a store: its runs, their per-epoch metrics, per-layer diagnostics and probes."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = Path(path)
        self.name = name

    def __repr__(self) -> str:
        return f"<degrade sweep {self.name!r} in {str(self.path)!r}: {len(self.run_ids())} runs>"

    def run_ids(self) -> list[str]:
        """The ids of the runs the sweep asked for, in its order."""
        return list(store.read_sweep(self.path, self.name)["runs"])

    @functools.cached_property
    def loaded(self) -> sweepdata.SweepData:
        """The sweep as the summary, the figures and the report read it (``sweepdata.load``)."""
        return sweepdata.load(self.path, self.name)

    @property
    def keys(self) -> list[str]:
        """The settings the sweep varied besides depth, variant and seed (``optim.lr``, ...)."""
        return list(self.loaded.keys)

    def _settings(self) -> pd.DataFrame:
        """One row per run that has a readable config: what it is and every setting column."""
        import pandas as pd

        ids = self.run_ids()
        configs = frames.load_configs(self.path, ids)
        flattened = {rid: flat.flatten(identity_config(cfg)) for rid, cfg in configs.items()}
        keys = flat.varied_keys(list(flattened.values()))
        rows = []
        for rid, cfg in configs.items():
            settings = {k: flattened[rid].get(k) for k in (*keys, *_ALWAYS)}
            rows.append({"run_id": rid, **store.run_record(cfg), **settings})
        columns = ["run_id", *_WHAT, *keys, *(k for k in _ALWAYS if k not in keys)]
        return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))

    def runs(self) -> pd.DataFrame:
        """One row per run of the sweep: id, state, what it is, its settings, epochs done and its
        final errors (fractions), and the error of a failed run."""
        listing = frames.list_runs(self.path, self.name)
        if listing.empty:
            return listing
        settings = self._settings()
        extra = [c for c in settings if c not in listing]
        frame = listing.merge(settings[["run_id", *extra]], on="run_id", how="left")
        first = ["run_id", "state", *(c for c in _WHAT if c in frame), *extra]
        return frame[[*first, *(c for c in frame if c not in first)]]

    def metrics(self) -> pd.DataFrame:
        """One row per run and finished epoch.

        Columns: ``run_id``, what the run is (family, variant, depth, seed, dataset), the settings
        the sweep varied by their dotted keys, ``optim.lr`` (the configured learning rate), the
        run's ``state``, then the per-epoch numbers as ``metrics.parquet`` holds them
        (``scheduled_lr`` is the rate of the epoch's last step; errors are fractions).
        """
        frame = self.loaded.metrics.copy()
        missing = [k for k in _ALWAYS if k not in frame]
        if missing:
            settings = self._settings().set_index("run_id")[missing]
            frame = frame.join(settings, on="run_id")
        first = [
            "run_id",
            *(c for c in _WHAT if c in frame),
            *self.keys,
            *(k for k in _ALWAYS if k not in self.keys),
            "state",
        ]
        return frame[[*first, *(c for c in frame if c not in first)]].reset_index(drop=True)

    def _run_columns(self) -> pd.DataFrame:
        """Per run: what it is and its settings, indexed by run id (for joining onto other tables)."""
        frame = self.metrics()
        columns = [c for c in ("run_id", *_WHAT, *self.keys, *_ALWAYS) if c in frame]
        return frame[list(dict.fromkeys(columns))].drop_duplicates("run_id").set_index("run_id")

    def layers(self) -> pd.DataFrame:
        """One row per run, epoch and weight layer: ``grad_norm`` and ``response_std`` (see
        ``layers.parquet``) with the run's settings as columns; empty when no run recorded any.
        A damaged file is left out with a warning on the ``degrade`` logger."""
        runs = self._run_columns()
        layers = frames.load_layers(self.path, list(runs.index))
        return layers if layers.empty else _with_settings(layers, runs)

    def probe_kinds(self) -> list[str]:
        """The probes some run of the sweep holds (``runs/<run_id>/probes/<kind>.parquet``)."""
        return probe_tables.kinds_present(self.path, self.run_ids())

    def probes(self, kind: str) -> pd.DataFrame:
        """The probe ``kind`` of every run of the sweep that has it, in one tidy table: the rows of
        each ``probes/<kind>.parquet`` with the run's settings and the probe's own settings
        (``probe.*``) as columns. A damaged file is left out with a warning.

        StoreError naming the kinds there are when no run of the sweep has this one.
        """
        probes = self._probe_rows(kind)
        curves = probes[~probe_tables.is_number(probes)].dropna(axis=1, how="all")
        return self._leading(probe_tables.typed(curves)).reset_index(drop=True)

    def _probe_rows(self, kind: str) -> pd.DataFrame:
        if kind not in PROBE_KINDS:
            raise StoreError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
        probes = probe_tables.load(self.path, self.run_ids(), kind)
        if probes.empty:
            kinds = self.probe_kinds()
            there = (
                f"probes there: {', '.join(kinds)}"
                if kinds
                else "no run of it has probes yet; run `degrade probe` first"
            )
            raise StoreError(f"no probe {kind!r} in sweep {self.name!r}; {there}")
        return _with_settings(probes, self._probe_settings())

    def _leading(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the columns ``metrics()`` starts with first, in its order."""
        first = [c for c in ("run_id", *_WHAT, *self.keys, *_ALWAYS) if c in frame]
        first = list(dict.fromkeys(first))
        return frame[[*first, *(c for c in frame if c not in first)]]

    def probe_summary(self, kind: str | None = None) -> pd.DataFrame:
        """Each probe's numbers (``kind``'s, or every kind the sweep has) per setting the sweep
        varied, variant, depth and probe setting: ``seeds``, ``mean`` and ``std`` over seeds, as
        ``summary()`` gives the errors. Runs probed with other settings are other rows: every
        probe setting is a ``probe.*`` column. Errors and fractions are fractions in [0, 1].
        StoreError when the sweep has no such probe."""
        kinds = [kind] if kind is not None else self.probe_kinds()
        if not kinds:
            raise StoreError(f"no probes in sweep {self.name!r}; run `degrade probe` first")
        rows = probe_tables.stacked([self._probe_rows(k) for k in kinds])
        rows = rows[probe_tables.is_number(rows)].copy()
        rows["weights"] = rows["weights"].fillna("final") if "weights" in rows else "final"
        settings = [c for c in probe_tables.settings_of(rows) if rows[c].notna().any()]
        groups = ["kind", "quantity", "weights", *self.keys, "variant", "depth", *settings]
        g = rows.groupby(groups, dropna=False, sort=False)
        table = g.agg(seeds=("seed", "nunique"), mean=("value", "mean"), std=("value", "std")).reset_index()
        order = {q: i for qs in probe_tables.NUMBERS.values() for i, q in enumerate(qs)}
        table = table.assign(
            _k=table["kind"].map({k: i for i, k in enumerate(PROBE_KINDS)}),
            _q=table["quantity"].map(order),
            _w=table["weights"].map({"initial": 0, "final": 1}),
        )
        table = table.sort_values(["_k", "_q", "_w", *self.keys, "variant", "depth", *settings])
        return table.drop(columns=["_k", "_q", "_w"]).reset_index(drop=True)

    def _probe_settings(self) -> pd.DataFrame:
        # From the configs, not the metrics: a probe may be there for a run with no readable epoch.
        return self._settings().set_index("run_id")

    def summary(self) -> pd.DataFrame:
        """The table ``degrade summary`` prints: one row per setting, variant and depth with the
        mean and std over seeds of the final train and test error (fractions), seeds, epochs,
        diverged runs and the published test error where it applies."""
        loaded = self.loaded
        return verdict.summarize(loaded.metrics, loaded.keys)

    def verdicts(self) -> list[str]:
        """The verdict lines ``degrade summary`` prints, one per combination of varied settings."""
        return verdict.sweep_verdicts(self.loaded)

    def table(self, which: str, kind: str | None = None) -> pd.DataFrame:
        """One of ``TABLES`` by name (what ``degrade export --table`` writes); ``kind`` chooses
        the probe of ``probes`` and ``probe_summary`` (default: every kind the sweep has)."""
        if which not in TABLES:
            raise StoreError(f"unknown table {which!r}; choose one of {', '.join(TABLES)}")
        if kind is not None and which not in ("probes", "probe_summary"):
            raise StoreError("--kind chooses a probe: it goes with --table probes or probe_summary")
        if which == "probes":
            kinds = [kind] if kind is not None else self.probe_kinds()
            if not kinds:
                raise StoreError(f"no probes in sweep {self.name!r}; run `degrade probe` first")
            return probe_tables.stacked([self.probes(k) for k in kinds])
        if which == "probe_summary":
            return self.probe_summary(kind)
        return getattr(self, which)()


FORMATS = ("csv", "parquet")
# What a file name ends in for each format (``.pq`` is Parquet too).
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def export_format(fmt: str | None, to: str | Path | None) -> str:
    """The format to write: ``fmt`` when given, else what the file name ``to`` ends in, else csv.
    StoreError for an unknown format, or one that the name's suffix contradicts."""
    said = _SUFFIXES.get(Path(to).suffix.lower()) if to is not None else None
    if fmt is None:
        fmt = said or "csv"
    if fmt not in FORMATS:
        raise StoreError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if said is not None and said != fmt:
        named = Path(str(to)).name
        raise StoreError(
            f"--format {fmt} but {named} names a {said} file; give a name that ends in "
            f".{fmt}, or leave out --format"
        )
    return fmt


def export_path(sweep: Sweep, which: str, fmt: str, to: str | Path | None, force: bool = False) -> Path:
    """Where ``export`` writes: ``<store>/sweeps/<name>/<table>.<format>`` (through the store's
    resolver) when ``to`` is None, else ``to``, checked. StoreError for a ``to`` inside a store (a
    store's files are its own), an existing file unless ``force`` (never a link, a folder or
    anything but a regular file), or a folder that is not there."""
    if to is None:
        return store.sweep_file(sweep.path, sweep.name, f"{which}.{fmt}")
    path = Path(to).expanduser()
    if not str(to).strip():
        raise StoreError("--to is empty: name the file to write")
    inside = store.inside_store(path.parent) or store.inside_store(path)
    if inside is not None:
        raise StoreError(
            f"{path} is inside the run store {inside}, whose files are its own: write the "
            "export elsewhere, or leave out --to to write it in the sweep's folder"
        )
    if path.is_symlink():
        raise StoreError(f"{path} is a symbolic link; export replaces no link: name another file")
    if path.is_dir():
        raise StoreError(f"cannot write to {path}: it is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise StoreError(f"cannot write to {path}: it is not a regular file")
    if path.exists() and not force:
        raise StoreError(f"{path} exists; give --force to replace it, or another name")
    if not path.parent.is_dir():
        raise StoreError(f"cannot write to {path}: folder {path.parent} does not exist")
    return path


def export(
    sweep: Sweep,
    which: str = "metrics",
    fmt: str | None = None,
    to: str | Path | None = None,
    force: bool = False,
    kind: str | None = None,
) -> Path:
    """Write one of the sweep's tables (``TABLES``) to one CSV or Parquet file, atomically.

    ``to`` defaults to ``<store>/sweeps/<name>/<table>.<format>`` (replaced when it is there:
    it is the export's own file). Everything is checked before anything is written; StoreError
    says what is wrong (an unknown table or format, a suffix that contradicts the format, an
    empty table, a ``to`` inside a store, an existing file without ``force``, a link).
    """
    fmt = export_format(fmt, to)
    path = export_path(sweep, which if kind is None else f"{which}-{kind}", fmt, to, force)
    frame = sweep.table(which, kind)
    if frame.empty:
        raise StoreError(f"sweep {sweep.name!r} has no {which} to export")
    with store.writing(path):
        if fmt == "csv":
            atomic_write(path, lambda p: frame.to_csv(p, index=False))
        else:
            write_parquet_atomic(path, frame)
    return path


def _with_settings(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows with a ``run_id``) with the run columns it lacks joined on, placed first."""
    extra = [c for c in runs.columns if c not in frame]
    joined = frame.join(runs[extra], on="run_id")
    first = ["run_id", *extra]
    return joined[[*first, *(c for c in joined if c not in first)]]
