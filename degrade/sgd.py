"""SGD with momentum and weight decay, computed as ``torch.optim.SGD`` computes it.

Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (its methods are wrapped to keep
the compiler out), about a second of CPU in every process that trains, before its first step:
a sweep's workers and every ``degrade sweep`` on the basic launcher paid it. degrade compiles
nothing, so its runs step with this class instead. It does the arithmetic of
``torch.optim.SGD(..., foreach=False)`` without dampening, parameter by parameter in the same
order, and keeps its state in torch's layout: its ``state_dict`` is the one torch writes, so a
checkpoint written by either loads into the other (tests hold the steps bit for bit).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

# torch.optim.SGD's hyperparameters and their defaults, in its order: a checkpoint's parameter
# groups then hold exactly the keys torch's would.
_TORCH_DEFAULTS = {
    "lr": 1e-3,
    "momentum": 0.0,
    "dampening": 0.0,
    "weight_decay": 0.0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}


class SGD:
    """Plain, momentum or Nesterov SGD with weight decay over parameter groups (dicts with
    ``params`` and any extra keys, e.g. an ``lr_scale``), as ``torch.optim.SGD`` steps them."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum and weight decay of 0 or more, got {lr}, {momentum}, {weight_decay}"
            )
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum")
        given: list[Any] = list(params)
        groups: list[dict[str, Any]] = (
            [dict(g) for g in given] if given and isinstance(given[0], dict) else [{"params": given}]
        )
        self.defaults = {
            **_TORCH_DEFAULTS,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            group["params"] = list(group["params"])
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self.param_groups.append(group)
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (torch's default: the backward creates it anew)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), float(group["momentum"])
            weight_decay, dampening = float(group["weight_decay"]), float(group["dampening"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = -p.grad if group["maximize"] else p.grad
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                    grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(grad, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim.Optimizer.state_dict``'s layout: parameters by index."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)] if isinstance(p, torch.Tensor) else p: v for p, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the state of ``state_dict`` (this class's or torch's), as torch's optimizers do:
        the same groups and sizes, tensors cast to their parameter's dtype and device."""
        saved = [dict(g) for g in state_dict["param_groups"]]
        if len(saved) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups, strict=True)):
            raise ValueError("loaded state dict has a parameter group of another size than the optimizer's")
        by_index = dict(
            zip(
                itertools.chain.from_iterable(s["params"] for s in saved),
                itertools.chain.from_iterable(g["params"] for g in self.param_groups),
                strict=True,
            )
        )
        state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in by_index:
                p = by_index[key]
                state[p] = {k: _cast(p, v) for k, v in value.items()}
            else:
                state[key] = value
        for new, group in zip(saved, self.param_groups, strict=True):
            new["params"] = group["params"]
        self.state, self.param_groups = state, saved


def _cast(p: torch.Tensor, value: Any) -> Any:
    """A state value moved to its parameter's device (and dtype, for a floating parameter)."""
    if isinstance(value, torch.Tensor):
        return (
            value.to(dtype=p.dtype, device=p.device) if p.is_floating_point() else value.to(device=p.device)
        )
    if isinstance(value, dict):
        return {k: _cast(p, v) for k, v in value.items()}
    return value
