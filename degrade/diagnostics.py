"""Per-layer instruments: gradient norm of every weight layer and the std of its response.

Measured once per epoch on one fixed batch of training images (no augmentation), in train
mode as a training step sees the net. BN running statistics are put back afterwards and
no parameter moves, so the measurement leaves the run exactly as it was.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from degrade.models import weight_layers


def response_modules(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, weight layer, module whose output is that layer's response) in forward order.

    The response is taken after BN and before the nonlinearity or the addition, as in the
    paper's Fig. 7; where no BN follows the layer (no norm, pre-activation, the head) it is
    the layer's own output.
    """
    follows: dict[nn.Module, nn.Module] = {}
    for m in model.modules():
        pre = getattr(m, "pre", False)
        pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("fc1", "bn1"), ("fc2", "bn2"), ("stem", "stem_bn")]
        for w_name, bn_name in pairs:
            w, bn = getattr(m, w_name, None), getattr(m, bn_name, None)
            if w is not None and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and not pre:
                follows[w] = bn
    return [(name, w, follows.get(w, w)) for name, w in weight_layers(model)]


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any) -> list[dict[str, Any]]:
    """One row per weight layer: index, name, grad_norm, response_std, on batch (x, y)."""
    layers = response_modules(model)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    stds: dict[int, torch.Tensor] = {}
    hooks = []
    for i, (_, _, resp) in enumerate(layers):

        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, i: int = i) -> None:
            stds[i] = out.detach().float().std()

        hooks.append(resp.register_forward_hook(hook))
    was_training = model.training
    model.train()
    try:
        params = [w.get_parameter("weight") for _, w, _ in layers]
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        grads = torch.autograd.grad(loss, params)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.train(was_training)
    norms: list[float] = torch.stack([g.float().norm() for g in grads]).tolist()
    responses: list[float] = torch.stack([stds[i] for i in range(len(layers))]).tolist()
    return [
        {"layer": i + 1, "name": name, "grad_norm": norms[i], "response_std": responses[i]}
        for i, (name, _, _) in enumerate(layers)
    ]
