"""The store's trust boundary, proven by a table: every kind of file and folder in a store, each
corruption that applies to it, under every command that reads the store and every method of the
Python API.

Expected of each case: the CLI ends with exit 0 (going on, naming what it left out) or exit 2 and
one ``error:`` line, never a traceback; the API returns or raises ``StoreError``, nothing else;
nothing outside the store changes; read-only commands leave the store as it was. The test fails
when the store holds a kind of file the table does not name.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import degrade
from degrade.cli import main
from degrade.store import StoreError
from tests.conftest import files_under

SWEEP = "s"
# The fixture's sweep: two runs (plain-8, residual-8) of two epochs.
TRAIN = [
    "sweep",
    "--depths",
    "8",
    "--epochs",
    "2",
    "--name",
    SWEEP,
    "trainer.threads=1",
    "trainer.precision=fp32",
    "hydra/launcher=basic",
]
# The probe settings the fixture measured with: a probe call with them has nothing left to do.
PROBE = [
    "probe.images=32",
    "probe.landscape.points=3",
    "probe.landscape.grid=3",
    "probe.gradcorr.points=4",
    "probe.lesion.draws=1",
]

# Every kind of file and folder a store holds: (pattern of its path in the store, what it is).
# ``RID`` stands for a run's id, ``KIND`` for a probe kind.
KINDS: dict[str, tuple[str, str]] = {
    "runs folder": ("runs", "folder"),
    "run folder": ("runs/RID", "folder"),
    "status": ("runs/RID/status.json", "json"),
    "config": ("runs/RID/config.yaml", "yaml"),
    "metrics": ("runs/RID/metrics.parquet", "parquet"),
    "layers": ("runs/RID/layers.parquet", "parquet"),
    "checkpoint": ("runs/RID/checkpoint.pt", "checkpoint"),
    "previous checkpoint": ("runs/RID/checkpoint.prev.pt", "checkpoint"),
    "lock": ("runs/RID/lock", "lock"),
    "probes folder": ("runs/RID/probes", "folder"),
    "probe": ("runs/RID/probes/identity.parquet", "parquet"),
    "sweeps folder": ("sweeps", "folder"),
    "sweep folder": ("sweeps/s", "folder"),
    "sweep record": ("sweeps/s/sweep.json", "json"),
    "hydra record": ("sweeps/s/multirun.yaml", "output"),
    "figure": ("sweeps/s/curves.png", "output"),
    "report": ("sweeps/s/report.html", "output"),
    "export": ("sweeps/s/metrics.csv", "output"),
    "latest": ("LATEST", "text"),
}
# The other probe files share the probe's reader; the sweep folder's other figures the figure's.
ALSO = {
    "runs/RID/probes/KIND.parquet": "probe",
    "sweeps/s/*.png": "figure",
    "sweeps/s/*.csv": "export",
    "sweeps/s/*.parquet": "export",
}


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 4)


def _truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: max(1, len(data) // 2)])


def _not_utf8(p: Path) -> None:
    p.write_bytes(b"\xff\xfe s \x80")


def _folder_for_file(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _file_for_folder(p: Path) -> None:
    shutil.rmtree(p)
    p.write_text("not a folder\n")


def _json(value: object) -> Callable[[Path], None]:
    return lambda p: p.write_text(json.dumps(value))


def _merged_json(extra: dict) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        p.write_text(json.dumps({**json.loads(p.read_text()), **extra}))

    return apply


def _foreign_parquet(p: Path) -> None:
    pq.write_table(pa.table({"run_id": ["x"], "alpha": [1.0]}), p)


def _retyped_column(column: str) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        table = pq.read_table(p)
        i = table.column_names.index(column)
        strings = pa.array([str(v) + "?" for v in table[column].to_pylist()])
        pq.write_table(table.set_column(i, column, strings).replace_schema_metadata(table.schema.metadata), p)

    return apply


def _checkpoint_of(value: object) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        import torch

        torch.save(value, p)

    return apply


def _packed_past_the_end(p: Path) -> None:
    import torch

    from degrade.packed import Packer

    saved = Packer().pack({"epoch": 2, "model": {"w": torch.ones(4)}})
    saved["places"][0][1] = 2**40  # a tensor placed far beyond its flat tensor's end
    torch.save(saved, p)


def _duplicate_ids(p: Path) -> None:
    record = json.loads(p.read_text())
    p.write_text(json.dumps({**record, "runs": record["runs"] + record["runs"][:1]}))


def _not_utf8_sibling(p: Path) -> None:
    # A second entry beside it whose name is not UTF-8, holding a copy of it.
    twin = Path(os.fsdecode(os.fsencode(p.parent) + b"/\xff\xfe-" + os.fsencode(p.name)))
    shutil.copytree(p, twin, symlinks=True)


# What each corruption does, by the kinds of entry it applies to.
FILE_CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "garbage": _garbage,
    "truncated": _truncated,
    "folder for file": _folder_for_file,
}
TYPED_CORRUPTIONS: dict[str, dict[str, Callable[[Path], None]]] = {
    "json": {"json list": _json([]), "not utf-8": _not_utf8},
    "yaml": {
        "yaml list": lambda p: p.write_text("- 1\n"),
        "wrong keys": lambda p: p.write_text("a: 1\n"),
        "not utf-8": _not_utf8,
    },
    "parquet": {"foreign schema": _foreign_parquet},
    "checkpoint": {
        "empty model": _checkpoint_of({"model": {}, "epoch": 2}),
        "a list": _checkpoint_of([1, 2]),
        "packed past the end": _packed_past_the_end,
    },
    "text": {"not utf-8": _not_utf8, "not a sweep name": lambda p: p.write_text("../elsewhere\n")},
    "lock": {},
    "output": {},
}
SPECIFIC: dict[str, dict[str, Callable[[Path], None]]] = {
    "status": {
        "state list": _json([]),
        "epochs_done text": _merged_json({"epochs_done": "x"}),
        "unknown state": _merged_json({"state": "finished"}),
    },
    "sweep record": {
        "runs not a list": _merged_json({"runs": 5}),
        "overrides 5": _merged_json({"overrides": 5}),
        "command 5": _merged_json({"command": 5}),
        "asked text": _merged_json({"asked": "x"}),
        "duplicate id": _duplicate_ids,
        "run id out": _merged_json({"runs": ["../../elsewhere"]}),
    },
    "probe": {"value as text": _retyped_column("value")},
    "metrics": {"train_error as text": _retyped_column("train_error")},
    "sweep folder": {"name not utf-8": _not_utf8_sibling},
    "run folder": {"name not utf-8": _not_utf8_sibling},
}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for kind, (_, what) in KINDS.items():
        names = ["link out"]
        if what == "folder":
            names.append("file for folder")
        elif what != "lock":
            names += list(FILE_CORRUPTIONS) if what != "output" else ["folder for file"]
        names += list(TYPED_CORRUPTIONS.get(what, {})) + list(SPECIFIC.get(kind, {}))
        cases += [(kind, n) for n in dict.fromkeys(names)]
    return cases


CASES = _cases()


def _corrupt(path: Path, name: str, elsewhere: Path) -> None:
    if name == "link out":
        target = elsewhere / ("target-" + path.name)
        if path.is_dir():
            shutil.copytree(path, target, symlinks=True)
            shutil.rmtree(path)
        else:
            shutil.copy2(path, target)
            path.unlink()
        path.symlink_to(target, target_is_directory=target.is_dir())
        return
    if name == "file for folder":
        _file_for_folder(path)
        return
    kind_table = {**FILE_CORRUPTIONS, **{k: v for t in TYPED_CORRUPTIONS.values() for k, v in t.items()}}
    for specific in SPECIFIC.values():
        if name in specific:
            kind_table[name] = specific[name]
    kind_table[name](path)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished store holding every kind of file: two runs of two epochs (so a checkpoint
    and the one before it), every probe, the curves figure, the report and an export."""
    out = tmp_path_factory.mktemp("hostile") / "outputs"
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert main(["probe", "--out", str(out), *PROBE]) == 0
    for args in (["plot"], ["report"], ["export"]):
        assert main([*args, "--out", str(out)]) == 0
    return out


