"""`degrade probe` through the real CLI: files, skipping, resuming, figures, report, summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from degrade import hold
from degrade.cli import main
from tests.conftest import run_cli

KINDS = ("landscape", "lesion", "gradcorr", "identity")
# Few points and images: a probe of a depth-8/14 run takes well under a second.
SMALL = ["probe.images=32", "probe.landscape.points=5", "probe.landscape.grid=3", "probe.lesion.draws=1",
         "probe.gradcorr.points=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep of depths 8 and 14, one epoch each, not yet probed."""
    out = tmp_path_factory.mktemp("probe") / "outputs"
    code = main(["sweep", "--depths", "8,14", "--epochs", "1", "--name", "tiny", "--out", str(out),
                 "trainer.threads=1", "trainer.precision=fp32", "hydra/launcher=basic"])
    assert code == 0
    return out


@pytest.fixture
def store(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    shutil.copytree(trained, out)
    return out


def _files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted((out / "runs").glob("*/probes/*.parquet"))}


def _probe(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    # A key given twice is refused: an extra setting replaces the small one of the same key.
    keys = {e.split("=", 1)[0] for e in extra}
    small = [s for s in SMALL if s.split("=", 1)[0] not in keys]
    return run_cli(["probe", "--out", str(out), *small, *extra], capsys)


def test_probe_writes_every_kind_and_a_rerun_skips(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _probe(store, capsys)
    assert code == 0, err
    runs = sorted(p.name for p in (store / "runs").iterdir())
    files = _files(store)
    assert len(runs) == 4 and len(files) == 4 * len(KINDS)
    assert "16 probe files measured, 0 unchanged" in out
    assert "evaluations" in err
    for path in files:
        table = pq.read_table(path)
        record = json.loads(table.schema.metadata[b"degrade.probe"])
        assert record["kind"] == path.stem
        assert set(table.column("run_id").to_pylist()) == {path.parent.parent.name}
        if path.stem == "landscape":
            assert record["settings"]["points"] == 5 and record["settings"]["images"] == 32
            grid = table.to_pandas().query("section == 'grid'")
            assert len(grid) == 9 and grid["value"].notna().all()

    code, out, _ = _probe(store, capsys)
    assert code == 0 and "0 probe files measured, 16 unchanged (skipped)" in out
    assert _files(store) == files

    # A changed setting measures that kind again, and only it.
    code, out, _ = _probe(store, capsys, "probe.landscape.points=7")
    assert code == 0 and "4 probe files measured, 12 unchanged" in out
    now = _files(store)
    for path, mtime in files.items():
        assert (now[path] != mtime) == (path.stem == "landscape"), path


def test_one_kind_and_one_line_errors(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _probe(store, capsys, "--kind", "lesion")
    assert code == 0 and "4 probe files measured" in out
    assert {p.stem for p in _files(store)} == {"lesion"}
    for args, says in ((["--kind", "sharpness"], "unknown probe kind 'sharpness'"),
                       (["model.depth=20"], "probe.* overrides only"),
                       (["probe.landscape.grid=4"], "probe.landscape.grid must be an odd whole number"),
                       (["probe.nonsense=1"], "unknown config key")):
        code, _, err = _probe(store, capsys, *args)
        assert code == 2, args
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {p.stem for p in _files(store)} == {"lesion"}


def test_killed_probe_resumes(store: Path, tmp_path: Path) -> None:
    """Stopped after its first file (a pause point the test holds; another worker process may
    have written one more meanwhile), killed, run again: the files written stay as they were and
    the rest are measured."""
    gate = tmp_path / "gate"
    gate.touch()
    env = {**os.environ, "OMP_NUM_THREADS": "1", hold.ENV: f"1:{gate}"}
    proc = subprocess.Popen([sys.executable, "-m", "degrade", "probe", "--out", str(store), *SMALL], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = gate.with_name(gate.name + ".held")
    try:
        while not held.exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        first = _files(store)
        assert 1 <= len(first) < 16
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    for path in first:  # each file there is whole, with its record
        assert json.loads(pq.read_schema(path).metadata[b"degrade.probe"])["kind"] == path.stem
    env.pop(hold.ENV)
    done = subprocess.run([sys.executable, "-m", "degrade", "probe", "--out", str(store), *SMALL], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{16 - len(first)} probe files measured, {len(first)} unchanged" in done.stdout
    after = _files(store)
    assert len(after) == 16
    assert {p: after[p] for p in first} == first


def test_plot_report_and_summary_show_probes(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["plot", "--out", str(store), "--kind", "lesion"], capsys)
    assert code == 2 and "no lesion probes" in err
    assert _probe(store, capsys)[0] == 0
    for kind in KINDS:
        code, out, err = run_cli(["plot", "--out", str(store), "--kind", kind], capsys)
        assert code == 0, err
        png = Path(out.strip())
        assert png.name == f"{kind}.png" and png.stat().st_size > 10_000
    code, out, err = run_cli(["report", "--out", str(store)], capsys)
    assert code == 0, err
    page = Path(out.strip()).read_text()
    for kind in KINDS:
        assert f'id="figure-{kind}' in page
    code, out, err = run_cli(["summary", "--out", str(store), "--probes"], capsys)
    assert code == 0, err
    for kind in KINDS:
        assert f"probe {kind}, by depth" in out
    assert "nonconvex_fraction" in out and "single_test_error_mean" in out and "half_lag" in out


def test_probe_summary_table(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from degrade.probes import tables

    assert tables.summary(store).empty
    assert _probe(store, capsys, "--kind", "gradcorr,identity")[0] == 0
    table = tables.summary(store)
    assert set(table["kind"]) == {"gradcorr", "identity"}
    assert set(table["depth"]) == {8, 14} and set(table["variant"]) == {"plain", "residual"}
    ratio = table[(table["quantity"] == "ratio")]
    assert len(ratio) == 2 * 2 * 2 and (ratio["runs"] == 1).all() and ratio["mean"].gt(0).all()


def test_damaged_checkpoint_is_one_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = sorted((store / "runs").iterdir())[0]
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, err = _probe(store, capsys, "--kind", "identity")
    assert code == 2 and "cannot read the weights" in err and "Traceback" not in err
    assert not (run / "probes" / "identity.parquet").exists()
