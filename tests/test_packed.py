"""A run's checkpoint with its tensors packed flat: the same state back, and damage refused."""

from __future__ import annotations

import copy

import pytest
import torch

from degrade import atomic, store
from degrade.config import compose_run
from degrade.packed import Packer
from degrade.train import PLAIN_STATE, Trainer


def _same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride()), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


@pytest.fixture(scope="module")
def trainer():
    torch.set_num_threads(1)
    cfg = compose_run(["model.depth=8", "model.variant=residual", "trainer.epochs=2", "trainer.threads=1"])
    t = Trainer(cfg)
    t.train_epoch()
    return t


def test_a_packed_checkpoint_reads_back_as_the_state_it_was_epoch_after_epoch(tmp_path, trainer):
    packer = Packer()
    path = tmp_path / "checkpoint.pt"
    first = copy.deepcopy(trainer.state())
    atomic.save_checkpoint(path, packer.pack(trainer.state(), plain=PLAIN_STATE))
    _same(first, store.read_checkpoint(path))
    # Channels-last weights keep their layout, and the counters their dtype.
    conv = next(v for v in first["model"].values() if v.dim() == 4 and v.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert any(v.dtype == torch.int64 for v in first["model"].values())
    trainer.train_epoch()
    second = copy.deepcopy(trainer.state())
    atomic.save_checkpoint(
        path, packer.pack(trainer.state(), plain=PLAIN_STATE)
    )  # the same flat tensors, refilled
    back = store.read_checkpoint(path)
    _same(second, back)
    name = next(iter(first["model"]))
    assert not torch.equal(back["model"][name], first["model"][name])  # this epoch's, not the last
    # What a checkpoint from before packing holds still reads as it did.
    torch.save(second, tmp_path / "plain.pt")
    _same(second, store.read_checkpoint(tmp_path / "plain.pt"))


def test_plain_parts_are_kept_as_they_are_and_a_tensor_in_one_is_saved_on_its_own(tmp_path):
    rows = [{"epoch": 1, "train_error": 0.5}]
    state = {"epoch": 1, "model": {"w": torch.ones(2, 3)}, "rows": rows, "extra": [torch.arange(3)]}
    saved = Packer().pack(state, plain=("rows", "extra"))
    assert saved["tree"]["rows"] is rows and saved["tree"]["extra"][0] is state["extra"][0]
    assert saved["tree"]["model"]["w"] == {"__packed_tensor__": 0}  # searched, and placed
    atomic.save_checkpoint(tmp_path / "c.pt", saved)
    _same(state, store.read_checkpoint(tmp_path / "c.pt"))


def test_a_checkpoint_leaves_out_the_checksum_that_torch_load_never_reads(tmp_path):
    import zipfile

    path = tmp_path / "c.pt"
    values = torch.arange(1000, dtype=torch.float32)
    atomic.save_checkpoint(path, {"w": values})
    entries = [e for e in zipfile.ZipFile(path).infolist() if "/data/" in e.filename]
    assert entries and all(e.CRC == 0 for e in entries)
    # Why it is not worth computing: a changed byte of the data loads all the same.
    data = bytearray(path.read_bytes())
    at = data.find(torch.tensor([500.0]).numpy().tobytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)["w"]
    assert int((changed != values).sum()) == 1


def _packed_with(tmp_path, change):
    saved = Packer().pack({"epoch": 1, "model": {"w": torch.ones(2, 3), "b": torch.zeros(3)}})
    saved = copy.deepcopy(saved)
    change(saved)
    torch.save(saved, tmp_path / "c.pt")
    return tmp_path / "c.pt"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s["places"][0].__setitem__(1, 10**6), "reaches past the end"),
        (lambda s: s["places"][0].__setitem__(3, [3, -1]), "malformed"),
        (lambda s: s["places"][0].__setitem__(2, [2]), "malformed"),
        (lambda s: s["places"].pop(), "missing"),
        (lambda s: s["tree"]["model"].__setitem__("w", {"__packed_tensor__": 7}), "missing"),
        (lambda s: s.__setitem__("flat", [1]), "not flat tensors"),
        (lambda s: s.__setitem__("packed", 2), "unknown format"),
    ],
)
def test_a_damaged_packed_checkpoint_is_named_and_not_resumed(tmp_path, change, why):
    path = _packed_with(tmp_path, change)
    with pytest.raises(store.StoreError, match=f"c.pt is damaged: not a checkpoint.*{why}"):
        store.read_checkpoint(path)
    warned: list[str] = []
    assert store.load_checkpoint(path, warn=warned.append) is None and len(warned) == 1
