"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem").

On the straight line between two training images of different classes (``points`` points, ends
included), the gradient with respect to the input of the logit of the first image's class, BN
in eval mode; then the correlation of the gradients at two points as a function of how far apart
they are (the lag, in points): the mean over all pairs at that lag of the Pearson correlation of
the two gradients (over the input's pixels). Measured with the initial weights (the run's seed
rebuilds them) and the final ones.

The logit, not the loss: a ReLU network with BN in eval mode is piecewise linear, so the
logit's gradient is piecewise constant along the line and its correlation falls only where the
line crosses into other linear pieces; for a linear model it is 1 at every lag.

Numbers, for each of the initial and final weights: the correlation at lag 1, and the first
lag where it falls below 0.5 (``points`` when it never does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from degrade.probes import tables
from degrade.probes.common import Subject, Tick

KIND = "gradcorr"
NUMBERS = tables.NUMBERS[KIND]
WEIGHTS = ("initial", "final")


def evaluations(settings: dict[str, Any], model: nn.Module) -> int:
    """Gradient passes one run takes: one per set of weights."""
    return len(WEIGHTS)


def endpoints(x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """The first training image and the first one after it of another class."""
    later = (y != y[0]).nonzero()
    if len(later) == 0:
        raise ValueError("the training images are all of one class: no line between two classes")
    return 0, int(later[0])


def line_gradients(model: nn.Module, a: torch.Tensor, b: torch.Tensor, cls: int, points: int) -> torch.Tensor:
    """(points, pixels): the gradient of logit ``cls`` at each point of the line from a to b."""
    t = torch.linspace(0, 1, points, device=a.device).view(-1, *([1] * a.dim()))
    xs = ((1 - t) * a + t * b).detach().requires_grad_(True)
    # In eval mode every point is computed on its own, so the gradient of the sum is each point's.
    logits = model(xs)
    (grad,) = torch.autograd.grad(logits[:, cls].sum(), xs)
    return grad.flatten(1).double()


def correlation_by_lag(grads: torch.Tensor) -> torch.Tensor:
    """Mean Pearson correlation of gradients ``lag`` points apart, for lag = 1 .. points - 1."""
    g = grads - grads.mean(1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    c = g @ g.T
    n = len(g)
    return torch.stack([torch.diagonal(c, offset=lag).mean() for lag in range(1, n)])


def numbers(corr: torch.Tensor, points: int) -> dict[str, float]:
    """Correlation at lag 1, and the first lag where it falls below 0.5 (``points`` if never)."""
    below = (corr < 0.5).nonzero()
    return {"corr_lag1": float(corr[0]), "half_lag": float(below[0] + 1) if len(below) else float(points)}


def measure_model(
    model: nn.Module, a: torch.Tensor, b: torch.Tensor, cls: int, points: int, weights: str
) -> list[dict[str, Any]]:
    """The correlation rows (lags up to half the line) and the numbers of one set of weights."""
    corr = correlation_by_lag(line_gradients(model, a, b, cls, points))
    rows: list[dict[str, Any]] = [
        {
            "quantity": "correlation",
            "weights": weights,
            "lag": lag,
            "distance": lag / (points - 1),
            "value": float(corr[lag - 1]),
        }
        for lag in range(1, points // 2 + 1)
    ]
    rows += [{"quantity": k, "weights": weights, "value": v} for k, v in numbers(corr, points).items()]
    return rows


def measure(subject: Subject, settings: dict[str, Any], tick: Tick) -> list[dict[str, Any]]:
    """The gradient-correlation rows of one run, initial and final weights."""
    points = int(settings["points"])
    x, y = subject.data.x_train, subject.data.y_train
    i, j = endpoints(x, y)
    rows = []
    for weights in WEIGHTS:
        rows += measure_model(subject.model(weights), x[i], x[j], int(y[i]), points, weights)
        tick(1)
    return rows
