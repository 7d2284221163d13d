"""`make gpu-check`: its CPU rehearsal runs every step, so the check cannot rot without a GPU."""

import importlib.util
import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_step_and_writes_its_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["cuda_tests", "default_sweep", "graph_vs_eager", "together", "paper", "bench"]
    assert report["passed"] and report["environment"]["mode"] == "cpu"
    # What only means something on CUDA says so, and still ran what it could.
    assert steps["cuda_tests"]["status"] == "skip" and "CUDA tests collected" in steps["cuda_tests"]["detail"]
    assert steps["graph_vs_eager"]["status"] == "skip"
    assert steps["graph_vs_eager"]["data"]["max_train_loss_rel_diff"] < 1e-3
    for name in ("default_sweep", "together", "bench", "paper"):
        assert steps[name]["status"] == "pass", steps[name]
        assert steps[name]["seconds"] > 0
    assert "plain" in steps["default_sweep"]["data"]["verdict"]
    assert steps["together"]["data"]["max_train_loss_rel_diff"] == 0.0  # fp32, the same arithmetic
    (row,) = steps["bench"]["data"]["rows"]
    assert row["sweep_img_s_median"] > 0 and len(row["speedup_repeats"]) == 3
    assert steps["paper"]["data"]["projected_minutes"] > 0
    assert [t["what"] for t in report["targets"]] == ["full paper preset (fp32), projected minutes"]
    for line in ("[SKIP] 1. CUDA tests", "[PASS] 2. default sweep", "[PASS] 5. paper", "PASSED"):
        assert line in proc.stdout
    log = (tmp_path / "gpu-check.log").read_text()
    assert "-m degrade sweep" in log and "-m degrade bench" in log


def test_without_cuda_the_real_check_refuses_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "--cpu" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _rows(run, depth, seconds, its_per_epoch=100, epochs=4, loss=2.0):
    """A run's metrics: a slow first epoch (capture), then ``seconds`` per epoch, from time 0."""
    took = [99.0] + [seconds] * (epochs - 1)
    return pd.DataFrame(
        {
            "run_id": run,
            "depth": depth,
            "epoch": range(1, epochs + 1),
            "iteration": [its_per_epoch * e for e in range(1, epochs + 1)],
            "epoch_seconds": took,
            "ended": pd.Series(took).cumsum(),
            "images_per_second": 1.0,
            "scheduled_lr": 0.1,
            "train_loss": loss,
            "train_error": 0.5,
            "test_loss": loss,
        }
    )


def test_the_paper_projection_scales_the_slice_by_depth_and_iterations():
    check = _module()
    # Two runs trained together from time 0: after their first epochs (left out), depth 20 trains
    # 300 iterations in 99..102 s, depth 56 300 in 99..105 s: a 6 s window.
    rows = pd.concat([_rows("a", 20, 1.0), _rows("b", 56, 2.0)], ignore_index=True)
    got = check.paper_projection(rows)
    rate = (20 * 300 + 56 * 300) / 6.0  # depth-iterations per second together
    assert got["depth_iterations_per_s"] == pytest.approx(rate)
    work = (2 * (20 + 32 + 44 + 56) + 110) * 64_000
    assert got["projected_minutes"] == pytest.approx(work / rate / 60, abs=0.05)
    assert got["resnet110_alone_minutes"] == pytest.approx(64_000 * 110 / (56 * 300 / 6.0) / 60, abs=0.05)
    assert got["slice_img_s"] == pytest.approx(600 * 128 / 6.0)


def test_images_per_second_together_count_the_overlap_and_apart_the_sum():
    check = _module()
    rows = pd.concat([_rows("a", 20, 1.0), _rows("b", 56, 2.0)], ignore_index=True)
    assert check._aggregate_img_s(rows, 128, together=True) == pytest.approx(600 * 128 / 6.0)
    assert check._aggregate_img_s(rows, 128, together=False) == pytest.approx(600 * 128 / 9.0)


def test_curves_that_differ_beyond_tolerance_fail_the_comparison():
    check = _module()
    a = _rows("a", 20, 1.0, loss=2.0)
    assert check.compare_curves(a, _rows("a", 20, 1.0, loss=2.01))["max_train_loss_rel_diff"] < 0.01
    with pytest.raises(check.StepFailed, match="beyond tolerance"):
        check.compare_curves(a, _rows("a", 20, 1.0, loss=2.2))
    with pytest.raises(check.StepFailed, match="beyond tolerance"):
        check.compare_curves(a, _rows("a", 20, 1.0, loss=float("nan")))


def test_only_refuses_a_step_there_is_not(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--only", "bench,nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown step(s) nope" in proc.stderr
    names = ["cuda_tests", "default_sweep", "graph_vs_eager", "together", "paper", "bench"]
    assert _module().STEP_NAMES == names
