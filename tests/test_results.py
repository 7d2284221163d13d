"""The Python API (degrade.open), degrade export and ls --sweeps, and the small mismatches between
terminal and notebook that issue reports found."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import degrade
from degrade import frames, store
from degrade.atomic import write_text_atomic
from degrade.results import StoreError
from tests.conftest import DEPTH_LR, DEPTH_LR_RATES, files_under, run_cli

RATES = sorted(float(r) for r in DEPTH_LR_RATES)


@pytest.fixture
def two_sweeps(depth_lr_sweep, tmp_path):
    """A copy of the depth x lr store with a second sweep holding its plain runs only."""
    out = tmp_path / "outputs"
    shutil.copytree(depth_lr_sweep, out)
    plain = [r for r in store.read_sweep(out, DEPTH_LR)["runs"] if "-plain-" in r]
    store.write_sweep(
        out,
        "plain-only",
        {"name": "plain-only", "runs": plain, "overrides": [], "command": "sweep --variants plain"},
    )
    write_text_atomic(out / "LATEST", DEPTH_LR + "\n")
    return out


def test_import_degrade_stays_light():
    code = (
        "import sys, degrade; heavy = ('pandas', 'torch', 'omegaconf', 'degrade.results'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_metrics_are_tidy_with_the_swept_keys_as_columns(depth_lr_sweep):
    sweep = degrade.open(depth_lr_sweep).sweep()
    assert sweep.name == DEPTH_LR and sweep.keys == ["optim.lr"]
    m = sweep.metrics()
    # 8 runs of one epoch: one row per run and epoch, nothing else.
    assert len(m) == 8 and not m.duplicated(["run_id", "epoch"]).any()
    assert list(m.columns[:9]) == [
        "run_id",
        "family",
        "variant",
        "depth",
        "seed",
        "dataset",
        "optim.lr",
        "state",
        "shortcut",
    ]
    assert sorted(m["optim.lr"].unique()) == RATES
    assert "scheduled_lr" in m and "lr" not in m
    assert m["train_error"].between(0, 1).all() and m["test_error"].between(0, 1).all()
    # Each run's configured lr is the one in its config.yaml.
    for rid, lr in zip(m["run_id"], m["optim.lr"], strict=True):
        assert float(frames.load_configs(depth_lr_sweep, [rid])[rid].optim.lr) == lr


def test_summary_is_the_table_the_cli_prints(depth_lr_sweep, capsys):
    sweep = degrade.open(depth_lr_sweep).sweep(DEPTH_LR)
    table = sweep.summary()
    assert list(table.columns) == [
        "optim.lr",
        "variant",
        "depth",
        "seeds",
        "train_error_mean",
        "train_error_std",
        "test_error_mean",
        "test_error_std",
        "epochs",
        "diverged",
        "paper_test_error",
    ]
    code, out, err = run_cli(["summary", "--out", str(depth_lr_sweep)], capsys)
    assert code == 0, err
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == len(table) == 8
    for printed, r in zip(rows, table.to_dict("records"), strict=True):
        lr, variant, depth, seeds, epochs, train, test, diverged = printed
        assert (float(lr), variant, int(depth), int(seeds), int(epochs), int(diverged)) == (
            r["optim.lr"],
            r["variant"],
            r["depth"],
            r["seeds"],
            r["epochs"],
            r["diverged"],
        )
        assert train == f"{100 * r['train_error_mean']:.2f}" and test == f"{100 * r['test_error_mean']:.2f}"
    printed = " ".join(out.split())  # the terminal wraps long lines
    for line in sweep.verdicts():
        assert " ".join(line.split()) in printed


def test_runs_layers_and_sweeps(two_sweeps):
    st = degrade.open(two_sweeps)
    sweeps = st.sweeps()
    assert sweeps["sweep"].tolist() == [DEPTH_LR, "plain-only"]
    assert sweeps["runs"].tolist() == [8, 4] and sweeps["done"].tolist() == [8, 4]
    assert sweeps["latest"].tolist() == [True, False]
    runs = st.sweep("plain-only").runs()
    assert len(runs) == 4 and set(runs["variant"]) == {"plain"} and set(runs["state"]) == {"done"}
    assert sorted(runs["optim.lr"].unique()) == RATES
    layers = st.sweep().layers()
    assert {"run_id", "optim.lr", "depth", "epoch", "layer", "grad_norm", "response_std"} <= set(layers)
    assert layers["run_id"].nunique() == 8 and (layers["grad_norm"] > 0).all()


def test_probes_join_each_runs_settings(two_sweeps):
    sweep = degrade.open(two_sweeps).sweep()
    ids = sweep.run_ids()[:3]
    from degrade.probes import common, tables

    for i, rid in enumerate(ids):
        rows = [
            {"run_id": rid, "kind": "landscape", "quantity": "slice", "alpha": a, "value": v}
            for a, v in zip([-1.0, 0.0, 1.0], [3.0 + i, 1.0, 2.0], strict=True)
        ]
        common.write(two_sweeps, rid, "landscape", rows, tables.record("landscape", {"images": 8, "grid": 3}))
    assert sweep.probe_kinds() == ["landscape"]
    probes = sweep.probes("landscape")
    assert len(probes) == 9 and probes["run_id"].unique().tolist() == ids
    assert set(probes["probe.images"]) == {8} and set(probes["probe.landscape.grid"]) == {3}
    probes = probes.rename(columns={"value": "loss"})
    runs = sweep.runs().set_index("run_id")
    for rid, part in probes.groupby("run_id"):
        assert set(part["optim.lr"]) == {runs.loc[rid, "optim.lr"]}
        assert set(part["depth"]) == {runs.loc[rid, "depth"]}
    assert probes.loc[probes["alpha"] == -1.0, "loss"].tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(StoreError, match="no probe 'lesion'.*probes there: landscape"):
        sweep.probes("lesion")
    with pytest.raises(StoreError, match="unknown probe kind"):
        sweep.probes("../landscape")


def test_old_stores_are_read_under_the_new_column_name(two_sweeps):
    rid = store.read_sweep(two_sweeps, DEPTH_LR)["runs"][0]
    path = store.RunDir(two_sweeps, rid).metrics
    old = pd.read_parquet(path).rename(columns={"scheduled_lr": "lr"})
    old.to_parquet(path)
    m = degrade.open(two_sweeps).sweep().metrics()
    assert "lr" not in m and m.loc[m["run_id"] == rid, "scheduled_lr"].tolist() == old["lr"].tolist()


def test_no_sweep_named_lists_the_sweeps_there_are(two_sweeps, capsys):
    with pytest.raises(StoreError, match=f"no sweep named 'nope'.*sweeps there: {DEPTH_LR}, plain-only"):
        degrade.open(two_sweeps).sweep("nope")
    for command in (["summary"], ["plot"], ["report"], ["export"], ["ls"]):
        code, out, err = run_cli([*command, "--sweep", "nope", "--out", str(two_sweeps)], capsys)
        assert (
            code == 2
            and err == f"error: no sweep named 'nope' in {two_sweeps}; sweeps there: {DEPTH_LR}, plain-only\n"
        ), command
    with pytest.raises(StoreError, match="no sweeps in"):
        degrade.open(two_sweeps / "runs")
    (two_sweeps / "LATEST").unlink()
    with pytest.raises(StoreError, match=f"no latest sweep.*sweeps there: {DEPTH_LR}, plain-only"):
        degrade.open(two_sweeps).sweep()


def test_ls_sweeps_lists_sweeps_with_counts(two_sweeps, capsys):
    code, out, err = run_cli(["ls", "--sweeps", "--out", str(two_sweeps)], capsys)
    assert code == 0, err
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    rows = [r for r in rows if r[0]]  # a long command folds onto lines of its own
    assert [r[:3] for r in rows] == [[f"{DEPTH_LR} (latest)", "8", "8"], ["plain-only", "4", "4"]]
    code, out, err = run_cli(["ls", "--sweeps", "--sweep", DEPTH_LR, "--out", str(two_sweeps)], capsys)
    assert code == 2 and "--sweeps lists every sweep" in err


def test_export_writes_the_tidy_table(two_sweeps, tmp_path, capsys):
    expected = degrade.open(two_sweeps).sweep().metrics()
    code, out, err = run_cli(["export", "--out", str(two_sweeps)], capsys)
    assert code == 0, err
    csv = store.sweep_dir(two_sweeps, DEPTH_LR) / "metrics.csv"
    assert out.strip() == str(csv)
    back = pd.read_csv(csv)
    assert list(back.columns) == list(expected.columns)
    assert back["optim.lr"].tolist() == expected["optim.lr"].tolist()
    assert back["train_error"].tolist() == pytest.approx(expected["train_error"].tolist())

    target = tmp_path / "m.parquet"
    code, out, err = run_cli(
        ["export", "--sweep", "plain-only", "--to", str(target), "--out", str(two_sweeps)], capsys
    )
    assert code == 0, err
    back = pd.read_parquet(target)
    pd.testing.assert_frame_equal(
        back, degrade.open(two_sweeps).sweep("plain-only").metrics(), check_dtype=False
    )

    code, out, err = run_cli(
        [
            "export",
            "--table",
            "summary",
            "--format",
            "csv",
            "--to",
            str(tmp_path / "s.txt"),
            "--out",
            str(two_sweeps),
        ],
        capsys,
    )
    assert code == 0 and len(pd.read_csv(tmp_path / "s.txt")) == 8

    before = files_under(tmp_path)
    for args, said in (
        (["--format", "xls"], "unknown format 'xls'"),
        (["--table", "nope"], "unknown table 'nope'"),
        (["--to", str(tmp_path / "no" / "m.csv")], "does not exist"),
    ):
        code, out, err = run_cli(["export", *args, "--out", str(two_sweeps)], capsys)
        assert code == 2 and said in err and err.count("\n") == 1
    assert files_under(tmp_path) == before


def test_export_never_replaces_what_it_should_not(two_sweeps, tmp_path, capsys):
    """Inside a store (its record, a checkpoint, LATEST), an existing file without --force, a link,
    a folder and a suffix that contradicts --format are refused, and nothing changes."""
    rid = store.read_sweep(two_sweeps, DEPTH_LR)["runs"][0]
    kept = tmp_path / "kept.csv"
    kept.write_text("mine\n")
    link = tmp_path / "link.csv"
    link.symlink_to(kept)
    inside = [
        two_sweeps / "sweeps" / DEPTH_LR / "sweep.json",
        two_sweeps / "runs" / rid / "checkpoint.pt",
        two_sweeps / "LATEST",
        two_sweeps / "runs" / rid / "new.csv",
    ]
    before, outside = files_under(two_sweeps), {p: p.read_bytes() for p in (kept,)}
    snapshot = {p: p.read_bytes() for p in inside if p.is_file()}
    cases = [
        *((["--to", str(p)], "is inside the run store") for p in inside),
        (["--to", str(kept)], "exists; give --force"),
        (["--to", str(link), "--force"], "is a symbolic link"),
        (["--to", str(tmp_path)], "it is a folder"),
        (["--format", "csv", "--to", str(tmp_path / "m.parquet")], "names a parquet file"),
        (["--format", "parquet", "--to", str(tmp_path / "m.csv")], "names a csv file"),
    ]
    for args, said in cases:
        code, out, err = run_cli(["export", *args, "--out", str(two_sweeps)], capsys)
        assert code == 2 and said in err and err.count("\n") == 1, (args, err)
    assert files_under(two_sweeps) == before
    assert {p: p.read_bytes() for p in inside if p.is_file()} == snapshot
    assert {p: p.read_bytes() for p in (kept,)} == outside and link.is_symlink()
    assert not (tmp_path / "m.parquet").exists() and not (tmp_path / "m.csv").exists()
    code, out, err = run_cli(["export", "--to", str(kept), "--force", "--out", str(two_sweeps)], capsys)
    assert code == 0 and kept.read_text().startswith("run_id,"), err


def test_export_names_a_run_it_leaves_out(two_sweeps, tmp_path, capsys):
    rid = store.read_sweep(two_sweeps, DEPTH_LR)["runs"][0]
    (two_sweeps / "runs" / rid / "metrics.parquet").write_bytes(b"damaged")
    code, out, err = run_cli(["export", "--to", str(tmp_path / "m.csv"), "--out", str(two_sweeps)], capsys)
    assert code == 0
    assert f"warning: left out run {rid}:" in err and "metrics.parquet is damaged" in err
    assert rid not in set(pd.read_csv(tmp_path / "m.csv")["run_id"])


def test_duplicate_and_foreign_rows_are_not_counted(two_sweeps, capsys):
    record_path = two_sweeps / "sweeps" / DEPTH_LR / "sweep.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "runs": record["runs"] + record["runs"][:1]}))
    rid = record["runs"][1]
    pd.DataFrame(
        {
            "run_id": ["someone-else"],
            "epoch": [1],
            "train_loss": [0.1],
            "train_error": [0.0],
            "test_loss": [0.1],
            "test_error": [0.0],
        }
    ).to_parquet(two_sweeps / "runs" / rid / "metrics.parquet")
    sweep = degrade.open(two_sweeps).sweep()
    assert sweep.run_ids() == record["runs"]
    metrics = sweep.metrics()
    assert "someone-else" not in set(metrics["run_id"]) and rid not in set(metrics["run_id"])
    assert metrics.groupby("run_id")["epoch"].count().max() == 1  # each run's one epoch, once
    code, out, err = run_cli(["summary", "--out", str(two_sweeps)], capsys)
    assert code == 0 and "more than once; counted once" in err and "holds rows of another run" in err


# --------------------------------------------------------------------------- small mismatches


def test_train_takes_epochs(tmp_path, capsys):
    code, out, err = run_cli(
        [
            "train",
            "model.depth=8",
            "model.variant=plain",
            "--epochs",
            "1",
            "trainer.threads=1",
            f"out={tmp_path}",
        ],
        capsys,
    )
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert pd.read_parquet(run / "metrics.parquet")["epoch"].tolist() == [1]
    code, out, err = run_cli(["train", "--epochs", "1", "trainer.epochs=2", f"out={tmp_path}"], capsys)
    assert code == 2 and "--epochs and trainer.epochs= both given" in err


def test_model_resnet_points_to_the_variant(capsys):
    code, out, err = run_cli(["show", "model=resnet"], capsys)
    assert code == 2 and "model.variant=residual" in err and "cnn, mlp" in err


def test_progress_names_the_swept_value_and_the_report_says_auto(tmp_path, capsys):
    out_dir = tmp_path / "store"
    code, out, err = run_cli(
        [
            "sweep",
            "--depths",
            "8",
            "--variants",
            "plain",
            "--epochs",
            "1",
            "--out",
            str(out_dir),
            "trainer.threads=1",
            "hydra/launcher=basic",
            "optim.lr=0.05,0.1",
        ],
        capsys,
    )
    assert code == 0, err
    # Two runs whose ids differ only in their hash: each line says which lr it trained with.
    said = [
        re.match(r"cnn-plain-8-s0-\w+ \(optim\.lr=([0-9.]+)\): done train_error=", ln)
        for ln in out.splitlines()
        if ": done" in ln
    ]
    assert all(said) and sorted(m.group(1) for m in said) == ["0.05", "0.1"]
    name = store.latest_sweep(out_dir)
    assert json.loads((store.sweep_dir(out_dir, name) / "sweep.json").read_text())["asked"] == {
        "trainer.precision": "auto"
    }
    code, out, err = run_cli(["report", "--out", str(out_dir)], capsys)
    assert code == 0, err
    page = (store.sweep_dir(out_dir, name) / "report.html").read_text()
    used = degrade.open(out_dir).sweep().metrics()["precision"].iloc[0]
    assert f"auto -&gt; {used}" in page
    # A page to share names no local path, and its figures are drawn at one width.
    assert str(tmp_path) not in page and "&lt;out&gt;" in page
    assert "figure svg { width: 100%" in page
    assert "converged" in page


def test_side_runs_leave_a_pinned_sweep_and_every_command_names_its_sweep(two_sweeps, tmp_path, capsys):
    """`degrade use NAME` pins the default sweep; a sweep started later (a side run) does not
    take it; every command that reads the default names the sweep in its first line."""
    code, out, err = run_cli(["use", "plain-only", "--out", str(two_sweeps)], capsys)
    assert code == 0 and "sweep plain-only is the default" in out, err
    code, out, err = run_cli(
        [
            "sweep",
            "--depths",
            "8",
            "--variants",
            "residual",
            "--epochs",
            "1",
            "--name",
            "side",
            "trainer.threads=1",
            "hydra/launcher=basic",
            "--out",
            str(two_sweeps),
        ],
        capsys,
    )
    assert code == 0 and "the default sweep stays plain-only" in err, err
    assert degrade.open(two_sweeps).latest() == "plain-only"
    for args in (["summary"], ["plot"], ["export", "--to", str(tmp_path / "m.csv")], ["report"]):
        code, out, err = run_cli([*args, "--out", str(two_sweeps)], capsys)
        assert code == 0, (args, err)
        assert err.splitlines()[0] == "sweep plain-only (pinned by `degrade use`; --sweep NAME reads another)"
    assert set(pd.read_csv(tmp_path / "m.csv")["variant"]) == {"plain"}
    code, out, err = run_cli(["use", "--unpin", "--out", str(two_sweeps)], capsys)
    assert code == 0 and "sweep side is the default (the next sweep started takes over)" in out
    code, out, err = run_cli(["summary", "--out", str(two_sweeps)], capsys)
    assert err.splitlines()[0].startswith("sweep side (the latest started")
    for args, said in ((["use", "nope"], "no sweep named 'nope'"), (["use"], "give a sweep name to pin")):
        code, out, err = run_cli([*args, "--out", str(two_sweeps)], capsys)
        assert code == 2 and said in err


def test_a_sweep_trains_its_costliest_runs_first(depth_lr_sweep):
    """The sweeper orders the jobs by their compute, longest first: with the basic launcher (one
    run after another) every depth-14 run ended before the first depth-8 run."""
    metrics = degrade.open(depth_lr_sweep).sweep().metrics()
    ended = metrics.groupby("run_id").agg(depth=("depth", "first"), ended=("ended", "max"))
    assert ended.loc[ended["depth"] == 14, "ended"].max() < ended.loc[ended["depth"] == 8, "ended"].min()
