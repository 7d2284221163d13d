"""The run store, and its trust boundary: every path into a store is built here, and every file of
a store is read here, through one validated reader per kind of file.

    <out>/runs/<run_id>/config.yaml       the resolved run config
                        metrics.parquet   one row per finished epoch
                        layers.parquet    per-layer diagnostics, one row per layer and epoch
                        checkpoint.pt     model, optimizer and progress after the last epoch
                        status.json       running | done | diverged | failed | interrupted (+ error)
                        lock              held by the process that trains or probes the run
                        probes/<kind>.parquet   what ``degrade probe`` measured
    <out>/sweeps/<name>/sweep.json        the runs a sweep asked for, and its command
    <out>/LATEST                          name of the sweep last started

A store's files are data that someone else may have written. ``resolve`` refuses a name that is
not a plain name, a symbolic link anywhere below the store's root, and anything that would lead
out of it; each ``read_*`` function checks its file's type and schema and returns plain values,
or raises ``StoreError`` naming the file and what is wrong with it. No pandas here: the tables a
user reads are built from these values in ``degrade.frames``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from degrade.atomic import FILE_MODE, previous, write_text_atomic
from degrade.runids import is_run_id

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("degrade")

# The states a run's status file records, and what a reader shows besides them: ``new`` for a
# run that never started, ``damaged`` for one whose files cannot all be read. A run recorded as
# running that no process holds was stopped (killed, out of memory, a full disk, a lost node):
# it shows as ``interrupted``, and a rerun of its sweep resumes it.
INTERRUPTED = "interrupted"
RECORDED = ("running", "done", "diverged", "failed", INTERRUPTED)
STATES = ("done", "running", INTERRUPTED, "diverged", "failed", "new", "damaged")


class StoreError(ValueError):
    """A store location or file that cannot be used: the message names it and says why."""


def store_root(out: str | Path) -> Path:
    """The store ``out`` names (``~`` expanded); StoreError when it names nothing (``--out ""``)."""
    if not str(out).strip():
        raise StoreError("--out is empty: name the run store's folder (default: outputs)")
    return Path(out).expanduser()


# --------------------------------------------------------------------------- the resolver


def _plain(part: object) -> str:
    """``part`` when it is one plain, UTF-8 name of a file or folder; StoreError otherwise."""
    if not isinstance(part, str) or not part or part in (".", "..") or any(c in part for c in "/\\\0"):
        raise StoreError(f"{part!r} is not a plain file or folder name inside the store")
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(
            f"name {part.encode('utf-8', 'surrogateescape')!r} in the store is not UTF-8"
        ) from None
    return part


def _link_target(path: Path) -> str:
    try:
        return f" (to {os.readlink(path)})"
    except OSError:
        return ""


def resolve(root: Path, *parts: str) -> Path:
    """The path ``root/parts...`` of a store: the only way a store path is made.

    StoreError when a part is not a plain name, when any folder or file below ``root`` on the way
    is a symbolic link, or when the path would lead out of ``root``. The root itself may be a
    link (the user chose it); nothing inside it is followed. Nothing is read or written here.
    """
    path = Path(root)
    for i, part in enumerate(parts):
        path = path / _plain(part)
        if path.is_symlink():
            raise StoreError(
                f"{_entry(parts[: i + 1])} {path} is a symbolic link{_link_target(path)}; the store follows "
                "no links: remove it (or copy what it points to in its place), then rerun"
            )
    return path


def _entry(parts: tuple[str, ...]) -> str:
    """What the store entry at ``parts`` is, in words: "run folder", "sweep record", ..."""
    top, depth = parts[0], len(parts)
    if top in ("runs", "sweeps") and depth == 1:
        return f"the {top} folder"
    if top == "runs":
        return "run folder" if depth == 2 else "run file"
    if top == "sweeps":
        return "sweep folder" if depth == 2 else "sweep record" if parts[-1] == "sweep.json" else "sweep file"
    return "the store file" if parts == ("LATEST",) else "store entry"


def check_run_id(rid: object) -> str:
    """``rid`` when it is a plain run id (a name directly inside ``runs/``); StoreError otherwise.

    Run ids read from a file (``sweep.json``) are data: one that would lead out of ``runs/``
    (``../x``, ``/abs``) is refused, never opened.
    """
    if not is_run_id(rid):
        raise StoreError(
            f"{rid!r} is not a run id (a plain name inside runs/); the sweep record "
            "that names it is damaged or was edited by hand"
        )
    assert isinstance(rid, str)
    return rid


def check_sweep_name(name: object) -> str:
    """``name`` when it names a folder directly inside ``sweeps/``; StoreError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name) > 200
    ):
        raise StoreError(
            f"sweep name {name!r} must be a plain folder name (no '/', not starting "
            "with '.'): sweeps live in <out>/sweeps/<name>"
        )
    return _plain(name)


