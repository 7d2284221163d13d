import itertools

import pytest

from degrade.config import ConfigError, compose_run, config_dir, expand_overrides

GROUPS = {g: sorted(p.stem for p in (config_dir() / g).glob("*.yaml")) for g in ("model", "data", "optim")}


def test_groups_hold_the_documented_options():
    assert GROUPS["model"] == ["cnn", "mlp"]
    assert GROUPS["data"] == ["cifar10", "cifar100", "digits", "synthetic"]
    assert "sgd" in GROUPS["optim"]


@pytest.mark.parametrize("model, data, optim", list(itertools.product(*GROUPS.values())))
def test_every_option_composes(model, data, optim):
    cfg = compose_run([f"model={model}", f"data={data}", f"optim={optim}"])
    assert cfg.model.family == model and cfg.data.name == data and cfg.optim.name == optim


@pytest.mark.parametrize("data", GROUPS["data"])
def test_a_datasets_default_budget_read_from_the_files_is_what_hydra_composes(data, tmp_path, monkeypatch):
    from degrade import config, verdict

    composed = compose_run([f"data={data}"], pin=False)
    assert config.shipped_default(f"data/{data}", "trainer.epochs") == composed.trainer.epochs
    assert verdict.default_epochs(data) == composed.trainer.epochs
    # A dataset's own budget is the one read, when its file sets one.
    (tmp_path / "data").mkdir()
    (tmp_path / "config.yaml").write_text("trainer:\n  epochs: 15\n")
    (tmp_path / "data" / "long.yaml").write_text("# @package _global_\ntrainer:\n  epochs: 45\n")
    monkeypatch.setattr(config, "config_dir", lambda: tmp_path)
    assert config.shipped_default("data/long", "trainer.epochs") == 45
    assert config.shipped_default("data/absent", "trainer.epochs") is None


def test_defaults_are_the_papers_optimiser_on_digits():
    cfg = compose_run([])
    assert (cfg.model.family, cfg.data.name) == ("cnn", "digits")
    o = cfg.optim
    # The paper's SGD, but digits trains at lr 0.03 (at 0.1 ResNet-56 fails for some seeds).
    assert (o.lr, o.momentum, o.weight_decay, cfg.trainer.batch_size) == (0.03, 0.9, 1e-4, 128)
    assert o.warmup_iters > 0 and list(o.milestones) == [0.5, 0.75]
    assert compose_run(["data=cifar10"]).optim.lr == 0.1
    assert compose_run(["optim.lr=0.1"]).optim.lr == 0.1  # an override still wins


def test_overrides_reach_the_config():
    cfg = compose_run(["model=mlp", "optim.lr=0.05", "model.depth=8"])
    assert cfg.model.family == "mlp" and cfg.optim.lr == 0.05 and cfg.model.depth == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.depth=21"], r"6n\+2"),
        (["model.depth=2"], r"6n\+2"),
        (["model.variant=deep"], "unknown variant"),
        (["data=imagenet"], "unknown data option 'imagenet'; choose one of cifar10"),
        (["model=vit"], "unknown model option"),
        (["optim.lr=["], "bad override 'optim.lr=\\['"),
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["model.depth=deep"], "model.depth must be a whole number"),
        (["trainer.device=tpu"], "unknown device"),
        (["model.depth=8,20"], "use `degrade sweep`"),
    ],
)
def test_user_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        compose_run(overrides)
    assert "\n" not in str(info.value)


def test_sweep_overrides_expand_to_every_combination():
    combos = expand_overrides(["model.depth=8,20", "seed=0,1,2", "optim.lr=0.05"])
    assert len(combos) == 6
    assert ["model.depth=20", "seed=2", "optim.lr=0.05"] in combos
