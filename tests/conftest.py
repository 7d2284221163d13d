"""Shared helpers: tiny settings, and the CLI run both in-process and as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from degrade.cli import main

ROOT = Path(__file__).resolve().parent.parent
# Small enough that a run takes about a second on a laptop CPU.
TINY = ["trainer.epochs=1", "trainer.threads=1"]
# The depth x learning-rate sweep the sharing tests read: 8 runs of one epoch.
DEPTH_LR = "depth-lr"
DEPTH_LR_RATES = ("0.05", "0.1")


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _runs_in_this_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep a test calls in its own process trains its runs one after another there, unless
    the test is marked ``pool``: a pool worker costs seconds of imports, and the process
    boundary is tested where it is the subject (a launcher named, a sweep in a subprocess, the
    tests of the default choice, which are marked)."""
    if request.node.get_closest_marker("pool") is None:
        from degrade import sweep

        monkeypatch.setattr(sweep, "_parallel_on_cpu_by_default", lambda configs, hydra_overrides: False)


@pytest.fixture(scope="session")
def depth_lr_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of a finished sweep over depths 8, 14 and optim.lr 0.05, 0.1, trained in this process.

    Shared by every test that reads such a sweep; tests that change a store copy it first.
    """
    out = tmp_path_factory.mktemp("depth-lr") / "outputs"
    code = main(
        [
            "sweep",
            "--depths",
            "8,14",
            "--epochs",
            "1",
            "--name",
            DEPTH_LR,
            "--out",
            str(out),
            "trainer.threads=1",
            "trainer.precision=fp32",
            "hydra/launcher=basic",
            f"optim.lr={','.join(DEPTH_LR_RATES)}",
        ]
    )
    assert code == 0
    return out


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call the CLI in this process; return (exit code, stdout, stderr)."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m degrade ARGS`` as a user would, from ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "degrade", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files_under(path: Path) -> set[Path]:
    """Every file and folder below ``path`` (empty when it does not exist)."""
    return set(path.rglob("*")) if path.exists() else set()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an orphan's may wait for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[0]: state; [3]: session
            pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` (a folder) made unwritable, even for root (immutable) where chattr exists."""
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)]).returncode:
            pytest.skip("running as root without chattr: cannot make a folder unwritable")
        undo = ["chattr", "-i", str(path)]
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        undo = None
    try:
        try:
            (path / ".probe").touch()
        except OSError:
            pass
        else:
            (path / ".probe").unlink()
            pytest.skip("this file system lets the folder be written anyway")
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            path.chmod(mode)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker gets a core of its own (worker ``gwK`` the K-th core,
    round the cores if there are more workers), and so do the processes it starts.

    degrade sizes a run's threads and a sweep's pool by the cores it may use. Without this,
    every worker's runs and sweeps would plan for all the cores while the other workers use
    them too: spinning OpenMP threads on shared cores made some tests four times slower.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and worker[2:].isdigit() and len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})
