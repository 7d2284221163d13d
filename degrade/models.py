"""The networks under study: the CIFAR ResNet of He et al. (2015, §4.2) and its MLP form.

Both come as twins: ``variant="residual"`` adds the shortcut to every block,
``variant="plain"`` is the same stack of layers without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from degrade import cures
from degrade.layers import ShortcutA

# The spec and its checks need no torch (configs are checked without it); re-exported here.
from degrade.spec import (  # noqa: F401
    BLOCKS,
    FAMILIES,
    NORMS,
    SHORTCUTS,
    VARIANTS,
    ModelError,
    ModelSpec,
    check_spec,
    stage_sizes,
    valid_cnn_depths,
)

# --------------------------------------------------------------------------- CNN


def _norm2d(spec: ModelSpec, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if spec.norm == "batch" else nn.Identity()


def _projection(spec: ModelSpec, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=spec.norm == "none")]
    if spec.norm == "batch":
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers)


def _cnn_shortcut(spec: ModelSpec, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if not spec.residual:
        return None
    changes = stride != 1 or in_ch != out_ch
    if spec.shortcut == "C" or (spec.shortcut == "B" and changes):
        return _projection(spec, in_ch, out_ch, stride)
    return ShortcutA(in_ch, out_ch, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs. ``post``: conv-BN-ReLU-conv-BN, add, ReLU (the 2015 paper).
    ``pre``: BN-ReLU-conv-BN-ReLU-conv, add (He et al. 2016)."""

    def __init__(self, spec: ModelSpec, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        bias = spec.norm == "none"
        self.pre = spec.block == "pre"
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias)
        self.bn1 = _norm2d(spec, in_ch if self.pre else out_ch)
        self.bn2 = _norm2d(spec, out_ch)
        self.shortcut = _cnn_shortcut(spec, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            out = self.conv1(F.relu(self.bn1(x)))
            out = self.conv2(F.relu(self.bn2(out)))
            return out + self.shortcut(x) if self.shortcut is not None else out
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)

    def last_layer(self) -> nn.Module:
        """The layer whose zero-init makes the residual branch start as zero."""
        if self.pre or isinstance(self.bn2, nn.Identity):
            return self.conv2
        return self.bn2


