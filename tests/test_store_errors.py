"""A store that cannot be written (no permission, a file in the way, a full disk): one line, exit 2."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from degrade.cli import main
from tests.conftest import files_under, run_cli, run_subprocess, unwritable

GRID = ["--depths", "8", "--variants", "plain", "--epochs", "1", "trainer.threads=1"]


def _one_line(r: subprocess.CompletedProcess, words: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr


def _disk_full() -> None:
    """In the child: every file write fails as on a full disk (EFBIG instead of ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _run_on_full_disk(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "degrade", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_disk_full,
    )


def _swept(cwd: Path) -> None:
    """The sweep the plot tests draw, trained in this process (the plot is what runs apart)."""
    assert main(["sweep", *GRID, "--name", "s", "--out", str(cwd / "outputs")]) == 0


def test_plot_into_a_store_it_cannot_write(tmp_path):
    _swept(tmp_path)
    folder = tmp_path / "outputs" / "sweeps" / "s"
    before = files_under(folder)
    with unwritable(folder):
        r = run_subprocess(["plot"], cwd=tmp_path)
    _one_line(r, "cannot write to outputs/sweeps/s")
    assert files_under(folder) == before


def test_a_file_where_the_sweeps_folder_goes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "sweeps").write_text("not a folder")
    code, out, err = run_cli(["sweep", *GRID], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "sweeps is not a folder" in err and "Traceback" not in out + err


def test_a_full_disk_at_the_start_of_a_sweep_and_of_a_plot(tmp_path):
    r = _run_on_full_disk(["sweep", *GRID], cwd=tmp_path)
    _one_line(r, "cannot write to output folder")
    assert [p for p in files_under(tmp_path / "outputs") if p.is_file()] == []

    _swept(tmp_path)
    folder = tmp_path / "outputs" / "sweeps" / "s"
    # Fonts cached and the figure drawn once, before the plot that cannot write.
    assert main(["plot", "--out", str(tmp_path / "outputs")]) == 0
    (folder / "curves.png").unlink()
    before = files_under(folder)
    r = _run_on_full_disk(["plot"], cwd=tmp_path)
    _one_line(r, "cannot write to outputs/sweeps/s")
    assert files_under(folder) == before  # no figure, no temporary file left
