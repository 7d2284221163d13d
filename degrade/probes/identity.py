"""Distance from the identity: how far each block is from doing nothing.

The residual block rests on the idea that a block that should do nothing can learn F = 0 more
easily than a plain block can learn the identity. Per block, on the fixed subset, BN in eval
mode: for a ResNet ``branch_ratio`` = ‖F(x)‖ / ‖x‖ (F: the block's layers, before the addition);
for both twins ``change_ratio`` = ‖block(x) − x‖ / ‖x‖ where input and output shapes agree (for
a post-activation ResNet this differs from F by the ReLU after the addition). Norms per image,
the ratio averaged over the images. With the initial weights (rebuilt from the run's seed) and the
final ones; a run's checkpoint holds only its last epoch, so those are the two ends measured.

Numbers, initial and final: the mean over the blocks that keep the shape of ``ratio``, which is
``branch_ratio`` for a ResNet and ``change_ratio`` for a plain net (the two the figure shows).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from degrade.probes import tables
from degrade.probes.common import Subject, Tick, blocks, branch, downsamples

KIND = "identity"
NUMBERS = tables.NUMBERS[KIND]
WEIGHTS = ("initial", "final")


def evaluations(settings: dict[str, Any], model: nn.Module) -> int:
    """Forward passes one run takes: one per set of weights."""
    return len(WEIGHTS)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    return float((num.flatten(1).norm(dim=1) / den.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())


@torch.no_grad()
def block_ratios(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """One row per block and ratio: block (1-based), layer (its last weight layer), downsampling."""
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        b.register_forward_hook(lambda _m, inp, out, i=i: inputs.__setitem__(i, (inp[0], out)))
        for i, b in enumerate(blocks(model))
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, b in enumerate(blocks(model)):
        a, out = inputs[i]
        where = {"block": i + 1, "layer": 2 * i + 3, "downsampling": downsamples(b)}
        if b.shortcut is not None:
            rows.append({"quantity": "branch_ratio", **where, "value": _ratio(branch(b, a), a)})
        if out.shape == a.shape:
            rows.append({"quantity": "change_ratio", **where, "value": _ratio(out - a, a)})
    return rows


def measure_model(model: nn.Module, x: torch.Tensor, weights: str, residual: bool) -> list[dict[str, Any]]:
    """The per-block rows of one set of weights and their mean ``ratio``."""
    rows = [{**r, "weights": weights} for r in block_ratios(model, x)]
    main = "branch_ratio" if residual else "change_ratio"
    kept = [r["value"] for r in rows if r["quantity"] == main and not r["downsampling"]]
    mean = sum(kept) / len(kept) if kept else float("nan")
    return [*rows, {"quantity": "ratio", "weights": weights, "value": mean}]


def measure(subject: Subject, settings: dict[str, Any], tick: Tick) -> list[dict[str, Any]]:
    """The identity rows of one run, initial and final weights."""
    residual = str(subject.cfg.model.variant) == "residual"
    rows = []
    for weights in WEIGHTS:
        rows += measure_model(subject.model(weights), subject.x, weights, residual)
        tick(1)
    return rows
