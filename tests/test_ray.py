"""A sweep through Hydra's Ray launcher, on a local Ray that listens on loopback only."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
        reason="the ray extra is not installed: pip install -e '.[ray]'",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs root and unshare to keep Ray inside a loopback-only network",
    ),
]


def test_a_sweep_runs_through_the_ray_launcher(tmp_path):
    # A network namespace with only loopback: whatever Ray binds, nothing outside can reach it.
    inner = (
        f"ip link set lo up && {sys.executable} -m degrade sweep --depths 8 --epochs 1 "
        f"--out {tmp_path / 'o'} trainer.threads=1 hydra/launcher=ray "
        "+hydra.launcher.ray.init.include_dashboard=false"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    states = [json.loads(p.read_text())["state"] for p in (tmp_path / "o").glob("runs/*/status.json")]
    assert states == ["done", "done"]
