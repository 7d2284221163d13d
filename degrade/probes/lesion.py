"""Lesions at test time (Veit, Wilber, Belongie 2016, "Residual networks behave like ensembles of
relatively shallow networks").

Remove one block, then k random blocks together (k = 1, 2, 4, ..., ``draws`` draws each), and
measure the training error (fixed subset) and the test error of the final weights. Removing a
residual block leaves its shortcut (and the ReLU after the addition); removing a plain block
leaves the identity, which only fits where its input and output shapes agree. Down-sampling
blocks (which change the shape) are removed one at a time and reported apart (``downsampling``),
for ResNets only; the random draws take the other blocks.

Numbers: the error with nothing removed, the mean and the largest error with one block removed.

Every lesion leaves the blocks before its first removed one as they are, so what reaches that
block is the same as in the intact net. Where those inputs fit in ``CACHE_BYTES``, they are kept
for each block in turn and a lesion runs only the blocks from its first removed one on: about
half the work of the single lesions, and the same errors bit for bit (the same batches through
the same layers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from degrade.models import evaluate
from degrade.probes import tables
from degrade.probes.common import Subject, Tick, blocks, downsamples

KIND = "lesion"
NUMBERS = tables.NUMBERS[KIND]
# The batch both ways of measuring evaluate in (the same batches give the same errors).
BATCH = 1024
# The most the kept inputs of one block, over a set of images, may take; a set whose inputs would
# take more is measured through the whole net for every lesion.
CACHE_BYTES = 256 * 2**20


class Lesioned(nn.Module):
    """A block with its layers removed: what flows through is its shortcut (or, plain, the input)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        shortcut = getattr(block, "shortcut", None)
        self.shortcut: nn.Module | None = shortcut if isinstance(shortcut, nn.Module) else None
        self.post = not block.pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out) if self.post else out


def removable(model: nn.Module) -> tuple[list[int], list[int]]:
    """(block indices the draws may remove, down-sampling block indices removable one at a time)."""
    residual = [getattr(b, "shortcut", None) is not None for b in blocks(model)]
    same = [i for i, b in enumerate(blocks(model)) if not downsamples(b)]
    down = [i for i, b in enumerate(blocks(model)) if downsamples(b) and residual[i]]
    return same, down


def sizes(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to ``n`` blocks removed together."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def draws(n: int, settings: dict[str, Any]) -> list[tuple[int, int, list[int]]]:
    """(k, draw, positions among the ``n`` removable blocks) for every random lesion."""
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    out = []
    for k in sizes(n):
        for d in range(int(settings["draws"])):
            out.append((k, d, sorted(torch.randperm(n, generator=gen)[:k].tolist())))
    return out


def evaluations(settings: dict[str, Any], model: nn.Module) -> int:
    """Error measurements (train subset and test set) one run takes."""
    same, down = removable(model)
    return 1 + len(same) + len(down) + len(draws(len(same), settings))


Pair = tuple[torch.Tensor, torch.Tensor]


class _Stop(Exception):
    """Raised by ``_Capture`` with what reached the blocks, to stop the forward pass there."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


class _Capture(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise _Stop(x)


class _Resume(nn.Module):
    """Stands in for the net's blocks: ignores what reaches it (the stem's output, the same for
    every lesion) and runs ``kept``, the intact net's input of block ``start`` for this batch,
    through the blocks from ``start`` on as they stand (some of them lesioned)."""

    def __init__(self, seq: nn.Sequential, start: int) -> None:
        super().__init__()
        self.seq = seq
        self.start = start
        self.kept: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kept is not None
        h = self.kept
        for j in range(self.start, len(self.seq)):
            h = self.seq[j](h)
        return h


class _Inputs:
    """The intact net's input of block ``at``, for each batch of one set of images."""

    def __init__(self, model: nn.Module, seq: nn.Sequential, x: torch.Tensor) -> None:
        self.batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
        self.at = 0
        self.kept: list[torch.Tensor] = []
        model.blocks = _Capture()
        try:
            for b in self.batches:
                try:
                    model(b)
                except _Stop as stop:
                    self.kept.append(stop.x)
                first = self.kept[0]
                if first.element_size() * first.numel() * len(x) / len(self.batches[0]) > CACHE_BYTES:
                    self.kept = []  # measured through the whole net instead
                    break
        finally:
            model.blocks = seq

    @property
    def usable(self) -> bool:
        return bool(self.kept)

    def advance(self, originals: list[nn.Module], to: int) -> None:
        """Move on to the input of block ``to`` through the intact blocks in between."""
        while self.at < to:
            for c, h in enumerate(self.kept):
                self.kept[c] = originals[self.at](h)
            self.at += 1


