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
SMALL = [
    "probe.images=32",
    "probe.landscape.points=5",
    "probe.landscape.grid=3",
    "probe.lesion.draws=1",
    "probe.gradcorr.points=16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep of depths 8 and 14, one epoch each, not yet probed."""
    out = tmp_path_factory.mktemp("probe") / "outputs"
    code = main(
        [
            "sweep",
            "--depths",
            "8,14",
            "--epochs",
            "1",
            "--name",
            "tiny",
            "--out",
            str(out),
            "trainer.threads=1",
            "trainer.precision=fp32",
            "hydra/launcher=basic",
        ]
    )
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
    for args, says in (
        (["--kind", "sharpness"], "unknown probe kind 'sharpness'"),
        (["model.depth=20"], "probe.* overrides only"),
        (["probe.landscape.grid=4"], "probe.landscape.grid must be an odd whole number"),
        (["probe.nonsense=1"], "unknown config key"),
    ):
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "degrade", "probe", "--out", str(store), *SMALL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    done = subprocess.run(
        [sys.executable, "-m", "degrade", "probe", "--out", str(store), *SMALL],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    import degrade
    from degrade.store import StoreError

    with pytest.raises(StoreError, match="no probes in sweep"):
        degrade.open(store).sweep().probe_summary()
    assert _probe(store, capsys, "--kind", "gradcorr,identity")[0] == 0
    table = degrade.open(store).sweep().probe_summary()
    assert set(table["kind"]) == {"gradcorr", "identity"}
    assert set(table["depth"]) == {8, 14} and set(table["variant"]) == {"plain", "residual"}
    ratio = table[(table["quantity"] == "ratio")]
    assert len(ratio) == 2 * 2 * 2 and (ratio["seeds"] == 1).all() and ratio["mean"].gt(0).all()


def test_probe_settings_are_checked_before_anything_runs(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, says in (
        (["probe.landscape=5"], "probe.landscape is a group of settings"),
        (["probe.lesion=5"], "probe.lesion is a group of settings"),
        ([f"probe.landscape.seed={2**64}"], "at most 4,294,967,295"),
        (["probe.images=100000000"], "the most is probe.images=1437"),
        (["probe.landscape.grid=100001"], "the largest that fits is 141"),
        (["probe.gradcorr.points=1000000"], "the largest that fits is 10,000"),
        (["probe.lesion.draws=100000000"], "the largest that fits is"),
        (["--out", ""], "--out is empty"),
    ):
        code, _, err = _probe(store, capsys, *args)
        assert code == 2, (args, err)
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert _files(store) == {}


def test_a_diverged_run_is_named_not_probed(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = sorted((store / "runs").iterdir())[0]
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "diverged"}))
    code, out, err = _probe(store, capsys, "--kind", "identity")
    assert code == 0, err
    assert f"warning: run {run.name} not probed: it diverged" in err
    assert "3 probe files measured" in out and not (run / "probes").exists()


def test_a_damaged_checkpoint_names_the_run_and_the_others_are_probed(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = sorted((store / "runs").iterdir())[0]
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, out, err = _probe(store, capsys, "--kind", "identity")
    assert code == 0 and "Traceback" not in err, err
    assert f"warning: run {run.name} not probed: cannot read the weights in" in err
    assert "3 probe files measured" in out and "1 not measured" in out
    assert not (run / "probes" / "identity.parquet").exists()


def test_the_last_run_is_measured_as_the_first_bit_for_bit(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun that has one run left measures it in a one-thread worker, as the full call did,
    never in the calling process (whose thread count may differ)."""
    from degrade.probes import common, planning, runner

    assert _probe(store, capsys, "--kind", "gradcorr,identity")[0] == 0
    before = {p: pq.read_table(p).to_pandas() for p in _files(store)}
    lone = sorted(before)[0]
    lone.unlink()
    plan = planning.plan_asked(store, None, ["gradcorr", "identity"], SMALL)
    assert len(plan.todo) == 1 and runner.workers(plan) == 1

    def here(*_: object) -> None:
        raise AssertionError("the probe measured in the calling process")

    monkeypatch.setattr(common, "subject", here)
    code, out, _ = run_cli(["probe", "--out", str(store), "--kind", "gradcorr,identity", *SMALL], capsys)
    assert code == 0 and "1 probe files measured" in out
    again = pq.read_table(lone).to_pandas()
    assert again["value"].tolist() == before[lone]["value"].tolist()


def test_two_probe_calls_never_measure_the_same_file(store: Path, tmp_path: Path) -> None:
    """The first call holds a run's lock (paused after its first file); the second waits for that
    run and finds its files measured; together they write every file exactly once."""
    gate = tmp_path / "gate"
    gate.touch()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "degrade",
        "probe",
        "--out",
        str(store),
        "--kind",
        "lesion,identity",
        *SMALL,
    ]
    one_core = {min(os.sched_getaffinity(0))}  # one worker: it holds exactly one run
    first = subprocess.Popen(
        args,
        env={**env, hold.ENV: f"1:{gate}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, one_core),
    )
    held = gate.with_name(gate.name + ".held")
    try:
        while not held.exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The second call measures the runs nobody holds; it must wait for the held one.
        deadline = time.monotonic() + 300
        while len(_files(store)) < 7 and time.monotonic() < deadline:
            assert second.poll() is None, second.communicate()
            time.sleep(0.1)
        assert second.poll() is None  # still waiting on the held run's lock
        gate.unlink()
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    finally:
        for proc in (first, second) if "second" in locals() else (first,):
            if proc.poll() is None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    measured = [line.split(":")[0] for line in (out1 + out2).splitlines() if ": measured ->" in line]
    assert len(measured) == 8 and len(set(measured)) == 8, (out1, out2)
    assert len(_files(store)) == 8


def test_probes_are_tidy_data(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    import degrade

    assert _probe(store, capsys, "--kind", "lesion,identity")[0] == 0
    sweep = degrade.open(store).sweep()
    metrics = sweep.metrics()
    curves = sweep.probes("lesion")
    lead = ["run_id", "family", "variant", "depth", "seed", "dataset", "optim.lr"]
    assert list(curves.columns[: len(lead)]) == lead == list(metrics.columns[: len(lead)])
    assert not curves["quantity"].isin(["base_test_error", "single_test_error_mean"]).any()
    assert str(curves["removed"].dtype) == "Int64" and str(curves["downsampling"].dtype) == "boolean"
    assert str(sweep.probes("identity")["block"].dtype) == "Int64"
    assert set(curves["probe.lesion.draws"]) == {1} and set(curves["probe.images"]) == {32}

    numbers = sweep.probe_summary()
    assert set(numbers["kind"]) == {"lesion", "identity"}
    ratio = numbers[(numbers["quantity"] == "ratio") & (numbers["weights"] == "final")]
    assert len(ratio) == 4 and (ratio["seeds"] == 1).all() and ratio["mean"].gt(0).all()
    assert {"probe.images", "probe.lesion.draws"} <= set(numbers.columns)
    # A kind's own whole-number setting stays whole beside the other kind's rows, which have none.
    both = sweep.table("probes")
    for table in (numbers, both):
        assert (
            str(table["probe.lesion.draws"].dtype) == "Int64" and str(table["probe.images"].dtype) == "int64"
        )
    assert both["probe.lesion.draws"].isna().sum() == (both["kind"] == "identity").sum() > 0

    code, out, err = run_cli(
        [
            "export",
            "--table",
            "probes",
            "--kind",
            "lesion",
            "--to",
            str(tmp_path / "l.csv"),
            "--out",
            str(store),
        ],
        capsys,
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "l.csv")) == len(curves)
    code, out, err = run_cli(["export", "--table", "probe_summary", "--out", str(store)], capsys)
    assert code == 0 and out.strip().endswith("probe_summary.csv"), err

    code, out, err = run_cli(["summary", "--probes", "--out", str(store)], capsys)
    assert code == 0 and "base_test_error (%)" in out and "ratio" in out, err
    base = numbers[(numbers["quantity"] == "base_test_error")]["mean"].iloc[0]
    assert f"{100 * base:.4g}" in out  # in percent, as the errors table above it
