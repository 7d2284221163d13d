"""How much memory a run needs, worked out from its spec without building it: a network that
cannot fit is refused in a second, not after minutes of building (``degrade.memory`` says what
the device has).

The estimate counts what training holds at once: the weights with their gradients and momentum
buffers (and the checkpoint's packed copies), the activations that autograd keeps for
the backward pass of one training batch, those of one evaluation batch, and the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Any

from degrade.spec import ModelSpec, model_spec, stage_sizes

FLOAT = 4  # bytes: weights, gradients and activations are stored in fp32 (bf16 needs less)
# Tensors autograd keeps per weight layer's output in a training step, at most: the layer's
# output the norm reads, the norm's output, the activation the next layer reads, and a copy
# (padding, a shortcut). Measured: about 2 for conv-BN-ReLU in fp32, 1 with bf16 autocast; the
# tests check the estimate stays above what torch keeps and within a few times of it.
SAVED_PER_OUTPUT = 4
# Copies of every weight while training: the weight, its gradient, the momentum buffer, and
# the checkpoint's packed copies of the weight and of its momentum (kept between epochs).
COPIES_PER_WEIGHT = 5


@dataclass(frozen=True)
class Shapes:
    """What the data gives a model: image shape, classes, and how many images are held."""

    in_shape: tuple[int, int, int]
    classes: int
    images: int
    train_images: int = 0  # the most a training batch can hold (0: no bound)


def data_shapes(data: Any) -> Shapes:
    """The shapes a ``data`` config node yields, known from its name (no file is read)."""
    name = data.name
    if name == "digits":
        return Shapes((1, 8, 8), 10, 1797, 1797 - ceil(float(data.test_fraction) * 1797))
    if name in ("cifar10", "cifar100"):
        return Shapes((3, 32, 32), 10 if name == "cifar10" else 100, 60000, 50000)
    train = int(data.train_size)
    return Shapes((3, 32, 32), int(data.num_classes), train + int(data.test_size), train)


def _half(size: int) -> int:
    return (size + 1) // 2  # a stride-2 3x3 conv with padding 1


def _cnn(spec: ModelSpec, shapes: Shapes) -> tuple[int, int, int]:
    """(parameters, activation elements per image, largest layer output per image) of the CNN."""
    c, h, w = shapes.in_shape
    norm = spec.norm == "batch"
    bias = 0 if norm else 1
    pre = spec.block == "pre"
    n = (spec.depth - 2) // 6
    width = spec.width
    params = c * width * 9 + bias * width + (2 * width if norm and not pre else 0)
    outputs = c * h * w + width * h * w  # the input the stem keeps, and the stem's output
    largest = outputs
    in_ch = width
    for stage in range(3):
        out_ch = width * 2**stage
        if stage:
            h, w = _half(h), _half(w)
        hw = h * w
        # The stage's first block (stride 2 after the first stage), then n - 1 blocks alike.
        for count, block_in, changes in ((1, in_ch, stage > 0), (n - 1, out_ch, False)):
            if count <= 0:
                continue
            p = block_in * out_ch * 9 + out_ch * out_ch * 9 + 2 * bias * out_ch
            p += 2 * (block_in if pre else out_ch) * norm + 2 * out_ch * norm
            if spec.residual and (spec.shortcut == "C" or (spec.shortcut == "B" and changes)):
                p += block_in * out_ch + bias * out_ch + 2 * out_ch * norm
            params += count * p
            outputs += count * 2 * out_ch * hw
        largest = max(largest, out_ch * hw, in_ch * hw)
        in_ch = out_ch
    params += (2 * in_ch if norm and pre else 0) + in_ch * shapes.classes + shapes.classes
    return params, outputs, largest


def _mlp(spec: ModelSpec, shapes: Shapes) -> tuple[int, int, int]:
    """(parameters, activation elements per image, largest layer output per image) of the MLP."""
    c, h, w = shapes.in_shape
    norm = spec.norm == "batch"
    pre = spec.block == "pre"
    width = spec.width
    largest = max(c * h * w, width)
    params = c * h * w * width + width + (2 * width if norm and not pre else 0)
    outputs = c * h * w + width
    d_in = width
    for stage, count in enumerate(stage_sizes((spec.depth - 2) // 2)):
        d_out = width * 2**stage
        for block_in, k in ((d_in, 1), (d_out, count - 1)):
            if k <= 0:
                continue
            p = block_in * d_out + d_out + d_out * d_out + d_out
            p += (2 * (block_in if pre else d_out) + 2 * d_out) * norm
            if spec.residual and (block_in != d_out or spec.shortcut == "C"):
                p += block_in * d_out
            params += k * p
            outputs += k * 2 * d_out
        largest = max(largest, d_out)
        d_in = d_out
    params += (2 * d_in if norm and pre else 0) + d_in * shapes.classes + shapes.classes
    return params, outputs, largest


@dataclass(frozen=True)
class Footprint:
    """A run's memory needs in bytes, by part."""

    parameters: int  # how many weights the model has
    weight_bytes: int
    activation_bytes: int  # one training batch's saved activations and one evaluation batch's
    data_bytes: int

    @property
    def total(self) -> int:
        """Everything at once, in bytes."""
        return self.weight_bytes + self.activation_bytes + self.data_bytes


