"""The run store under kills, concurrent sweeps and damaged files, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from degrade.cli import main
from tests.conftest import run_cli, run_subprocess

GRID = ["--depths", "14", "--variants", "plain", "--epochs", "5", "--name", "k", "trainer.threads=1"]
RESULT_COLUMNS = [
    "epoch",
    "iteration",
    "scheduled_lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
]


def _metrics(out: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_parquet(p) for p in sorted(out.glob("runs/*/metrics.parquet"))}


def _status(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/status.json")}


def _popen(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "degrade", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _held(gate: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run of ``proc`` waits at its hold (degrade.hold) behind ``gate``."""
    deadline = time.time() + timeout
    while not gate.with_name(gate.name + ".held").exists():
        assert proc.poll() is None, "the sweep ended before it reached its hold"
        assert time.time() < deadline, f"the run did not reach its hold within {timeout} s"
        time.sleep(0.02)


def test_sigkill_mid_epoch_twice_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    ref = tmp_path / "ref"
    assert main(["sweep", *GRID, "--out", str(ref)]) == 0  # uninterrupted: in this process

    out = tmp_path / "killed"
    # Digits epochs are 12 steps: the run holds after step 18 (mid epoch 2), then, resumed, after
    # step 42 (mid epoch 4), and is killed there: never a race with the run's own pace.
    for k, step in enumerate((18, 42)):
        gate = tmp_path / f"gate{k}"
        gate.touch()
        proc = _popen(["sweep", *GRID, "--out", str(out)], cwd=tmp_path, DEGRADE_HOLD_RUN=f"{step}:{gate}")
        _held(gate, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert next(iter(_status(out).values()))["state"] == "running"

    r = run_subprocess(["sweep", *GRID, "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got, want = _metrics(out), _metrics(ref)
    assert got.keys() == want.keys()
    for rid in want:
        assert got[rid]["epoch"].tolist() == [1, 2, 3, 4, 5]  # no row lost or doubled
        pd.testing.assert_frame_equal(got[rid][RESULT_COLUMNS], want[rid][RESULT_COLUMNS])
    (status,) = _status(out).values()
    assert status["state"] == "done"
    assert [s["from_epoch"] for s in status["sessions"]] == [0, 1, 3]


def test_two_sweeps_at_once_train_each_run_once(tmp_path):
    grid = ["sweep", "--depths", "8,14", "--epochs", "2", "trainer.threads=1", "--out", str(tmp_path / "o")]
    a, b = _popen(grid + ["--name", "a"], tmp_path), _popen(grid + ["--name", "b"], tmp_path)
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    statuses = _status(tmp_path / "o")
    assert len(statuses) == 4
    for s in statuses.values():
        assert s["state"] == "done" and len(s["sessions"]) == 1
    for frame in _metrics(tmp_path / "o").values():
        assert frame["epoch"].tolist() == [1, 2]


def _one_finished_run(out: Path, epochs: int, capsys) -> tuple[list[str], Path, pd.DataFrame]:
    """Sweep a single plain-8 run to the end; return its arguments, folder and metrics."""
    args = [
        "sweep",
        "--depths",
        "8",
        "--variants",
        "plain",
        "--epochs",
        str(epochs),
        "trainer.threads=1",
        "--out",
        str(out),
    ]
    assert run_cli(args, capsys)[0] == 0
    ((rid, ref),) = _metrics(out).items()
    return args, out / "runs" / rid, ref


def test_damaged_checkpoint_is_reported_and_the_run_resumes_from_the_one_before(tmp_path, capsys):
    args, run, ref = _one_finished_run(tmp_path / "o", 3, capsys)
    # What a crash in epoch 3 plus a damaged disk leaves: a bad newest checkpoint, no metrics.
    (run / "checkpoint.pt").write_bytes(b"\0" * 100)
    (run / "metrics.parquet").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "epochs_done": 2}))
    code, _, err = run_cli(args, capsys)
    assert code == 0
    assert f"damaged checkpoint {run / 'checkpoint.pt'}" in err
    got = pd.read_parquet(run / "metrics.parquet")
    pd.testing.assert_frame_equal(got[RESULT_COLUMNS], ref[RESULT_COLUMNS])
    assert json.loads((run / "status.json").read_text())["sessions"][-1]["from_epoch"] == 2


def test_damaged_metrics_of_a_done_run_are_rebuilt_not_retrained(tmp_path, capsys):
    args, run, ref = _one_finished_run(tmp_path / "o", 2, capsys)
    path = run / "metrics.parquet"
    path.write_bytes(path.read_bytes()[:50])
    assert run_cli(args, capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(path), ref)
    session = json.loads(path.with_name("status.json").read_text())["sessions"][-1]
    assert session["from_epoch"] == 2  # nothing was trained again


def test_diverged_runs_end_as_such_and_the_sweep_goes_on(tmp_path, capsys):
    out = tmp_path / "o"
    args = [
        "sweep",
        "--depths",
        "8",
        "--epochs",
        "2",
        "trainer.threads=1",
        "--out",
        str(out),
        "optim.lr=1e12",
        "optim.warmup_iters=0",
        "model.norm=none",
        "--name",
        "boom",
    ]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "diverged" in stdout
    assert {s["state"] for s in _status(out).values()} == {"diverged"}
    code, stdout, _ = run_cli(["summary", "--out", str(out)], capsys)
    assert code == 0 and "diverged" in stdout
    code, stdout, _ = run_cli(["plot", "--out", str(out)], capsys)
    assert code == 0 and stdout.strip().endswith("curves.png")
    code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
    assert code == 0 and stdout.count("diverged") == 2
    # A rerun does not train them again.
    run_cli(args, capsys)
    assert all(len(s["sessions"]) == 1 for s in _status(out).values())


