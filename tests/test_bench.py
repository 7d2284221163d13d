"""`degrade bench` and the numerics paths it compares."""

import json

import pytest

from degrade.config import ConfigError, compose_run
from degrade.train import Trainer
from tests.conftest import run_cli

# One timed step of ResNet-8 on the CPU: what the bench does, at the smallest size.
ONE_STEP = ["bench", "--depths", "8", "--steps", "1", "--device", "cpu"]


def test_bench_json_gives_median_and_range_of_alternating_repeats(capsys):
    code, out, err = run_cli([*ONE_STEP, "--warmup", "1", "--json", "--precision", "fp32"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["model"] == "resnet8" and row["device"] == "cpu" and row["precision"] == "fp32"
    for name in ("reference_img_s", "degrade_img_s", "speedup"):
        values = row[f"{name}_repeats"]
        assert len(values) == 3  # the default: three repeats of each side
        assert row[f"{name}_min"] == min(values) and row[f"{name}_max"] == max(values)
        assert row[f"{name}_median"] == sorted(values)[1]
    assert row["reference_img_s_min"] > 0 and row["degrade_img_s_min"] > 0
    # The speedup of each pair, not a ratio of medians: one slow repeat cannot hide in it.
    pairs = zip(row["degrade_img_s_repeats"], row["reference_img_s_repeats"], strict=True)
    for s, (ours, ref) in zip(row["speedup_repeats"], pairs, strict=True):
        assert abs(s - ours / ref) < 0.01 * s + 0.01


def test_a_far_off_repeat_shows_in_the_range_not_in_the_median():
    from degrade.bench import Spread

    s = Spread.of([1000.0, 20.0, 1010.0, 990.0])
    assert s.min == 20.0 and s.max == 1010.0 and 990.0 <= s.median <= 1000.0


def test_bench_table_shows_the_range(capsys):
    code, out, err = run_cli([*ONE_STEP, "--warmup", "1", "--repeats", "2"], capsys)
    assert code == 0, err
    assert "median (min-max) of 2 alternating repeats" in " ".join(out.split())
    assert "resnet8" in out and "x (" in out  # the speedup with its range


def test_bench_refuses_a_depth_it_cannot_build(capsys):
    code, _, err = run_cli(["bench", "--depths", "9"], capsys)
    assert code == 2 and "6n+2" in err


def test_bf16_and_fp32_paths_agree_within_tolerance():
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = compose_run(
            [
                "model.depth=8",
                "trainer.epochs=2",
                "trainer.threads=1",
                f"trainer.precision={precision}",
                "trainer.diagnostics=false",
            ]
        )
        t = Trainer(cfg)
        assert t.acc.precision == precision
        losses[precision] = [t.train_epoch()["train_loss"] for _ in range(2)]
    for a, b in zip(losses["fp32"], losses["bf16"], strict=True):
        assert abs(a - b) / a < 0.1


def test_bench_concurrent_measures_runs_trained_at_once(capsys):
    code, out, err = run_cli(
        [
            "bench",
            "--depths",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--concurrent",
            "--runs",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["sweep_runs"] == 2 and row["sweep_img_s_min"] > 0 and len(row["sweep_img_s_repeats"]) == 3
    assert row["path"] == "exact" and row["setup_s"] == 0.0


def test_bench_refuses_what_it_cannot_measure_and_keeps_the_old_flag(capsys):
    from degrade import bench

    for depths, steps, said in (((9,), None, r"6n\+2"), ((20,), 0, "--steps must be at least 1")):
        with pytest.raises(ConfigError, match=said):
            bench.run(depths, steps=steps)
    code, out, err = run_cli(["bench", "--depths", "9", "--sweep"], capsys)
    assert code == 2 and "6n+2" in err and "bench --sweep is now --concurrent" in err
    code, out, err = run_cli(["bench", "--depths", "8", "--warmup", "-1"], capsys)
    assert code == 2 and err.strip() == "error: --warmup must be 0 or more"


def test_every_loop_trains_the_warm_up_it_is_given_before_its_timing(capsys, monkeypatch):
    from degrade import bench

    warmed: list[int] = []
    timed = bench._timed_windows
    reference = bench.ReferenceLoop.__init__

    def windows(trainers, steps, warmup, repeats=1, *rest):
        warmed.append(warmup)
        return timed(trainers, steps, warmup, repeats, *rest)

    def loop(self, depth, data, device, warmup):
        warmed.append(warmup)
        reference(self, depth, data, device, warmup)

    monkeypatch.setattr(bench, "_timed_windows", windows)
    monkeypatch.setattr(bench.ReferenceLoop, "__init__", loop)
    code, _, err = run_cli(
        ["bench", "--depths", "8", "--steps", "1", "--warmup", "2", "--repeats", "1"], capsys
    )
    assert code == 0, err
    # The reference loop's and degrade's warm-ups (its timed windows after them warm up nothing).
    assert [w for w in warmed if w] == [2, 2], warmed


def test_bench_without_sweep_leaves_its_fields_empty(capsys):
    code, out, err = run_cli([*ONE_STEP, "--warmup", "0", "--path", "eager", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["sweep_runs"] is None and row["sweep_img_s_median"] is None and row["path"] == "eager"


def test_runs_interleaved_in_one_process_are_timed_together():
    from degrade.bench import _interleaved_img_s

    overrides = [
        "model.depth=8",
        "data=synthetic",
        "data.train_size=256",
        "data.test_size=128",
        "trainer.device=cpu",
        "trainer.diagnostics=false",
    ]
    rates = _interleaved_img_s(overrides, runs=2, steps=1, warmup=1, repeats=2)
    assert len(rates) == 2 and min(rates) > 0
