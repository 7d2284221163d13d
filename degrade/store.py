"""The run store: one folder per run, named by what the run computes, files replaced atomically.

    <out>/runs/<run_id>/config.yaml       the resolved run config
                        metrics.parquet   one row per finished epoch
                        checkpoint.pt     model, optimizer and progress after the last epoch
                        status.json       running | done | diverged | failed | interrupted (+ error)
                        lock              held by the process that trains the run
    <out>/sweeps/<name>/sweep.json        the runs a sweep asked for, and its command
    <out>/LATEST                          name of the sweep last started
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from degrade import compute

# pandas, pyarrow and torch are imported where a table or checkpoint is read or written: a
# config error or a finished sweep then answers without them, and a worker without pandas.
if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# What a reader shows for a run recorded as running that no process holds: it was stopped
# (killed, out of memory, a full disk, a lost node) and a rerun of its sweep resumes it. A sweep
# whose launcher stopped records it, with the error, where the folder can still be written.
INTERRUPTED = "interrupted"
STATES = ("running", "done", "diverged", "failed", INTERRUPTED)
# Config keys that say where or how a run is computed, not what it computes.
# How a run computes, not what: the device, its threads and the step path (all within rounding).
# The probe settings measure a finished run afterwards; each probe file records its own.
_NOT_IDENTITY = ("out", "name", "sweep", "probe", "trainer.device", "trainer.threads", "trainer.path",
                 "trainer.tensorboard")


class StoreError(ValueError):
    """A store location or file a user pointed at that cannot be used."""


# What run_id makes: family-variant-depth-s<seed>-<hash>, letters, digits and a few marks.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def store_root(out: str | Path) -> Path:
    """The store ``out`` names (``~`` expanded); StoreError when it names nothing (``--out ""``)."""
    if not str(out).strip():
        raise StoreError("--out is empty: name the run store's folder (default: outputs)")
    return Path(out).expanduser()


def check_run_id(rid: object) -> str:
    """``rid`` when it is a plain run id (a name directly inside ``runs/``); StoreError otherwise.

    Run ids read from a file (``sweep.json``) are data: one that would lead out of ``runs/``
    (``../x``, ``/abs``) is refused, never opened.
    """
    if not isinstance(rid, str) or not _RUN_ID.fullmatch(rid) or ".." in rid:
        raise StoreError(f"{rid!r} is not a run id (a plain name inside runs/); the sweep record "
                         "that names it is damaged or was edited by hand")
    return rid


def refuse_link(path: Path, what: str) -> Path:
    """``path`` unless it is a symbolic link; StoreError naming it otherwise.

    The store follows no links inside itself: a run or sweep folder (or one of their files)
    that is a link could lead its reads and writes anywhere. Nothing is written before this
    is checked.
    """
    if path.is_symlink():
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        raise StoreError(f"{what} {path} is a symbolic link{target}; the store follows no links: "
                         "remove it (or copy what it points to in its place), then rerun")
    return path


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- identity


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a resolved config that decides a run's results."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    trainer = plain.get("trainer")
    if isinstance(trainer, dict) and trainer.get("precision") == "auto":
        # What auto becomes here: the id names the numerics that run, not the word "auto".
        trainer["precision"] = compute.resolve_precision("auto", compute.device_type(str(trainer["device"])))
    for key in _NOT_IDENTITY:
        node = plain
        *parents, last = key.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return plain


def run_id(cfg: DictConfig) -> str:
    """A readable, stable name for the run ``cfg`` describes: family-variant-depth-seed-hash."""
    blob = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    m = cfg.model
    return f"{m.family}-{m.variant}-{m.depth}-s{cfg.seed}-{digest}"


# --------------------------------------------------------------------------- atomic files


def _file_mode() -> int:
    # mkstemp makes owner-only files; results should get the permissions the user's umask gives.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that no reader sees half of it."""
    atomic_write(path, lambda p: p.write_text(text))


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Replace ``path`` with ``frame`` as Parquet so that no reader sees half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write(path, lambda p: pq.write_table(table, p))


