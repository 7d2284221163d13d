"""The paper's Table 6 beside our numbers, for the runs that train what the paper trained."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from degrade import plot, store, sweepdata, verdict
from degrade.atomic import write_parquet_atomic
from degrade.config import compose_run
from degrade.runids import run_id
from tests.conftest import run_cli


def _store(out: Path, runs: list[tuple[str, int, float]], extra: list[str]) -> None:
    """A finished sweep written by hand: one epoch per run with the given test error."""
    ids = []
    for variant, depth, test_error in runs:
        cfg = compose_run(
            ["experiment=he2016_cifar10", f"model.depth={depth}", f"model.variant={variant}", *extra]
        )
        rid = run_id(cfg)
        run = store.RunDir(out, rid)
        run.write_config(cfg)
        write_parquet_atomic(
            run.metrics,
            pd.DataFrame(
                [
                    {
                        "run_id": rid,
                        "family": "cnn",
                        "variant": variant,
                        "depth": depth,
                        "shortcut": str(cfg.model.shortcut),
                        "seed": 0,
                        "dataset": cfg.data.name,
                        "device": "cpu",
                        "precision": "fp32",
                        "epoch": 1,
                        "iteration": 1,
                        "lr": 0.1,
                        "train_loss": 1.0,
                        "train_error": 0.2,
                        "test_loss": 1.0,
                        "test_error": test_error,
                    }
                ]
            ),
        )
        run.set_status("done", epochs_done=1, epochs=1, train_error=0.2, test_error=test_error)
        ids.append(rid)
    store.write_sweep(out, "paper", {"name": "paper", "runs": ids, "overrides": [], "command": "sweep"})


def test_the_published_numbers_live_in_one_file_with_their_source():
    pub = verdict.published()
    assert pub["test_error"] == {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
    assert "arXiv:1512.03385" in pub["source"] and "Table 6" in pub["source"]
    assert "CIFAR-10 test error" in pub["metric"]


def test_summary_shows_the_paper_beside_ours_for_the_papers_setting_only(tmp_path, capsys):
    _store(tmp_path, [("residual", 20, 0.10), ("residual", 56, 0.08), ("plain", 20, 0.11)], [])
    code, out, err = run_cli(["summary", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = {
        (ln.split("│")[1].strip(), ln.split("│")[2].strip()): [c.strip() for c in ln.split("│")[1:-1]]
        for ln in out.splitlines()
        if ln.startswith("│ ")
    }
    assert "paper test error" in out and "Table 6" in out and "CIFAR-10 test error" in out
    assert rows[("residual", "20")][6:8] == ["8.75", "1.25"]  # ours 10.00, paper 8.75
    assert rows[("residual", "56")][6:8] == ["6.97", "1.03"]
    assert rows[("plain", "20")][6:8] == ["-", "-"]  # the paper's table has no plain nets


def test_other_settings_get_no_paper_numbers(tmp_path):
    _store(tmp_path, [("residual", 20, 0.10)], ["model.shortcut=B"])
    data = sweepdata.load(tmp_path)
    assert verdict.summarize(data.metrics)["paper_test_error"].isna().all()
    digits = data.metrics.assign(dataset="digits", shortcut="A")
    assert verdict.published_errors(digits) == {}


def test_the_depth_figure_and_the_report_mark_the_papers_numbers(tmp_path, capsys):
    _store(tmp_path, [("residual", 20, 0.10), ("residual", 56, 0.08), ("plain", 56, 0.2)], [])
    fig = plot.draw("depth", sweepdata.load(tmp_path))
    # In the ResNet panel, the variant the paper's Table 6 numbers are of.
    (marks,) = [ln for ln in fig.axes[-1].lines if ln.get_label().startswith("He et al. 2015, Table 6")]
    assert fig.axes[-1].get_title() == plot.PANELS["residual"]
    assert list(marks.get_xdata()) == [20, 56] and list(marks.get_ydata()) == [8.75, 6.97]
    code, out, err = run_cli(["report", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    page = Path(out.strip()).read_text()
    assert "paper test error (%)" in page and "arXiv:1512.03385" in page and "<em>test</em>" in page
