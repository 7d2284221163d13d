"""Write small CIFAR archives in the real python-pickle layout, for tests."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np

from degrade.data import CIFAR


def write_archive(root: Path, name: str = "cifar10", per_batch: int = 6, seed: int = 0) -> tuple[Path, str]:
    """Write ``root/<archive>.tar.gz`` with ``per_batch`` images in every batch; return (path, md5)."""
    meta = CIFAR[name]
    rng = np.random.default_rng(seed)
    staging = root / "staging" / meta["folder"]
    staging.mkdir(parents=True)
    for batch in meta["train"] + meta["test"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, meta["classes"], size=per_batch).tolist()
        with (staging / batch).open("wb") as f:
            pickle.dump({b"data": data, meta["label_key"]: labels, b"batch_label": b"x"}, f)
    archive = root / meta["archive"]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=meta["folder"])
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()