# --------------------------------------------------------------------------- the readers


def _damaged(path: Path, why: str) -> StoreError:
    return StoreError(f"{path} is damaged: {why}")


def _read_bytes(path: Path) -> bytes | None:
    """The bytes of the regular file at ``path``; None when there is none; StoreError for a
    folder, a device or a file that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _damaged(path, "a folder where a file belongs") from None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _damaged(path, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except IsADirectoryError:
        raise _damaged(path, "a folder where a file belongs") from None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _read_text(path: Path) -> str | None:
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None


def _read_json_object(path: Path) -> dict[str, Any] | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise _damaged(path, "not JSON") from None
    if not isinstance(value, dict):
        raise _damaged(path, f"holds a JSON {type(value).__name__}, not an object")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# What each key of a status file must hold when it is there (None is allowed where it says so).
_STATUS_KEYS: dict[str, tuple[str, Any]] = {
    "epochs_done": ("a whole number of at least 0", lambda v: _is_int(v) and v >= 0),
    "epochs": ("a whole number of at least 0", lambda v: v is None or (_is_int(v) and v >= 0)),
    "train_error": ("a number", lambda v: v is None or _is_number(v)),
    "test_error": ("a number", lambda v: v is None or _is_number(v)),
    "error": ("text", lambda v: v is None or isinstance(v, str)),
    "updated": ("text", lambda v: v is None or isinstance(v, str)),
    "sessions": ("a list of objects", lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v)),
    "warnings": ("a list of text", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v)),
}


def read_status(path: Path) -> dict[str, Any] | None:
    """A run's status file: a JSON object whose ``state`` is one of ``RECORDED`` and whose known
    keys hold what they should; None when there is no file; StoreError when it is damaged."""
    status = _read_json_object(path)
    if status is None:
        return None
    if status.get("state") not in RECORDED:
        raise _damaged(path, f"state {status.get('state')!r} is not one of {', '.join(RECORDED)}")
    for key, (rule, ok) in _STATUS_KEYS.items():
        if key in status and not ok(status[key]):
            raise _damaged(path, f"{key} must be {rule}, got {status[key]!r}")
    return status


# What every run config holds, and the type each must have: the run record comes from these.
_CONFIG_KEYS = (
    ("model.family", str),
    ("model.variant", str),
    ("model.depth", int),
    ("seed", int),
    ("data.name", str),
)


# Configs already parsed and validated, by their text: a table reads every run's config more than
# once (the damage check, the table itself), and parsing YAML into a config is most of the cost.
# Keyed by content, so a file that changes is parsed anew; each caller gets a copy of its own.
_PARSED_CONFIGS: dict[str, DictConfig] = {}
_PARSED_CONFIGS_MAX = 256  # about 90 KiB each: ~23 MiB at most


def read_config(path: Path, *, shared: bool = False) -> DictConfig | None:
    """A run's resolved config: a YAML mapping that places the run (``model.family``,
    ``model.variant``, ``model.depth``, ``seed``, ``data.name`` of the right types); None when
    there is no file; StoreError when it is damaged.

    The caller's own copy, unless ``shared``: then the parsed config itself, read-only, for a
    reader that only looks (copying a config costs more than most tables built from it).
    """
    text = _read_text(path)
    if text is None:
        return None
    cfg = _PARSED_CONFIGS.get(text)
    if cfg is None:
        cfg = _parse_config(path, text)
        OmegaConf.set_readonly(cfg, True)
        if len(_PARSED_CONFIGS) >= _PARSED_CONFIGS_MAX:
            _PARSED_CONFIGS.clear()
        _PARSED_CONFIGS[text] = cfg
    if shared:
        return cfg
    own = copy.deepcopy(cfg)
    OmegaConf.set_readonly(own, None)
    return own


def _parse_config(path: Path, text: str) -> DictConfig:
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:  # noqa: BLE001 - any failure to parse is damage
        raise _damaged(path, f"not YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(cfg, DictConfig):
        raise _damaged(path, "holds a YAML list, not a mapping")
    for key, kind in _CONFIG_KEYS:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except Exception:  # noqa: BLE001 - an unresolvable interpolation is damage
            value = None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _damaged(
                path, f"{key} must be {'a whole number' if kind is int else 'text'}, got {value!r}"
            )
    return cfg


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """What a run is, as every table's leading columns: family, variant, depth, seed, dataset."""
    return {
        "family": str(cfg.model.family),
        "variant": str(cfg.model.variant),
        "depth": int(cfg.model.depth),
        "seed": int(cfg.seed),
        "dataset": str(cfg.data.name),
    }