def _entries(root: Path) -> list[str]:
    """Every file and folder in the store, as table patterns (RID, KIND)."""
    rids = [p.name for p in (root / "runs").iterdir()]
    patterns = set()
    for p in files_under(root):
        rel = str(p.relative_to(root))
        for rid in rids:
            rel = rel.replace(rid, "RID")
        patterns.add(rel)
    return sorted(patterns)


def test_every_kind_of_file_in_a_store_is_in_the_table(pristine: Path) -> None:
    named = [pattern for pattern, _ in KINDS.values()]
    for entry in _entries(pristine):
        also = any(fnmatch.fnmatch(entry, p.replace("KIND", "*")) for p in ALSO)
        assert entry in named or also, (
            f"the store holds {entry!r}, which the hostile-store table does not name: add it to KINDS"
        )
    figures = sum(_figure_case(k, c) for k, c in CASES)
    print(
        f"\nhostile-store matrix: {len(CASES)} cases x {len(COMMANDS) - 3} commands and {len(API)} API "
        f"calls, and the 3 figure commands under {figures} of them"
    )


COMMANDS: list[tuple[list[str], bool]] = [  # (arguments, whether it only reads)
    (["ls"], True),
    (["ls", "--sweeps"], True),
    (["ls", "--sweep", SWEEP], True),
    (["summary"], True),
    (["summary", "--probes"], True),
    (["export"], False),
    (["plot"], False),
    (["plot", "--kind", "identity"], False),
    (["report"], False),
    (["probe", *PROBE], False),
]
# The figure commands read through the same readers as summary (sweepdata.load) and ls, which run
# under every case; drawing costs seconds a call, so they run under the cases that reach their
# own paths: a link (where they write) and the first damage of each kind of entry.
FIGURES = ("plot", "report")


def _figure_case(kind: str, corruption: str) -> bool:
    first = next((c for k, c in CASES if k == kind and c != "link out"), None)
    return corruption in ("link out", first)


