"""Live curves in TensorBoard: the optional ``tensorboard`` extra, imported only when switched on.

With ``trainer.tensorboard=true`` each run writes its per-epoch errors, losses, learning rate,
throughput and per-layer gradient norms as TensorBoard events into its own run folder, so
``tensorboard --logdir outputs/runs`` shows every run of every sweep by its run id, while they
train. The events are caught up from the run's metrics whenever it is trained on or skipped as
done with the switch on: every epoch the run has is in them, whatever stopped a session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

MISSING = (
    "trainer.tensorboard=true needs the tensorboard extra: "
    "pip install 'degrade[tensorboard]' (or pip install tensorboard)"
)


def wanted(cfg: DictConfig) -> bool:
    """Whether ``cfg`` switches TensorBoard logging on."""
    return bool(cfg.trainer.get("tensorboard", False))


def available() -> bool:
    """Whether the extra is installed (torch's writer needs the ``tensorboard`` package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def logged_epochs(folder: Path) -> set[int]:
    """The epochs whose training error the TensorBoard events in ``folder`` hold, as TensorBoard
    reads them (what a later session purged is gone); empty without events."""
    if not any(folder.glob("events.out.tfevents.*")):
        return set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    if "error/train" not in events.Tags().get("scalars", []):
        return set()
    return {int(e.step) for e in events.Scalars("error/train")}


def first_missing(folder: Path, epochs: list[int]) -> int:
    """The first of ``epochs`` (the run's trained epochs, 1..n) whose events ``folder`` lacks;
    the epoch after the last when none is missing."""
    logged = logged_epochs(folder)
    return next((e for e in sorted(epochs) if e not in logged), max(epochs, default=0) + 1)


# TensorBoard tag, metrics column, scale.
_SCALARS = (
    ("error/train", "train_error", 100),
    ("error/test", "test_error", 100),
    ("loss/train", "train_loss", 1),
    ("loss/test", "test_loss", 1),
    ("lr", "scheduled_lr", 1),
    ("throughput/images_per_second", "images_per_second", 1),
)


class EpochLog:
    """One run's event writer; ``write`` adds an epoch and flushes, so TensorBoard sees it at once."""

    def __init__(self, folder: Path, purge_from: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step makes TensorBoard drop what earlier sessions logged from that epoch on: an
        # epoch trained again, or written again because one before it was missing, shows once.
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_from)

    def write(self, row: dict[str, Any], layer_rows: list[dict[str, Any]]) -> None:
        """Log the metrics row of one epoch and that epoch's per-layer rows (of ``layer_rows``)."""
        step = int(row["epoch"])
        for tag, key, scale in _SCALARS:
            if row.get(key) is not None:  # rows of an older degrade may lack a column
                self.writer.add_scalar(tag, scale * row[key], step)
        for r in layer_rows:
            if r["epoch"] == step:
                self.writer.add_scalar(f"grad_norm/{r['layer']:03d}_{r['name']}", r["grad_norm"], step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


@contextlib.contextmanager
def epoch_log(
    cfg: DictConfig, folder: Path | None, rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]]
) -> Iterator[EpochLog | None]:
    """An EpochLog into ``folder`` when ``cfg`` asks for one and the run has a folder, else None.

    ``rows`` (and ``layer_rows``): the epochs the run has trained so far. Their events are
    written first from the first epoch the folder's events lack, so that a session that was
    killed between its checkpoint and its events, or trained with the switch off, leaves no
    epoch out; writing them again is harmless, which makes this safe to repeat.
    """
    if folder is None or not wanted(cfg):
        yield None
        return
    start = first_missing(folder, [int(r["epoch"]) for r in rows])
    log = EpochLog(folder, start)
    try:
        for row in rows:
            if int(row["epoch"]) >= start:
                log.write(row, layer_rows)
        yield log
    finally:
        log.close()


def catch_up(
    cfg: DictConfig, folder: Path, rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]]
) -> int:
    """Write the events of a finished run's epochs its folder lacks (none when ``cfg`` does not
    ask for TensorBoard); the number of epochs written. Nothing is opened when none is missing."""
    if not wanted(cfg) or not rows:
        return 0
    start = first_missing(folder, [int(r["epoch"]) for r in rows])
    todo = [r for r in rows if int(r["epoch"]) >= start]
    if todo:
        log = EpochLog(folder, start)
        try:
            for row in todo:
                log.write(row, layer_rows)
        finally:
            log.close()
    return len(todo)
