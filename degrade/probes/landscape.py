"""The loss landscape around the final weights (Li et al. 2018, "Visualizing the Loss Landscape
of Neural Nets").

Two random directions, filter-normalised (each output filter of a conv and each row of a linear
layer scaled to the norm of the same filter of the weights; biases and BN parameters get zero)
and orthogonal to each other; the training loss of θ + α·d1 + β·d2 on the fixed subset, BN in
eval mode with the run's running statistics. A 1-D slice along d1 and a 2-D grid over both.

Numbers: the loss at the centre; the basin width (the length of the stretch of the slice around
the centre where the loss stays within ``margin`` of the centre's); the non-convex fraction (the
share of the grid's inner points where the discrete Hessian of the loss surface has a negative
eigenvalue larger in size than ``curvature_tol`` times its positive one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from degrade.models import evaluate
from degrade.probes import tables
from degrade.probes.common import Subject, Tick

KIND = "landscape"
NUMBERS = tables.NUMBERS[KIND]


def evaluations(settings: dict[str, Any], model: nn.Module) -> int:
    """Loss evaluations one run takes: the slice and the grid."""
    return int(settings["points"]) + int(settings["grid"]) ** 2


def _filter_scale(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``d`` with each output filter (row) rescaled to the norm of the same filter of ``w``."""
    dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    wn = w.flatten(1).norm(dim=1)
    return d * (wn / dn).view(-1, *([1] * (d.dim() - 1)))


def directions(model: nn.Module, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two filter-normalised random directions, one per parameter of ``model``, orthogonal.

    The second is made orthogonal to the first filter by filter (Gram-Schmidt within each filter,
    then rescaled), so both keep every filter's norm and their dot product is zero.
    """
    d1, d2 = [], []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:  # biases and BN parameters stay where they are
            d1.append(torch.zeros_like(w))
            d2.append(torch.zeros_like(w))
            continue
        a = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w.device)
        b = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w.device)
        a = _filter_scale(a, w.double())
        af, bf = a.flatten(1), b.flatten(1)
        coef = (af * bf).sum(1, keepdim=True) / (af * af).sum(1, keepdim=True).clamp_min(1e-300)
        b = _filter_scale((bf - coef * af).view_as(b), w.double())
        d1.append(a.to(w.dtype))
        d2.append(b.to(w.dtype))
    return d1, d2


def surface(
    loss_at: Callable[[float, float], float], alphas: np.ndarray, betas: np.ndarray | None, tick: Tick
) -> np.ndarray:
    """``loss_at(α, β)`` on the slice (``betas`` None: β = 0) or on the grid (rows β, columns α)."""
    if betas is None:
        out = np.empty(len(alphas))
        for i, a in enumerate(alphas):
            out[i] = loss_at(float(a), 0.0)
            tick(1)
        return out
    grid = np.empty((len(betas), len(alphas)))
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            grid[i, j] = loss_at(float(a), float(b))
            tick(1)
    return grid


def basin_width(alphas: np.ndarray, losses: np.ndarray, margin: float) -> float:
    """Length of the stretch of the slice around its centre where loss <= centre loss + margin."""
    c = len(alphas) // 2
    within = losses <= losses[c] + margin
    lo = hi = c
    while lo > 0 and within[lo - 1]:
        lo -= 1
    while hi < len(alphas) - 1 and within[hi + 1]:
        hi += 1
    return float(alphas[hi] - alphas[lo])


def nonconvex_fraction(grid: np.ndarray, step: float, tol: float) -> float:
    """Share of the grid's inner points where the discrete Hessian is not positive semi-definite:
    its smaller eigenvalue is below ``-tol`` times the size of its larger one."""
    if min(grid.shape) < 3:
        return float("nan")
    c = grid[1:-1, 1:-1]
    dxx = (grid[1:-1, 2:] - 2 * c + grid[1:-1, :-2]) / step**2
    dyy = (grid[2:, 1:-1] - 2 * c + grid[:-2, 1:-1]) / step**2
    dxy = (grid[2:, 2:] - grid[2:, :-2] - grid[:-2, 2:] + grid[:-2, :-2]) / (4 * step**2)
    mid, half = (dxx + dyy) / 2, np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
    low, high = mid - half, mid + half
    bad = low < -tol * np.abs(high)
    ok = np.isfinite(low)
    return float(bad[ok].mean()) if ok.any() else float("nan")


def measure_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any], tick: Tick
) -> list[dict[str, Any]]:
    """The slice, the grid and the numbers of ``model`` (its weights are put back afterwards)."""
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    d1, d2 = directions(model, gen)
    params = list(model.parameters())
    origin = [p.detach().clone() for p in params]
    span = float(settings["span"])

    @torch.no_grad()
    def loss_at(a: float, b: float) -> float:
        for p, w, u, v in zip(params, origin, d1, d2, strict=True):
            p.copy_(w + a * u + b * v)
        return evaluate(model, x, y)[0]

    alphas = np.linspace(-span, span, int(settings["points"]))
    axis = np.linspace(-span, span, int(settings["grid"]))
    try:
        line = surface(loss_at, alphas, None, tick)
        grid = surface(loss_at, axis, axis, tick)
    finally:
        with torch.no_grad():
            for p, w in zip(params, origin, strict=True):
                p.copy_(w)
    rows: list[dict[str, Any]] = [
        {"quantity": "loss", "section": "slice", "alpha": float(a), "beta": 0.0, "value": float(v)}
        for a, v in zip(alphas, line, strict=True)
    ]
    rows += [
        {
            "quantity": "loss",
            "section": "grid",
            "alpha": float(a),
            "beta": float(b),
            "value": float(grid[i, j]),
        }
        for i, b in enumerate(axis)
        for j, a in enumerate(axis)
    ]
    step = float(axis[1] - axis[0]) if len(axis) > 1 else 1.0
    numbers = {
        "centre_loss": float(line[len(line) // 2]),
        "basin_width": basin_width(alphas, line, float(settings["margin"])),
        "nonconvex_fraction": nonconvex_fraction(grid, step, float(settings["curvature_tol"])),
    }
    rows += [{"quantity": k, "section": "number", "value": v} for k, v in numbers.items()]
    return rows


def measure(subject: Subject, settings: dict[str, Any], tick: Tick) -> list[dict[str, Any]]:
    """The landscape rows of one run's final weights."""
    return measure_model(subject.model("final"), subject.x, subject.y, settings, tick)
