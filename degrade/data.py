"""Datasets as tensors resident on the training device, with batch augmentation done there.

No per-sample Python loader: a dataset is four tensors, batches are index slices of them,
and the CIFAR augmentation (pad-4 random crop + horizontal flip) runs on a whole batch at once.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")

# The standard python-pickle archives and their published MD5 sums.
CIFAR = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": b"labels",
        "classes": 10,
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": b"fine_labels",
        "classes": 100,
    },
}


class DataError(ValueError):
    """A dataset a user asked for that cannot be loaded."""


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
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

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
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format_of(x))


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------- digits


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), standardised with train statistics."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    mean, std = x_tr.mean(), x_tr.std()
    return Dataset(
        "digits",
        torch.from_numpy((x_tr - mean) / std),
        torch.from_numpy(y_tr),
        torch.from_numpy((x_te - mean) / std),
        torch.from_numpy(y_te),
        num_classes=10,
        augment=False,
    )


# --------------------------------------------------------------------------- CIFAR


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` atomically, keeping it only if its MD5 matches."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, tmp.open("wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(str(e)) from e
    if _md5(tmp) != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"downloaded {url} does not match its checksum; try again")
    tmp.replace(dest)


def _find_cifar_folder(name: str, root: Path, download: bool) -> Path:
    """The extracted batches folder, extracting (or downloading, then extracting) the archive."""
    meta = CIFAR[name]
    folder = root / meta["folder"]
    if all((folder / b).is_file() for b in meta["train"] + meta["test"]):
        return folder
    archive = root / meta["archive"]
    where = f"put {meta['archive']} (or its extracted folder {meta['folder']}/) in {root}"
    if not archive.is_file():
        if not download:
            raise DataError(f"{name} not found: {where}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            _fetch(meta["url"], archive, meta["md5"])
        except ConnectionError:
            raise DataError(f"{name} not found and it could not be downloaded: {where}") from None
    if _md5(archive) != meta["md5"]:
        raise DataError(f"{archive} does not match the published checksum; replace it ({where})")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from None
    if not all((folder / b).is_file() for b in meta["train"] + meta["test"]):
        raise DataError(f"{archive} does not hold the expected {meta['folder']}/ batches")
    return folder


def _read_batches(folder: Path, names: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n in names:
        path = folder / n
        try:
            with path.open("rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise DataError(f"cannot read CIFAR batch {path}: {e.__class__.__name__}") from None
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(
    name: str, root: str | Path, download: bool = True, validation: bool = False
) -> Dataset:
    """CIFAR-10/100 from the python-pickle layout in ``root``, per-pixel mean subtracted.

    With ``validation`` the last 5,000 training images stand in for the test set (the paper's
    45k/5k split) and the real test set is not touched.
    """
    meta = CIFAR[name]
    folder = _find_cifar_folder(name, Path(root).expanduser(), download)
    x_tr, y_tr = _read_batches(folder, meta["train"], meta["label_key"])
    if validation:
        cut = len(x_tr) - min(5000, len(x_tr) // 10)
        x_tr, x_te, y_tr, y_te = x_tr[:cut], x_tr[cut:], y_tr[:cut], y_tr[cut:]
    else:
        x_te, y_te = _read_batches(folder, meta["test"], meta["label_key"])
    x_tr_f = x_tr.astype(np.float32) / 255.0
    # The paper subtracts the per-pixel mean of the training set and nothing else.
    mean = x_tr_f.mean(axis=0, keepdims=True)
    return Dataset(
        name,
        torch.from_numpy(x_tr_f - mean),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te.astype(np.float32) / 255.0 - mean),
        torch.from_numpy(y_te),
        num_classes=meta["classes"],
        augment=True,
    )


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


def prepare_dataset(cfg) -> None:
    """Make sure the dataset a ``data`` node names is at hand (downloading it when allowed)."""
    if cfg.name in CIFAR:
        _find_cifar_folder(cfg.name, Path(cfg.root).expanduser(), cfg.download)
    elif cfg.name not in DATASETS:
        raise DataError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")


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
