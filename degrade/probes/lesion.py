"""Lesions at test time (Veit, Wilber, Belongie 2016, "Residual networks behave like ensembles of
relatively shallow networks").

Remove one block, then k random blocks together (k = 1, 2, 4, ..., ``draws`` draws each), and
measure the training error (fixed subset) and the test error of the final weights. Removing a
residual block leaves its shortcut (and the ReLU after the addition); removing a plain block
leaves the identity, which only fits where its input and output shapes agree. Down-sampling
blocks (which change the shape) are removed one at a time and reported apart (``downsampling``),
for ResNets only; the random draws take the other blocks.

Numbers: the error with nothing removed, the mean and the largest error with one block removed.
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


def measure_model(
    model: nn.Module, train: Pair, test: Pair, settings: dict[str, Any], tick: Tick
) -> list[dict[str, Any]]:
    """Errors of ``model`` with the blocks removed as described above (the model is put back)."""
    seq = model.get_submodule("blocks")
    assert isinstance(seq, nn.Sequential)
    originals = list(seq)
    same, down = removable(model)
    rows: list[dict[str, Any]] = []

    def errors(
        removed: list[int],
        mode: str,
        block: int | None = None,
        draw: int | None = None,
        downsampling: bool = False,
    ) -> dict[str, float]:
        for i in removed:
            seq[i] = Lesioned(originals[i])
        try:
            train_error = evaluate(model, *train)[1]
            test_error = evaluate(model, *test)[1]
        finally:
            for i in removed:
                seq[i] = originals[i]
        tick(1)
        where = {
            "mode": mode,
            "removed": len(removed),
            "block": None if block is None else block + 1,
            "draw": draw,
            "downsampling": downsampling,
        }
        for q, v in (("train_error", train_error), ("test_error", test_error)):
            rows.append({"quantity": q, **where, "value": v})
        return {"train": train_error, "test": test_error}

    base = errors([], "none")
    singles = [errors([i], "single", block=i) for i in same]
    for i in down:
        errors([i], "single", block=i, downsampling=True)
    for _, d, picks in draws(len(same), settings):
        errors([same[p] for p in picks], "random", draw=d)

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
