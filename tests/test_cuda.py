"""What only a CUDA GPU can run: the captured step, runs on streams, resume and bench there.

Marked ``cuda`` (``pytest -m cuda``, step 1 of ``make gpu-check``); skipped where no CUDA GPU
is visible. Each compares a CUDA path against another way of doing the same arithmetic, in
fp32 unless it says otherwise, within float-rounding tolerances.
"""

import json

import pytest
import torch

from degrade.config import compose_run
from degrade.train import Trainer
from tests.conftest import run_cli

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA8 = ["model.depth=8", "trainer.device=cuda", "trainer.diagnostics=false"]


def _epochs(overrides, n):
    t = Trainer(compose_run(CUDA8 + [f"trainer.epochs={n}", *overrides]))
    return t, [t.train_epoch() for _ in range(n)]


def test_the_captured_step_trains_as_the_eager_step():
    rows = {}
    for path in ("eager", "graph"):
        overrides = ["trainer.precision=fp32", f"trainer.path={path}", "optim.milestones=[0.5]"]
        t, rows[path] = _epochs(overrides, 3)
        if path == "graph":
            assert t.stepper.captured and t.stepper.path == "graph"
    for a, b in zip(rows["eager"], rows["graph"], strict=True):
        assert a["scheduled_lr"] == b["scheduled_lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    # the schedule stepped inside the graph
    assert rows["graph"][-1]["scheduled_lr"] < rows["graph"][0]["scheduled_lr"]
    assert rows["graph"][0]["setup_seconds"] > 0 and rows["graph"][1]["setup_seconds"] == 0


def test_the_captured_step_in_bf16_trains_as_the_eager_step():
    rows = {}
    for path in ("eager", "graph"):
        t, rows[path] = _epochs(["trainer.precision=auto", f"trainer.path={path}"], 2)
        assert t.acc.precision == "bf16"  # what auto means on CUDA
    for a, b in zip(rows["eager"], rows["graph"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)


def test_a_run_resumed_on_the_graph_path_continues_as_if_never_stopped():
    cfg = CUDA8 + ["trainer.epochs=4", "trainer.precision=fp32"]
    straight = Trainer(compose_run(cfg))
    rows = [straight.train_epoch() for _ in range(4)]
    first = Trainer(compose_run(cfg))
    head = [first.train_epoch() for _ in range(2)]  # then "killed"
    again = Trainer(compose_run(cfg))
    again.load_state(first.state())
    tail = [again.train_epoch() for _ in range(2)]
    assert again.stepper.captured  # captured anew against the loaded optimizer state
    for a, b in zip(rows, head + tail, strict=True):
        assert (a["epoch"], a["scheduled_lr"]) == (b["epoch"], b["scheduled_lr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_diagnostics_leave_a_captured_run_as_it_was():
    plain = _epochs(["trainer.precision=fp32"], 3)[1]
    measured = _epochs(["trainer.precision=fp32", "trainer.diagnostics=true"], 3)[1]
    for a, b in zip(plain, measured, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_runs_captured_together_on_streams_train_as_one_after_another(tmp_path):
    from degrade.sweep import SweepSpec, run_sweep

    grid = dict(depths=[8], seeds=[0, 1], epochs=2, device="cuda", overrides=["trainer.precision=fp32"])
    apart = run_sweep(SweepSpec(**grid, out=str(tmp_path / "apart")))
    together = run_sweep(SweepSpec(**grid, out=str(tmp_path / "together"), together=4))
    a = {r.run_id: r.final for r in apart.runs}
    for r in together.runs:
        assert r.state == "done" and r.final["step_path"] == "graph"
        assert r.final["train_loss"] == pytest.approx(a[r.run_id]["train_loss"], rel=1e-3)


def test_bench_on_cuda_captures_and_measures_runs_on_streams(capsys):
    code, out, err = run_cli(
        ["bench", "--depths", "8", "--steps", "3", "--device", "cuda", "--sweep", "--runs", "2", "--json"],
        capsys,
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["device"] == "cuda" and row["path"] == "graph" and row["setup_s"] >= 0
    assert row["sweep_runs"] == 2 and row["sweep_img_s_min"] > 0
