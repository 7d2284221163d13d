"""Shared helpers: tiny settings, and the CLI run both in-process and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from degrade.cli import main

ROOT = Path(__file__).resolve().parent.parent
# Small enough that a run takes about a second on a laptop CPU.
TINY = ["trainer.epochs=1", "trainer.threads=1"]


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call the CLI in this process; return (exit code, stdout, stderr)."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m degrade ARGS`` as a user would, from ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "degrade", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def files_under(path: Path) -> set[Path]:
    """Every file and folder below ``path`` (empty when it does not exist)."""
    return set(path.rglob("*")) if path.exists() else set()
