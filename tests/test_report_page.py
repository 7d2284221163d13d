"""The HTML report of a sweep: one file that opens offline, with everything that was run."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import torch

from tests.conftest import DEPTH_LR as NAME
from tests.conftest import run_cli, run_subprocess


class Page(HTMLParser):
    """What the test needs of a page: tags, attributes, table cells, style text, visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        self._stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._stack:
            while self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        here = self._stack[-1] if self._stack else ""
        if here == "style":
            self.styles.append(data)
        elif here in ("td", "th"):
            self.tables[-1][-1][-1] += data
        self.text.append(data)


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def _header(table: list[list[str]]) -> list[str]:
    return table[0]


def test_report_through_the_cli_is_one_offline_file_with_verdict_table_figures_and_runs(
    depth_lr_sweep, tmp_path
):
    r = run_subprocess(["report", "--out", str(depth_lr_sweep), "--sweep", NAME], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = depth_lr_sweep / "sweeps" / NAME / "report.html"
    assert r.stdout.strip() == str(path)
    page = _parse(path)
    text = " ".join(page.text)

    # Nothing is fetched: no script, frame, stylesheet link or image file; every reference is
    # to an id inside the page or inline data (the grid's cells); the style sheet imports
    # nothing; no URL anywhere, not even an XML namespace.
    assert not {"script", "link", "iframe", "img", "object", "embed", "base"} & set(page.tags)
    refs = [v for _, k, v in page.attrs if k in ("href", "src", "xlink:href", "srcset", "action")]
    assert refs and all(v.startswith(("#", "data:image/png;base64,")) for v in refs)
    assert not [v for _, _, v in page.attrs if "url(" in v and "url(#" not in v]
    assert not any("@import" in s or "url(" in s for s in page.styles)
    assert "://" not in path.read_text()

    # The figures, inline: curves, depth, the grid over optim.lr, gradients, responses.
    assert page.tags.count("svg") == 5
    figure_ids = [v for t, k, v in page.attrs if t == "figure" and k == "id"]
    assert [i.rstrip("0123456789") for i in figure_ids] == [
        "figure-curves",
        "figure-depth",
        "figure-grid",
        "figure-gradients",
        "figure-responses",
    ]
    # Every id is unique: several figures on one page do not share clip paths or glyphs.
    ids = [v for _, k, v in page.attrs if k == "id"]
    assert len(ids) == len(set(ids))

    # The verdict, one per learning rate, and the summary table: 2 lrs x 2 variants x 2 depths.
    assert "optim.lr=0.05: " in text and "optim.lr=0.1: " in text
    summary = next(t for t in page.tables if "train error (%)" in _header(t) and "seeds" in _header(t))
    assert _header(summary)[:3] == ["optim.lr", "variant", "depth"]
    assert len(summary) - 1 == 8
    assert {row[0] for row in summary[1:]} == {"0.05", "0.1"}

    # Every run of the sweep is listed with its state; the environment and the command are there.
    runs = next(t for t in page.tables if _header(t)[:2] == ["run", "state"])
    record = json.loads((depth_lr_sweep / "sweeps" / NAME / "sweep.json").read_text())
    assert sorted(row[0] for row in runs[1:]) == sorted(record["runs"])
    assert {row[1] for row in runs[1:]} == {"done"}
    # As typed, but with the store's folder (a local path) said as <out>.
    assert f"degrade {record['command'].replace(str(depth_lr_sweep), '<out>')}" in text
    assert str(depth_lr_sweep) not in text
    assert "model.depth=8,14" in text and "optim.lr=0.05,0.1" in text  # the overrides as swept
    assert "fp32 -> fp32" in text  # precision asked for and used, from the runs' records


def test_a_damaged_run_is_listed_as_such_never_left_out(depth_lr_sweep, tmp_path, capsys):
    out = tmp_path / "outputs"
    shutil.copytree(depth_lr_sweep, out)
    (out / "sweeps" / NAME / "report.html").unlink(missing_ok=True)
    record = json.loads((out / "sweeps" / NAME / "sweep.json").read_text())
    damaged = record["runs"][0]
    (out / "runs" / damaged / "metrics.parquet").write_bytes(b"PAR1 not a table")
    code, stdout, err = run_cli(["report", "--out", str(out), "--sweep", NAME], capsys)
    assert code == 0, err
    page = _parse(Path(stdout.strip()))
    runs = next(t for t in page.tables if _header(t)[:2] == ["run", "state"])
    row = next(r for r in runs[1:] if r[0] == damaged)
    header = _header(runs)
    assert row[header.index("metrics")] == "unreadable" and row[header.index("in figures")] == "no"
    assert f"Not in the table or figures: {damaged}" in " ".join(page.text)


def test_report_of_no_sweep_is_one_line_and_writes_nothing(tmp_path, capsys):
    code, _, err = run_cli(["report", "--out", str(tmp_path), "--sweep", "nope"], capsys)
    assert code == 2 and err.startswith("error: no sweep named 'nope'") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_runs_record_the_software_and_device_they_trained_with(depth_lr_sweep):
    record = json.loads((depth_lr_sweep / "sweeps" / NAME / "sweep.json").read_text())
    status = json.loads((depth_lr_sweep / "runs" / record["runs"][0] / "status.json").read_text())
    env = status["sessions"][-1]["environment"]
    assert env["torch"] == torch.__version__ and env["precision"] == "fp32" and env["device"] == "cpu"
    assert env["threads"] == 1 and env["device_name"]
