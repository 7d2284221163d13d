"""The CLI end to end: a real sweep in a subprocess, and every user error."""

import pandas as pd
import pytest

from tests.conftest import files_under, run_cli, run_subprocess

SCHEMA = [
    "run_id",
    "family",
    "variant",
    "depth",
    "shortcut",
    "seed",
    "dataset",
    "device",
    "precision",
    "epoch",
    "iteration",
    "scheduled_lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "epoch_seconds",
    "images_per_second",
    "step_path",
    "setup_seconds",
    "ended",
]


def test_sweep_plot_summary_end_to_end(tmp_path):
    r = run_subprocess(
        ["sweep", "--depths", "8,14", "--epochs", "2", "--name", "e2e", "trainer.threads=1"], cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "sweep e2e: 4 runs (4 done)" in r.stdout
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 4
    frames = [pd.read_parquet(p / "metrics.parquet") for p in runs]
    for f in frames:
        assert list(f.columns) == SCHEMA
        assert f["epoch"].tolist() == [1, 2]
        assert (runs[0] / "config.yaml").is_file()
    assert {(f.variant[0], f.depth[0]) for f in frames} == {
        ("plain", 8),
        ("plain", 14),
        ("residual", 8),
        ("residual", 14),
    }

    r = run_subprocess(["plot", "--format", "png,svg"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "outputs" / "sweeps" / "e2e" / "curves.png"
    rel = png.relative_to(tmp_path)
    assert r.stdout.split() == [str(rel), str(rel.with_suffix(".svg"))]
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000

    r = run_subprocess(["summary"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "plain" in r.stdout and "residual" in r.stdout
    # Two epochs train no net: the verdict makes no call and says how to train longer.
    said = " ".join(r.stdout.split())
    assert "Not converged: train longer (--epochs 8, or trainer.epochs=8)" in said
    assert not any(w in said for w in ("Degradation reproduced", "No degradation", "Both degrade"))

    # The report of the default sweep: no setting varied, so no grid, and the grid says why.
    r = run_subprocess(["report"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "outputs" / "sweeps" / "e2e" / "report.html").read_text()
    assert r.stdout.strip() == "outputs/sweeps/e2e/report.html"
    assert page.count("<svg") == 4 and 'id="figure-grid' not in page and "://" not in page
    r = run_subprocess(["plot", "--kind", "grid"], cwd=tmp_path)
    assert r.returncode == 2 and "varied nothing but depth" in r.stderr

    # A rerun finds every run done and trains nothing.
    r = run_subprocess(
        ["sweep", "--depths", "8,14", "--epochs", "2", "--name", "e2e", "trainer.threads=1"], cwd=tmp_path
    )
    assert r.returncode == 0 and "4 runs (4 skipped)" in r.stdout


def test_train_and_show_work_from_any_folder(tmp_path, capsys):
    code, out, err = run_cli(["show", "model=mlp", "optim.lr=0.05"], capsys)
    assert code == 0 and "family: mlp" in out and "lr: 0.05" in out
    code, out, err = run_cli(
        [
            "train",
            "model.depth=8",
            "model.variant=plain",
            "trainer.epochs=1",
            "trainer.threads=1",
            f"out={tmp_path}",
        ],
        capsys,
    )
    assert code == 0, err
    assert "cnn-plain-8-s0-" in out and ": done" in out
    (run,) = (tmp_path / "runs").iterdir()
    assert len(pd.read_parquet(run / "metrics.parquet")) == 1


def test_the_program_exits_with_the_commands_code_leaving_its_objects_to_the_process(monkeypatch):
    import gc

    from degrade import cli

    monkeypatch.setattr(cli, "main", lambda: 2)
    before = gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run()
        # Frozen: the collector does not walk them all once more on the way out.
        assert exit_.value.code == 2 and gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


def test_python_dash_m_and_help(tmp_path):
    r = run_subprocess(["--help"], cwd=tmp_path)
    assert r.returncode == 0
    listed = r.stdout.split("Commands:")[1].strip().splitlines()
    summaries = dict(line.strip().split(None, 1) for line in listed)
    assert set(summaries) == {
        "sweep",
        "train",
        "show",
        "plot",
        "summary",
        "report",
        "bench",
        "export",
        "ls",
        "probe",
        "use",
    }
    from degrade.cli import app

    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        first = command.callback.__doc__.strip().splitlines()[0]
        # The docstring's whole first sentence: not cut at an abbreviation's dot or with "...".
        assert summaries[name] == first, (name, summaries[name])


BAD = [
    (["sweep", "--depths", "8,21"], "6n+2"),
    (["sweep", "--depths", "2"], "6n+2"),
    (["sweep", "--depths", "8,x"], "--depths takes comma-separated whole numbers"),
    (["sweep", "--variants", "plain,deep"], "unknown variant 'deep'"),
    (["sweep", "--variants", ""], "--variants is empty"),
    (["sweep", "data=imagenet"], "unknown data option 'imagenet'"),
    (["sweep", "model=transformer"], "unknown model option 'transformer'"),
    (["sweep", "optim.lr=[0.1"], "bad override"),
    (
        ["sweep", "--depths", "8", "20"],
        "bad override '20': a list is one word with commas, e.g. --depths 8,20",
    ),
    (["sweep", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["sweep", "hydra/launcher=warp"], "unknown hydra/launcher option 'warp'"),
    (["sweep", "--device", "cuda"], "no CUDA GPU"),
    (["sweep", "--bogus"], "No such option"),
    (["train", "model.depth=9"], "6n+2"),
    (["show", "model.variant=highway"], "unknown variant"),
    (["plot"], "no sweeps"),
    (["summary"], "no sweeps"),
    (["report"], "no sweeps"),
    (["plot", "--kind", "grid", "--y", "optim.lr"], "no sweeps"),
    (["plot", "--sweep", "nope"], "no sweep named 'nope'"),
    (["plot", "--format", "gif"], "unknown format 'gif'"),
    # A sweep's name stays inside <out>/sweeps/, however it is given.
    (["sweep", "--depths", "8", "--name", "../../escape"], "must be a plain folder name"),
    (["sweep", "--depths", "8", "--name", "/tmp/degrade-escape"], "must be a plain folder name"),
    (["sweep", "--depths", "8", "name=../escape"], "must be a plain folder name"),
    (["plot", "--sweep", "../x"], "must be a plain folder name"),
    # Values of the right type that cannot train are refused like --epochs 0.
    (["sweep", "--depths", "8", "optim.lr=nan"], "optim.lr must be a finite number above 0, got nan"),
    (["sweep", "--depths", "8", "optim.lr=inf"], "optim.lr must be a finite number above 0, got inf"),
    (["sweep", "--depths", "8", "optim.lr=-0.1"], "optim.lr must be a finite number above 0"),
    (["sweep", "--depths", "8", "optim.momentum=1"], "optim.momentum must be in [0, 1), got 1"),
    (["sweep", "--depths", "8", "optim.momentum=-0.5"], "optim.momentum must be in [0, 1)"),
    (["sweep", "--depths", "8", "optim.weight_decay=-1e-4"], "optim.weight_decay must be a finite number"),
    (["sweep", "--epochs", "0"], "trainer.epochs must be 1 or more, got 0"),
    (["sweep", "--seeds", "0,-1"], "seed must be 0 or more, got -1"),
    (["train", "seed=-3"], "seed must be 0 or more, got -3"),
    # Unknown keys, however they are spelled.
    (["sweep", "+foo=1"], "unknown config key 'foo'"),
    (["sweep", "++foo=1"], "unknown config key 'foo'"),
    (["sweep", "+trainer.speed=2"], "unknown config key 'trainer.speed'"),
    (["sweep", "~optim.lr"], "config keys cannot be removed"),
    # A network that cannot fit in memory is refused before it is built.
    (["sweep", "--depths", "999998"], "cnn-plain-999998 needs about"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_user_errors_end_in_one_line_and_exit_2_leaving_nothing(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in err + out
    assert files_under(tmp_path) == before


def test_user_error_through_a_real_process_has_no_traceback(tmp_path):
    r = run_subprocess(["sweep", "--depths", "10"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "6n+2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["sweep", "--depths", "8", "--out", str(blocker / "o")], capsys)
    assert code == 2 and "cannot write to output folder" in err


def test_user_errors_are_found_without_importing_torch_or_what_other_commands_need(tmp_path):
    import json
    import subprocess
    import sys

    # The modules a user error must not wait for: torch (a second), the figures (matplotlib and
    # pandas, 0.4 s) and, outside a sweep, the sweep's planner (Hydra).
    probe = (
        "import json, sys; from degrade.cli import main; rc = main(sys.argv[1:]); "
        "print(json.dumps([m for m in ('torch', 'degrade.plot', 'degrade.sweep') if m in sys.modules])); "
        "sys.exit(rc)"
    )
    for args, imported in (
        (["sweep", "--depths", "7"], ["degrade.sweep"]),
        (["sweep", "optim.lr=nan"], ["degrade.sweep"]),
        (["train", "+foo=1"], ["degrade.sweep"]),
        (["sweep", "--depths", "999998"], ["degrade.sweep"]),
        (["summary", "--out", str(tmp_path / "none")], []),
    ):
        r = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2 and r.stderr.startswith("error: "), (args, r.stderr)
        assert json.loads(r.stdout.splitlines()[-1]) == imported, (args, r.stdout)


def test_a_sweep_in_this_process_leaves_the_process_logging_handlers_open(tmp_path, capsys):
    # A handler that owns its stream closes it when closed (absl's does, with sys.stderr): a
    # sweep called from a notebook must not close the handlers the process already has.
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.close = stream.close
    logger = logging.getLogger("someone-elses")
    logger.addHandler(handler)
    try:
        code, _, err = run_cli(
            ["sweep", "--depths", "8", "--variants", "plain", "--epochs", "1", "--out", str(tmp_path / "o")],
            capsys,
        )
        assert code == 0, err
        assert not stream.closed and handler in logger.handlers
    finally:
        logger.removeHandler(handler)
