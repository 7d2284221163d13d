"""Training throughput of degrade's own step against a typical reference loop, side by side.

The reference is what a common tutorial loop does: fp32, NCHW, a DataLoader whose dataset
pads, crops and flips every image in Python, and ``loss.item()`` after every step. Both
train the same model (the paper's CIFAR ResNet, batch 128) on the same CIFAR-shaped
synthetic data in this process, on this machine.

The sweep measurement trains several same-shape runs at once, as a sweep would: one
single-thread process per run on a CPU (the default launcher there), one thread and CUDA
stream per run in one process on a GPU (`degrade sweep --together`).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from degrade.accel import own_stream, usable_cores
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
    channels_last: bool
    reference_img_s: float
    degrade_img_s: float
    speedup: float
    setup_s: float  # what capturing the CUDA graph cost (0 on other paths)
    sweep_runs: int | None = None  # with --sweep: runs trained at once ...
    sweep_img_s: float | None = None  # ... and their images per second together


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


def _timed_steps(trainer: Trainer, steps: int, warmup: int,
                 before: Callable[[], object] | None = None) -> tuple[float, float]:
    """Train ``warmup`` then ``steps`` steps of batch 128; return the monotonic clock at both ends.

    The warm-up absorbs the CUDA-graph capture (``trainer.stepper.setup_seconds`` says what it
    cost). ``before`` is called between the two, e.g. to start several workers together.
    """
    d, device = trainer.data, trainer.acc.device
    gen = torch.Generator(device=device).manual_seed(int(trainer.cfg.seed))
    n = len(d.x_train)
    trainer.model.train()
    trainer.stepper.reset_sums()
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            if before is not None:
                before()
            start = time.monotonic()
        idx = torch.randint(0, n, (128,), generator=gen, device=device)
        trainer.step(d.x_train[idx], d.y_train[idx], 0.1, gen)
    trainer.stepper.sums()  # one read at the end, as an epoch does
    return start, time.monotonic()


def degrade_img_s(trainer: Trainer, steps: int, warmup: int) -> float:
    """Images per second of degrade's own training step (device-resident data, batch augmentation)."""
    start, end = _timed_steps(trainer, steps, warmup)
    return 128 * steps / (end - start)


def _one_worker(overrides: list[str], steps: int, warmup: int, barrier: Any) -> tuple[float, float]:
    trainer = Trainer(compose_run(overrides))
    return _timed_steps(trainer, steps, warmup, barrier.wait)


def _img_s_together(spans: list[tuple[float, float]], steps: int) -> float:
    """Images per second of runs timed side by side: all their images over the whole window."""
    return len(spans) * 128 * steps / (max(e for _, e in spans) - min(s for s, _ in spans))


def _processes_img_s(overrides: list[str], runs: int, steps: int, warmup: int) -> float:
    """Runs in parallel processes of one thread each, as a CPU sweep trains them."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(runs, mp_context=ctx) as pool:
        barrier = manager.Barrier(runs)
        jobs = [pool.submit(_one_worker, [*overrides, f"seed={k}", "trainer.threads=1"], steps, warmup,
                            barrier) for k in range(runs)]
        return _img_s_together([j.result() for j in jobs], steps)


def _threads_img_s(overrides: list[str], runs: int, steps: int, warmup: int) -> float:
    """Runs in threads of this process, each on its own CUDA stream, as `degrade sweep --together`
    trains them."""
    configs = [compose_run([*overrides, f"seed={k}"]) for k in range(runs)]  # Hydra: one thread
    barrier = threading.Barrier(runs)

    def one(cfg: Any) -> tuple[float, float]:
        with own_stream(str(cfg.trainer.device)):
            return _timed_steps(Trainer(cfg), steps, warmup, barrier.wait)

    with ThreadPoolExecutor(runs) as pool:
        return _img_s_together(list(pool.map(one, configs)), steps)


def sweep_img_s(overrides: list[str], device: torch.device, runs: int, steps: int, warmup: int) -> float:
    """Images per second of ``runs`` same-shape runs trained at once: threads on CUDA streams in
    one process on a GPU, one single-thread process per run elsewhere."""
    if device.type == "cuda":
        return _threads_img_s(overrides, runs, steps, warmup)
    return _processes_img_s(overrides, runs, steps, warmup)


def default_sweep_runs(device: torch.device) -> int:
    """How many runs ``--sweep`` trains at once: one per core on a CPU, eight on a GPU."""
    return 8 if device.type in ("cuda", "mps") else usable_cores()


def run(depths: tuple[int, ...] = (20, 56), device: str = "auto", precision: str = "auto",
        steps: int | None = None, warmup: int = 5, images: int = 2048, path: str = "auto",
        sweep: bool = False, runs: int | None = None) -> list[BenchRow]:
    """Measure both loops for the CIFAR ResNet of each depth; return one row per depth.

    With ``sweep``, also measure ``runs`` runs of the same shape trained at once (default:
    ``default_sweep_runs``).
    """
    rows = []
    for depth in depths:
        overrides = [f"model.depth={depth}", "data=synthetic", f"data.train_size={images}",
                     "data.test_size=128", f"trainer.device={device}", f"trainer.precision={precision}",
                     f"trainer.path={path}", "trainer.diagnostics=false"]
        trainer = Trainer(compose_run(overrides))
        dev = trainer.acc.device
        n = steps if steps is not None else (300 if dev.type == "cuda" else 10)
        cpu_data = trainer.data.to(torch.device("cpu"))
        ref = reference_img_s(depth, cpu_data, dev, n, warmup)
        ours = degrade_img_s(trainer, n, warmup)
        row = BenchRow(f"resnet{depth}", dev.type, trainer.acc.precision, trainer.stepper.path,
                       trainer.acc.channels_last, round(ref, 1), round(ours, 1), round(ours / ref, 2),
                       round(trainer.stepper.setup_seconds, 1))
        del trainer, cpu_data
        if sweep:
            row.sweep_runs = runs or default_sweep_runs(dev)
            row.sweep_img_s = round(sweep_img_s(overrides, dev, row.sweep_runs, n, warmup), 1)
        rows.append(row)
    return rows


def as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (for JSON)."""
    return [asdict(r) for r in rows]