class CifarResNet(nn.Module):
    """The CIFAR network of §4.2: depth 6n+2, stages of 16/32/64 filters on 32/16/8 maps."""

    def __init__(self, spec: ModelSpec, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        n = (spec.depth - 2) // 6
        w = spec.width
        self.pre = spec.block == "pre"
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=spec.norm == "none")
        # Pre-activation blocks start with BN-ReLU, so the stem is a bare conv there.
        self.stem_bn = nn.Identity() if self.pre else _norm2d(spec, w)
        blocks: list[nn.Module] = []
        in_ch = w
        for stage, out_ch in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(spec, in_ch, out_ch, stride))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.final_bn = _norm2d(spec, in_ch) if self.pre else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if not self.pre:
            x = F.relu(self.stem_bn(x))
        x = self.blocks(x)
        if self.pre:
            x = F.relu(self.final_bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


# --------------------------------------------------------------------------- MLP


class MLPBlock(nn.Module):
    """a[l+2] = g(z[l+2] + a[l]) with z = W a + b; the shortcut is W_s a[l] where width changes."""

    def __init__(self, spec: ModelSpec, d_in: int, d_out: int) -> None:
        super().__init__()
        self.pre = spec.block == "pre"
        self.fc1 = nn.Linear(d_in, d_out)
        self.fc2 = nn.Linear(d_out, d_out)
        norm = spec.norm == "batch"
        self.bn1 = nn.BatchNorm1d(d_in if self.pre else d_out) if norm else nn.Identity()
        self.bn2 = nn.BatchNorm1d(d_out) if norm else nn.Identity()
        self.shortcut: nn.Module | None = None
        if spec.residual:
            needs_proj = d_in != d_out or spec.shortcut == "C"
            self.shortcut = nn.Linear(d_in, d_out, bias=False) if needs_proj else nn.Identity()

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.pre:
            z = self.fc2(F.relu(self.bn2(self.fc1(F.relu(self.bn1(a))))))
            return z + self.shortcut(a) if self.shortcut is not None else z
        z = self.bn2(self.fc2(F.relu(self.bn1(self.fc1(a)))))
        if self.shortcut is not None:
            z = z + self.shortcut(a)
        return F.relu(z)

    def last_layer(self) -> nn.Module:
        """The layer whose zero-init makes the residual branch start as zero."""
        if self.pre or isinstance(self.bn2, nn.Identity):
            return self.fc2
        return self.bn2


class ResidualMLP(nn.Module):
    """The fully connected form of the block: widths w, 2w, 4w by stage; depth counts weight layers."""

    def __init__(self, spec: ModelSpec, in_features: int, num_classes: int) -> None:
        super().__init__()
        w = spec.width
        self.pre = spec.block == "pre"
        norm = spec.norm == "batch"
        self.stem = nn.Linear(in_features, w)
        self.stem_bn = nn.BatchNorm1d(w) if norm and not self.pre else nn.Identity()
        blocks: list[nn.Module] = []
        d_in = w
        for stage, count in enumerate(stage_sizes((spec.depth - 2) // 2)):
            d_out = w * 2**stage
            for _ in range(count):
                blocks.append(MLPBlock(spec, d_in, d_out))
                d_in = d_out
        self.blocks = nn.Sequential(*blocks)
        self.final_bn = nn.BatchNorm1d(d_in) if norm and self.pre else nn.Identity()
        self.fc = nn.Linear(d_in, num_classes)
        _init_weights(self, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.flatten(1))
        if not self.pre:
            x = F.relu(self.stem_bn(x))
        x = self.blocks(x)
        if self.pre:
            x = F.relu(self.final_bn(x))
        return self.fc(x)


# --------------------------------------------------------------------------- shared


def _init_weights(model: nn.Module, spec: ModelSpec) -> None:
    """He-normal init (fan-in, as in He et al. 2015b) for every hidden weight layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not getattr(model, "fc", None):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if spec.residual and spec.zero_init:
        for block in cast(nn.Sequential, model.blocks):
            layer = cast(Any, block).last_layer()
            nn.init.zeros_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


def build_model(spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the network ``spec`` describes for inputs of ``in_shape`` (C, H, W); a cure other than
    ``none`` builds its own net (``degrade.cures``)."""
    check_spec(spec)
    if spec.cure != "none":
        return cures.build(spec, in_shape, num_classes)
    if spec.family == "cnn":
        return CifarResNet(spec, in_channels=in_shape[0], num_classes=num_classes)
    features = 1
    for s in in_shape:
        features *= s
    return ResidualMLP(spec, in_features=features, num_classes=num_classes)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's weight layers in forward order (shortcut projections excluded)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in name
    ]


def param_groups(model: nn.Module) -> list[dict]:
    """The optimizer's parameter groups: each with an ``lr_scale`` on the run's learning rate
    (a cure's scalars may train at a fraction of it; every other net has one group at 1)."""
    groups = model.param_groups() if isinstance(model, cures.CuredNet) else None
    return groups or [{"params": list(model.parameters()), "lr_scale": 1.0}]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 1024,
    numerics: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[float, float]:
    """Mean cross-entropy and error of ``model`` on (x, y), in batches of ``batch``, in the mode the
    caller set (eval for a test set and for the probes) and under ``numerics`` (e.g. autocast)."""
    loss = torch.zeros((), device=x.device)
    wrong = torch.zeros((), device=x.device, dtype=torch.long)
    with numerics():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch]).float()
            loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum")
            wrong += (logits.argmax(1) != y[i : i + batch]).sum()
    n = max(len(x), 1)
    return loss.item() / n, wrong.item() / n