def read_sweep_record(path: Path) -> dict[str, Any] | None:
    """A sweep's record: a JSON object with ``runs`` (plain run ids; one named twice is counted
    once, with a warning), ``overrides`` (a list of text), ``command`` and ``started`` (text) and
    ``asked`` (an object) where present; None when there is no file; StoreError otherwise."""
    record = _read_json_object(path)
    if record is None:
        return None
    runs = record.get("runs", [])
    if not isinstance(runs, list):
        raise _damaged(path, f"runs must be a list of run ids, got {runs!r}")
    for rid in runs:
        if not is_run_id(rid):
            raise _damaged(path, f"{rid!r} is not a run id (a plain name inside runs/)")
    unique = list(dict.fromkeys(runs))
    if len(unique) < len(runs):
        twice = sorted({r for r in runs if runs.count(r) > 1})
        log.warning(f"sweep record {path} names run {', '.join(twice)} more than once; counted once")
    checks = (
        ("overrides", "a list of text", lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v)),
        ("command", "text", lambda v: v is None or isinstance(v, str)),
        ("started", "text", lambda v: v is None or isinstance(v, str)),
        ("name", "text", lambda v: v is None or isinstance(v, str)),
        ("asked", "an object", lambda v: v is None or isinstance(v, dict)),
    )
    for key, rule, ok in checks:
        if key in record and not ok(record[key]):
            raise _damaged(path, f"{key} must be {rule}, got {record[key]!r}")
    return {**record, "runs": unique}


