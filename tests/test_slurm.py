"""Sweeps through a real SLURM (scripts/slurm-local.sh start), via sbatch and submitit."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import alive, run_subprocess
from tests.test_reliability import RESULT_COLUMNS, _popen


def _slurm_idle() -> bool:
    """Whether a SLURM controller answers and has an idle node."""
    if shutil.which("sinfo") is None:
        return False
    # Without a controller sinfo retries for about 9 s before it fails; a local one answers at once.
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and "idle" in r.stdout


pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def _needs_an_idle_node() -> None:
    """Skip here, not at import: every pytest process collects this file, few run it."""
    if not _slurm_idle():
        pytest.skip("no idle SLURM node: run scripts/slurm-local.sh start")


SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
LONG = ["sweep", "--depths", "20", "--variants", "plain", "--epochs", "6", "--name", "long"]
# Why these tests cannot race the run: the job holds itself (degrade.hold) after step 30, in its
# third epoch of 12 steps, with two epochs checkpointed, until the test removes the gate file.
# The requeue or the cancel lands while it waits, however fast or slow the CPU, so the first
# session always ends after exactly two epochs and the run is never done before it.
HOLD_AT = 30


def _status(out: Path) -> dict:
    (path,) = out.glob("runs/*/status.json")
    return json.loads(path.read_text())


def _start_held(tmp_path: Path) -> tuple[subprocess.Popen, Path, str, int]:
    """The long sweep through SLURM, its job held mid-epoch 3: (sweep, gate, job id, job's pid)."""
    gate = tmp_path / "gate"
    gate.touch()
    proc = _popen([*LONG, "--out", "o", *SLURM], cwd=tmp_path, DEGRADE_HOLD_RUN=f"{HOLD_AT}:{gate}")
    held = gate.with_name("gate.held")
    deadline = time.time() + 180
    while not held.exists():
        assert proc.poll() is None, "the sweep ended before its job reached the hold"
        assert time.time() < deadline, "the job did not reach the hold within 180 s"
        time.sleep(0.1)
    status = _status(tmp_path / "o")
    assert status["epochs_done"] == 2 and status["state"] == "running"
    return proc, gate, status["sessions"][-1]["slurm_job_id"], int(held.read_text())


def _wait_gone(pid: int, timeout: float = 60) -> None:
    """Until process ``pid`` has ended (SLURM kills a job KillWait seconds after SIGTERM)."""
    deadline = time.time() + timeout
    while alive(pid):
        assert time.time() < deadline, f"process {pid} still alive after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    """Cancel whatever a test left queued (a requeued job would run again later)."""
    yield
    queued = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split()
    if queued:
        subprocess.run(["scancel", *queued], check=False)


def _metrics(out: Path) -> pd.DataFrame:
    (path,) = out.glob("runs/*/metrics.parquet")
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The long run trained without interruption, on one thread as the SLURM jobs are."""
    cwd = tmp_path_factory.mktemp("ref")
    r = run_subprocess([*LONG, "--out", "ref", "trainer.threads=1"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    return _metrics(cwd / "ref")


def test_a_sweep_goes_through_sbatch_and_records_the_job_ids(tmp_path):
    r = run_subprocess(["sweep", "--depths", "8", "--epochs", "1", "--name", "s", *SLURM], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 runs (2 done)" in r.stdout
    ids = set()
    for path in (tmp_path / "outputs" / "runs").glob("*/status.json"):
        status = json.loads(path.read_text())
        assert status["state"] == "done"
        ids.add(status["sessions"][0]["slurm_job_id"])
    assert len(ids) == 2
    scripts = list((tmp_path / "outputs" / "sweeps" / "s" / ".submitit").rglob("*_submission.sh"))
    assert scripts and "#SBATCH" in scripts[0].read_text()


def test_a_requeued_job_resumes_without_losing_or_repeating_epochs(tmp_path, reference):
    proc, gate, job, pid = _start_held(tmp_path)
    subprocess.run(["scontrol", "requeue", job], check=True)
    _wait_gone(pid)
    gate.unlink()  # the requeued session trains through
    # SLURM holds a requeued job for two minutes once it is pending again; let it start at once.
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            break
        time.sleep(0.2)
    assert proc.wait(timeout=240) == 0
    pd.testing.assert_frame_equal(_metrics(tmp_path / "o")[RESULT_COLUMNS], reference[RESULT_COLUMNS])
    sessions = _status(tmp_path / "o")["sessions"]
    assert [s["from_epoch"] for s in sessions] == [0, 2]
    assert sessions[0]["slurm_job_id"] == sessions[1]["slurm_job_id"] == job


def test_scancel_then_rerun_finishes_the_run(tmp_path, reference):
    proc, gate, job, pid = _start_held(tmp_path)
    subprocess.run(["scancel", job], check=True)
    _wait_gone(pid)
    # Without SLURM accounting submitit cannot see the cancel: stop the waiting sweep as a user would.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert _status(tmp_path / "o")["state"] == "running"
    gate.unlink()
    r = run_subprocess([*LONG, "--out", "o", *SLURM], cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(_metrics(tmp_path / "o")[RESULT_COLUMNS], reference[RESULT_COLUMNS])
    sessions = _status(tmp_path / "o")["sessions"]
    assert [s["from_epoch"] for s in sessions] == [0, 2]
    assert sessions[0]["slurm_job_id"] != sessions[1]["slurm_job_id"]
