"""What the store trusts, and what was asked is what runs (or nothing runs).

Files planted in a store or a data folder are data: a pickle that would run code is refused
unexecuted (each payload here would write a marker file; the tests check it does not exist),
links and run ids that lead out of the store are refused, and nothing outside it changes.
A flag and an override that set the same thing, a missing preset and an empty --out are
refused before anything is written.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from degrade.cli import main
from degrade.sources import CIFAR
from tests.cifar_archive import write_archive
from tests.conftest import files_under, run_cli

# Two epochs (a checkpoint and the one before it), two threads: the thread test resumes it.
GRID = [
    "--depths",
    "8",
    "--variants",
    "plain",
    "--epochs",
    "2",
    "--name",
    "s",
    "trainer.threads=2",
    "trainer.precision=fp32",
    "hydra/launcher=basic",
]
TRAIN = ["model.depth=8", "model.variant=plain", "trainer.epochs=1", "trainer.threads=1"]
CHEAP = [
    "--depths",
    "8",
    "--variants",
    "plain",
    "--epochs",
    "1",
    "trainer.threads=1",
    "trainer.precision=fp32",
    "hydra/launcher=basic",
]


class _Plant:
    """Unpickled by ``pickle.load``, this writes ``marker``: what a planted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _payload(marker: Path) -> bytes:
    data = pickle.dumps(_Plant(marker))
    pickle.loads(data)  # the payload is real: an unrestricted load runs it
    assert marker.exists()
    marker.unlink()
    return data


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for a folder or a link)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in files_under(folder)
    }