def _read_parquet(path: Path) -> pa.Table | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _read_bytes(path)
    if data is None:
        return None
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _damaged(
            path, f"not a Parquet table ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None


def _check_columns(path: Path, table: pa.Table, rid: str, columns: dict[str, str]) -> None:
    """StoreError unless ``table`` has each of ``columns`` with the kind of type named (string,
    integer, number), and every row is of run ``rid``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        "integer": pa.types.is_integer,
        "number": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t),
    }
    for column, kind in columns.items():
        if column not in table.column_names:
            raise _damaged(path, f"it has no column {column!r}")
        if not kinds[kind](table.schema.field(column).type):
            raise _damaged(path, f"column {column!r} holds {table.schema.field(column).type}, not {kind}s")
    if table.num_rows and not pc.all(pc.equal(table["run_id"], rid)).as_py():
        raise _damaged(path, f"it holds rows of another run than {rid}")


# The columns every metrics row has (the others are documented in docs/store.md).
METRICS_COLUMNS = {
    "run_id": "string",
    "epoch": "integer",
    "train_loss": "number",
    "train_error": "number",
    "test_loss": "number",
    "test_error": "number",
}
LAYERS_COLUMNS = {
    "run_id": "string",
    "epoch": "integer",
    "layer": "integer",
    "grad_norm": "number",
    "response_std": "number",
}
PROBE_COLUMNS = {"run_id": "string", "kind": "string", "quantity": "string", "value": "number"}


def read_metrics(path: Path, rid: str) -> pa.Table | None:
    """A run's ``metrics.parquet``: one row per epoch of run ``rid`` with ``METRICS_COLUMNS``;
    None when there is no file; StoreError when it is damaged or of another schema."""
    table = _read_parquet(path)
    if table is not None:
        _check_columns(path, table, rid, METRICS_COLUMNS)
    return table


def read_layers(path: Path, rid: str) -> pa.Table | None:
    """A run's ``layers.parquet`` (``LAYERS_COLUMNS``); None when absent; StoreError when damaged."""
    table = _read_parquet(path)
    if table is not None:
        _check_columns(path, table, rid, LAYERS_COLUMNS)
    return table


# The key of a probe file's metadata that records what it measured (kind, settings, version).
PROBE_META_KEY = b"degrade.probe"


def read_probe(path: Path, rid: str, kind: str) -> tuple[pa.Table, dict[str, Any]] | None:
    """A probe file of run ``rid``: its rows (``PROBE_COLUMNS``, every row of ``kind``) and the
    record of what it measured; None when absent; StoreError when damaged."""
    import pyarrow.compute as pc

    table = _read_parquet(path)
    if table is None:
        return None
    _check_columns(path, table, rid, PROBE_COLUMNS)
    if table.num_rows and not pc.all(pc.equal(table["kind"], kind)).as_py():
        raise _damaged(path, f"it holds rows of another probe than {kind}")
    meta = table.schema.metadata or {}
    try:
        rec = json.loads(meta[PROBE_META_KEY])
    except (KeyError, ValueError):
        raise _damaged(path, "it does not record what it measured") from None
    if not isinstance(rec, dict) or rec.get("kind") != kind or not isinstance(rec.get("settings"), dict):
        raise _damaged(path, "its record of what it measured is not a probe's")
    return table, rec


def probe_record(path: Path, rid: str, kind: str) -> dict[str, Any] | None:
    """What the probe file at ``path`` says it measured; None when it is absent or damaged (so a
    probe measures it again)."""
    try:
        found = read_probe(path, rid, kind)
    except StoreError:
        return None
    return None if found is None else found[1]


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint: tensors, containers and plain values (never an object's code: a planted
    pickle fails here, unexecuted) with a whole ``epoch`` and ``model`` weights by name; None
    when there is no file; StoreError when it is damaged."""
    import io

    import torch

    from degrade import packed

    data = _read_bytes(path)
    if data is None:
        return None
    try:
        with warnings.catch_warnings():  # torch notes the pickle protocol of every checkpoint
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if packed.is_packed(state):  # as runs write them now (older ones are not)
            state = packed.unpack(state)
    except Exception as e:  # noqa: BLE001 - any failure to load is damage
        raise _damaged(
            path, f"not a checkpoint ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or not _is_int(state.get("epoch")) or state["epoch"] < 0:
        raise _damaged(path, "it records no epoch")
    model = state.get("model")
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        raise _damaged(path, "it holds no model weights")
    return state


def load_checkpoint(path: Path, warn: Any = None) -> dict[str, Any] | None:
    """The newest readable checkpoint at ``path`` (or the one before it); None if neither is.

    A damaged file is reported through ``warn`` with its path; the run then resumes from the
    checkpoint before it, or starts over.
    """
    for candidate in (path, previous(path)):
        try:
            state = read_checkpoint(candidate)
        except StoreError:
            state = None
            if warn is not None:
                warn(f"damaged checkpoint {candidate}; falling back to an earlier one")
        if state is not None:
            return state
    return None


# The word on LATEST's second line when ``degrade use`` chose the sweep: new sweeps leave it.
PINNED = "pinned"


def read_latest(root: Path) -> tuple[str, bool] | None:
    """The sweep ``LATEST`` names and whether it is pinned (``degrade use``); None when there is
    no file or it is empty; StoreError when it is not UTF-8 text naming a sweep."""
    path = resolve(root, "LATEST")
    text = _read_text(path)
    if text is None or not text.strip():
        return None
    lines = text.strip().splitlines()
    if len(lines) > 2 or (len(lines) == 2 and lines[1].strip() != PINNED):
        raise _damaged(path, f"it holds {text.strip()[:60]!r}, not a sweep name (and {PINNED!r})")
    try:
        return check_sweep_name(lines[0].strip()), len(lines) == 2
    except StoreError:
        raise _damaged(path, f"{lines[0].strip()[:60]!r} is not a sweep name") from None


# --------------------------------------------------------------------------- run folders


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class RunDir:
    """The files of one run, each named through the resolver.

    StoreError when ``rid`` is not a plain run id or when ``runs/`` or the run's folder is a
    symbolic link; a file of the run that is a link is refused when it is named.
    """

    def __init__(self, out: Path | str, rid: str) -> None:
        self.id = check_run_id(rid)
        self.root = Path(out)
        self.path = resolve(self.root, "runs", rid)

    def file(self, *parts: str) -> Path:
        """A file (or folder) of the run, through the resolver."""
        return resolve(self.root, "runs", self.id, *parts)

    config = property(lambda self: self.file("config.yaml"))
    metrics = property(lambda self: self.file("metrics.parquet"))
    layers = property(lambda self: self.file("layers.parquet"))
    checkpoint = property(lambda self: self.file("checkpoint.pt"))
    status_file = property(lambda self: self.file("status.json"))
    lock_file = property(lambda self: self.file("lock"))

    def probe_file(self, kind: str) -> Path:
        """Where the probe ``kind`` of this run is kept: ``probes/<kind>.parquet``."""
        return self.file("probes", f"{kind}.parquet")

    def probes_folder(self) -> Path:
        """The run's ``probes/`` folder, made if needed; StoreError when a file is in its place."""
        folder = self.file("probes")
        if folder.exists() and not folder.is_dir():
            raise _damaged(folder, "a file where the probes folder belongs")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def read_status(self) -> dict[str, Any]:
        """The run's status record, validated; ``{"state": "new"}`` when it never started;
        StoreError when the file is damaged."""
        return read_status(self.status_file) or {"state": "new"}

    def status(self) -> dict[str, Any]:
        """The run's status record as a reader that can go on shows it: ``{"state": "new"}`` when
        it never started, and the damage named (``{"state": "damaged", "error": ...}``) when the
        file cannot be read."""
        try:
            return self.read_status()
        except StoreError as e:
            return {"state": "damaged", "error": str(e)}

    def read_config(self) -> DictConfig:
        """The run's config, validated; StoreError when it is missing or damaged."""
        cfg = read_config(self.config)
        if cfg is None:
            raise StoreError(f"run {self.id} has no config.yaml")
        return cfg

    def record(self) -> dict[str, Any]:
        """What the run is (``run_record`` of its config); StoreError when the config is damaged."""
        return run_record(self.read_config())

    def state(self) -> str:
        """The run's state as it is now: its recorded state, except that a run recorded as
        ``running`` whose lock no process holds is ``interrupted``.

        The lock is probed without waiting, and the status is read while the probe holds it
        shared, so no training session can begin or end between the two.
        """
        try:
            fd: int | None = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW)
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
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
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

    def _sessions(self) -> list[dict[str, Any]]:
        # A damaged status is replaced by the one a training session writes: its history is lost.
        return list(self.status().get("sessions") or [])

    def set_status(self, state: str, **extra: Any) -> None:
        """Record ``state`` (one of RECORDED) with a time stamp and any details.

        The list of training sessions (who trained the run, from which epoch) is kept.
        """
        record = {"state": state, "updated": _now(), **extra, "sessions": self._sessions()}
        write_text_atomic(self.status_file, json.dumps(record, indent=1, default=str) + "\n")

    def begin_session(self, from_epoch: int, epochs: int, **details: Any) -> None:
        """Mark the run as running in this process, resuming after ``from_epoch``.

        ``details`` (the software and hardware it trains with, the set-up timeline) are kept
        with the session.
        """
        session = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "from_epoch": from_epoch,
            **details,
        }
        for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
            if os.environ.get(var):
                session[var.lower()] = os.environ[var]
        record = {
            "state": "running",
            "updated": _now(),
            "epochs_done": from_epoch,
            "epochs": epochs,
            "sessions": [*self._sessions(), session],
        }
        write_text_atomic(self.status_file, json.dumps(record, indent=1, default=str) + "\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock, waiting while another process holds it (training and probing
        both take it).

        An OS file lock: the kernel drops it when its holder dies, even by SIGKILL, so a lock
        left by a killed process is taken over at once.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted as the lock after this run was checked is not followed.
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
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

    def metrics_table(self) -> pa.Table | None:
        """The run's metrics (``read_metrics``); None when there are none yet."""
        return read_metrics(self.metrics, self.id)

    def layers_table(self) -> pa.Table | None:
        """The run's per-layer diagnostics (``read_layers``); None when there are none."""
        return read_layers(self.layers, self.id)

    def damaged(self) -> list[str]:
        """The run's files that are there but fail their reader (or rows its status counts that
        ``metrics.parquet`` lacks), by file name; empty when every file reads."""
        bad = []
        status: dict[str, Any] = {}
        try:
            status = self.read_status()
        except StoreError:
            bad.append("status.json")
        readers = (
            ("config.yaml", lambda: read_config(self.config, shared=True)),
            ("layers.parquet", self.layers_table),
        )
        for name, read in readers:
            try:
                read()
            except StoreError:
                bad.append(name)
        try:
            metrics = self.metrics_table()
            done = int(status.get("epochs_done") or 0)
            if (metrics is None and done) or (metrics is not None and metrics.num_rows < done):
                bad.append("metrics.parquet")
        except StoreError:
            bad.append("metrics.parquet")
        return sorted(bad, key=["status.json", "config.yaml", "metrics.parquet", "layers.parquet"].index)

    def damage(self, error: StoreError | None = None) -> Damage | None:
        """The run's damage (``damaged``) with whether a rerun can rebuild it; None when none.
        ``error``: a reader's error that names the damage where a run folder cannot be looked at."""
        try:
            bad = self.damaged()
        except StoreError as e:  # a file of the run is a link, or not a plain name
            error = e
            bad = []
        if error is not None:
            return Damage(self.id, (), False, str(error))
        return Damage(self.id, tuple(bad), self.rebuildable()) if bad else None

    def rebuildable(self) -> bool:
        """Whether a checkpoint is there to rebuild the run's files from."""
        try:
            return self.checkpoint.is_file() or previous(self.checkpoint).is_file()
        except StoreError:
            return False

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
        metrics = self.metrics_table()
        if metrics is None or metrics.num_rows != int(status.get("epochs_done", -1)):
            return None
        return metrics.slice(metrics.num_rows - 1).to_pylist()[0]


