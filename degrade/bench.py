"""Training throughput of degrade's own step against a typical reference loop, side by side.

The reference is what a common tutorial loop does: fp32, NCHW, a DataLoader whose dataset
pads, crops and flips every image in Python, and ``loss.item()`` after every step. Both
train the same model (the paper's CIFAR ResNet, batch 128) on the same CIFAR-shaped
synthetic data in this process, on this machine.

Each side is timed in several repeats that alternate (reference, degrade, reference, ...),
so a noisy moment of the machine falls on one repeat of one side, not on a whole side; the
rows give the median and the range of the repeats, and the speedup of each pair.

The sweep measurement trains several same-shape runs at once, as a sweep would: one
single-thread process per run on a CPU (the default launcher there), interleaved step by step
in one process, each on its own CUDA stream, on a GPU (`degrade sweep --together`).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from degrade.accel import new_stream, on_stream, usable_cores
from degrade.config import ConfigError, compose_run
from degrade.models import ModelSpec, build_model
from degrade.train import Trainer

BATCH = 128
Span = tuple[float, float]  # monotonic clock at the start and the end of a timed window


@dataclass
class Spread:
    """Repeated measurements of one quantity: their median, range and values."""

    median: float
    min: float
    max: float
    repeats: list[float]

    @classmethod
    def of(cls, values: list[float], digits: int = 1) -> Spread:
        """The spread of ``values`` (at least one), rounded to ``digits``."""
        return cls(
            round(statistics.median(values), digits),
            round(min(values), digits),
            round(max(values), digits),
            [round(v, digits) for v in values],
        )


@dataclass
class BenchRow:
    """One model's throughput by both loops, over alternating repeats."""

    model: str
    device: str
    precision: str
    path: str
    channels_last: bool
    steps: int  # timed steps per repeat
    reference_img_s: Spread
    degrade_img_s: Spread
    speedup: Spread  # degrade / reference of each repeat pair
    setup_s: float  # what capturing the CUDA graph cost (0 on other paths)
    sweep_runs: int | None = None  # with --sweep: runs trained at once ...
    sweep_img_s: Spread | None = field(default=None)  # ... and their images per second together


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


class ReferenceLoop:
    """The typical loop, kept alive between timed repeats so each repeat continues training."""

    def __init__(self, depth: int, data: Any, device: torch.device, warmup: int) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(ModelSpec(depth=depth), (3, 32, 32), 10).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        self.loader = DataLoader(
            _PerSampleAugmented(data.x_train, data.y_train), batch_size=BATCH, shuffle=True, drop_last=True
        )
        self.batches = self._forever()
        self.model.train()
        self._steps(warmup)

    def _forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.loader

    def _steps(self, n: int) -> None:
        for _ in range(n):
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss.item()  # what the typical loop logs every step

    def img_s(self, steps: int) -> float:
        """Images per second over ``steps`` more steps."""
        _sync(self.device)
        start = time.perf_counter()
        self._steps(steps)
        _sync(self.device)
        return BATCH * steps / (time.perf_counter() - start)


def _timed_windows(
    trainers: list[Trainer],
    steps: int,
    warmup: int,
    repeats: int = 1,
    before: Callable[[], object] | None = None,
) -> list[Span]:
    """Train ``warmup`` steps, then ``repeats`` timed windows of ``steps`` steps of batch 128.

    Several trainers are interleaved step by step from this thread, each on a CUDA stream of
    its own where there is one, as `degrade sweep --together` trains them. The warm-up absorbs
    the CUDA-graph capture (``stepper.setup_seconds`` says what it cost). ``before`` is called
    before each window, e.g. to start several processes together.
    """
    feeds = []
    for t in trainers:
        gen = torch.Generator(device=t.acc.device).manual_seed(int(t.cfg.seed))
        feeds.append((t, gen, new_stream(str(t.acc.device))))
        t.model.train()
        t.stepper.reset_sums()

    def train(k: int) -> None:
        for _ in range(k):
            for t, gen, stream in feeds:
                with on_stream(stream):
                    idx = torch.randint(0, len(t.data.x_train), (BATCH,), generator=gen, device=t.acc.device)
                    t.step(t.data.x_train[idx], t.data.y_train[idx], 0.1, gen)

    train(warmup)
    spans = []
    for _ in range(repeats):
        for t in trainers:
            _sync(t.acc.device)
        if before is not None:
            before()
        start = time.monotonic()
        train(steps)
        for t, _, stream in feeds:
            with on_stream(stream):
                t.stepper.sums()  # one read at the end, as an epoch does
        spans.append((start, time.monotonic()))
    return spans


def degrade_img_s(trainer: Trainer, steps: int) -> float:
    """Images per second of degrade's own step over ``steps`` more steps (warm-up done before)."""
    ((start, end),) = _timed_windows([trainer], steps, warmup=0)
    return BATCH * steps / (end - start)


def _one_worker(overrides: list[str], steps: int, warmup: int, repeats: int, barrier: Any) -> list[Span]:
    trainer = Trainer(compose_run(overrides))
    return _timed_windows([trainer], steps, warmup, repeats, barrier.wait)


def _img_s_together(spans: list[list[Span]], steps: int) -> list[float]:
    """Images per second of runs timed side by side, per repeat: all their images over the window
    from the first start to the last end."""
    rates = []
    for window in zip(*spans, strict=True):
        rates.append(len(window) * BATCH * steps / (max(e for _, e in window) - min(s for s, _ in window)))
    return rates