def _refused(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding sweep ``s``: plain-8, 2 epochs, 2 threads, fp32."""
    out = tmp_path_factory.mktemp("trusted") / "outputs"
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    return out


def _copy(trained: Path, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "outputs"
    shutil.copytree(trained, out, symlinks=True)
    rid = json.loads((out / "sweeps" / "s" / "sweep.json").read_text())["runs"][0]
    return out, rid


def _interrupt(run: Path, after_epoch: int) -> None:
    """Make the run look killed after ``after_epoch`` (its status still says running)."""
    status = json.loads((run / "status.json").read_text())
    status.update(state="running", epochs_done=after_epoch)
    (run / "status.json").write_text(json.dumps(status))


# --------------------------------------------------------------------------- planted files


def test_a_planted_checkpoint_is_reported_damaged_and_never_run(trained, tmp_path, capsys):
    out, rid = _copy(trained, tmp_path)
    run = out / "runs" / rid
    marker = tmp_path / "marker"
    _interrupt(run, 2)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes(_payload(marker))
    code, stdout, err = run_cli(["sweep", *GRID, "--out", str(out)], capsys)
    assert code == 0, err
    assert not marker.exists()
    assert "damaged checkpoint" in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["sessions"][-1]["from_epoch"] == 0  # trained afresh


def test_a_crafted_cifar_batch_is_not_a_cifar_batch_and_never_runs(tmp_path, capsys):
    write_archive(tmp_path)
    root = tmp_path / "staging"  # holds the extracted cifar-10-batches-py/ folder
    batch = root / CIFAR["cifar10"]["folder"] / "data_batch_1"
    marker = tmp_path / "marker"
    batch.write_bytes(_payload(marker))
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(
        ["sweep", *CHEAP, "--out", str(out), "data=cifar10", f"data.root={root}", "data.download=false"],
        capsys,
    )
    _refused(code, stdout, err, "not a CIFAR batch", str(batch))
    assert not marker.exists()
    assert not out.exists()


def test_a_run_folder_that_is_a_link_out_of_the_store_is_refused(trained, tmp_path, capsys):
    rid = json.loads((trained / "sweeps" / "s" / "sweep.json").read_text())["runs"][0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("precious: true\n")
    out = tmp_path / "outputs"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / rid).symlink_to(elsewhere, target_is_directory=True)
    before, store_before = _snapshot(elsewhere), _snapshot(out)
    code, stdout, err = run_cli(["sweep", *GRID, "--out", str(out)], capsys)
    _refused(code, stdout, err, "is a symbolic link", rid)
    assert _snapshot(elsewhere) == before
    assert _snapshot(out) == store_before  # no sweep record, no LATEST
    # ls goes on without the run's files, and says why it could not read them.
    code, stdout, err = run_cli(["ls", "--out", str(out)], capsys)
    assert code == 0 and "damaged" in stdout and "symbolic" in stdout, (stdout, err)
    assert _snapshot(elsewhere) == before


def test_a_lock_file_that_is_a_link_is_refused(trained, tmp_path, capsys):
    out, rid = _copy(trained, tmp_path)
    run = out / "runs" / rid
    _interrupt(run, 1)
    target = tmp_path / "elsewhere-lock"
    (run / "lock").unlink()
    (run / "lock").symlink_to(target)
    code, stdout, err = run_cli(["sweep", *GRID, "--out", str(out)], capsys)
    _refused(code, stdout, err, "is a symbolic link", "lock")
    assert not target.exists()


def test_a_sweep_folder_that_is_a_link_out_of_the_store_is_refused(trained, tmp_path, capsys):
    out, _ = _copy(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / "sweeps" / "s").rename(elsewhere)
    (out / "sweeps" / "s").symlink_to(elsewhere, target_is_directory=True)
    latest = (out / "LATEST").read_text()
    before = _snapshot(elsewhere)
    for args in (["plot", "--sweep", "s"], ["report", "--sweep", "s"], ["sweep", *GRID]):
        code, stdout, err = run_cli([*args, "--out", str(out)], capsys)
        _refused(code, stdout, err, "sweep folder", "is a symbolic link")
        assert _snapshot(elsewhere) == before, args
    assert (out / "LATEST").read_text() == latest


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_run_ids_in_a_sweep_record_that_lead_out_of_the_store_are_refused(trained, tmp_path, capsys, where):
    out, rid = _copy(trained, tmp_path)
    # A run planted outside the store, where the id would lead.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out / "runs" / rid, elsewhere)
    planted = "../../elsewhere" if where == "relative" else str(elsewhere)
    record = out / "sweeps" / "s" / "sweep.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "runs": [planted]}))
    before = _snapshot(elsewhere)
    for args in (["ls", "--sweep", "s"], ["summary"], ["plot"], ["report"]):
        code, stdout, err = run_cli([*args, "--out", str(out)], capsys)
        _refused(code, stdout, err, "is not a run id", planted)
    assert _snapshot(elsewhere) == before
    folder = out / "sweeps" / "s"
    assert not list(folder.glob("*.png")) and not (folder / "report.html").exists()


# --------------------------------------------------------------------------- what was asked runs


@pytest.mark.parametrize("preset", ["nope", "he2016_cifar"])
def test_a_missing_preset_is_refused_with_the_presets_there_are(tmp_path, capsys, preset):
    out = tmp_path / "outputs"
    for args in (["sweep", *CHEAP, "--out", str(out)], ["train", f"out={out}", *TRAIN], ["show"]):
        code, stdout, err = run_cli([*args, f"experiment={preset}"], capsys)
        _refused(
            code,
            stdout,
            err,
            f"unknown experiment option {preset!r}",
            "choose one of cures, he2016_cifar10, he2016_fig1, seed_mlp",
        )
    assert not out.exists()
    code, stdout, _ = run_cli(["show"], capsys)  # no preset at all is still the default run
    assert code == 0 and OmegaConf.create(stdout).data.name == "digits"


@pytest.mark.parametrize(
    ("flag", "override", "words"),
    [
        (["--depths", "8"], "model.depth=20", "model.depth"),
        (["--depths", "8"], "sweep.depths=[20]", "sweep.depths"),
        (["--variants", "plain"], "model.variant=residual", "model.variant"),
        (["--seeds", "0"], "seed=1", "seed"),
        (["--epochs", "1"], "trainer.epochs=2", "trainer.epochs"),
        (["--epochs", "1"], "trainer.iterations=3", "length"),
        (["--device", "cpu"], "trainer.device=cpu", "trainer.device"),
        (["--name", "a"], "name=b", "name"),
        (["--out", "a"], "out=b", "out"),
    ],
)
def test_a_flag_and_an_override_that_set_the_same_thing_are_refused(
    tmp_path, capsys, monkeypatch, flag, override, words
):
    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--epochs", "1", "trainer.threads=1", "hydra/launcher=basic"]
    if flag[0] == "--epochs":
        args = ["sweep", "trainer.threads=1", "hydra/launcher=basic"]
    code, stdout, err = run_cli([*args, *flag, override], capsys)
    _refused(code, stdout, err, flag[0], override, words)
    assert files_under(tmp_path) == set()


def test_epochs_a_preset_would_not_use_and_an_override_given_twice_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["sweep", "--epochs", "3", "experiment=he2016_cifar10"], capsys)
    _refused(code, stdout, err, "--epochs 3 would not be used", "trainer.iterations=64000")
    code, stdout, err = run_cli(["sweep", *CHEAP, "seed=1", "seed=2"], capsys)
    _refused(code, stdout, err, "seed=1 and seed=2")
    assert files_under(tmp_path) == set()


def test_an_empty_out_is_refused_everywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["sweep", *CHEAP], ["ls"], ["summary"], ["plot"], ["report"]):
        code, stdout, err = run_cli([*args, "--out", ""], capsys)
        _refused(code, stdout, err, "--out is empty")
    code, stdout, err = run_cli(["train", "out=", *TRAIN], capsys)
    _refused(code, stdout, err, "out (the run store)")
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("name", ["a b(c)", "übung"])
def test_a_sweep_name_hydra_cannot_parse_bare_is_passed_quoted(tmp_path, capsys, name):
    out = tmp_path / "my store (1)"
    code, stdout, err = run_cli(["sweep", *CHEAP, "--name", name, "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "LATEST").read_text().strip() == name
    assert json.loads((out / "sweeps" / name / "sweep.json").read_text())["name"] == name
    code, stdout, err = run_cli(["summary", "--out", str(out)], capsys)
    assert code == 0 and f"sweep {name}" in stdout, err


def test_a_sweep_name_no_override_can_say_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(["sweep", *CHEAP, "--name", "x${y}", "--out", str(out)], capsys)
    _refused(code, stdout, err, "cannot be passed to Hydra")
    assert not out.exists()


@pytest.mark.parametrize("launcher", ["local_parallel", "joblib"])
def test_workers_import_the_installed_package_whatever_the_current_folder(tmp_path, launcher):
    # A folder named like the package in the current folder (a clone in ~, a user working in ~).
    (tmp_path / "degrade").mkdir()
    (tmp_path / "degrade" / "__init__.py").write_text("")
    # The installed command, as its script starts it: the current folder is not on its path.
    start = (
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        "from degrade.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            start,
            "sweep",
            "--depths",
            "8",
            "--epochs",
            "1",
            "trainer.threads=1",
            f"hydra/launcher={launcher}",
            "hydra.launcher.n_jobs=2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "2 runs (2 done)" in r.stdout, r.stdout + r.stderr
    assert "__version__" not in r.stderr


def test_a_resumed_run_keeps_the_thread_count_it_began_with(trained, tmp_path, capsys):
    out, rid = _copy(trained, tmp_path)
    run = out / "runs" / rid
    whole = json.loads((run / "status.json").read_text())
    # Killed after epoch 1: the last checkpoint is the one of epoch 1.
    (run / "checkpoint.prev.pt").replace(run / "checkpoint.pt")
    _interrupt(run, 1)
    grid = [a for a in GRID if a != "trainer.threads=2"] + ["trainer.threads=1"]
    code, stdout, err = run_cli(["sweep", *grid, "--out", str(out)], capsys)
    assert code == 0, err
    assert "resumed on 2 CPU threads, the count it began with, not 1" in err
    status = json.loads((run / "status.json").read_text())
    assert status["sessions"][-1]["from_epoch"] == 1
    assert status["sessions"][-1]["environment"]["threads"] == 2
    assert OmegaConf.load(run / "config.yaml").trainer.threads == 2
    # Exactly the numbers of the uninterrupted run.
    assert (status["train_error"], status["test_error"]) == (whole["train_error"], whole["test_error"])
    import pandas as pd

    resumed = pd.read_parquet(run / "metrics.parquet")
    uninterrupted = pd.read_parquet(trained / "runs" / rid / "metrics.parquet")
    cols = ["train_loss", "train_error", "test_loss", "test_error"]
    assert resumed[cols].equals(uninterrupted[cols])
    # Another parallelism still finds the finished run: the thread count is not in the id.
    code, stdout, err = run_cli(["sweep", *grid, "--out", str(out)], capsys)
    assert code == 0 and "1 runs (1 skipped)" in stdout, stdout + err
