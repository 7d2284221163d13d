"""Datasets as tensors resident on the training device, with batch augmentation done there.

No per-sample Python loader: a dataset is four tensors, batches are index slices of them,
and the CIFAR augmentation (pad-4 random crop + horizontal flip) runs on a whole batch at once.
Where the arrays come from (files, downloads, checks) is ``sources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from degrade.sources import (  # noqa: F401 - re-exported: the data module's public names
    CIFAR,
    DATASETS,
    Arrays,
    DataError,
    cifar_arrays,
    digits_arrays,
    prepare_dataset,
)


@dataclass
class Dataset:
    """Train and test tensors on one device; images are float (N, C, H, W), labels int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]  # an image is 1 or 3 dims: torch types a shape as tuple[int, ...]

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None) -> Dataset:
        """The same data moved to ``device`` (and ``memory_format`` for the images)."""

        def move(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device)
            return x.contiguous(memory_format=memory_format) if memory_format else x

        return Dataset(
            self.name,
            move(self.x_train),
            self.y_train.to(device),
            move(self.x_test),
            self.y_test.to(device),
            self.num_classes,
            self.augment,
        )


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Pad-``pad`` random crop and random horizontal flip of a whole batch, on its device."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format_of(x))


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------- files


def _from_arrays(name: str, arrays: Arrays, num_classes: int, augment: bool) -> Dataset:
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in arrays)
    return Dataset(name, x_tr, y_tr, x_te, y_te, num_classes=num_classes, augment=augment)


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), standardised with train statistics."""
    return _from_arrays("digits", digits_arrays(test_fraction, split_seed), 10, augment=False)


def load_cifar(name: str, root: str | Path, download: bool = True, validation: bool = False) -> Dataset:
    """CIFAR-10/100 from the python-pickle layout in ``root``, per-pixel mean subtracted.

    With ``validation`` the last 5,000 training images stand in for the test set (the paper's
    45k/5k split) and the real test set is not touched.
    """
    arrays = cifar_arrays(name, root, download=download, validation=validation)
    return _from_arrays(name, arrays, CIFAR[name]["classes"], augment=True)


# --------------------------------------------------------------------------- synthetic


def load_synthetic(
    train_size: int = 2048, test_size: int = 512, num_classes: int = 10, seed: int = 0
) -> Dataset:
    """Random CIFAR-shaped images with random labels: for benchmarks and smoke tests."""
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        "synthetic",
        torch.randn(train_size, 3, 32, 32, generator=g),
        torch.randint(0, num_classes, (train_size,), generator=g),
        torch.randn(test_size, 3, 32, 32, generator=g),
        torch.randint(0, num_classes, (test_size,), generator=g),
        num_classes=num_classes,
        augment=True,
    )


def load_dataset(cfg) -> Dataset:
    """The dataset a ``data`` config node names, on the CPU."""
    name = cfg.name
    if name == "digits":
        return load_digits(cfg.test_fraction, cfg.split_seed)
    if name in CIFAR:
        return load_cifar(name, cfg.root, download=cfg.download, validation=cfg.validation)
    if name == "synthetic":
        return load_synthetic(cfg.train_size, cfg.test_size, cfg.num_classes, cfg.split_seed)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