def _last_environment(run: RunDir) -> dict[str, Any]:
    sessions = run.status().get("sessions") or []
    env = sessions[-1].get("environment") if sessions else None
    return env if isinstance(env, dict) else {}


def recorded_device(run: RunDir) -> str | None:
    """The device type (cpu, cuda, mps) the run's last training session used, if it recorded one."""
    device = _last_environment(run).get("device")
    return device if isinstance(device, str) else None


def recorded_threads(run: RunDir) -> int | None:
    """The CPU threads the run's last training session used, if it recorded them."""
    threads = _last_environment(run).get("threads")
    return threads if _is_int(threads) else None


def device_change(run_id: str, before: str, now: str) -> str:
    """Why a run begun on device type ``before`` may not resume on ``now``, and what to do."""
    return (
        f"run {run_id} began on {before} and would resume on {now}, which would change its numerics "
        f"mid-run: resume it with --device {before}, or train it afresh in another store (--out)"
    )


def make_out(out: str | Path) -> Path:
    """The store root, created; a clear StoreError when it cannot be written."""
    root = store_root(out).absolute()
    runs, sweeps = resolve(root, "runs"), resolve(root, "sweeps")
    resolve(root, "LATEST")
    try:
        runs.mkdir(parents=True, exist_ok=True)
        sweeps.mkdir(exist_ok=True)
        # A few real bytes: an empty file can be made on a full disk, a sweep record cannot.
        with tempfile.NamedTemporaryFile(dir=sweeps, prefix=".probe", delete=True) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except (FileExistsError, NotADirectoryError):
        raise StoreError(
            f"cannot write to output folder {root}: {runs} or {sweeps} is not a folder"
        ) from None
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


