"""Precision is part of what a run is: ``auto`` is resolved before the run's id, and a run keeps
its precision and device type for life. The other kind of machine is faked by what the CPU
says about bf16, so these pass on CPUs with and without native bf16 alike."""

import json

import pandas as pd
import pytest

from degrade import compute
from degrade.config import compose_run
from degrade.runids import run_id
from degrade.store import RunDir
from tests.conftest import run_cli

ONE_RUN = [
    "sweep",
    "--depths",
    "8",
    "--variants",
    "residual",
    "--epochs",
    "1",
    "model.width=4",
    "trainer.threads=1",
]


def _machine(monkeypatch, native_bf16: bool) -> None:
    monkeypatch.setattr(compute, "cpu_has_native_bf16", lambda: native_bf16)


@pytest.mark.parametrize(("native", "becomes"), [(False, "fp32"), (True, "bf16")])
def test_auto_is_resolved_before_the_id_and_named_in_the_config(monkeypatch, native, becomes):
    _machine(monkeypatch, native)
    cfg = compose_run(["model.depth=8"])
    assert cfg.trainer.precision == becomes
    assert run_id(cfg) == run_id(compose_run(["model.depth=8", f"trainer.precision={becomes}"]))


def test_a_store_shared_by_machines_with_and_without_native_bf16_keeps_their_runs_apart(
    capsys, monkeypatch, tmp_path
):
    for native in (False, True):
        _machine(monkeypatch, native)
        code, out, err = run_cli([*ONE_RUN, "--out", str(tmp_path)], capsys)
        assert code == 0, err
        assert "1 runs (1 done)" in out  # the second machine trains its own run, skips nothing
    runs = {p.parent.name: pd.read_parquet(p) for p in tmp_path.glob("runs/*/metrics.parquet")}
    assert len(runs) == 2
    assert sorted(m["precision"].iloc[0] for m in runs.values()) == ["bf16", "fp32"]
    for rid in runs:
        assert f"precision: {runs[rid]['precision'].iloc[0]}" in RunDir(tmp_path, rid).config.read_text()


def test_the_summary_and_its_verdict_say_device_precision_and_threads(capsys, monkeypatch, tmp_path):
    _machine(monkeypatch, False)
    code, out, err = run_cli([*ONE_RUN, "--depths", "8,14", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    code, out, err = run_cli(["summary", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    said = " ".join(out.split())
    assert "cpu, fp32, 1 thread per run" in said.split("┏")[0]  # the table's title
    verdict = said.split("┘")[-1]
    # One epoch trains no net: the verdict says so rather than make a call, with the numerics.
    assert "Not converged: train longer" in verdict
    assert verdict.strip().endswith("(cpu, fp32, 1 thread per run)")


def test_a_run_begun_on_another_device_type_is_refused_before_anything_runs(capsys, tmp_path):
    code, _, err = run_cli([*ONE_RUN, "--epochs", "2", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    # As if its first session had trained on a GPU and stopped after one epoch.
    status = json.loads((run / "status.json").read_text())
    status.update(state="running", epochs_done=1)
    status["sessions"][-1]["environment"]["device"] = "cuda"
    (run / "status.json").write_text(json.dumps(status))
    before = (run / "metrics.parquet").read_bytes()
    code, _, err = run_cli([*ONE_RUN, "--epochs", "2", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "began on cuda and would resume on cpu" in err and "--device cuda" in err
    assert (run / "metrics.parquet").read_bytes() == before


def test_a_lone_job_will_not_resume_a_checkpoint_of_another_device_type(tmp_path):
    from degrade.atomic import save_checkpoint
    from degrade.train import ResumeError, Trainer, train_run

    cfg = compose_run(["model.depth=8", "model.width=4", "trainer.epochs=2", "trainer.threads=1"])
    t = Trainer(cfg)
    t.rows.append(t.train_epoch())
    state = {**t.state(), "device": "cuda"}
    save_checkpoint(RunDir(tmp_path, run_id(cfg)).checkpoint, state)
    with pytest.raises(ResumeError, match="began on cuda and would resume on cpu"):
        train_run(cfg, tmp_path)
