"""Live curves in TensorBoard: the optional ``tensorboard`` extra, imported only when switched on.

With ``trainer.tensorboard=true`` each run writes its per-epoch errors, losses, learning rate,
throughput and per-layer gradient norms as TensorBoard events into its own run folder, so
``tensorboard --logdir outputs/runs`` shows every run of every sweep by its run id, while they
train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

MISSING = ("trainer.tensorboard=true needs the tensorboard extra: "
           "pip install 'degrade[tensorboard]' (or pip install tensorboard)")


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


class EpochLog:
    """One run's event writer; ``write`` adds an epoch and flushes, so TensorBoard sees it at once."""

    def __init__(self, folder: Path, epochs_done: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run trains again the epoch it lost: purge_step makes TensorBoard drop what an
        # earlier session logged from there on, so no epoch is shown twice.
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=epochs_done + 1)

    def write(self, row: dict[str, Any], layer_rows: list[dict[str, Any]]) -> None:
        """Log the metrics row of one epoch and that epoch's per-layer rows."""
        step = int(row["epoch"])
        add = self.writer.add_scalar
        add("error/train", 100 * row["train_error"], step)
        add("error/test", 100 * row["test_error"], step)
        add("loss/train", row["train_loss"], step)
        add("loss/test", row["test_loss"], step)
        add("lr", row["scheduled_lr"], step)
        add("throughput/images_per_second", row["images_per_second"], step)
        for r in reversed(layer_rows):  # this epoch's rows are the newest
            if r["epoch"] != step:
                break
            add(f"grad_norm/{r['layer']:03d}_{r['name']}", r["grad_norm"], step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


@contextlib.contextmanager
def epoch_log(cfg: DictConfig, folder: Path | None, epochs_done: int) -> Iterator[EpochLog | None]:
    """An EpochLog into ``folder`` when ``cfg`` asks for one and the run has a folder, else None."""
    if folder is None or not wanted(cfg):
        yield None
        return
    log = EpochLog(folder, epochs_done)
    try:
        yield log
    finally:
        log.close()