def parameter_count(spec: ModelSpec, shapes: Shapes) -> int:
    """The trainable parameters the network ``spec`` describes has, counted without building it."""
    return (_cnn if spec.family == "cnn" else _mlp)(spec, shapes)[0]


def activation_bytes(spec: ModelSpec, shapes: Shapes, batch: int) -> int:
    """Bytes autograd keeps for the backward pass of one training batch of ``batch`` images."""
    _, outputs, _ = (_cnn if spec.family == "cnn" else _mlp)(spec, shapes)
    return SAVED_PER_OUTPUT * outputs * batch * FLOAT


def estimate(cfg: Any) -> Footprint:
    """The memory the run ``cfg`` describes needs while it trains."""
    spec = model_spec(cfg)
    shapes = data_shapes(cfg.data)
    params, _, largest = (_cnn if spec.family == "cnn" else _mlp)(spec, shapes)
    # A batch holds at most the training set; an evaluation batch at most the images there are.
    batch = int(cfg.trainer.batch_size)
    train = activation_bytes(spec, shapes, min(batch, shapes.train_images) if shapes.train_images else batch)
    # Evaluation keeps nothing for a backward pass: a layer's input and output at a time.
    evaluate = 3 * largest * min(int(cfg.trainer.eval_batch_size), shapes.images) * FLOAT
    c, h, w = shapes.in_shape
    # The images as read and as laid out for the device (channels_last copies them), plus labels.
    data = shapes.images * (2 * c * h * w * FLOAT + 8)
    return Footprint(params, COPIES_PER_WEIGHT * params * FLOAT, train + evaluate, data)


def training_cost(cfg: Any) -> float:
    """A run's compute, in arbitrary units proportional to its training time (activation
    elements per image x images it trains on): what orders a sweep's runs, longest first, so
    the last run to finish is a short one."""
    spec = model_spec(cfg)
    shapes = data_shapes(cfg.data)
    _, per_image, _ = (_cnn if spec.family == "cnn" else _mlp)(spec, shapes)
    iterations = cfg.trainer.get("iterations")
    batch = int(cfg.trainer.batch_size)
    per_epoch = shapes.train_images or batch
    images = int(iterations) * batch if iterations else int(cfg.trainer.epochs) * per_epoch
    # A block makes six passes over its output (two convolutions, norms and ReLUs); a shortcut's
    # addition is a seventh. Measured: a ResNet-56 trains 10 % slower than plain-56 on digits,
    # so the residual runs of a depth go first and the last to finish is the shorter.
    shortcut = 7 / 6 if spec.residual else 1.0
    return float(per_image) * images * shortcut


def gigabytes(n: int) -> str:
    """``n`` bytes as TB or GB with one decimal (MB below a gigabyte)."""
    if n >= 1e12:
        return f"{n / 1e12:.1f} TB"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def count(n: int) -> str:
    """A parameter count the way papers write it: 0.27M, 16.2G."""
    return f"{n / 1e9:.1f}G" if n >= 1e9 else f"{n / 1e6:.2f}M"
