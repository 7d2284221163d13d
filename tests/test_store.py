import hashlib
import json
import os
import random
import subprocess
import sys

import pandas as pd
import pytest

from degrade import atomic, runids, store
from degrade.config import compose_run


def test_parquet_rewrite_is_atomic_when_the_writer_dies(tmp_path, monkeypatch):
    path = tmp_path / "metrics.parquet"
    atomic.write_parquet_atomic(path, pd.DataFrame({"epoch": [1], "train_error": [0.5]}))

    def crash(table, where):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk gone")

    monkeypatch.setattr("pyarrow.parquet.write_table", crash)
    with pytest.raises(OSError):
        atomic.write_parquet_atomic(path, pd.DataFrame({"epoch": [1, 2], "train_error": [0.5, 0.4]}))
    # The old file is whole, and no temporary file is left beside it.
    assert pd.read_parquet(path)["epoch"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.parquet"]


def test_written_files_get_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        mode = atomic._file_mode()
    finally:
        os.umask(old)
    assert mode == 0o644
    atomic.write_text_atomic(tmp_path / "t.txt", "x")
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == atomic.FILE_MODE


def test_parquet_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "m.parquet"
    atomic.write_parquet_atomic(path, pd.DataFrame({"epoch": [1]}))
    atomic.write_parquet_atomic(path, pd.DataFrame({"epoch": [1, 2]}))
    assert pd.read_parquet(path)["epoch"].tolist() == [1, 2]


def test_damaged_files_are_named_and_a_damaged_checkpoint_is_not_resumed(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"not parquet")
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(store.StoreError, match=r"m.parquet is damaged: not a Parquet table"):
        store.read_metrics(tmp_path / "m.parquet", "r")
    assert store.read_metrics(tmp_path / "absent.parquet", "r") is None
    warned: list[str] = []
    assert store.load_checkpoint(tmp_path / "c.pt", warn=warned.append) is None
    assert warned == [f"damaged checkpoint {tmp_path / 'c.pt'}; falling back to an earlier one"]


def test_run_id_depends_on_what_is_computed_not_where():
    base = compose_run(["model.depth=20"])
    same = compose_run(["model.depth=20", "out=elsewhere", "trainer.device=cpu", "trainer.threads=1"])
    other = compose_run(["model.depth=20", "optim.lr=0.05"])
    assert runids.run_id(base) == runids.run_id(same)
    assert runids.run_id(base) != runids.run_id(other)
    assert runids.run_id(base).startswith("cnn-residual-20-s0-")


def test_unwritable_output_folder_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(store.StoreError, match="cannot write"):
        store.make_out(blocker / "out")


def test_rows_of_an_older_checkpoint_keep_the_newer_columns(tmp_path):
    from degrade.atomic import write_rows_atomic

    # A run resumed from a checkpoint written before a column existed: its first rows lack it.
    rows = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5, "ended": 100.0}]
    write_rows_atomic(tmp_path / "m.parquet", rows)
    frame = pd.read_parquet(tmp_path / "m.parquet")
    assert list(frame.columns) == ["epoch", "train_loss", "ended"]
    assert frame["ended"].isna().tolist() == [True, False] and frame["ended"].iloc[1] == 100.0


def test_rows_become_the_table_pyarrow_would_infer_for_them():
    import pyarrow as pa

    from degrade.atomic import rows_table

    rnd = random.Random(0)
    kinds = [
        lambda: rnd.randint(-(2**63), 2**63 - 1),
        lambda: rnd.uniform(-1e6, 1e6),
        lambda: rnd.choice([float("nan"), float("inf"), -0.0, 1e-310]),
        lambda: rnd.choice(["", "x", "plain-56", "é ü 层", "a\x00b"]),
        lambda: rnd.random() < 0.5,
        lambda: None,
    ]
    for trial in range(200):
        columns = [f"c{k}" for k in range(rnd.randint(1, 6))]
        # Each column one kind, or ints beside floats (a double), with gaps and missing keys.
        kind = {c: rnd.choice([[k] for k in kinds] + [[kinds[0], kinds[1]]]) for c in columns}
        rows = [
            {c: None if rnd.random() < 0.2 else rnd.choice(kind[c])() for c in columns if rnd.random() < 0.9}
            for _ in range(rnd.randint(0, 12))
        ]
        names = list(dict.fromkeys(k for r in rows for k in r))
        data = {c: [r.get(c) for r in rows] for c in names}
        try:
            expected = pa.Table.from_pydict(data)
        except (pa.ArrowInvalid, OverflowError) as e:
            with pytest.raises(type(e)):
                rows_table(rows)
            continue
        got = rows_table(rows)
        assert got.schema == expected.schema, (trial, data)
        assert got.equals(expected) or str(got.to_pylist()) == str(expected.to_pylist()), (trial, data)
        assert [a.null_count for a in got.columns] == [a.null_count for a in expected.columns]


def test_writing_a_runs_rows_does_not_import_pandas(tmp_path):
    # pa.array imports pandas (a quarter of a second) at its first call: every training process
    # would pay it at its first epoch. The rows are written from Arrow buffers instead.
    code = (
        "import sys; from pathlib import Path; from degrade.atomic import write_rows_atomic; "
        "write_rows_atomic(Path(sys.argv[1]), [{'run_id': 'r', 'epoch': 1, 'train_error': 0.5, "
        "'ok': True, 'note': None}, {'run_id': 'r', 'epoch': 2, 'train_error': 1}]); "
        "print('pandas' in sys.modules)"
    )
    path = tmp_path / "m.parquet"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    frame = pd.read_parquet(path)
    assert frame["epoch"].tolist() == [1, 2] and frame["train_error"].tolist() == [0.5, 1.0]
    assert str(frame["train_error"].dtype) == "float64" and frame["note"].isna().all()


def test_no_cure_keeps_the_run_ids_stores_already_hold():
    base = compose_run(["model.depth=8"])
    assert runids.identity_config(base)["cure"] == {"name": "none"}  # a setting tables show
    hashed = {k: v for k, v in runids.identity_config(base).items() if k != "cure"}
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert runids.run_id(base) == f"cnn-residual-8-s0-{digest}"  # the id of before the cure axis
    cured = compose_run(["model.depth=8", "model.variant=residual", "cure=fixup"])
    assert runids.identity_config(cured)["cure"]["name"] == "fixup"


def test_a_config_read_again_is_its_file_as_it_is_now_and_each_caller_gets_its_own(tmp_path):
    from omegaconf import OmegaConf

    path = tmp_path / "config.yaml"
    text = "seed: 0\nmodel: {family: cnn, variant: plain, depth: 8}\ndata: {name: digits}\n"
    path.write_text(text)
    first = store.read_config(path)
    first.model.depth = 99  # a caller's change stays its own
    assert store.read_config(path).model.depth == 8
    path.write_text(text.replace("depth: 8", "depth: 20"))
    assert store.read_config(path).model.depth == 20
    path.write_text(text.replace("depth: 8", "depth: eight"))
    with pytest.raises(store.StoreError, match="model.depth must be a whole number"):
        store.read_config(path)
    path.write_text(text)
    assert OmegaConf.to_container(store.read_config(path)) == OmegaConf.to_container(OmegaConf.create(text))