API: dict[str, Callable[[Path], object]] = {
    "open": lambda p: degrade.open(p),
    "names": lambda p: degrade.open(p).names(),
    "latest": lambda p: degrade.open(p).latest(),
    "sweeps": lambda p: degrade.open(p).sweeps(),
    "sweep": lambda p: degrade.open(p).sweep(SWEEP),
    "run_ids": lambda p: degrade.open(p).sweep(SWEEP).run_ids(),
    "runs": lambda p: degrade.open(p).sweep(SWEEP).runs(),
    "metrics": lambda p: degrade.open(p).sweep(SWEEP).metrics(),
    "layers": lambda p: degrade.open(p).sweep(SWEEP).layers(),
    "probe_kinds": lambda p: degrade.open(p).sweep(SWEEP).probe_kinds(),
    "probes": lambda p: degrade.open(p).sweep(SWEEP).probes("identity"),
    "summary": lambda p: degrade.open(p).sweep(SWEEP).summary(),
    "verdicts": lambda p: degrade.open(p).sweep(SWEEP).verdicts(),
    "latest sweep": lambda p: degrade.open(p).sweep(),
}


def _snapshot(folder: Path) -> dict[str, object]:
    """Every path below ``folder``: a file's bytes, a link's target, a folder as None."""
    found: dict[str, object] = {}
    for p in files_under(folder):
        key = os.fsencode(p.relative_to(folder))
        if p.is_symlink():
            found[str(key)] = ("link", os.readlink(p))
        elif p.is_file():
            found[str(key)] = p.read_bytes()
        else:
            found[str(key)] = None
    return found


@pytest.fixture
def quick_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures drawn from the store's data as always, but not rendered to pixels: where and how a
    figure file is written (the resolver, an atomic replace) is what this test checks, and
    rendering is most of the time a report takes."""
    from degrade import atomic, plot

    def write(fig: object, path: Path, fmt: str) -> None:
        atomic.atomic_write(path, lambda p: p.write_bytes(b"figure"))

    def svg(fig: object, prefix: str) -> str:
        plot.plt.close(fig)
        return "<svg></svg>"

    monkeypatch.setattr(plot, "atomic_write_figure", write)
    monkeypatch.setattr(plot, "inline_svg", svg)


@pytest.mark.parametrize(("kind", "corruption"), CASES, ids=[f"{k}: {c}" for k, c in CASES])
def test_a_hostile_store(
    pristine: Path,
    tmp_path: Path,
    kind: str,
    corruption: str,
    quick_figures: None,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "outputs"
    shutil.copytree(pristine, out, symlinks=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rid = sorted(p.name for p in (out / "runs").iterdir())[0]
    target = out / KINDS[kind][0].replace("RID", rid)
    assert target.exists(), target
    _corrupt(target, corruption, elsewhere)
    outside = _snapshot(elsewhere)
    before = _snapshot(out)
    caplog.set_level(logging.CRITICAL)  # the API's warnings are not what this test reads

    for name, call in API.items():
        try:
            call(out)
        except StoreError:
            pass
        except Exception as e:  # noqa: BLE001 - the boundary's promise: StoreError or nothing
            pytest.fail(f"API {name} raised {type(e).__name__} (not StoreError): {e}")
        assert _snapshot(out) == before, f"API {name} changed the store"
    capsys.readouterr()
    for args, reads in COMMANDS:
        if args[0] in FIGURES and not _figure_case(kind, corruption):
            continue
        code = main([*args, "--out", str(out)])
        got = capsys.readouterr()
        said = f"degrade {' '.join(args)} -> {code}\nstdout: {got.out[-800:]}\nstderr: {got.err[-1500:]}"
        assert "Traceback" not in got.err and "Traceback" not in got.out, said
        assert code in (0, 2), said
        if code == 2:
            errors = [line for line in got.err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, said
        assert _snapshot(elsewhere) == outside, f"degrade {' '.join(args)} wrote outside the store"
        if reads:
            assert _snapshot(out) == before, f"degrade {' '.join(args)} changed the store"


LINKS = [k for k, c in CASES if c == "link out"]


@pytest.mark.parametrize("kind", LINKS)
def test_a_rerun_of_the_sweep_writes_through_no_link(
    pristine: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweep command, the store's main writer, under a link planted at each kind of entry:
    one line (or a run rebuilt beside the link's target, never through it), nothing outside."""
    out = tmp_path / "outputs"
    shutil.copytree(pristine, out, symlinks=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rid = sorted(p.name for p in (out / "runs").iterdir())[0]
    _corrupt(out / KINDS[kind][0].replace("RID", rid), "link out", elsewhere)
    outside = _snapshot(elsewhere)
    code = main([*TRAIN, "--out", str(out)])
    got = capsys.readouterr()
    said = f"sweep -> {code}\nstdout: {got.out[-800:]}\nstderr: {got.err[-1500:]}"
    assert "Traceback" not in got.err and code in (0, 1, 2), said
    if code == 2:
        assert len([line for line in got.err.splitlines() if line.startswith("error:")]) == 1, said
    assert _snapshot(elsewhere) == outside, f"the sweep wrote through the link at {kind}"
