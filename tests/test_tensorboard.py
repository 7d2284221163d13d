"""Live curves in TensorBoard: the optional extra, switched on per run, events read back."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from degrade.config import compose_run
from degrade.runids import run_id
from tests.conftest import TINY, files_under, run_cli


def test_without_the_extra_switching_it_on_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    # The extra is absent when its module cannot be imported.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    for command in (["train"], ["sweep", "--depths", "8"]):
        code, out, err = run_cli([*command, *TINY, "trainer.tensorboard=true", f"out={tmp_path}"], capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err + out
        assert "pip install 'degrade[tensorboard]'" in err
    assert files_under(tmp_path) == set()


def test_the_switch_must_be_a_boolean(capsys):
    code, _, err = run_cli(["show", "trainer.tensorboard=maybe"], capsys)
    assert code == 2 and "trainer.tensorboard must be true or false" in err


def test_a_run_writes_its_epochs_as_events_named_by_its_run_id(tmp_path, capsys):
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed (pip install 'degrade[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["model.depth=8", "trainer.epochs=2", "trainer.threads=1", "trainer.precision=fp32"]
    # Logging is how a run is watched, not what it computes: the run keeps its id.
    assert run_id(compose_run([*args, "trainer.tensorboard=true"])) == run_id(compose_run(args))
    code, out, err = run_cli(["train", *args, "trainer.tensorboard=true", f"out={tmp_path}"], capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert list(run.glob("events.out.tfevents.*"))  # in the run's own folder: TensorBoard names it by id
    events = EventAccumulator(str(run))
    events.Reload()
    metrics = pd.read_parquet(run / "metrics.parquet")

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    expected = (
        ("error/train", "train_error", 100),
        ("error/test", "test_error", 100),
        ("loss/train", "train_loss", 1),
        ("loss/test", "test_loss", 1),
        ("lr", "scheduled_lr", 1),
    )
    for tag, column, scale in expected:
        got = scalars(tag)
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx((metrics[column] * scale).tolist(), rel=1e-6)
    layers = pd.read_parquet(run / "layers.parquet")
    grads = sorted(t for t in events.Tags()["scalars"] if t.startswith("grad_norm/"))
    assert len(grads) == 8 and grads[0] == "grad_norm/001_stem" and grads[-1] == "grad_norm/008_fc"
    first = layers[(layers["layer"] == 1) & (layers["epoch"] == 2)]["grad_norm"].item()
    assert scalars("grad_norm/001_stem")[-1] == (2, pytest.approx(first, rel=1e-6))


def test_off_by_default_no_events(tmp_path, capsys):
    code, _, err = run_cli(["train", *TINY, "model.depth=8", f"out={tmp_path}"], capsys)
    assert code == 0, err
    assert not list(tmp_path.glob("runs/*/events.out.tfevents.*"))
