"""A job's config taken from the sweep's plan is the one Hydra would compose for it."""

from __future__ import annotations

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from degrade import composed, sweep
from degrade.config import CONFIG_NAME, compose_run, hydra_context
from degrade.sweep import SweepSpec


def _jobs_both_ways(spec: SweepSpec, out, name: str):
    """Each job of the sweep ``spec``: (its overrides, the config ``composed.take`` derives from
    the plan, the config Hydra composes for it), both without Hydra's node."""
    planned = sweep._plan(spec)
    overrides = sweep._multirun_overrides(planned.overrides, out, name)
    pairs = []
    with hydra_context():
        sweep._register_plugins()
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        master = hydra.compose_config(
            CONFIG_NAME, overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False
        )
        loader = hydra.config_loader
        task = OverridesParser.create(config_loader=loader).parse_overrides(list(master.hydra.overrides.task))
        jobs = [job for batch in BasicSweeper.split_arguments(task, None) for job in batch]
        with composed.offering(sweep._offered(planned.composed)):
            for job in jobs:
                pairs.append(
                    (job, composed.take(job), composed.without_hydra(loader.load_sweep_config(master, job)))
                )
    return pairs


@pytest.mark.parametrize(
    "spec",
    [
        {"depths": [8, 20, 56]},  # the default sweep
        {"depths": [8], "seeds": [0, 1], "overrides": ["model=mlp", "optim.lr=0.05,0.1"]},
        {"overrides": ["experiment=cures", "model.depth=8", "trainer.epochs=2"]},  # cures x variants
        {"depths": [8], "overrides": ["trainer.precision=auto", "trainer.threads=2", "data=synthetic"]},
        {"depths": [8], "epochs": 3, "out": None, "overrides": ["out=relative/store", "name=given"]},
    ],
)
def test_a_planned_run_with_the_sweeps_own_values_set_is_the_job_hydra_composes(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(**{"out": str(tmp_path / "a store"), **spec})
    pairs = _jobs_both_ways(spec, tmp_path / "a store", "it's [a] name")
    planned = len(sweep._plan(spec).configs)
    assert sum(got is not None for _, got, _ in pairs) == planned  # one job for each run planned
    for job, got, want in pairs:
        if got is None:
            continue
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want), job
        OmegaConf.resolve(got)
        OmegaConf.resolve(want)
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want), job
        assert OmegaConf.is_struct(got) and OmegaConf.is_struct(want)


@pytest.mark.parametrize(
    "spec",
    [
        {"depths": [8, 20, 56]},
        {"depths": [8], "seeds": [0, 1], "overrides": ["model=mlp", "optim.lr=0.05,0.1"]},
        {"overrides": ["experiment=cures", "model.depth=8"]},
        {"depths": [8, 14], "variants": ["plain"], "epochs": 2, "overrides": ["data=synthetic", "seed=3"]},
    ],
)
def test_the_runs_a_plan_derives_from_its_first_are_the_runs_hydra_composes(tmp_path, spec):
    planned = sweep._plan(SweepSpec(**{"out": str(tmp_path), **spec}))
    for combo, cfg in planned.composed:
        want = compose_run(combo, pin=False, check_variant=False)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(want), combo


def test_a_job_the_plan_did_not_compose_is_left_to_hydra(tmp_path):
    planned = sweep._plan(SweepSpec(depths=[8], out=str(tmp_path)))
    combo = sweep._offered(planned.composed)[0][0]
    with composed.offering(sweep._offered(planned.composed)):
        assert composed.take(combo) is not None
        with_two = composed.take(combo + ["trainer.threads=2"])  # a plain value set over it
        assert with_two is not None and with_two.trainer.threads == 2
        assert composed.take(combo + ["model=mlp"]) is None  # a config group changes what composes
        assert composed.take(combo + ["+extra=1"]) is None  # an addition
        assert composed.take(combo + ["model.depth=20"]) is None  # over a value the run sets
        assert composed.take(combo + ["model.depth.x=1"]) is None  # inside one
        assert composed.take(combo + ["trainer.nonsense=3"]) is None  # Hydra refuses it, and says why
        assert composed.take([o for o in combo if not o.startswith("model.depth")]) is None
        first, second = composed.take(combo), composed.take(combo)
        assert first is not second  # each caller gets its own
    assert composed.take(combo) is None  # nothing offered outside the block


def test_the_pool_launchers_config_read_from_its_file_is_what_hydra_composes():
    for n_jobs in (2, 5):
        composed_ = sweep._launcher_config(
            [], ["hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={n_jobs}"]
        )
        assert composed_ is not None
        assert OmegaConf.to_container(sweep.own_launcher(n_jobs)) == OmegaConf.to_container(composed_)


def test_a_grid_over_config_groups_composes_once_for_each_choice_of_groups(tmp_path, monkeypatch):
    """The cures experiment crosses six cures with variants and depths: each run is derived from
    the config composed for its cure, and that is the run Hydra composes (above)."""
    from degrade import config

    composed_for: list[list[str]] = []
    real = config.compose

    def counted(name, overrides):
        composed_for.append(list(overrides))
        return real(name, overrides=overrides)

    monkeypatch.setattr(config, "compose", counted)
    planned = sweep._plan(SweepSpec(out=str(tmp_path), overrides=["experiment=cures"]))
    cures = {str(c.cure.name) for c in planned.configs}
    assert len(planned.configs) == 21 and len(cures) == 6
    # The plan's first run (the overrides given), then one for each cure.
    assert len(composed_for) == 1 + len(cures), composed_for
    for combo, cfg in planned.composed:
        want = compose_run(combo, pin=False, check_variant=False)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(want), combo
