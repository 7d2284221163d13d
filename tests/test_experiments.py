"""Presets, toggles and the per-layer instruments."""

import pytest
import torch
from omegaconf import OmegaConf
from pandas import read_parquet

from degrade.config import compose_run, config_dir
from degrade.store import RunDir
from degrade.train import Trainer, lr_at, model_spec, train_run
from tests.conftest import run_cli

PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def test_the_documented_presets_exist():
    assert {"he2016_cifar10", "he2016_fig1", "seed_mlp"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_and_shows(name, capsys):
    compose_run([f"experiment={name}"])
    code, out, _ = run_cli(["show", f"experiment={name}"], capsys)
    assert code == 0 and "model:" in out and "sweep:" in out


def test_he2016_cifar10_is_section_4_2_line_by_line():
    c = compose_run(["experiment=he2016_cifar10"])
    assert (c.data.name, c.model.family, c.model.shortcut, c.model.norm, c.model.block) == (
        "cifar10",
        "cnn",
        "A",
        "batch",
        "post",
    )
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay, c.trainer.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert c.trainer.iterations == 64000 and c.data.augment and not c.data.validation
    total = c.trainer.iterations
    assert [round(m * total) for m in c.optim.milestones] == [32000, 48000]
    assert lr_at(31999, total, c.optim) == pytest.approx(0.1)
    assert lr_at(32000, total, c.optim) == pytest.approx(0.01)
    assert lr_at(48000, total, c.optim) == pytest.approx(0.001)
    assert list(c.sweep.depths) == [20, 32, 44, 56]


def test_only_resnet_110_gets_the_papers_warm_up():
    c56 = compose_run(["experiment=he2016_cifar10", "model.depth=56"])
    c110 = compose_run(["experiment=he2016_cifar10", "model.depth=110"])
    assert c56.optim.warmup_iters == 0 and c110.optim.warmup_iters == 400
    total = 64000
    assert lr_at(0, total, c110.optim) == pytest.approx(0.01)
    assert lr_at(399, total, c110.optim) == pytest.approx(0.01)
    assert lr_at(400, total, c110.optim) == pytest.approx(0.1)
    assert lr_at(0, total, c56.optim) == pytest.approx(0.1)


def test_fig1_preset_sweeps_plain_20_and_56():
    from degrade.sweep import SweepSpec, _flag_overrides

    c = compose_run(["experiment=he2016_fig1"])
    ov = _flag_overrides(SweepSpec(overrides=["experiment=he2016_fig1"]), c.sweep)
    assert "model.depth=20,56" in ov and "model.variant=plain" in ov
    # A flag given wins over the preset's grid.
    ov = _flag_overrides(SweepSpec(depths=[8], overrides=["experiment=he2016_fig1"]), c.sweep)
    assert "model.depth=8" in ov


def test_validation_switch_reaches_the_data_config():
    assert compose_run(["experiment=he2016_cifar10", "data.validation=true"]).data.validation


@pytest.mark.parametrize(
    "toggle, check",
    [
        ("model.shortcut=B", lambda s: s.shortcut == "B"),
        ("model.norm=none", lambda s: s.norm == "none"),
        ("model.block=pre", lambda s: s.block == "pre"),
        ("model.zero_init_residual=true", lambda s: s.zero_init),
    ],
)
def test_toggles_reach_the_model_and_train(toggle, check):
    cfg = compose_run(["model.depth=8", toggle, "trainer.epochs=3", "trainer.threads=1", "optim.lr=0.05"])
    assert check(model_spec(cfg))
    t = Trainer(cfg)
    losses = [t.train_epoch()["train_loss"] for _ in range(3)]
    assert losses[-1] < losses[0]  # it learns


def test_bad_toggle_is_refused(capsys):
    code, _, err = run_cli(["show", "model.block=middle"], capsys)
    assert code == 2 and "unknown block 'middle'" in err


def test_diagnostics_cover_every_weight_layer_each_epoch(tmp_path):
    cfg = compose_run(["model.depth=8", "trainer.epochs=2", "trainer.threads=1"])
    r = train_run(cfg, tmp_path)
    layers = read_parquet(RunDir(tmp_path, r.run_id).layers)
    assert list(layers.columns) == ["run_id", "epoch", "layer", "name", "grad_norm", "response_std"]
    assert len(layers) == 2 * 8 and layers["layer"].tolist()[:8] == list(range(1, 9))
    assert layers["name"].iloc[0] == "stem" and layers["name"].iloc[7] == "fc"
    assert (layers["grad_norm"] > 0).all() and (layers["response_std"] > 0).all()


def test_diagnostics_do_not_change_training():
    on = train_run(compose_run(["model.depth=8", "trainer.epochs=2", "trainer.threads=1"])).final
    off = train_run(
        compose_run(["model.depth=8", "trainer.epochs=2", "trainer.threads=1", "trainer.diagnostics=false"])
    ).final
    for key in ("train_loss", "test_loss", "train_error", "test_error"):
        assert on[key] == off[key]


def test_responses_are_taken_after_bn_and_before_relu():
    from degrade.diagnostics import response_modules

    cfg = compose_run(["model.depth=8", "trainer.epochs=1", "trainer.threads=1"])
    t = Trainer(cfg)
    mods = response_modules(t.model)
    assert isinstance(mods[1][2], torch.nn.BatchNorm2d)  # blocks.0.conv1 -> blocks.0.bn1
    assert mods[-1][2] is t.model.fc
    x, y = t.diag_batch
    from degrade.diagnostics import measure

    rows = measure(t.model, x, y, t.acc.autocast())
    # At init BN has gamma 1, beta 0: its train-mode output has unit std.
    assert rows[1]["response_std"] == pytest.approx(1.0, abs=0.01)


def test_every_plot_kind_draws_a_figure(tmp_path, capsys):
    out = tmp_path / "o"
    run_cli(
        [
            "sweep",
            "--depths",
            "8,14",
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "trainer.threads=1",
            "--out",
            str(out),
            "--name",
            "s",
        ],
        capsys,
    )
    for kind in ("curves", "depth", "gradients", "responses"):
        code, stdout, err = run_cli(["plot", "--kind", kind, "--out", str(out), "--at-epochs", "1,2"], capsys)
        assert code == 0, err
        path = out / "sweeps" / "s" / f"{kind}.png"
        assert stdout.strip() == str(path) and path.stat().st_size > 10_000
    code, _, err = run_cli(["plot", "--kind", "violin", "--out", str(out)], capsys)
    assert code == 2 and "unknown kind" in err


def test_summary_reports_mean_and_std_over_seeds(tmp_path, capsys):
    out = tmp_path / "o"
    run_cli(
        ["sweep", "--depths", "8", "--seeds", "0,1", "--epochs", "1", "trainer.threads=1", "--out", str(out)],
        capsys,
    )
    code, stdout, _ = run_cli(["summary", "--out", str(out)], capsys)
    assert code == 0 and "±" in stdout and "│     2 │" in stdout


def test_sweep_grid_from_config_can_be_emptied_only_loudly(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["sweep", "sweep.variants=[]"], capsys)
    assert code == 2 and "sweep.variants is empty" in err
    assert OmegaConf.select(compose_run([]), "sweep.variants") == ["plain", "residual"]


def test_he2016_fig1_preset_runs_end_to_end_on_a_cifar_folder(tmp_path, capsys):
    import tarfile

    from tests.cifar_archive import write_archive

    archive, _ = write_archive(tmp_path / "src", per_batch=8)
    root = tmp_path / "data"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")  # an extracted folder is used as it is
    out = tmp_path / "o"
    args = [
        "sweep",
        "experiment=he2016_fig1",
        f"data.root={root}",
        "trainer.iterations=2",
        "trainer.threads=1",
        "trainer.eval_batch_size=8",
        "--out",
        str(out),
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "2 runs (2 done)" in stdout
    runs = list(out.glob("runs/cnn-plain-*"))
    assert sorted(r.name.split("-")[2] for r in runs) == ["20", "56"]
    for r in runs:
        m = read_parquet(r / "metrics.parquet")
        # 40 images are one batch of 128: two iterations are two epochs.
        assert set(m["dataset"]) == {"cifar10"} and m["iteration"].tolist() == [1, 2]
