"""`degrade bench` and the numerics paths it compares."""

import json

from degrade.config import compose_run
from degrade.train import Trainer
from tests.conftest import run_cli


def test_bench_json_has_the_documented_fields(capsys):
    code, out, err = run_cli(["bench", "--depths", "8", "--steps", "1", "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert {"model", "reference_img_s", "degrade_img_s", "speedup", "device", "precision", "path"} <= set(row)
    assert row["model"] == "resnet8" and row["device"] == "cpu"
    assert row["reference_img_s"] > 0 and row["degrade_img_s"] > 0
    assert abs(row["speedup"] - row["degrade_img_s"] / row["reference_img_s"]) < 0.01


def test_bench_refuses_a_depth_it_cannot_build(capsys):
    code, _, err = run_cli(["bench", "--depths", "9"], capsys)
    assert code == 2 and "6n+2" in err


def test_bf16_and_fp32_paths_agree_within_tolerance():
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = compose_run(["model.depth=8", "trainer.epochs=2", "trainer.threads=1",
                           f"trainer.precision={precision}", "trainer.diagnostics=false"])
        t = Trainer(cfg)
        assert t.acc.precision == precision
        losses[precision] = [t.train_epoch()["train_loss"] for _ in range(2)]
    for a, b in zip(losses["fp32"], losses["bf16"], strict=True):
        assert abs(a - b) / a < 0.1


def test_bench_sweep_measures_runs_trained_at_once(capsys):
    code, out, err = run_cli(["bench", "--depths", "8", "--steps", "2", "--device", "cpu", "--sweep",
                              "--runs", "2", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["sweep_runs"] == 2 and row["sweep_img_s"] > 0
    assert row["path"] == "exact" and row["setup_s"] == 0.0


def test_bench_without_sweep_leaves_its_fields_empty(capsys):
    code, out, err = run_cli(["bench", "--depths", "8", "--steps", "1", "--device", "cpu", "--path", "eager",
                              "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["sweep_runs"] is None and row["sweep_img_s"] is None and row["path"] == "eager"


def test_runs_in_threads_are_timed_together():
    from degrade.bench import _threads_img_s

    overrides = ["model.depth=8", "data=synthetic", "data.train_size=256", "data.test_size=128",
                 "trainer.device=cpu", "trainer.diagnostics=false"]
    assert _threads_img_s(overrides, runs=2, steps=1, warmup=1) > 0
