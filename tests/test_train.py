import pytest
import torch
from omegaconf import OmegaConf
from pandas import read_parquet

from degrade.config import compose_run
from degrade.store import RunDir
from degrade.train import Trainer, lr_at, train_run

SMALL = ["model.depth=8", "trainer.threads=1"]
# Both numeric paths run on every CPU: bf16 is only slow where the CPU lacks bf16 units, so the
# tests that run it use a narrow net.
PRECISIONS = pytest.mark.parametrize("precision", ["fp32", "bf16"])


def test_lr_schedule_warms_up_then_steps_at_fractions_of_training():
    o = OmegaConf.create(
        {"lr": 0.1, "warmup_iters": 10, "warmup_factor": 0.1, "milestones": [0.5, 0.75], "gamma": 0.1}
    )
    assert lr_at(0, 100, o) == pytest.approx(0.01)
    assert lr_at(5, 100, o) == pytest.approx(0.055)
    assert lr_at(10, 100, o) == pytest.approx(0.1)
    assert lr_at(49, 100, o) == pytest.approx(0.1)
    assert lr_at(50, 100, o) == pytest.approx(0.01)
    assert lr_at(75, 100, o) == pytest.approx(0.001)


def test_a_run_learns_and_reports_every_column():
    r = train_run(compose_run(SMALL + ["trainer.epochs=3"]))
    assert r.state == "done" and r.epochs_done == 3
    f = r.final
    assert f["train_error"] < 0.5 and f["test_error"] < 0.5
    for key in (
        "run_id",
        "family",
        "variant",
        "depth",
        "seed",
        "dataset",
        "epoch",
        "iteration",
        "scheduled_lr",
        "train_loss",
        "test_loss",
        "epoch_seconds",
        "images_per_second",
    ):
        assert key in f
    assert f["iteration"] == 3 * 12  # ceil(1437 / 128) steps per epoch


@PRECISIONS
def test_runs_are_deterministic_on_cpu(precision):
    cfg = SMALL + ["trainer.epochs=2", "model.width=4", f"trainer.precision={precision}"]
    a = train_run(compose_run(cfg)).final
    b = train_run(compose_run(cfg)).final
    assert a["precision"] == precision
    assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]
    c = train_run(compose_run(cfg + ["seed=1"])).final
    assert c["train_loss"] != a["train_loss"]


@PRECISIONS
def test_resuming_from_a_checkpoint_gives_the_same_metrics_bit_for_bit(tmp_path, precision):
    cfg = SMALL + ["trainer.epochs=3", "model.width=4", f"trainer.precision={precision}"]
    full = train_run(compose_run(cfg), tmp_path / "a")
    # Stop after one epoch as a crash would, then let train_run resume from the checkpoint.
    t = Trainer(compose_run(cfg))
    row = t.train_epoch()
    run = RunDir(tmp_path / "b", full.run_id)
    from degrade.atomic import save_checkpoint

    t.rows.append(row)
    save_checkpoint(run.checkpoint, t.state())
    resumed = train_run(compose_run(cfg), tmp_path / "b")
    a = read_parquet(RunDir(tmp_path / "a", full.run_id).metrics)
    b = read_parquet(run.metrics)
    cols = ["epoch", "iteration", "scheduled_lr", "train_loss", "train_error", "test_loss", "test_error"]
    assert b["epoch"].tolist() == [1, 2, 3] and set(b["precision"].iloc[1:]) == {precision}
    assert a[cols].equals(b[cols])
    assert resumed.state == "done"


def test_iterations_budget_stops_mid_epoch():
    r = train_run(compose_run(SMALL + ["trainer.iterations=15"]))
    assert r.epochs_done == 2 and r.final["iteration"] == 15


def test_a_blown_up_loss_ends_the_run_as_diverged(tmp_path):
    cfg = compose_run(
        SMALL + ["trainer.epochs=3", "optim.lr=1e12", "optim.warmup_iters=0", "model.norm=none"]
    )
    r = train_run(cfg, tmp_path)
    assert r.state == "diverged"
    assert RunDir(tmp_path, r.run_id).status()["state"] == "diverged"


def test_mlp_and_synthetic_data_train():
    r = train_run(
        compose_run(
            [
                "model=mlp",
                "model.depth=8",
                "data=synthetic",
                "data.train_size=64",
                "data.test_size=32",
                "trainer.epochs=1",
                "trainer.threads=1",
            ]
        )
    )
    assert r.state == "done" and 0 <= r.final["train_error"] <= 1
    assert torch.get_num_threads() == 1


def test_a_run_holds_at_the_step_a_test_asks_for_until_the_gate_is_removed(tmp_path, monkeypatch):
    import threading
    import time

    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("DEGRADE_HOLD_RUN", f"5:{gate}")
    trainer = Trainer(compose_run(SMALL + ["trainer.epochs=1", "model.width=4"]))
    done = threading.Event()
    worker = threading.Thread(target=lambda: (trainer.train_epoch(), done.set()), daemon=True)
    worker.start()
    held = tmp_path / "gate.held"
    deadline = time.time() + 60
    while not held.exists():
        assert time.time() < deadline, "the run never reached its hold"
        time.sleep(0.01)
    assert trainer.iteration == 5 and not done.is_set()
    assert int(held.read_text()) > 0  # the held process's pid, for a test that kills it
    gate.unlink()
    assert done.wait(60) and trainer.iteration == 12
