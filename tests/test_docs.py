"""Every example in README.md and docs/*.md runs, and the documentation site builds without a warning.

The convention the pages follow: fenced ```bash and ```python blocks are executed, in the order
they appear, in a fresh folder per page whose ``outputs/`` already holds the finished default
sweep (``degrade sweep --depths 8,20,56``) as the latest sweep, with ``degrade`` on PATH. The
python blocks of a page share one namespace, as in a notebook. ```text blocks (and any other
language) are shown, not run: that is where commands too long, GPU-only or needing CIFAR files
go, and the ``make`` targets that set up a virtual environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("bash", "python")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)(?P<info>[^`]*)$")


@dataclass
class Block:
    """A fenced code block of a page."""

    language: str
    code: str
    line: int  # where its fence opens, 1-based


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order (an unclosed fence is an error)."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group("fence"), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(m.group("indent")) :])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: code fence never closed")
        info = m.group("info").strip()
        found.append(Block(info.split()[0] if info else "", "\n".join(body) + "\n", start + 1))
        i += 1
    return found


def test_the_collector_reads_fences_and_their_languages():
    text = "x\n```bash\ndegrade ls\n```\n\n```python\nprint(1)\n\nprint(2)\n```\n```text\nmake demo\n```\n"
    got = blocks(text)
    assert [(b.language, b.line) for b in got] == [("bash", 2), ("python", 6), ("text", 11)]
    assert got[1].code == "print(1)\n\nprint(2)\n"
    with pytest.raises(ValueError, match="never closed"):
        blocks("```bash\nls\n")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_code_block_says_its_language(page: Path):
    # A bare fence is neither run nor clearly meant to be shown: say bash, python or text.
    bare = [b.line for b in blocks(page.read_text()) if not b.language]
    assert not bare, f"{page.name}: fences without a language at lines {bare}"


@pytest.fixture(scope="session")
def default_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the finished default sweep, trained once per test session."""
    where = tmp_path_factory.mktemp("default-sweep")
    done = subprocess.run(
        [*_degrade(), "sweep", "--depths", "8,20,56"],
        cwd=where,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    return where / "outputs"


def _degrade() -> list[str]:
    return [sys.executable, "-m", "degrade"]


def _env() -> dict[str, str]:
    # The venv's bin first, so `degrade` in a bash block is the one under test.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_the_examples_of_a_page_run(
    page: Path, default_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    runnable = [b for b in blocks(page.read_text()) if b.language in RUN]
    if not runnable:
        pytest.skip(f"{page.name} has no bash or python examples")
    shutil.copytree(default_sweep, tmp_path / "outputs")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for b in runnable:
        where = f"{page.relative_to(ROOT)}:{b.line}"
        if b.language == "bash":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", b.code],
                cwd=tmp_path,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{where} exited {done.returncode}:\n{b.code}\n{done.stderr[-3000:]}"
        else:
            try:
                exec(compile(b.code, where, "exec"), namespace)  # noqa: S102 - the docs' own examples
            except Exception as e:  # noqa: BLE001 - name the block that failed
                raise AssertionError(f"{where} raised {type(e).__name__}: {e}\n{b.code}") from e


def test_the_site_builds_without_a_warning(tmp_path: Path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")
    # The theme's notice about MkDocs 2 is advice, not a problem of these pages.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert (tmp_path / "site" / "index.html").is_file()


NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
NO_DEV = "the dev extra is not installed (pip install -e '.[dev]')"


def test_the_notebook_is_saved_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason=NO_DEV)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_notebook_runs_against_the_default_sweep(
    default_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    nbformat = pytest.importorskip("nbformat", reason=NO_DEV)
    nbclient = pytest.importorskip("nbclient", reason=NO_DEV)
    shutil.copytree(default_sweep, tmp_path / "outputs")
    # What the notebook says it needs besides the sweep: its lesion probe.
    done = subprocess.run(
        [*_degrade(), "probe", "--kind", "lesion"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter (its venv's degrade), started in the folder that holds outputs/.
    monkeypatch.setenv("PATH", _env()["PATH"])
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    said = "\n".join(
        o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    # The pivot, the verdict, the probes beside the errors and the user's own question all answered.
    assert "Degradation reproduced" in said or "No degradation" in said or "Not converged" in said
    assert "test error, one block removed" in said and "optim.lr" in said
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