def _processes_img_s(overrides: list[str], runs: int, steps: int, warmup: int, repeats: int) -> list[float]:
    """Runs in parallel processes of one thread each, as a CPU sweep trains them."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(runs, mp_context=ctx) as pool:
        barrier = manager.Barrier(runs)
        jobs = [
            pool.submit(
                _one_worker, [*overrides, f"seed={k}", "trainer.threads=1"], steps, warmup, repeats, barrier
            )
            for k in range(runs)
        ]
        return _img_s_together([j.result() for j in jobs], steps)


def _interleaved_img_s(
    overrides: list[str], runs: int, steps: int, warmup: int, repeats: int = 1
) -> list[float]:
    """Runs interleaved step by step in this process, each on its own CUDA stream, as
    `degrade sweep --together` trains them."""
    trainers = [Trainer(compose_run([*overrides, f"seed={k}"])) for k in range(runs)]
    spans = _timed_windows(trainers, steps, warmup, repeats)
    return [runs * BATCH * steps / (end - start) for start, end in spans]


def sweep_img_s(
    overrides: list[str], device: torch.device, runs: int, steps: int, warmup: int, repeats: int = 1
) -> list[float]:
    """Images per second of ``runs`` same-shape runs trained at once, one value per repeat: runs
    interleaved on CUDA streams in one process on a GPU, one single-thread process per run elsewhere."""
    if device.type == "cuda":
        return _interleaved_img_s(overrides, runs, steps, warmup, repeats)
    return _processes_img_s(overrides, runs, steps, warmup, repeats)


def default_sweep_runs(device: torch.device) -> int:
    """How many runs ``--concurrent`` trains at once: one per core on a CPU, eight on a GPU."""
    return 8 if device.type in ("cuda", "mps") else usable_cores()


def check_args(
    depths: tuple[int, ...], steps: int | None, runs: int | None, repeats: int, warmup: int = 0
) -> None:
    """ConfigError unless every depth is a CIFAR ResNet's (6n+2), every count is at least 1 and
    the warm-up is not negative."""
    if not depths or any(d < 8 or (d - 2) % 6 for d in depths):
        given = ",".join(map(str, depths))
        raise ConfigError(f"--depths takes ResNet depths 6n+2 (20, 56, ...), got {given!r}")
    for flag, value in (("--steps", steps), ("--runs", runs), ("--repeats", repeats)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1")
    if warmup < 0:
        raise ConfigError("--warmup must be 0 or more")


def run(
    depths: tuple[int, ...] = (20, 56),
    device: str = "auto",
    precision: str = "auto",
    steps: int | None = None,
    warmup: int = 5,
    images: int = 2048,
    path: str = "auto",
    concurrent: bool = False,
    runs: int | None = None,
    repeats: int = 3,
) -> list[BenchRow]:
    """Measure both loops for the CIFAR ResNet of each depth, ``repeats`` alternating times each;
    return one row per depth.

    With ``concurrent``, also measure ``runs`` runs of the same shape trained at once (default:
    ``default_sweep_runs``), in ``repeats`` windows. Each loop first trains ``warmup`` untimed
    steps. ConfigError for a depth that is not 6n+2, a count below 1 or a negative warm-up.
    """
    check_args(depths, steps, runs, repeats, warmup)
    rows = []
    for depth in depths:
        overrides = [
            f"model.depth={depth}",
            "data=synthetic",
            f"data.train_size={images}",
            "data.test_size=128",
            f"trainer.device={device}",
            f"trainer.precision={precision}",
            f"trainer.path={path}",
            "trainer.diagnostics=false",
        ]
        trainer = Trainer(compose_run(overrides))
        dev = trainer.acc.device
        n = steps if steps is not None else (300 if dev.type == "cuda" else 10)
        reference = ReferenceLoop(depth, trainer.data.to(torch.device("cpu")), dev, warmup)
        _timed_windows([trainer], 0, warmup, repeats=0)
        ref, ours = [], []
        for _ in range(repeats):
            ref.append(reference.img_s(n))
            ours.append(degrade_img_s(trainer, n))
        row = BenchRow(
            f"resnet{depth}",
            dev.type,
            trainer.acc.precision,
            trainer.stepper.path,
            trainer.acc.channels_last,
            n,
            Spread.of(ref),
            Spread.of(ours),
            Spread.of([o / r for o, r in zip(ours, ref, strict=True)], 2),
            round(trainer.stepper.setup_seconds, 1),
        )
        del trainer, reference
        if concurrent:
            row.sweep_runs = runs or default_sweep_runs(dev)
            row.sweep_img_s = Spread.of(sweep_img_s(overrides, dev, row.sweep_runs, n, warmup, repeats))
        rows.append(row)
    return rows


def as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Rows as flat dicts (for JSON): each spread as ``<name>_median``, ``_min``, ``_max``, ``_repeats``."""
    flat = []
    for r in rows:
        d: dict[str, Any] = {}
        for key, value in asdict(r).items():
            if isinstance(value, dict):
                d.update({f"{key}_{part}": v for part, v in value.items()})
            elif key == "sweep_img_s":  # no sweep measured: the same fields, empty
                d.update({f"{key}_{part}": None for part in ("median", "min", "max", "repeats")})
            else:
                d[key] = value
        flat.append(d)
    return flat
