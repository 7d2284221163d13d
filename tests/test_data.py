import pickle
import shutil

import numpy as np
import pytest
import torch

from degrade import data
from degrade.data import DataError, augment_batch, load_cifar, load_digits, load_synthetic
from tests.cifar_archive import write_archive


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """A 6-images-per-batch CIFAR-10 archive whose checksum the reader expects."""
    path, md5 = write_archive(tmp_path / "src")
    monkeypatch.setitem(data.CIFAR["cifar10"], "md5", md5)
    return path


def test_cifar_reader_reads_the_pickle_layout_and_subtracts_the_pixel_mean(tmp_path, archive):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(archive, root)
    ds = load_cifar("cifar10", root, download=False)
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10 and ds.augment
    # Per-pixel mean of the training set is zero after subtraction.
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(3, 32, 32), atol=1e-5)
    # Row-major 3072 bytes = R plane, G plane, B plane of 32x32.
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    raw = np.asarray(first[b"data"][:2], dtype=np.float32).reshape(2, 3, 32, 32) / 255.0
    # The mean cancels in a difference of two images: what is left is the raw layout.
    assert np.allclose((ds.x_train[0] - ds.x_train[1]).numpy(), raw[0] - raw[1], atol=1e-6)
    assert ds.y_train[0].item() == first[b"labels"][0]


def test_cifar_validation_split_holds_out_the_end_of_the_training_set(tmp_path, archive):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(archive, root)
    ds = load_cifar("cifar10", root, download=False, validation=True)
    assert len(ds.x_train) == 27 and len(ds.x_test) == 3


def test_cifar_missing_says_where_to_put_the_files(tmp_path):
    with pytest.raises(DataError, match=r"put cifar-10-python.tar.gz .* in"):
        load_cifar("cifar10", tmp_path / "nowhere", download=False)


def test_cifar_download_verifies_the_checksum(tmp_path, archive, monkeypatch):
    monkeypatch.setitem(data.CIFAR["cifar10"], "url", archive.as_uri())
    ds = load_cifar("cifar10", tmp_path / "fetched", download=True)
    assert len(ds.x_train) == 30
    # The same archive under a wrong published checksum is refused and not kept.
    monkeypatch.setitem(data.CIFAR["cifar10"], "md5", "0" * 32)
    with pytest.raises(DataError, match="checksum"):
        load_cifar("cifar10", tmp_path / "fetched2", download=True)
    assert not (tmp_path / "fetched2" / "cifar-10-python.tar.gz").exists()


def test_cifar_unreachable_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(data.CIFAR["cifar10"], "url", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(DataError, match="could not be downloaded"):
        load_cifar("cifar10", tmp_path / "d", download=True)


def test_corrupt_cifar_archive_is_refused_by_its_checksum(tmp_path, archive):
    root = tmp_path / "data"
    root.mkdir()
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (root / archive.name).write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum"):
        load_cifar("cifar10", root, download=False)


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    path, md5 = write_archive(tmp_path, "cifar100", per_batch=4)
    monkeypatch.setitem(data.CIFAR["cifar100"], "md5", md5)
    ds = load_cifar("cifar100", tmp_path, download=False)
    assert ds.num_classes == 100 and len(ds.x_train) == 4 and len(ds.x_test) == 4


def test_digits_is_a_stratified_standardised_split():
    ds = load_digits()
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    assert torch.bincount(ds.y_test).min() >= 35
    assert not ds.augment


def test_synthetic_is_cifar_shaped_and_seeded():
    a, b = load_synthetic(64, 16, seed=3), load_synthetic(64, 16, seed=3)
    assert a.x_train.shape == (64, 3, 32, 32) and torch.equal(a.x_train, b.x_train)


def test_augment_is_a_shifted_crop_or_its_mirror_and_is_reproducible():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    y1, y2 = augment_batch(x, g1), augment_batch(x, g2)
    assert y1.shape == x.shape and torch.equal(y1, y2)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        found = any(
            torch.equal(y1[i], cand)
            for dy in range(9)
            for dx in range(9)
            for cand in (
                padded[i, :, dy : dy + 32, dx : dx + 32],
                padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1),
            )
        )
        assert found


def test_augment_keeps_channels_last():
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = augment_batch(x, torch.Generator().manual_seed(0))
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("fraction", "seed"), [(0.2, 0), (0.33, 5)])
def test_digits_split_is_exactly_scikit_learns_without_importing_it(fraction, seed):
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target.astype(np.int64), test_size=fraction, random_state=seed, stratify=bunch.target
    )
    mean, std = x_tr.mean(), x_tr.std()
    ds = load_digits(fraction, seed)
    for got, want in (
        (ds.x_train, (x_tr - mean) / std),
        (ds.y_train, y_tr),
        (ds.x_test, (x_te - mean) / std),
        (ds.y_test, y_te),
    ):
        assert np.array_equal(got.numpy(), want)