def test_missing_cifar_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(
        ["sweep", "data=cifar10", f"data.root={tmp_path / 'none'}", "data.download=false"], capsys
    )
    assert code == 2 and "put cifar-10-python.tar.gz" in err
    assert list(tmp_path.iterdir()) == []


def test_ls_lists_runs_with_their_state(tmp_path, capsys):
    out = tmp_path / "o"
    run_cli(
        ["sweep", "--depths", "8", "--epochs", "1", "trainer.threads=1", "--out", str(out), "--name", "one"],
        capsys,
    )
    code, stdout, _ = run_cli(["ls", "--out", str(out), "--sweep", "one"], capsys)
    assert code == 0 and stdout.count("done") == 2 and "1/1" in stdout
    code, _, err = run_cli(["ls", "--out", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no runs" in err


def test_corrupt_cifar_archive_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really an archive")
    before = set(tmp_path.rglob("*"))
    code, _, err = run_cli(["sweep", "data=cifar10", f"data.root={root}", "data.download=false"], capsys)
    assert code == 2 and "does not match the published checksum" in err
    assert len(err.strip().splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def test_damaged_metrics_are_named_by_every_reader_and_ls_says_so(tmp_path, capsys):
    out = tmp_path / "o"
    args = [
        "sweep",
        "--depths",
        "8",
        "--variants",
        "plain",
        "--seeds",
        "0,1",
        "--epochs",
        "1",
        "trainer.threads=1",
        "--out",
        str(out),
        "--name",
        "two",
        "hydra/launcher=basic",
    ]
    assert run_cli(args, capsys)[0] == 0
    damaged = sorted((out / "runs").iterdir())[0]
    metrics = damaged / "metrics.parquet"
    metrics.write_bytes(metrics.read_bytes()[:60])
    for command in (["summary"], ["plot"], ["plot", "--kind", "depth"]):
        code, stdout, err = run_cli([*command, "--out", str(out)], capsys)
        assert code == 0, err
        assert f"left out run {damaged.name}: " in err and "metrics.parquet is damaged" in err
        assert "rerunning its sweep rebuilds it from the checkpoint" in err
    code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
    row = next(line for line in stdout.splitlines() if damaged.name[:20] in line)
    assert "damaged" in row and "done" not in row
    # The rerun the message asks for rebuilds it; then every reader is whole again.
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "left out" not in err
    code, stdout, err = run_cli(["summary", "--out", str(out)], capsys)
    (row,) = [line for line in stdout.splitlines() if "plain" in line]
    assert code == 0 and err == "sweep two (the latest started; --sweep NAME reads another)\n"
    assert row.split("│")[3].strip() == "2"  # both seeds counted


def test_a_repaired_checkpoint_is_said_on_the_console_whichever_process_trains_it(tmp_path, monkeypatch):
    out = tmp_path / "o"
    args = [
        "sweep",
        "--depths",
        "8",
        "--epochs",
        "3",
        "trainer.threads=1",
        "--out",
        str(out),
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
    ]
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0  # the sweep's own process here; the rerun's runs a subprocess
    run = sorted((out / "runs").iterdir())[0]
    (run / "checkpoint.pt").write_bytes(b"\0" * 100)
    (run / "metrics.parquet").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "epochs_done": 2}))
    r = run_subprocess(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"warning: run {run.name}: damaged checkpoint {run / 'checkpoint.pt'}" in r.stderr
    assert r.stderr.count("damaged checkpoint") == 1
    assert json.loads((run / "status.json").read_text())["sessions"][-1]["from_epoch"] == 2


def test_a_corrupt_extracted_cifar_batch_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
    import tarfile

    from tests.cifar_archive import write_archive

    monkeypatch.chdir(tmp_path)
    archive, _ = write_archive(tmp_path / "src")
    root = tmp_path / "data"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    code, _, err = run_cli(
        [
            "sweep",
            "--depths",
            "8",
            "data=cifar10",
            f"data.root={root}",
            "data.download=false",
            "trainer.epochs=1",
        ],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot read CIFAR batch {batch}" in err
    assert not (tmp_path / "outputs").exists()


def test_an_unwritable_run_folder_is_refused_with_what_to_do(tmp_path, capsys):
    from tests.conftest import unwritable

    out = tmp_path / "o"
    args = [
        "sweep",
        "--depths",
        "8",
        "--variants",
        "plain",
        "--epochs",
        "2",
        "trainer.threads=1",
        "--out",
        str(out),
    ]
    assert run_cli(args, capsys)[0] == 0
    (run,) = (out / "runs").iterdir()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "epochs_done": 1}))
    with unwritable(run):
        code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot write to run folder {run}" in err and "make it writable" in err
    assert "rerun the same command" not in err


def test_each_session_records_where_its_set_up_time_went(tmp_path, capsys):
    _, run, _ = _one_finished_run(tmp_path / "o", 1, capsys)
    timeline = json.loads((run / "status.json").read_text())["sessions"][-1]["timeline"]
    marks = [timeline[k] for k in ("job_started", "data_loaded", "model_built", "training_started")]
    assert marks == sorted(marks) and marks[0] >= 0 and timeline["process_started"] > 0
