"""What every probe shares: a finished run's weights (final, and initial as its seed rebuilds
them), the fixed images it is measured on, and the file it writes.

A probe's file is ``runs/<run_id>/probes/<kind>.parquet``: one row per measurement, every row
naming its run, with the settings it was measured with in the file's key-value metadata. A file
whose settings match is not measured again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from degrade.atomic import rows_table, write_table_atomic
from degrade.data import Dataset, load_dataset
from degrade.models import build_model
from degrade.probes.settings import ProbeError
from degrade.probes.tables import META_KEY
from degrade.spec import model_spec
from degrade.store import RunDir, StoreError, read_checkpoint, recorded_device

Tick = Callable[[int], None]


@dataclass
class Subject:
    """One finished run, ready to be measured: its config, data and weights on its device."""

    run_id: str
    cfg: DictConfig
    device: torch.device
    data: Dataset
    images: int  # the fixed subset: the first ``images`` training images
    _final: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        """The store the run was found in."""
        return Path(self.cfg.out)

    @property
    def x(self) -> torch.Tensor:
        """The fixed subset of training images (unaugmented)."""
        return self.data.x_train[: self.images]

    @property
    def y(self) -> torch.Tensor:
        return self.data.y_train[: self.images]

    def model(self, weights: str = "final") -> nn.Module:
        """A fresh copy of the run's network with its ``final`` or ``initial`` weights, in eval mode.

        Initial weights are rebuilt from the run's seed as training built them; their BN running
        statistics are estimated on the fixed subset, since a net at initialisation has none.
        """
        torch.manual_seed(int(self.cfg.seed))
        model = build_model(model_spec(self.cfg), self.data.in_shape, self.data.num_classes)
        model.to(self.device)
        if _channels_last(self.cfg):
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it
        if weights == "final":
            if self._final is None:
                self._final = load_weights(RunDir(Path(self.cfg.out), self.run_id).checkpoint, self.device)
            model.load_state_dict(self._final)
        else:
            calibrate_bn(model, self.x)
        return model.eval()

    def header(self) -> dict[str, Any]:
        """The columns every row of this run's probe files carries."""
        m = self.cfg.model
        return {
            "run_id": self.run_id,
            "family": str(m.family),
            "variant": str(m.variant),
            "depth": int(m.depth),
            "seed": int(self.cfg.seed),
            "dataset": str(self.cfg.data.name),
        }


def load_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The final model weights of the checkpoint at ``path`` (the store's checkpoint reader:
    tensors only, nothing is unpickled); ProbeError when it is missing or damaged. The
    checkpoint before it holds an earlier epoch's weights, not the final ones: no fallback."""
    try:
        state = read_checkpoint(path)
    except StoreError as e:
        raise ProbeError(f"cannot read the weights in {path}: {e}; not probed") from None
    if state is None:
        raise ProbeError(f"cannot read the weights in {path}: there is no such file; not probed")
    return {k: v.to(device) for k, v in state["model"].items()}


def probe_device(out: Path, run_id: str) -> torch.device:
    """The device the run trained on when this machine has it (CUDA), else the CPU."""
    trained = recorded_device(RunDir(out, run_id))
    if trained == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def run_config(out: Path, run_id: str) -> DictConfig:
    """The resolved config a run recorded, with ``out`` set to the store it was found in."""
    try:
        cfg = RunDir(out, run_id).read_config()
    except StoreError as e:  # a missing or damaged config: the run cannot be rebuilt
        raise ProbeError(f"run {run_id} cannot be rebuilt: {e}") from None
    cfg.out = str(out)
    return cfg


def _channels_last(cfg: DictConfig) -> bool:
    # As training lays them out on the CPU and CUDA: about a fifth faster for these convolutions.
    return str(cfg.model.family) == "cnn"


class DataCache:
    """Each dataset a sweep's runs name, loaded once and kept on each device it is asked for."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str, str], Dataset] = {}

    def get(self, cfg: DictConfig, device: torch.device) -> Dataset:
        fmt = torch.channels_last if _channels_last(cfg) else None
        data = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        key = (data, str(device), str(fmt))
        if key not in self.found:
            self.found[key] = load_dataset(cfg.data).to(device, memory_format=fmt)
        return self.found[key]


def subject(out: Path, run_id: str, images: int, cache: DataCache) -> Subject:
    """The run ``run_id`` of store ``out``, ready to be measured."""
    cfg = run_config(out, run_id)
    device = probe_device(out, run_id)
    return Subject(run_id, cfg, device, cache.get(cfg, device), images)


# --------------------------------------------------------------------------- measuring


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, batch: int = 512) -> None:
    """Replace every BN layer's running statistics by their averages over ``x`` (train mode)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The residual (or, for a plain net, would-be residual) blocks of ``model`` in forward order."""
    return list(getattr(model, "blocks", []))


def downsamples(block: nn.Module) -> bool:
    """Whether the block changes the shape of what flows through it (stride or width)."""
    if hasattr(block, "changes_shape"):  # a cured block says so (CReLU doubles what it reads)
        return bool(block.changes_shape)
    first = block.get_submodule("conv1" if hasattr(block, "conv1") else "fc1")
    if isinstance(first, nn.Conv2d):
        return first.stride != (1, 1) or first.in_channels != first.out_channels
    assert isinstance(first, nn.Linear)
    return first.in_features != first.out_features


def branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """F(x): what the block's layers add to its shortcut (before the addition and its ReLU)."""
    if hasattr(block, "branch"):  # a cured block computes its own
        out: torch.Tensor = cast(Any, block).branch(x)
        return out
    names = ("conv1", "conv2") if hasattr(block, "conv1") else ("fc1", "fc2")
    first, second = (block.get_submodule(n) for n in names)
    bn1, bn2 = block.get_submodule("bn1"), block.get_submodule("bn2")
    if block.pre:
        return second(F.relu(bn2(first(F.relu(bn1(x))))))
    return bn2(second(F.relu(bn1(first(x)))))


# --------------------------------------------------------------------------- files


def write(out: Path, run_id: str, kind: str, rows: list[dict[str, Any]], rec: dict[str, Any]) -> Path:
    """Replace the run's probe file of ``kind`` with ``rows`` (one dict per measurement) and the
    record, atomically; the path is made anew by the store's resolver, so a link planted in the
    run's folder since it was planned is refused, not followed."""
    run = RunDir(out, run_id)
    run.probes_folder()
    where = run.probe_file(kind)
    if where.is_dir():
        raise StoreError(f"{where} is damaged: a folder where a file belongs; remove it, then rerun")
    table = rows_table(rows).replace_schema_metadata({META_KEY: json.dumps(rec, sort_keys=True).encode()})
    write_table_atomic(where, table)
    return where