def inside_store(path: Path) -> Path | None:
    """The store ``path`` lies in (a folder above it holding ``runs/`` and ``sweeps/``), or None."""
    try:
        here = path.expanduser().absolute().resolve()
    except (OSError, RuntimeError):
        return None
    for folder in (here, *here.parents):
        if (folder / "runs").is_dir() and (folder / "sweeps").is_dir():
            return folder
    return None


# --------------------------------------------------------------------------- sweeps


def sweep_dir(out: Path, name: str) -> Path:
    """Folder of the sweep called ``name``; StoreError when the name would lead elsewhere, or
    when the folder (or ``sweeps/``, or its record) is a symbolic link."""
    folder = resolve(Path(out), "sweeps", check_sweep_name(name))
    resolve(folder, "sweep.json")
    return folder


def sweep_file(out: Path, name: str, filename: str) -> Path:
    """A file of the sweep ``name`` (its record, a figure, the report, an export)."""
    return resolve(sweep_dir(out, name), filename)


def write_sweep(out: Path, name: str, record: dict[str, Any]) -> Path:
    """Record a sweep (its run ids and command) and mark it as the latest, unless ``degrade
    use`` pinned another sweep as the one commands read by default."""
    folder = sweep_dir(out, name)
    latest = resolve(Path(out), "LATEST")
    try:
        pinned = (read_latest(Path(out)) or ("", False))[1]
    except StoreError:  # a damaged LATEST is replaced
        pinned = False
    with writing(folder):
        write_text_atomic(resolve(folder, "sweep.json"), json.dumps(record, indent=1, default=str) + "\n")
        if not pinned:
            write_text_atomic(latest, name + "\n")
    return folder


