"""The cures for degradation: nets built so that depth no longer hurts, with or without a shortcut.

A cure is a way of building a model (``configs/cure/``); training, the store and the probes see
only the model and its config. Every cured net trains without BN and has the stages, widths and
depth (6n+2 for the CNN) of the net it stands beside.

- ``tat``: Tailored Activation Transformation (Zhang et al. 2022), from DeepMind's ``dks``: leaky
  ReLUs whose negative slope makes the plain net's kernel map C_f(0) equal a target, SUO
  (delta-orthogonal) weights, per-location normalised inputs.
- ``delta_orthogonal``: Xiao et al. (2018): plain tanh net, kernels zero but an orthogonal centre.
- ``looks_linear``: Balduzzi et al. (2017): CReLU with mirrored weights, exactly linear at init.
- ``fixup``: Zhang, Dauphin, Ma (2019): residual net, zero last layers, rescaled branches, scalars.
- ``skipinit``: De & Smith (2020): residual net whose branches end in a scalar that starts at 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from degrade.layers import ShortcutA
from degrade.spec import ModelError, ModelSpec, stage_sizes

# --------------------------------------------------------------------------- initialisations


@torch.no_grad()
def delta_orthogonal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Xiao et al.'s delta-orthogonal kernel, in place: zero but for the spatial centre, which is
    ``gain`` times a random matrix with orthonormal columns (out >= in channels). A 2-D weight
    (a linear layer) becomes ``gain`` times an orthogonal matrix."""
    if weight.dim() == 2:
        return nn.init.orthogonal_(weight, gain=gain)
    out_ch, in_ch, *kernel = weight.shape
    if out_ch < in_ch:
        raise ModelError(
            f"delta-orthogonal kernels need at least as many output as input channels, got {out_ch} < {in_ch}"
        )
    if any(k % 2 == 0 for k in kernel):
        raise ModelError(f"delta-orthogonal kernels need odd sizes, got {tuple(kernel)}")
    # QR of a Gaussian, signs fixed by R's diagonal: Haar-distributed orthonormal columns.
    q, r = torch.linalg.qr(torch.randn(out_ch, in_ch, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    weight.zero_()
    centre = tuple(k // 2 for k in kernel)
    index: tuple[Any, ...] = (slice(None), slice(None), *centre)
    weight[index] = (gain * q).to(weight.dtype)
    return weight


@torch.no_grad()
def mirrored_(weight: torch.Tensor) -> torch.Tensor:
    """Looks-linear weights, in place: an orthogonal W on the first half of the inputs and -W on
    the second, so that on CReLU's [relu(x), relu(-x)] the layer computes W x.

    A kernel's W is delta-orthogonal: an orthogonal 3x3 kernel taken flat loses most of its
    variance at the zero-padded borders of the 2x2 maps a small image ends with."""
    half = weight.shape[1] // 2
    w = delta_orthogonal_(torch.empty_like(weight[:, :half]))
    weight.copy_(torch.cat([w, -w], dim=1))
    return weight


@torch.no_grad()
def suo_(weight: torch.Tensor) -> torch.Tensor:
    """``dks``'s scaled uniform orthogonal weights (delta form for kernels), in place, scaled so
    that the layer keeps q (mean square per feature) where its width changes.

    ``dks`` 0.1.2's PyTorch sampler reads a weight's first axis as its input (the JAX layout), so
    on PyTorch's (out, in, ...) a layer 16 -> 64 would keep a quarter of q: it is given the
    transposed shape and its sample transposed back.
    """
    from dks.pytorch.parameter_sampling_functions import scaled_uniform_orthogonal_

    flipped = weight.new_empty(weight.shape[1], weight.shape[0], *weight.shape[2:])
    with warnings.catch_warnings():  # its list index of a kernel's centre: torch's deprecation note
        warnings.simplefilter("ignore", UserWarning)
        scaled_uniform_orthogonal_(flipped, delta=True)
    return weight.copy_(flipped.transpose(0, 1))


def tat_leaky_relu(nonlinear_layers: int, target: float) -> tuple[float, float]:
    """TAT's leaky ReLU for a plain chain of ``nonlinear_layers`` activations: (negative slope,
    output scale) such that the net's C map sends 0 to ``target`` (``dks`` solves for them).

    ValueError (from ``dks``) when no slope reaches the target at this depth.
    """
    from dks.pytorch.activation_transform import get_transformed_activations

    def whole_net(c: float, local_map: Any) -> float:
        # A chain's subnetworks are its prefixes; C maps only grow under composition, so the
        # whole chain is the subnetwork whose C(0) is largest.
        for _ in range(nonlinear_layers):
            c = local_map(c)
        return c

    act = get_transformed_activations(
        ["leaky_relu"], method="TAT", tat_params={"c_val_0_target": target}, subnet_max_func=whole_net
    )["leaky_relu"]
    one = torch.ones(())
    pos, neg = float(act(one)), float(act(-one))
    return -neg / pos, pos


def tat_choice(spec: ModelSpec) -> tuple[float, float, float, str | None]:
    """(negative slope, output scale, target used, note) for the spec's TAT net: the configured
    target, or its fallback (with a one-line note) where the net is too shallow to reach it."""
    o = spec.cure_options
    target, fallback = float(o.get("target", 0.9)), o.get("fallback_target")
    layers = nonlinear_layers(spec)
    try:
        return (*tat_leaky_relu(layers, target), target, None)
    except ValueError:
        if fallback is None:
            raise ModelError(
                f"TAT cannot reach C_f(0)={target} at depth {spec.depth}; set cure.fallback_target"
            ) from None
    try:
        slope, scale = tat_leaky_relu(layers, float(fallback))
    except ValueError:
        raise ModelError(
            f"TAT cannot reach C_f(0)={target} nor cure.fallback_target={fallback} at depth {spec.depth}"
        ) from None
    note = (
        f"TAT cannot reach C_f(0)={target} at depth {spec.depth} ({layers} activations); built with "
        f"cure.fallback_target={fallback} (negative slope {slope:.3f})"
    )
    return slope, scale, float(fallback), note


def nonlinear_layers(spec: ModelSpec) -> int:
    """Activations in the plain chain: after the stem and after each of the 2 layers per block."""
    return spec.depth - 1


# --------------------------------------------------------------------------- activations and input


class Activation(nn.Module):
    """The nonlinearity a cure uses: relu, tanh, crelu ([relu(x), relu(-x)] along the features),
    or leaky_relu with a slope and an output scale (TAT's transformed rectifier)."""

    def __init__(self, kind: str, negative_slope: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.kind, self.negative_slope, self.scale = kind, float(negative_slope), float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "tanh":
            return torch.tanh(x)
        if self.kind == "crelu":
            return torch.cat([F.relu(x), F.relu(-x)], dim=1)
        if self.kind == "leaky_relu":
            return self.scale * F.leaky_relu(x, self.negative_slope)
        raise ModelError(f"unknown activation {self.kind!r}")

    def extra_repr(self) -> str:
        if self.kind != "leaky_relu":
            return self.kind
        return f"leaky_relu, negative_slope={self.negative_slope:.4f}, scale={self.scale:.4f}"


class PerLocationNorm(nn.Module):
    """``dks``'s per-location normalisation of the input, with a homogeneous coordinate appended:
    every pixel's feature vector (channels, plus the coordinate) gets mean square 1, so all-zero
    pixels do not leave the net with q = 0 there."""

    def __init__(self, homog_mode: str = "one") -> None:
        super().__init__()
        self.homog_mode = homog_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from dks.pytorch.data_preprocessing import per_location_normalization

        image = x.dim() == 4
        if image:
            x = x.permute(0, 2, 3, 1)  # dks normalises over the last axis: channels there
        with x.device:  # dks makes its coordinate with torch.ones: on x's device, not the CPU
            y = per_location_normalization(x, homog_mode=self.homog_mode)
        return y.permute(0, 3, 1, 2) if image else y

    def extra_features(self) -> int:
        """Features the normalisation adds to each location."""
        return 0 if self.homog_mode == "off" else 1


# --------------------------------------------------------------------------- blocks


def _layer(family: str, d_in: int, d_out: int, stride: int = 1, bias: bool = True) -> nn.Module:
    if family == "cnn":
        return nn.Conv2d(d_in, d_out, 3, stride=stride, padding=1, bias=bias)
    return nn.Linear(d_in, d_out, bias=bias)


class ChainBlock(nn.Module):
    """Two weight layers, each followed by the cure's activation; no shortcut (a plain block)."""

    pre = False
    shortcut = None

    def __init__(self, family: str, d_in: int, d_out: int, stride: int, act: Activation, widen: int) -> None:
        super().__init__()
        # ``widen``: how many times its width each activation's output is (2 for CReLU).
        self.conv1 = _layer(family, widen * d_in, d_out, stride)
        self.act1 = act
        self.conv2 = _layer(family, widen * d_out, d_out)
        self.act2 = act
        self.changes_shape = stride != 1 or d_in != d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The block's layers (a plain block is all branch)."""
        return self(x)


def _shortcut(spec: ModelSpec, d_in: int, d_out: int, stride: int) -> nn.Module:
    changes = stride != 1 or d_in != d_out
    project = spec.shortcut == "C" or (changes and (spec.shortcut == "B" or spec.family == "mlp"))
    if spec.family == "mlp":
        return nn.Linear(d_in, d_out, bias=False) if project else nn.Identity()
    return nn.Conv2d(d_in, d_out, 1, stride=stride, bias=True) if project else ShortcutA(d_in, d_out, stride)


class FixupBlock(nn.Module):
    """Fixup's basic block: relu(scale * conv2(relu(conv1(x + a) + b) + c) + d + shortcut(x)), with
    scalar biases a..d where BN stood and one scalar multiplier."""

    pre = False

    def __init__(self, spec: ModelSpec, d_in: int, d_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _layer(spec.family, d_in, d_out, stride, bias=False)
        self.conv2 = _layer(spec.family, d_out, d_out, bias=False)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (nn.Parameter(torch.zeros(1)) for _ in range(4))
        self.scale = nn.Parameter(torch.ones(1))
        self.shortcut = _shortcut(spec, d_in, d_out, stride)
        self.changes_shape = stride != 1 or d_in != d_out

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """What the block adds to its shortcut, before the ReLU after the addition."""
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        return self.conv2(out + self.bias2a) * self.scale + self.bias2b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))

    def scalars(self) -> list[nn.Parameter]:
        return [self.bias1a, self.bias1b, self.bias2a, self.bias2b, self.scale]


class SkipInitBlock(nn.Module):
    """SkipInit's block: relu(shortcut(x) + alpha * conv2(relu(conv1(x)))), alpha starting at 0."""

    pre = False

    def __init__(self, spec: ModelSpec, d_in: int, d_out: int, stride: int, alpha: float) -> None:
        super().__init__()
        self.conv1 = _layer(spec.family, d_in, d_out, stride)
        self.conv2 = _layer(spec.family, d_out, d_out)
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))
        self.shortcut = _shortcut(spec, d_in, d_out, stride)
        self.changes_shape = stride != 1 or d_in != d_out

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """What the block adds to its shortcut, before the ReLU after the addition."""
        return self.alpha * self.conv2(F.relu(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))

    def scalars(self) -> list[nn.Parameter]:
        return [self.alpha]


# --------------------------------------------------------------------------- the net


def _stages(spec: ModelSpec) -> list[tuple[int, int]]:
    """(width, stride) of every block in forward order."""
    w = spec.width
    if spec.family == "cnn":
        n = (spec.depth - 2) // 6
        return [(w * 2**s, 2 if s > 0 and i == 0 else 1) for s in range(3) for i in range(n)]
    counts = stage_sizes((spec.depth - 2) // 2)
    return [(w * 2**s, 1) for s, count in enumerate(counts) for _ in range(count)]


class CuredNet(nn.Module):
    """The CNN or MLP of ``spec`` built as its cure prescribes: stem, blocks, pool, classifier."""

    def __init__(self, spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.cure, self.family = spec.cure, spec.family
        self.notes: list[str] = []  # what the run should say once (a fallback it was built with)
        o = spec.cure_options
        in_features = in_shape[0] if spec.family == "cnn" else math.prod(in_shape)
        self.input: nn.Module = nn.Identity()
        if spec.cure == "tat":
            self.input = PerLocationNorm(str(o.get("homog_mode", "one")))
            in_features += self.input.extra_features()
        act = self._activation(spec)
        widen = 2 if act.kind == "crelu" else 1
        w = spec.width
        fixup = spec.cure == "fixup"
        self.stem = _layer(spec.family, in_features, w, bias=not fixup)
        self.stem_act = act
        self.stem_bias = nn.Parameter(torch.zeros(1)) if fixup else None
        blocks: list[nn.Module] = []
        d_in = w
        for d_out, stride in _stages(spec):
            if spec.cure == "fixup":
                blocks.append(FixupBlock(spec, d_in, d_out, stride))
            elif spec.cure == "skipinit":
                blocks.append(SkipInitBlock(spec, d_in, d_out, stride, float(o.get("alpha_init", 0.0))))
            else:
                blocks.append(ChainBlock(spec.family, d_in, d_out, stride, act, widen))
            d_in = d_out
        self.blocks = nn.Sequential(*blocks)
        self.head_bias = nn.Parameter(torch.zeros(1)) if fixup else None
        self.fc = nn.Linear(widen * d_in, num_classes)
        self.scalar_lr_factor = float(o.get("scalar_lr_factor", 1.0))
        self._init(spec)

    def _activation(self, spec: ModelSpec) -> Activation:
        kind = str(spec.cure_options.get("activation", "relu"))
        if spec.cure != "tat":
            return Activation(kind)
        slope, scale, _, note = tat_choice(spec)
        if note:
            self.notes.append(note)
        return Activation("leaky_relu", slope, scale)

    @torch.no_grad()
    def _init(self, spec: ModelSpec) -> None:
        o = spec.cure_options
        blocks = list(self.blocks)
        layers = [self.stem] + [b.get_submodule(n) for b in blocks for n in ("conv1", "conv2")]
        found = [getattr(b, "shortcut", None) for b in blocks]
        shortcuts: list[nn.Module] = [s for s in found if isinstance(s, (nn.Conv2d, nn.Linear))]

        def weight(m: nn.Module) -> torch.Tensor:
            return m.get_parameter("weight")

        for m in layers + shortcuts + [self.fc]:
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                nn.init.zeros_(bias)
        if spec.cure == "tat":
            for m in layers + [self.fc]:
                suo_(weight(m))
        elif spec.cure == "delta_orthogonal":
            gain, bias_std = float(o.get("gain", 1.0)), float(o.get("bias_std", 0.0))
            for m in layers:
                delta_orthogonal_(weight(m), gain)
                if bias_std:
                    nn.init.normal_(m.get_parameter("bias"), std=bias_std)
            nn.init.orthogonal_(self.fc.weight)
        elif spec.cure == "looks_linear":
            delta_orthogonal_(weight(self.stem))  # it reads the raw input, not a CReLU
            for m in layers[1:] + [self.fc]:
                mirrored_(weight(m))
        else:  # fixup, skipinit: He-normal, as the uncured nets
            for m in layers + shortcuts:
                nn.init.kaiming_normal_(weight(m), mode="fan_in", nonlinearity="relu")
            if spec.cure == "fixup":
                # Fixup's rule: branch layers but the last scaled by L^(-1/(2m-2)), the last and
                # the classifier zero, so that the whole net starts as its shortcut path.
                m_layers = int(o.get("m", 2))
                factor = len(blocks) ** (-1.0 / (2 * m_layers - 2))
                for b in blocks:
                    weight(b.get_submodule("conv1")).mul_(factor)
                    nn.init.zeros_(weight(b.get_submodule("conv2")))
                nn.init.zeros_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "mlp":
            x = x.flatten(1)
        x = self.stem(self.input(x))
        if self.stem_bias is not None:
            x = x + self.stem_bias
        x = self.blocks(self.stem_act(x))
        if self.family == "cnn":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.head_bias is not None:
            x = x + self.head_bias
        return self.fc(x)

    def scalars(self) -> list[nn.Parameter]:
        """The cure's scalar parameters (Fixup's biases and multipliers, SkipInit's alphas)."""
        found = [p for b in self.blocks if hasattr(b, "scalars") for p in cast(Any, b).scalars()]
        return found + [p for p in (self.stem_bias, self.head_bias) if p is not None]

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups with their ``lr_scale``: the scalars at the cure's factor."""
        scalars = self.scalars()
        if not scalars or self.scalar_lr_factor == 1.0:
            return [{"params": list(self.parameters()), "lr_scale": 1.0}]
        ids = {id(p) for p in scalars}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr_scale": 1.0}, {"params": scalars, "lr_scale": self.scalar_lr_factor}]


def build(spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> CuredNet:
    """The cured net ``spec`` describes (its cure is not ``none``) for inputs of ``in_shape``."""
    return CuredNet(spec, in_shape, num_classes)
