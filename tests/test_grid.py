"""The map of a sweep over depth and a setting: the grid, summary per setting, titles, ls order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from degrade import flat, plot, sweepdata, verdict
from degrade.config import compose_run
from degrade.runids import identity_config
from tests.conftest import DEPTH_LR as NAME
from tests.conftest import run_cli


def test_grid_through_the_cli_defaults_to_the_swept_key_and_refuses_others(depth_lr_sweep, capsys):
    for args in ([], ["--y", "optim.lr"], ["--x", "optim.lr", "--y", "depth"]):
        code, stdout, err = run_cli(["plot", "--kind", "grid", "--out", str(depth_lr_sweep), *args], capsys)
        assert code == 0, err
        path = Path(stdout.strip())
        assert path == depth_lr_sweep / "sweeps" / NAME / "grid.png" and path.read_bytes()[:4] == b"\x89PNG"
    for args, message in (
        (["--y", "model.norm"], "--y 'model.norm' is not a setting sweep"),
        (["--y", "depth"], "--x and --y are both 'depth'"),
    ):
        code, _, err = run_cli(["plot", "--kind", "grid", "--out", str(depth_lr_sweep), *args], capsys)
        assert code == 2 and message in err and err.count("\n") == 1
    code, _, err = run_cli(
        ["plot", "--kind", "curves", "--y", "optim.lr", "--out", str(depth_lr_sweep)], capsys
    )
    assert code == 2 and "--x and --y belong to --kind grid" in err


def test_grid_cells_are_the_mean_over_seeds_on_one_colour_scale():
    rows = []
    for variant, depth, lr, errors in [
        ("plain", 8, 0.1, (0.10, 0.20)),
        ("plain", 56, 0.1, (0.60, 0.70)),
        ("residual", 8, 0.1, (0.05, 0.05)),
        ("residual", 56, 0.1, (0.0, 0.1)),
        ("plain", 8, 0.01, (0.3, 0.3)),
        ("residual", 56, 0.01, (0.2, 0.2)),
    ]:
        for seed, e in enumerate(errors):
            rows.append(
                {
                    "run_id": f"{variant}-{depth}-{lr}-{seed}",
                    "variant": variant,
                    "depth": depth,
                    "seed": seed,
                    "optim.lr": lr,
                    "epoch": 3,
                    "train_error": e,
                    "test_error": e,
                    "state": "done",
                }
            )
    rows[-1]["state"] = "diverged"  # residual-56 at lr 0.01: one seed diverged, the other counts
    fig = plot.grid(pd.DataFrame(rows), "depth", "optim.lr", keys=["optim.lr"])
    plain, residual = fig.axes[:2]

    def cells(ax):
        return {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}

    # Columns: depth 8, 56; rows: lr 0.01, 0.1 (lowest at the bottom).
    assert cells(plain) == {(0, 1): "15.0", (1, 1): "65.0", (0, 0): "30.0", (1, 0): "not run"}
    assert cells(residual) == {(0, 1): "5.0", (1, 1): "5.0", (0, 0): "not run", (1, 0): "20.0\n(1 div.)"}
    scales = [ax.images[0].norm for ax in (plain, residual)]
    assert scales[0].vmax == scales[1].vmax == pytest.approx(65.0) and scales[0].vmin == 0
    image = plain.images[0].get_array()
    assert np.ma.is_masked(image[0, 1])  # not run: no colour, so no false value
    assert "mean of 2 seeds" in fig.axes[-1].get_ylabel()


def test_summary_groups_by_the_swept_key_with_a_verdict_per_setting_in_percent(depth_lr_sweep, capsys):
    code, stdout, err = run_cli(["summary", "--out", str(depth_lr_sweep)], capsys)
    assert code == 0, err
    assert "optim.lr" in stdout and "digits, 1 epoch, 1 seed, cpu, fp32, 1 thread per run" in stdout
    verdicts = [ln for ln in stdout.splitlines() if ln.startswith("optim.lr=")]
    assert [v.split(":")[0] for v in verdicts] == ["optim.lr=0.05", "optim.lr=0.1"]
    assert all("%" in v for v in verdicts)
    data = sweepdata.load(depth_lr_sweep)
    table = verdict.summarize(data.metrics, data.keys)
    assert data.keys == ["optim.lr"] and len(table) == 8
    assert sorted(table.groupby("optim.lr")["seeds"].sum()) == [4, 4]


def test_the_settings_a_sweep_varied_leave_out_what_follows_from_depth():
    def flattened(*overrides):
        return flat.flatten(identity_config(compose_run(list(overrides))))

    # The paper's ResNet-110 warm-up follows from the depth: not a setting of the sweep.
    paper = [flattened("experiment=he2016_cifar10", f"model.depth={d}") for d in (56, 110)]
    assert paper[0]["optim.warmup_iters"] != paper[1]["optim.warmup_iters"]
    assert flat.varied_keys(paper) == []
    lrs = [
        flattened(f"model.depth={d}", f"optim.lr={lr}", f"seed={s}")
        for d in (8, 20)
        for lr in (0.01, 0.1)
        for s in (0, 1)
    ]
    assert flat.varied_keys(lrs) == ["optim.lr"]
    # Where and how a run computes (threads, device) is not a setting either.
    assert flat.varied_keys([flattened("trainer.threads=1"), flattened("trainer.threads=2")]) == []


def test_figure_titles_say_data_epochs_seeds_and_precision(depth_lr_sweep):
    data = sweepdata.load(depth_lr_sweep)
    for kind in ("curves", "depth", "grid", "gradients"):
        fig = plot.draw(kind, data)
        assert "digits, 1 epoch, 1 seed, cpu, fp32, 1 thread per run" in fig._suptitle.get_text()
    fig = plot.draw("curves", data)
    titles = {ax.get_title() for ax in fig.axes}
    assert {"plain networks\noptim.lr=0.05", "residual networks (ResNet)\noptim.lr=0.1"} <= titles
    grads = {ax.get_title().split("\n")[0] for ax in plot.draw("gradients", data).axes}
    assert grads == {plot.PANELS["plain"], plot.PANELS["residual"]}


def test_ls_sorts_by_family_variant_depth_and_seed(depth_lr_sweep, capsys):
    code, stdout, err = run_cli(["ls", "--out", str(depth_lr_sweep), "--sweep", NAME], capsys)
    assert code == 0, err
    ids = [ln.split("│")[1].strip() for ln in stdout.splitlines() if ln.startswith("│ cnn-")]
    order = [(i.split("-")[1], int(i.split("-")[2])) for i in ids]
    assert order == sorted(order) and order[0] == ("plain", 8) and ("plain", 14) in order