def write_rows_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` (one dict per row) as Parquet, atomically.

    The columns are every key any row has, in the order they first appear (a missing value is
    null): rows a checkpoint kept from an older version of degrade lack the newer columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in columns})
    atomic_write(path, lambda p: pq.write_table(table, p))


def _previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Replace the checkpoint at ``path`` atomically, keeping the one before as ``*.prev.pt``."""

    import torch

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, _previous(path))

    atomic_write(path, write)


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    import torch

    try:
        # weights_only: tensors, containers and plain values, never an object's code; a
        # planted pickle fails here, unexecuted, and is reported as a damaged checkpoint.
        with warnings.catch_warnings():  # torch notes the pickle protocol of every checkpoint
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any damage means "not usable"
        return None
    return state if isinstance(state, dict) and "epoch" in state else None


def load_checkpoint(path: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or the one before it); None if neither is.

    A damaged file is reported through ``warn`` with its path; the run then resumes from the
    checkpoint before it, or starts over.
    """
    for candidate in (path, _previous(path)):
        if not candidate.is_file():
            continue
        state = _read_checkpoint(candidate)
        if state is not None:
            return state
        if warn is not None:
            warn(f"damaged checkpoint {candidate}; falling back to an earlier one")
    return None


def read_table(path: Path) -> pa.Table | None:
    """The Parquet table at ``path`` as pyarrow reads it; None when absent or unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError):
        return None


def read_parquet(path: Path) -> pd.DataFrame | None:
    """The table at ``path``; None when absent or unreadable."""
    table = read_table(path)
    return None if table is None else table.to_pandas()


# --------------------------------------------------------------------------- run folders


_RUN_FILES = ("config.yaml", "metrics.parquet", "layers.parquet", "checkpoint.pt", "checkpoint.prev.pt",
              "status.json", "lock")


class RunDir:
    """The files of one run.

    StoreError when ``rid`` is not a plain run id, or when the run's folder (or ``runs/``, or
    one of the run's files) is a symbolic link: nothing of such a run is read or written.
    """

    def __init__(self, out: Path, rid: str) -> None:
        self.id = check_run_id(rid)
        self.path = Path(out) / "runs" / rid
        refuse_link(self.path.parent, "the runs folder")
        refuse_link(self.path, "run folder")
        if self.path.is_dir():
            for name in _RUN_FILES:
                refuse_link(self.path / name, "run file")

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.parquet")
    layers = property(lambda self: self.path / "layers.parquet")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    status_file = property(lambda self: self.path / "status.json")

    def status(self) -> dict[str, Any]:
        """The run's status record; ``{"state": "new"}`` when it never started."""
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {"state": "new"}

    def state(self) -> str:
        """The run's state as it is now: its recorded state, except that a run recorded as
        ``running`` whose lock no process holds is ``interrupted``.

        The lock is probed without waiting, and the status is read while the probe holds it
        shared, so no training session can begin or end between the two.
        """
        try:
            fd: int | None = os.open(self.path / "lock", os.O_RDONLY)
        except OSError:  # never locked: whatever the status says, no process trains it
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # a process trains it (or it cannot be told): as recorded
                    return str(self.status().get("state", "new"))
            state = str(self.status().get("state", "new"))
            return INTERRUPTED if state == "running" else state
        finally:
            if fd is not None:
                os.close(fd)  # drops the probe's lock with it

    def mark_interrupted(self, error: str) -> bool:
        """Record that a run left ``running`` by a process that is gone was stopped by ``error``
        (``degrade ls`` then shows it); False when a process holds the run (nothing written)
        or it is not recorded as running. OSError when the status cannot be written."""
        try:
            fd = os.open(self.path / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            status = self.status()
            if status.get("state") != "running":
                return False
            kept = {k: v for k, v in status.items() if k not in ("state", "updated", "sessions", "error")}
            self.set_status(INTERRUPTED, error=error, **kept)
            return True
        finally:
            os.close(fd)

    def set_status(self, state: str, **extra: Any) -> None:
        """Record ``state`` (one of STATES) with a time stamp and any details.

        The list of training sessions (who trained the run, from which epoch) is kept.
        """
        sessions = self.status().get("sessions", [])
        record = {"state": state, "updated": _now(), **extra, "sessions": sessions}
        write_text_atomic(self.status_file, json.dumps(record, indent=1, default=str) + "\n")

    def begin_session(self, from_epoch: int, epochs: int, **details: Any) -> None:
        """Mark the run as running in this process, resuming after ``from_epoch``.

        ``details`` (the software and hardware it trains with, the set-up timeline) are kept
        with the session.
        """
        status = self.status()
        session = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                   "from_epoch": from_epoch, **details}
        for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
            if os.environ.get(var):
                session[var.lower()] = os.environ[var]
        record = {"state": "running", "updated": _now(), "epochs_done": from_epoch,
                  "epochs": epochs, "sessions": [*status.get("sessions", []), session]}
        write_text_atomic(self.status_file, json.dumps(record, indent=1, default=str) + "\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock, waiting while another process holds it.

        An OS file lock: the kernel drops it when its holder dies, even by SIGKILL, so a lock
        left by a killed process is taken over at once.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted as the lock after this run was checked is not followed.
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def write_config(self, cfg: DictConfig) -> None:
        """Keep the resolved run config beside its results."""
        write_text_atomic(self.config, OmegaConf.to_yaml(cfg, resolve=True))

    def damaged(self) -> list[str]:
        """The run's files that are there but cannot be read (or rows its status counts that
        ``metrics.parquet`` lacks), by file name; empty when every file reads."""
        bad = []
        try:
            json.loads(self.status_file.read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            bad.append(self.status_file.name)
        try:
            OmegaConf.load(self.config)
        except FileNotFoundError:
            pass
        except Exception:  # noqa: BLE001 - any failure to parse is damage
            bad.append(self.config.name)
        done = int(self.status().get("epochs_done") or 0)
        metrics = read_table(self.metrics)
        if (metrics is None and (self.metrics.exists() or done)) or (metrics is not None
                                                                      and metrics.num_rows < done):
            bad.append(self.metrics.name)
        if self.layers.exists() and read_table(self.layers) is None:
            bad.append(self.layers.name)
        return bad

    def rebuildable(self) -> bool:
        """Whether a checkpoint is there to rebuild the run's files from."""
        return self.checkpoint.is_file() or _previous(self.checkpoint).is_file()

    def finished(self) -> dict[str, Any] | None:
        """The final metrics row of a run that needs no more training, or None.

        Finished means done (or diverged, which would diverge again) with every file readable
        and every epoch's row there; anything else is trained on (or rebuilt) by a rerun.
        """
        status = self.status()
        if status.get("state") not in ("done", "diverged") or self.damaged():
            return None
        if status.get("state") == "diverged" and not status.get("epochs_done"):
            return {}  # blew up in its first epoch: there are no rows to check
        metrics = read_table(self.metrics)
        if metrics is None or metrics.num_rows != int(status.get("epochs_done", -1)):
            return None
        return metrics.slice(metrics.num_rows - 1).to_pylist()[0]


def recorded_device(run: RunDir) -> str | None:
    """The device type (cpu, cuda, mps) the run's last training session used, if it recorded one."""
    sessions = run.status().get("sessions") or []
    env = sessions[-1].get("environment") if sessions else None
    return env.get("device") if isinstance(env, dict) else None


def recorded_threads(run: RunDir) -> int | None:
    """The CPU threads the run's last training session used, if it recorded them."""
    sessions = run.status().get("sessions") or []
    env = sessions[-1].get("environment") if sessions else None
    threads = env.get("threads") if isinstance(env, dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) else None


def device_change(run_id: str, before: str, now: str) -> str:
    """Why a run begun on device type ``before`` may not resume on ``now``, and what to do."""
    return (f"run {run_id} began on {before} and would resume on {now}, which would change its numerics "
            f"mid-run: resume it with --device {before}, or train it afresh in another store (--out)")


def make_out(out: str | Path) -> Path:
    """The store root, created; a clear StoreError when it cannot be written."""
    root = store_root(out).absolute()
    refuse_link(root / "runs", "the runs folder")
    refuse_link(root / "sweeps", "the sweeps folder")
    refuse_link(root / "LATEST", "the store file")
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        (root / "sweeps").mkdir(exist_ok=True)
        # A few real bytes: an empty file can be made on a full disk, a sweep record cannot.
        with tempfile.NamedTemporaryFile(dir=root / "sweeps", prefix=".probe", delete=True) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except FileExistsError:
        raise StoreError(f"cannot write to output folder {root}: {root / 'sweeps'} is not a folder") from None
    except OSError as e:
        raise StoreError(f"cannot write to output folder {root}: {e.strerror or e}") from None
    return root


@contextlib.contextmanager
def writing(where: Path | str) -> Iterator[None]:
    """Turn a failure to write below ``where`` (no permission, a full disk) into a StoreError."""
    try:
        yield
    except OSError as e:
        raise StoreError(f"cannot write to {where}: {e.strerror or e}") from None


# --------------------------------------------------------------------------- sweeps


def check_sweep_name(name: str) -> str:
    """``name`` when it names a folder directly inside ``sweeps/``; StoreError otherwise."""
    if (not name or name.startswith(".") or any(c in name for c in "/\\\0")
            or Path(name).is_absolute() or len(name) > 200):
        raise StoreError(f"sweep name {name!r} must be a plain folder name (no '/', not starting "
                         "with '.'): sweeps live in <out>/sweeps/<name>")
    return name


def sweep_dir(out: Path, name: str) -> Path:
    """Folder of the sweep called ``name``; StoreError when the name would lead elsewhere, or
    when the folder (or ``sweeps/``, or its record) is a symbolic link."""
    folder = Path(out) / "sweeps" / check_sweep_name(name)
    refuse_link(folder.parent, "the sweeps folder")
    refuse_link(folder, "sweep folder")
    refuse_link(folder / "sweep.json", "sweep record")
    return folder


def write_sweep(out: Path, name: str, record: dict[str, Any]) -> Path:
    """Record a sweep (its run ids and command) and mark it as the latest."""
    folder = sweep_dir(out, name)
    refuse_link(Path(out) / "LATEST", "the store file")
    with writing(folder):
        write_text_atomic(folder / "sweep.json", json.dumps(record, indent=1, default=str) + "\n")
        write_text_atomic(Path(out) / "LATEST", name + "\n")
    return folder


def latest_sweep(out: Path) -> str | None:
    """Name of the sweep last started in ``out``, if any."""
    try:
        name = refuse_link(Path(out) / "LATEST", "the store file").read_text().strip()
    except OSError:
        return None
    return name or None


def sweep_names(out: Path | str) -> list[str]:
    """The names of the sweeps recorded in ``out`` (those with a ``sweep.json``), sorted."""
    folder = Path(out).expanduser() / "sweeps"
    try:
        return sorted(p.parent.name for p in folder.glob("*/sweep.json") if not p.parent.name.startswith("."))
    except OSError:
        return []


def no_sweep(out: Path | str, name: str) -> StoreError:
    """The error for a sweep ``name`` that ``out`` does not hold, naming the sweeps it does."""
    names = sweep_names(out)
    there = f"sweeps there: {', '.join(names)}" if names else "there are no sweeps; run `degrade sweep` first"
    return StoreError(f"no sweep named {name!r} in {out}; {there}")


def read_sweep(out: Path, name: str) -> dict[str, Any]:
    """The record of sweep ``name``; StoreError (naming the sweeps there are) when there is none."""
    path = sweep_dir(out, name) / "sweep.json"
    try:
        record = json.loads(path.read_text())
    except OSError:
        raise no_sweep(out, name) from None
    except ValueError:
        raise StoreError(f"sweep record {path} is damaged") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs", []), list):
        raise StoreError(f"sweep record {path} is damaged")
    for rid in record.get("runs", []):
        try:
            check_run_id(rid)
        except StoreError as e:
            raise StoreError(f"sweep record {path}: {e}") from None
    return record


@dataclass(frozen=True)
class Damage:
    """A run whose files cannot all be read, and whether a rerun can rebuild them."""

    run_id: str
    files: tuple[str, ...]
    rebuildable: bool

    def note(self) -> str:
        """What is damaged and what a rerun does about it."""
        files = ", ".join(self.files)
        if self.rebuildable:
            return f"{files} unreadable; rerunning its sweep rebuilds it from the checkpoint"
        return f"{files} unreadable; no checkpoint, so rerunning its sweep trains it again"

    def __str__(self) -> str:
        return f"could not read run {self.run_id}: {self.note()}"


def _run_ids(root: Path, name: str | None) -> list[str]:
    if name is not None:
        return list(read_sweep(root, name).get("runs", []))
    return sorted(p.name for p in (root / "runs").glob("*") if p.is_dir() and _RUN_ID.fullmatch(p.name))


def damaged_runs(out: str | Path, name: str | None = None, latest: bool = False) -> list[Damage]:
    """The runs of sweep ``name`` (the latest with ``latest``, else every run) that cannot all be read."""
    root = store_root(out)
    if latest and name is None:
        name = latest_sweep(root)
        if name is None:
            return []
    found = []
    for rid in _run_ids(root, name):
        run = RunDir(root, rid)
        bad = run.damaged()
        if bad:
            found.append(Damage(rid, tuple(bad), run.rebuildable()))
    return found


# Metrics columns renamed since older versions wrote them: ``lr`` was the scheduled rate of the
# epoch's last step, easily mistaken for the configured ``optim.lr``.
RENAMED_COLUMNS = {"lr": "scheduled_lr"}


def current_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row (as a checkpoint of any version kept it) under today's column names."""
    return {RENAMED_COLUMNS.get(k, k): v for k, v in row.items()
            if not (k in RENAMED_COLUMNS and RENAMED_COLUMNS[k] in row)}


def current_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``metrics.parquet`` of any version under today's column names (old and new rows merged)."""
    for old, new in RENAMED_COLUMNS.items():
        if old in frame and new in frame:  # a run resumed across versions: rows of both
            frame = frame.assign(**{new: frame[new].fillna(frame[old])}).drop(columns=[old])
        elif old in frame:
            frame = frame.rename(columns={old: new})
    return frame


def load_metrics(out: Path, run_ids: list[str]) -> pd.DataFrame:
    """Per-epoch metrics of the given runs, with each run's state in a ``state`` column.

    A run whose metrics cannot be read is left out (``damaged_runs`` names it).
    """
    import pandas as pd

    frames = []
    for rid in run_ids:
        run = RunDir(out, rid)
        state = run.state()
        frame = read_parquet(run.metrics)
        if frame is not None:
            frame = current_metrics(frame)
        if frame is None or frame.empty:
            if state not in ("diverged", "failed"):
                continue
            # No finished epoch, but the run must still be shown for what it is.
            frame = _empty_row(run)
            if frame is None:
                continue
        frames.append(frame.assign(state=state))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _empty_row(run: RunDir) -> pd.DataFrame | None:
    import pandas as pd

    try:
        cfg = OmegaConf.load(run.config)
    except Exception:  # noqa: BLE001 - without its config the run cannot be placed
        return None
    nan = float("nan")
    return pd.DataFrame([{"run_id": run.id, "family": cfg.model.family, "variant": cfg.model.variant,
                          "depth": int(cfg.model.depth), "seed": int(cfg.seed), "dataset": cfg.data.name,
                          "epoch": 0, "train_error": nan, "test_error": nan, "train_loss": nan,
                          "test_loss": nan}])


def sweep_metrics(out: str | Path, name: str | None = None) -> tuple[str, pd.DataFrame]:
    """The named (default: latest) sweep's per-epoch metrics; StoreError when there are none."""
    root = store_root(out)
    name = name or latest_sweep(root)
    if name is None:
        raise StoreError(f"no sweeps in {root}; run `degrade sweep` first")
    record = read_sweep(root, name)
    metrics = load_metrics(root, record.get("runs", []))
    if metrics.empty:
        raise StoreError(f"sweep {name!r} in {root} has no finished runs or epochs yet")
    return name, metrics


def list_runs(out: str | Path, name: str | None = None) -> pd.DataFrame:
    """One row per run of sweep ``name`` (default: every run in the store) with its state.

    A run with files that cannot be read has state ``damaged`` and their names in ``damaged``.
    """
    import pandas as pd

    root = store_root(out)
    rows = []
    for rid in _run_ids(root, name):
        run = RunDir(root, rid)
        status = run.status()
        try:
            cfg = OmegaConf.load(run.config)
            what = {"family": cfg.model.family, "variant": cfg.model.variant,
                    "depth": int(cfg.model.depth), "seed": int(cfg.seed), "dataset": cfg.data.name}
        except Exception:  # noqa: BLE001 - a damaged config still lists the run
            what = {}
        bad = run.damaged()
        rows.append({"run_id": rid, "state": "damaged" if bad else run.state(), **what,
                     "epochs_done": status.get("epochs_done", 0), "epochs": status.get("epochs"),
                     "train_error": status.get("train_error"), "test_error": status.get("test_error"),
                     "error": status.get("error"), "updated": status.get("updated"),
                     "damaged": Damage(rid, tuple(bad), run.rebuildable()).note() if bad else None})
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
    """The resolved config of each run that has a readable one (the others are left out)."""
    configs = {}
    for rid in run_ids:
        try:
            configs[rid] = OmegaConf.load(RunDir(Path(out), rid).config)
        except Exception:  # noqa: BLE001 - a missing or damaged config: the run has no settings to show
            continue
    return configs


def load_layers(out: str | Path, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-layer diagnostics of the runs in ``metrics``, with their variant, depth and seed."""
    import pandas as pd

    root = Path(out).expanduser()
    what = metrics.groupby("run_id")[["variant", "depth", "seed"]].first()
    frames = []
    for rid in what.index:
        frame = read_parquet(RunDir(root, rid).layers)
        if frame is not None and not frame.empty:
            frames.append(frame.join(what, on="run_id"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