def _error(model: nn.Module, seq: nn.Sequential, inputs: _Inputs, pair: Pair, start: int) -> float:
    """The error on ``pair`` of the net as it stands, whose blocks before ``start`` are intact."""
    x, y = pair
    if not inputs.usable:
        return evaluate(model, x, y, batch=BATCH)[1]
    resume = _Resume(seq, start)
    wrong = 0
    model.blocks = resume
    try:
        for i, (b, h) in enumerate(zip(inputs.batches, inputs.kept, strict=True)):
            resume.kept = h
            logits = model(b).float()
            wrong += int((logits.argmax(1) != y[i * BATCH : i * BATCH + len(b)]).sum())
    finally:
        model.blocks = seq
    return wrong / max(len(x), 1)


@torch.no_grad()  # also for the kept inputs: a graph behind them would hold every block's output
def measure_model(
    model: nn.Module, train: Pair, test: Pair, settings: dict[str, Any], tick: Tick
) -> list[dict[str, Any]]:
    """Errors of ``model`` with the blocks removed as described above (the model is put back)."""
    seq = model.get_submodule("blocks")
    assert isinstance(seq, nn.Sequential)
    originals = list(seq)
    same, down = removable(model)
    # Every lesion in the order its rows are written: (blocks removed, mode, block, draw, down-sampling).
    lesions: list[tuple[list[int], str, int | None, int | None, bool]] = [([], "none", None, None, False)]
    lesions += [([i], "single", i, None, False) for i in same]
    lesions += [([i], "single", i, None, True) for i in down]
    lesions += [
        ([same[p] for p in picks], "random", None, d, False) for _, d, picks in draws(len(same), settings)
    ]

    inputs = [_Inputs(model, seq, x) for x, _ in (train, test)]
    got: dict[int, dict[str, float]] = {}
    # By the first block each removes, so that the inputs kept only ever move forward.
    for k in sorted(range(len(lesions)), key=lambda k: min(lesions[k][0], default=len(seq))):
        removed = lesions[k][0]
        start = min(removed, default=len(seq))
        for i in removed:
            seq[i] = Lesioned(originals[i])
        try:
            for kept in inputs:
                kept.advance(originals, start)
            train_error, test_error = (
                _error(model, seq, kept, pair, start)
                for kept, pair in zip(inputs, (train, test), strict=True)
            )
        finally:
            for i in removed:
                seq[i] = originals[i]
        tick(1)
        got[k] = {"train": train_error, "test": test_error}

    rows: list[dict[str, Any]] = []
    for k, (removed, mode, block, draw, downsampling) in enumerate(lesions):
        where = {
            "mode": mode,
            "removed": len(removed),
            "block": None if block is None else block + 1,
            "draw": draw,
            "downsampling": downsampling,
        }
        for q, v in (("train_error", got[k]["train"]), ("test_error", got[k]["test"])):
            rows.append({"quantity": q, **where, "value": v})
    base = got[0]
    singles = [got[k] for k, lesion in enumerate(lesions) if lesion[1] == "single" and not lesion[4]]

    def mean(vals: list[float]) -> float:
        return sum(vals) / len(vals) if vals else float("nan")

    numbers = {
        "base_test_error": base["test"],
        "base_train_error": base["train"],
        "single_test_error_mean": mean([s["test"] for s in singles]),
        "single_test_error_max": max((s["test"] for s in singles), default=float("nan")),
        "single_train_error_mean": mean([s["train"] for s in singles]),
    }
    rows += [{"quantity": k, "mode": "number", "value": v} for k, v in numbers.items()]
    return rows


def measure(subject: Subject, settings: dict[str, Any], tick: Tick) -> list[dict[str, Any]]:
    """The lesion rows of one run's final weights."""
    d = subject.data
    return measure_model(subject.model("final"), (subject.x, subject.y), (d.x_test, d.y_test), settings, tick)