def use_sweep(out: Path | str, name: str | None) -> str:
    """Pin sweep ``name`` as the one commands read by default (sweeps started later leave it);
    with None, unpin: the sweep last started is the default again, and the next one started
    takes over. Returns the default sweep's name; StoreError when there is no such sweep."""
    root = store_root(out)
    if name is None:
        started = {n: str(read_sweep(root, n).get("started") or "") for n in sweep_names(root)}
        if not started:
            raise StoreError(f"no sweeps in {root}; run `degrade sweep` first")
        name = max(started, key=lambda n: (started[n], n))  # the sweep last started
        text = name + "\n"
    else:
        read_sweep(root, name)  # a clear error for a name that is not there
        text = f"{name}\n{PINNED}\n"
    with writing(root):
        write_text_atomic(resolve(root, "LATEST"), text)
    return name


def latest_sweep(out: Path) -> str | None:
    """Name of the sweep commands read by default (the one last started, or the one ``degrade
    use`` pinned), if any; StoreError when ``LATEST`` is damaged."""
    found = read_latest(Path(out))
    return None if found is None else found[0]


def latest_pinned(out: Path) -> bool:
    """Whether ``degrade use`` pinned the default sweep (new sweeps then leave it)."""
    found = read_latest(Path(out))
    return found is not None and found[1]


