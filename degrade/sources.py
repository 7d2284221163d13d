"""Where each dataset's arrays come from: found, downloaded, verified and read, as numpy.

No torch here: a sweep checks every dataset it needs (reading what its runs will read) before
anything runs, in a process that never trains. ``data`` turns these arrays into tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
import tarfile
import urllib.error
import urllib.request
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")

# The standard python-pickle archives and their published MD5 sums.
CIFAR: dict[str, dict[str, Any]] = {
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

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


class DataError(ValueError):
    """A dataset a user asked for that cannot be loaded."""


# --------------------------------------------------------------------------- digits


def _digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    raise DataError("digits needs scikit-learn's bundled data file: pip install scikit-learn")


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` each class gets, as scikit-learn's stratified split computes it."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need -= add_now
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of ``y``, the split ``train_test_split(stratify=y, random_state=seed)``
    of scikit-learn makes (the same draws from the same generator, so the same indices).

    Reproduced here because importing scikit-learn costs a second in every process that trains.
    """
    n = len(y)
    n_test = ceil(test_fraction * n)
    n_train = n - n_test
    _, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    if not 0 < test_fraction < 1 or n_train < len(counts) or n_test < len(counts) or counts.min() < 2:
        raise DataError(f"data.test_fraction={test_fraction} leaves too few images of a class on a side")
    per_class = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(counts)):
        members = per_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def digits_arrays(test_fraction: float = 0.2, split_seed: int = 0) -> Arrays:
    """scikit-learn's 8x8 digits (1,797 images), split stratified, standardised with train statistics."""
    try:
        with gzip.open(_digits_file(), "rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the bundled digits data: {e}") from None
    x = table[:, :-1].reshape(-1, 8, 8).astype(np.float32)[:, None, :, :] / 16.0
    y = table[:, -1].astype(int).astype(np.int64)
    train, test = stratified_split(y, test_fraction, split_seed)
    x_tr, x_te = x[train], x[test]
    mean, std = x_tr.mean(), x_tr.std()
    return (x_tr - mean) / std, y[train], (x_te - mean) / std, y[test]


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


def find_cifar_folder(name: str, root: Path, download: bool) -> Path:
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


class _NotABatch(pickle.UnpicklingError):
    """A pickle that names something a CIFAR batch does not hold (refused before it is looked up)."""


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3's protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise _NotABatch("not a CIFAR batch: it encodes a string other than as latin-1")
    return text.encode("latin-1")


def _array_globals() -> dict[tuple[str, str], Any]:
    """The numpy functions a pickled array names, under each module name numpy has had."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]  # numpy 1 names the same modules here
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = getattr(numeric, "_frombuffer")  # noqa: B009 - protocol 5; private
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Reads what a CIFAR batch holds (dicts, lists, bytes, strings, numbers, numpy arrays) and
    nothing else: any other global a pickle names is refused before it is looked up, so a
    crafted file runs no code."""

    allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise _NotABatch(f"not a CIFAR batch: it names {module}.{name}")
        return found


def read_batches(
    folder: Path, names: list[str], label_key: bytes, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32, uint8) and labels of the named pickle batches in ``folder``.

    A batch that does not unpickle, or whose images or labels are not what CIFAR holds, is a
    DataError naming the file.
    """
    xs, ys = [], []
    for n in names:
        path = folder / n
        try:
            with path.open("rb") as f:
                batch = _BatchUnpickler(f, encoding="bytes").load()
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[label_key], dtype=np.int64)
        except _NotABatch as e:
            raise DataError(
                f"cannot read CIFAR batch {path}: {e}; delete the folder to extract the archive again"
            ) from None
        except (
            OSError,
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
        ) as e:
            raise DataError(
                f"cannot read CIFAR batch {path}: {e.__class__.__name__}; "
                "delete the folder to extract the archive again"
            ) from None
        in_range = not len(labels) or 0 <= labels.min() <= labels.max() < classes
        if labels.shape != (len(images),) or not in_range:
            raise DataError(
                f"CIFAR batch {path} is damaged: its labels do not match its images; "
                "delete the folder to extract the archive again"
            )
        xs.append(images)
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def cifar_arrays(name: str, root: str | Path, download: bool = True, validation: bool = False) -> Arrays:
    """CIFAR-10/100 from the python-pickle layout in ``root``, per-pixel mean subtracted.

    With ``validation`` the last 5,000 training images stand in for the test set (the paper's
    45k/5k split) and the real test set is not touched.
    """
    meta = CIFAR[name]
    folder = find_cifar_folder(name, Path(root).expanduser(), download)
    x_tr, y_tr = read_batches(folder, meta["train"], meta["label_key"], meta["classes"])
    if validation:
        cut = len(x_tr) - min(5000, len(x_tr) // 10)
        x_tr, x_te, y_tr, y_te = x_tr[:cut], x_tr[cut:], y_tr[:cut], y_tr[cut:]
    else:
        x_te, y_te = read_batches(folder, meta["test"], meta["label_key"], meta["classes"])
    x_tr_f = x_tr.astype(np.float32) / 255.0
    # The paper subtracts the per-pixel mean of the training set and nothing else.
    mean = x_tr_f.mean(axis=0, keepdims=True)
    return x_tr_f - mean, y_tr, x_te.astype(np.float32) / 255.0 - mean, y_te


# --------------------------------------------------------------------------- checks


def prepare_dataset(cfg: Any) -> None:
    """Make sure the dataset a ``data`` node names can be read, as its runs will read it.

    CIFAR is found (or downloaded and checksum-verified) and every batch is read; digits are
    read from scikit-learn's bundled file. Any problem is a DataError, before a run starts.
    """
    if cfg.name in CIFAR:
        meta = CIFAR[cfg.name]
        folder = find_cifar_folder(cfg.name, Path(cfg.root).expanduser(), cfg.download)
        for part in ("train",) if cfg.validation else ("train", "test"):
            read_batches(folder, meta[part], meta["label_key"], meta["classes"])
    elif cfg.name == "digits":
        digits_arrays(cfg.test_fraction, cfg.split_seed)
    elif cfg.name not in DATASETS:
        raise DataError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
