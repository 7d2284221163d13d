"""What degrade says is what its runs show: a verdict only on nets that have trained, run
states and launcher failures as they are, the memory a cgroup allows, and TensorBoard events
for every epoch a run has."""

from __future__ import annotations

import errno
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from degrade import atomic, frames, memory, plot, store, sweepdata, verdict
from tests.conftest import files_under, run_cli, run_subprocess

PINNED = ["trainer.threads=1", "trainer.precision=fp32"]
ONE_PLAIN = ["--depths", "8", "--variants", "plain", *PINNED]


def _said(text: str) -> str:
    """Text with its line breaks (rich's, matplotlib's) and runs of spaces made single spaces."""
    return " ".join(text.split())


def _popen(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "degrade", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held(gate: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until the run of ``proc`` waits at its hold behind ``gate``; the training process's pid."""
    held = gate.with_name(gate.name + ".held")
    deadline = time.time() + timeout
    while not held.exists() or not held.read_text():
        assert proc.poll() is None, "the sweep ended before it reached its hold"
        assert time.time() < deadline, f"the run did not reach its hold within {timeout} s"
        time.sleep(0.02)
    return int(held.read_text())


# --------------------------------------------------------------------------- the verdict


def test_a_three_epoch_sweep_makes_no_call_and_says_so_in_summary_report_and_figures(tmp_path, capsys):
    out = tmp_path / "o"
    code, stdout, err = run_cli(
        ["sweep", "--depths", "8,20,56", "--epochs", "3", *PINNED, "--out", str(out)], capsys
    )
    assert code == 0, err
    said = _said(stdout)
    assert "Degradation reproduced" not in said and "No degradation" not in said
    (line,) = verdict.sweep_verdicts(sweepdata.load(out))
    assert line.startswith(
        "Not converged: train longer (--epochs 12, or trainer.epochs=12); plain-8 (seed 0): "
    )
    assert "training error at the end (trained: at most 10 %)" in line
    assert line in said  # the summary the sweep printed

    code, stdout, err = run_cli(["report", "--out", str(out)], capsys)
    assert code == 0, err
    page = Path(stdout.strip()).read_text()
    assert f"<li>{html.escape(line)}</li>" in page and "Degradation reproduced" not in page

    data = sweepdata.load(out)
    for kind in ("curves", "depth"):
        assert line in _said(_under(plot.draw(kind, data))), kind


def _under(fig) -> str:
    """The text a figure carries under its panels (the verdict, the caption)."""
    return " ".join(t.get_text() for t in fig.texts)


def test_a_sweep_whose_nets_trained_makes_its_call_on_one_seed_and_the_3x_control(
    tmp_path, capsys, monkeypatch
):
    args = ["sweep", "--depths", "8,14", "--epochs", "8", *PINNED, "--out", str(tmp_path)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    said = _said(stdout)
    assert "Not converged" not in said
    assert "This rests on one seed: check it with --seeds 0,1,2." in said
    (line,) = verdict.sweep_verdicts(sweepdata.load(tmp_path))
    assert line in said and line in _said(_under(plot.draw("curves", sweepdata.load(tmp_path))))
    # 8 epochs are far short of the paper's 3x control on digits (45): the verdict claims none.
    assert "default budget" not in line
    # Were the dataset's default budget 2 epochs, these 8 would be the control, and the verdict,
    # through the CLI, says what it found (plain-14 against plain-8, whichever way it went).
    asked = []
    monkeypatch.setattr(verdict, "default_epochs", lambda dataset: asked.append(dataset) or 2)
    code, stdout, err = run_cli(["summary", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert asked == ["digits"]
    said = _said(stdout)
    assert "At 4x the default budget (8 epochs against 2)" in said
    assert ("the degradation persisted" in said) == ("plain-14 trains worse than plain-8" in said)
    assert ("the degradation did not persist" in said) == ("plain-14 trains worse" not in said)


# --------------------------------------------------------------------------- run states


def test_a_killed_run_is_interrupted_once_no_process_holds_it(tmp_path, capsys):
    out = tmp_path / "o"
    gate = tmp_path / "gate"
    gate.touch()
    # Digits epochs are 12 steps: held after step 18, mid epoch 2, with epoch 1 in the store.
    proc = _popen(
        ["sweep", *ONE_PLAIN, "--epochs", "2", "--name", "k", "--out", str(out)],
        cwd=tmp_path,
        DEGRADE_HOLD_RUN=f"18:{gate}",
    )
    _held(gate, proc)
    code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
    assert code == 0 and "running" in stdout and "interrupted" not in stdout  # its process holds it
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (rid,) = [p.name for p in (out / "runs").iterdir()]
    assert json.loads((out / "runs" / rid / "status.json").read_text())["state"] == "running"  # as left

    code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
    assert code == 0 and "interrupted" in stdout and "running" not in stdout
    code, stdout, err = run_cli(["report", "--out", str(out)], capsys)
    assert code == 0, err
    page = Path(stdout.strip()).read_text()
    assert re.search(rf"<td[^>]*>{rid}</td><td[^>]*>interrupted</td>", page)
    # While a process holds the run's lock it is running, whatever its files say.
    with store.RunDir(out, rid).lock():
        code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
        assert "running" in stdout and "interrupted" not in stdout
    assert frames.list_runs(out)["state"].tolist() == ["interrupted"]


def test_a_worker_killed_mid_run_names_the_run_and_where_its_error_is(tmp_path, capsys):
    out = tmp_path / "o"
    gate = tmp_path / "gate"
    gate.touch()
    args = [
        "sweep",
        *ONE_PLAIN,
        "--epochs",
        "2",
        "--name",
        "w",
        "--out",
        str(out),
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=1",
    ]
    proc = _popen(args, cwd=tmp_path, DEGRADE_HOLD_RUN=f"18:{gate}")
    worker = _held(gate, proc)
    assert worker != proc.pid  # the run trains in a pool worker, which the kernel now "kills"
    os.kill(worker, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    (rid,) = [p.name for p in (out / "runs").iterdir()]
    status_file = out / "runs" / rid / "status.json"
    lines = stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: the launcher stopped (WorkerDied: a worker process ended (signal 9)")
    assert f"run {rid} was left unfinished: its error is recorded in {status_file}" in lines[0]
    status = json.loads(status_file.read_text())
    assert status["state"] == "interrupted" and status["error"].startswith("WorkerDied")
    code, stdout, _ = run_cli(["ls", "--out", str(out)], capsys)
    assert "interrupted (WorkerDied" in _said(stdout)
    gate.unlink()
    r = run_subprocess(args, cwd=tmp_path)  # a rerun resumes it
    assert r.returncode == 0, r.stderr
    assert store.RunDir(out, rid).state() == "done"


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_a_full_disk_under_a_run_names_the_run_and_says_its_folder_could_not_record_it(
    command, tmp_path, capsys, monkeypatch
):
    real = atomic.atomic_write
    checkpoints = []

    def filling(path: Path, write) -> None:
        if path.name == "checkpoint.pt":
            checkpoints.append(path)
        if len(checkpoints) >= 2:  # the disk fills while epoch 2 is saved, and stays full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, write)

    monkeypatch.setattr(atomic, "atomic_write", filling)
    out = tmp_path / "o"
    args = (
        ["sweep", *ONE_PLAIN, "--epochs", "2", "--out", str(out)]
        if command == "sweep"
        else ["train", "model.depth=8", "model.variant=plain", "trainer.epochs=2", *PINNED, f"out={out}"]
    )
    code, _, err = run_cli(args, capsys)
    (rid,) = [p.name for p in (out / "runs").iterdir()]
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    who = "the launcher" if command == "sweep" else "training"
    assert f"error: {who} stopped (OSError: [Errno 28] No space left on device)" in lines[0]
    assert (
        f"run {rid} was left unfinished: its folder {out / 'runs' / rid} could not record the error "
        "(No space left on device)"
    ) in lines[0]
    monkeypatch.setattr(atomic, "atomic_write", real)
    assert store.RunDir(out, rid).state() == "interrupted"


def test_report_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    code, _, err = run_cli(["sweep", *ONE_PLAIN, "--epochs", "1", "--name", "s", "--out", str(out)], capsys)
    assert code == 0, err
    before = files_under(out)

    def full(path: Path, write) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "atomic_write", full)
    code, stdout, err = run_cli(["report", "--out", str(out)], capsys)
    assert code == 2 and stdout == "" and "Traceback" not in err
    said = f"error: cannot write to {out / 'sweeps' / 's'}: No space left on device"
    assert err.strip().splitlines() == [said]
    assert files_under(out) == before


# --------------------------------------------------------------------------- memory


def _cgroup(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return tmp_path / "proc-cgroup", root


def test_the_memory_cgroup_limits_what_a_sweep_may_use(tmp_path, capsys, monkeypatch):
    # cgroup v2, a SLURM-like job group below a looser parent: 60 MB limit, 20 MB used.
    proc, root = _cgroup(
        tmp_path,
        {
            "memory.max": "max\n",
            "job/memory.max": "1000000000\n",
            "job/memory.current": "100000000\n",
            "job/step/memory.max": "60000000\n",
            "job/step/memory.current": "20000000\n",
        },
        "0::/job/step\n",
    )
    monkeypatch.setattr(memory, "PROC_CGROUP", proc, raising=False)
    monkeypatch.setattr(memory, "CGROUP_ROOT", root, raising=False)
    out = tmp_path / "o"
    code, stdout, err = run_cli(
        ["sweep", "--depths", "56", "--variants", "plain", "--epochs", "1", *PINNED, "--out", str(out)],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cnn-plain-56 needs about" in err and "cpu has 40 MB available" in err
    assert not out.exists()
    assert memory.cgroup_available() == 40_000_000
    assert memory.available_bytes("cpu") == 40_000_000  # far less than this machine has free


def test_cgroup_v1_limits_count_and_no_limit_is_none(tmp_path):
    proc, root = _cgroup(
        tmp_path,
        {
            "memory/a/memory.limit_in_bytes": "50000000\n",
            "memory/a/memory.usage_in_bytes": "45000000\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
        },
        "4:memory:/a\n1:cpu:/\n",
    )
    assert memory.cgroup_available(proc, root) == 5_000_000
    # A path the container's view does not have: its own root is the group.
    proc, root = _cgroup(tmp_path / "v2", {"memory.max": "max\n", "memory.current": "1\n"}, "0::/elsewhere\n")
    assert memory.cgroup_available(proc, root) is None
    assert memory.cgroup_available(tmp_path / "absent", root) is None


# --------------------------------------------------------------------------- TensorBoard


def _logged(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("error/train")]


def _expected(run: Path) -> list[tuple[int, float]]:
    metrics = pd.read_parquet(run / "metrics.parquet")
    pairs = zip(metrics["epoch"], metrics["train_error"], strict=True)
    return [(int(e), pytest.approx(100 * v, rel=1e-6)) for e, v in pairs]


def test_a_done_run_skipped_with_tensorboard_on_gets_the_events_of_its_epochs(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    grid = ["sweep", *ONE_PLAIN, "--epochs", "2", "--out", str(tmp_path)]
    code, _, err = run_cli(grid, capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert not list(run.glob("events.out.tfevents.*"))
    code, stdout, err = run_cli([*grid, "trainer.tensorboard=true"], capsys)
    assert code == 0 and "1 skipped" in stdout, err
    assert _logged(run) == _expected(run)
    grads = [t for t in _tags(run) if t.startswith("grad_norm/")]
    assert len(grads) == 8
    files = sorted(run.glob("events.out.tfevents.*"))
    code, _, err = run_cli([*grid, "trainer.tensorboard=true"], capsys)
    assert code == 0, err
    assert sorted(run.glob("events.out.tfevents.*")) == files  # nothing missing: nothing written


def _tags(run: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return events.Tags()["scalars"]


def test_an_epoch_saved_but_not_logged_when_the_run_stopped_is_logged_on_resume(
    tmp_path, capsys, monkeypatch
):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from degrade import tblog

    real = tblog.EpochLog.write

    def stop_at_epoch_2(self, row, layer_rows):
        if row["epoch"] == 2:  # its checkpoint and metrics are written; its events are not
            raise KeyboardInterrupt
        real(self, row, layer_rows)

    monkeypatch.setattr(tblog.EpochLog, "write", stop_at_epoch_2)
    args = [
        "train",
        "model.depth=8",
        "model.variant=plain",
        "trainer.epochs=3",
        *PINNED,
        "trainer.tensorboard=true",
        f"out={tmp_path}",
    ]
    code, _, _ = run_cli(args, capsys)
    assert code == 130  # stopped as by Ctrl-C
    (run,) = (tmp_path / "runs").iterdir()
    assert [s for s, _ in _logged(run)] == [1]
    assert len(pd.read_parquet(run / "metrics.parquet")) == 2
    monkeypatch.setattr(tblog.EpochLog, "write", real)
    assert store.RunDir(tmp_path, run.name).state() == "interrupted"
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert _logged(run) == _expected(run) and [s for s, _ in _logged(run)] == [1, 2, 3]