def sweep_names(out: Path | str) -> list[str]:
    """The names of the sweeps recorded in ``out`` (those with a ``sweep.json``), sorted. A
    folder whose name is not UTF-8 or that is a link is left out with a warning."""
    folder = Path(out).expanduser() / "sweeps"
    names = []
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    for entry in entries:
        if entry.startswith("."):
            continue
        try:
            record = sweep_file(Path(out).expanduser(), entry, "sweep.json")
        except StoreError as e:
            log.warning(f"left out sweep folder {entry.encode('utf-8', 'surrogateescape')!r}: {e}")
            continue
        if record.is_file():
            names.append(entry)
    return names


def no_sweep(out: Path | str, name: str) -> StoreError:
    """The error for a sweep ``name`` that ``out`` does not hold, naming the sweeps it does."""
    names = sweep_names(out)
    there = f"sweeps there: {', '.join(names)}" if names else "there are no sweeps; run `degrade sweep` first"
    return StoreError(f"no sweep named {name!r} in {out}; {there}")


def read_sweep(out: Path, name: str) -> dict[str, Any]:
    """The record of sweep ``name``; StoreError (naming the sweeps there are) when there is none."""
    record = read_sweep_record(sweep_file(out, name, "sweep.json"))
    if record is None:
        raise no_sweep(out, name)
    return record


def chosen_sweep(out: Path, name: str | None) -> str:
    """``name``, or the latest sweep of ``out`` when it is None; StoreError when there is none."""
    if name is not None:
        return name
    latest = latest_sweep(out)
    if latest is None:
        names = sweep_names(out)
        if names:
            raise StoreError(f"no latest sweep recorded in {out}; name one: sweeps there: {', '.join(names)}")
        raise StoreError(f"no sweeps in {out}; run `degrade sweep` first")
    return latest


@dataclass(frozen=True)
class Damage:
    """A run whose files cannot all be read, and whether a rerun can rebuild them."""

    run_id: str
    files: tuple[str, ...]
    rebuildable: bool
    reason: str | None = None  # where the run's folder cannot be looked at: the reader's error

    def note(self) -> str:
        """What is damaged and what a rerun does about it."""
        if self.reason is not None:
            return self.reason
        files = ", ".join(self.files)
        if self.rebuildable:
            return f"{files} unreadable; rerunning its sweep rebuilds it from the checkpoint"
        return f"{files} unreadable; no checkpoint, so rerunning its sweep trains it again"

    def __str__(self) -> str:
        return f"could not read run {self.run_id}: {self.note()}"


def run_ids(root: Path, name: str | None) -> list[str]:
    """The run ids of sweep ``name``, or of every run folder in the store when it is None (a
    folder whose name is not a run id is left out with a warning)."""
    if name is not None:
        return list(read_sweep(root, name)["runs"])
    try:
        entries = sorted(os.listdir(resolve(root, "runs")))
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.startswith("."):
            continue
        if not is_run_id(entry):
            log.warning(
                f"left out {entry.encode('utf-8', 'surrogateescape')!r} in {root / 'runs'}: not a run id"
            )
            continue
        if (root / "runs" / entry).is_dir() or (root / "runs" / entry).is_symlink():
            found.append(entry)
    return found


# Metrics columns renamed since older versions wrote them: ``lr`` was the scheduled rate of the
# epoch's last step, easily mistaken for the configured ``optim.lr``; ``path``, the training
# step's path, read like a file's.
RENAMED_COLUMNS = {"lr": "scheduled_lr", "path": "step_path"}


def current_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row (as a checkpoint of any version kept it) under today's column names."""
    return {
        RENAMED_COLUMNS.get(k, k): v
        for k, v in row.items()
        if not (k in RENAMED_COLUMNS and RENAMED_COLUMNS[k] in row)
    }
