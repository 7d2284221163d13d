"""Files replaced atomically: written to a temporary file beside their place, flushed to disk,
then renamed over it, so that no reader and no crash ever sees half a file.

These functions take a path they are given; which paths may be written is the store's call
(``degrade.store`` builds every path into a store).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# pandas, pyarrow and torch are imported where a table or checkpoint is written: a config error
# or a finished sweep then answers without them, and a worker without pandas.
if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def _file_mode() -> int:
    # mkstemp makes owner-only files; results should get the permissions the user's umask gives.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
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
    atomic_write(path, lambda p: None if p.write_text(text) else None)


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Replace ``path`` with ``frame`` as Parquet so that no reader sees half a file."""
    import pyarrow as pa

    write_table_atomic(path, pa.Table.from_pandas(frame, preserve_index=False))


def write_table_atomic(path: Path, table: pa.Table) -> None:
    """Replace ``path`` with the pyarrow ``table`` as Parquet, atomically."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda p: pq.write_table(table, p))


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """``rows`` (one dict per row) as a table whose columns are every key any row has, in the
    order they first appear (a missing value is null): rows a checkpoint kept from an older
    version of degrade lack the newer columns."""
    import pyarrow as pa

    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = {c: [r.get(c) for r in rows] for c in columns}
    arrays = [_plain_array(values) for values in data.values()]
    if any(a is None for a in arrays):
        return pa.Table.from_pydict(data)
    return pa.Table.from_arrays(arrays, names=columns)


def _bits(flags: list[bool]) -> bytes:
    """Arrow's bitmap of ``flags``: bit ``i`` of the buffer (least significant first) is flag ``i``."""
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def _plain_array(values: list[Any]) -> pa.Array | None:
    """``values`` as the Arrow array ``pa.array`` infers for them (null, bool, int64, double or
    string), built from its buffers; None when they hold anything else.

    ``pa.array`` imports pandas on its first call (0.25 s) to ask whether it was given a pandas
    object: every training process would pay that at its first epoch for a few rows of numbers.
    """
    import array

    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    valid = [v is not None for v in values]
    n, nulls = len(values), valid.count(False)
    bitmap = pa.py_buffer(_bits(valid)) if nulls else None
    if not kinds:
        return pa.nulls(n)
    if kinds == {bool}:
        data = pa.py_buffer(_bits([v is True for v in values]))
        return pa.Array.from_buffers(pa.bool_(), n, [bitmap, data], null_count=nulls)
    if kinds == {int}:
        if any(not -(2**63) <= v < 2**63 for v in values if v is not None):
            return None  # pyarrow's own error (or type) for integers beyond int64
        data = pa.py_buffer(array.array("q", [0 if v is None else v for v in values]))
        return pa.Array.from_buffers(pa.int64(), n, [bitmap, data], null_count=nulls)
    if kinds <= {int, float}:
        if any(type(v) is int and abs(v) > 2**53 for v in values):
            return None  # pyarrow refuses an integer a double cannot hold exactly
        data = pa.py_buffer(array.array("d", [0.0 if v is None else float(v) for v in values]))
        return pa.Array.from_buffers(pa.float64(), n, [bitmap, data], null_count=nulls)
    if kinds == {str}:
        encoded = [b"" if v is None else v.encode() for v in values]
        ends = [0]
        for b in encoded:
            ends.append(ends[-1] + len(b))
        if ends[-1] >= 2**31 or array.array("i").itemsize != 4:
            return None  # pyarrow's own choice for more than 2 GiB of text; offsets are int32
        offsets = pa.py_buffer(array.array("i", ends))
        text = pa.py_buffer(b"".join(encoded))
        return pa.Array.from_buffers(pa.string(), n, [bitmap, offsets, text], null_count=nulls)
    return None


def write_rows_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` (one dict per row) as Parquet, atomically."""
    write_table_atomic(path, rows_table(rows))


def previous(path: Path) -> Path:
    """Where the file before ``path`` is kept (``checkpoint.pt`` -> ``checkpoint.prev.pt``)."""
    return path.with_name(path.stem + ".prev" + path.suffix)


def _unchecksummed() -> contextlib.AbstractContextManager[Any]:
    """A block in which ``torch.save`` leaves out its zip entries' CRC-32: ``torch.load`` never
    checks it (a changed byte loads all the same), and computing it over a 56-layer net's
    checkpoint costs a couple of milliseconds at every epoch."""
    try:
        from torch.utils.serialization import config
    except ImportError:
        return contextlib.nullcontext()
    # A config module: its ``patch`` is installed at import, so type checkers cannot see it.
    patch = getattr(config, "patch", None)
    return contextlib.nullcontext() if patch is None else patch({"save.compute_crc32": False})


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Replace the checkpoint at ``path`` atomically, keeping the one before as ``*.prev.pt``."""

    import torch

    def write(tmp: Path) -> None:
        with _unchecksummed():
            torch.save(state, tmp)
        if path.exists():
            os.replace(path, previous(path))

    atomic_write(path, write)
