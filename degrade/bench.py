"""Training throughput of degrade's own step against a typical reference loop, side by side.

The reference is what a common tutorial loop does: fp32, NCHW, a DataLoader whose dataset
pads, crops and flips every image in Python, and ``loss.item()`` after every step. Both
train the same model (the paper's CIFAR ResNet, batch 128) on the same CIFAR-shaped
synthetic data in this process, on this machine.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from degrade.config import compose_run
from degrade.models import ModelSpec, build_model
from degrade.train import Trainer


@dataclass
class BenchRow:
    """One model's throughput by both loops."""

    model: str
    device: str
    precision: str
    path: str
    reference_img_s: float
    degrade_img_s: float
    speedup: float


class _PerSampleAugmented(TorchDataset):
    """The reference's data: one image at a time, padded, cropped and flipped in Python."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(self.x[i], (4, 4, 4, 4))
        top, left = (int(v) for v in torch.randint(0, 9, (2,)))
        img = img[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_img_s(depth: int, data: Any, device: torch.device, steps: int, warmup: int) -> float:
    """Images per second of the reference loop."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(depth=depth), (3, 32, 32), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(_PerSampleAugmented(data.x_train, data.y_train), batch_size=128,
                        shuffle=True, drop_last=True)
    model.train()
    done, seen, start = 0, 0, 0.0
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                start, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what the typical loop logs every step
            done += 1
            seen += len(y)
            if done == warmup + steps:
                break
    _sync(device)
    return seen / (time.perf_counter() - start)


def degrade_img_s(trainer: Trainer, steps: int, warmup: int) -> float:
    """Images per second of degrade's own training step (device-resident data, batch augmentation)."""
    d, device = trainer.data, trainer.acc.device
    gen = torch.Generator(device=device).manual_seed(0)
    n = len(d.x_train)
    trainer.model.train()
    total = torch.zeros((), device=device)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        idx = torch.randint(0, n, (128,), generator=gen, device=device)
        loss, _ = trainer.step(d.x_train[idx], d.y_train[idx], 0.1, gen)
        total += loss
    total.item()  # one read at the end, as an epoch does
    return 128 * steps / (time.perf_counter() - start)


def run(depths: tuple[int, ...] = (20, 56), device: str = "auto", precision: str = "auto",
        steps: int | None = None, warmup: int = 3, images: int = 2048) -> list[BenchRow]:
    """Measure both loops for the CIFAR ResNet of each depth; return one row per depth."""
    rows = []
    for depth in depths:
        cfg = compose_run([f"model.depth={depth}", "data=synthetic", f"data.train_size={images}",
                           "data.test_size=128", f"trainer.device={device}",
                           f"trainer.precision={precision}", "trainer.diagnostics=false"])
        trainer = Trainer(cfg)
        dev = trainer.acc.device
        n = steps if steps is not None else (300 if dev.type == "cuda" else 10)
        cpu_data = trainer.data.to(torch.device("cpu"))
        ref = reference_img_s(depth, cpu_data, dev, n, warmup)
        ours = degrade_img_s(trainer, n, warmup)
        path = ("channels_last" if trainer.acc.channels_last else "NCHW") + ", device-resident data"
        rows.append(BenchRow(f"resnet{depth}", dev.type, trainer.acc.precision, path,
                             round(ref, 1), round(ours, 1), round(ours / ref, 2)))
    return rows


def as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (for JSON)."""
    return [asdict(r) for r in rows]
