"""The cures for degradation, checked against what each paper says its net is at initialisation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from dks.base.activation_transform import _leaky_relu_cmap
from torch import nn

from degrade import flat, verdict
from degrade.cli import main
from degrade.config import ConfigError, compose_run
from degrade.cures import CuredNet, delta_orthogonal_, suo_, tat_choice, tat_leaky_relu
from degrade.models import build_model, param_groups
from degrade.runids import identity_config, run_id
from degrade.spec import ModelError, ModelSpec, check_spec, model_spec
from degrade.sweep import SweepSpec, plan
from tests.conftest import run_cli, run_subprocess

SHAPE = {"cnn": (1, 8, 8), "mlp": (1, 8, 8)}
PLAIN_CURES = ("tat", "delta_orthogonal", "looks_linear")
RESIDUAL_CURES = ("fixup", "skipinit")


def _net(cure: str, depth: int = 14, family: str = "cnn", seed: int = 0, *extra: str) -> nn.Module:
    variant = "residual" if cure in RESIDUAL_CURES else "plain"
    cfg = compose_run(
        [f"cure={cure}", f"model={family}", f"model.depth={depth}", f"model.variant={variant}", *extra]
    )
    torch.manual_seed(seed)
    return build_model(model_spec(cfg), SHAPE[family], 10).eval()


# --------------------------------------------------------------------------- initialisations


@pytest.mark.parametrize(("out_ch", "in_ch", "gain"), [(16, 16, 1.0), (32, 16, 1.3), (16, 1, 0.7)])
def test_delta_orthogonal_kernel_is_an_orthogonal_centre_and_zero_elsewhere(out_ch, in_ch, gain) -> None:
    w = delta_orthogonal_(torch.empty(out_ch, in_ch, 3, 3), gain)
    off = w.clone()
    off[:, :, 1, 1] = 0
    assert off.abs().max() == 0
    centre = w[:, :, 1, 1].double()
    assert torch.allclose(centre.T @ centre, gain**2 * torch.eye(in_ch, dtype=torch.float64), atol=1e-5)


def test_delta_orthogonal_nets_use_it_in_every_conv() -> None:
    model = _net("delta_orthogonal", 14)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    for m in convs:
        off = m.weight.detach().clone()
        off[:, :, 1, 1] = 0
        c = m.weight[:, :, 1, 1].detach().double()
        assert off.abs().max() == 0
        assert torch.allclose(c.T @ c, torch.eye(c.shape[1], dtype=torch.float64), atol=1e-5)
    assert all(isinstance(a, nn.Module) and a.kind == "tanh" for a in [model.stem_act])


def test_delta_orthogonal_refuses_a_kernel_that_narrows() -> None:
    with pytest.raises(ModelError, match="at least as many output"):
        delta_orthogonal_(torch.empty(8, 16, 3, 3))


@pytest.mark.parametrize(("out_ch", "in_ch"), [(64, 16), (16, 64), (16, 16)])
def test_suo_weights_keep_q_where_the_width_changes(out_ch, in_ch) -> None:
    torch.manual_seed(0)
    w = suo_(torch.empty(out_ch, in_ch, 3, 3))
    x = torch.randn(64, in_ch, 8, 8)
    y = nn.functional.conv2d(x, w, padding=1)
    assert abs(float(y.pow(2).mean() / x.pow(2).mean()) - 1) < 0.05
    off = w.clone()
    off[:, :, 1, 1] = 0
    assert off.abs().max() == 0


# --------------------------------------------------------------------------- looks-linear


@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_a_looks_linear_net_is_exactly_linear_at_initialisation(family) -> None:
    model = _net("looks_linear", 20, family).double()
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randn(8, 1, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        fx, fy, f0 = model(x), model(y), model(torch.zeros_like(x))
        assert f0.abs().max() < 1e-12  # no offset: biases start at zero
        assert torch.allclose(model(x + y), fx + fy, atol=1e-10)  # additive
        for a in (-2.5, 0.3, 7.0):  # homogeneous, negative factors too: no rectifier shows
            assert torch.allclose(model(a * x), a * fx, atol=1e-10)


def test_a_he_initialised_relu_net_fails_the_same_linearity_check() -> None:
    # The check above can fail: an uncured plain net of ReLUs is not homogeneous for a < 0.
    torch.manual_seed(0)
    cfg = compose_run(["model.variant=plain", "model.depth=20", "model.norm=none"])
    model = build_model(model_spec(cfg), (1, 8, 8), 10).double().eval()
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(model(-x), -model(x), atol=1e-6)


# --------------------------------------------------------------------------- TAT


@pytest.mark.parametrize("depth", [20, 56])
def test_tat_slope_gives_the_nets_kernel_map_its_target(depth) -> None:
    model = _net("tat", depth)
    act = model.stem_act
    c = 0.0
    for _ in range(depth - 1):  # one activation after the stem and after each block layer
        c = _leaky_relu_cmap(c, act.negative_slope)
    assert abs(c - 0.9) < 1e-4
    # Q(1) = 1: the output scale makes a unit Gaussian's mean square 1.
    assert abs(act.scale**2 * (1 + act.negative_slope**2) / 2 - 1) < 1e-6
    z = torch.linspace(-3, 3, 13)
    assert torch.allclose(act(z), act.scale * torch.where(z > 0, z, act.negative_slope * z))


def test_tat_at_depth_8_uses_its_fallback_and_says_so() -> None:
    model = _net("tat", 8)
    assert len(model.notes) == 1 and "cure.fallback_target=0.5" in model.notes[0]
    c = 0.0
    for _ in range(7):
        c = _leaky_relu_cmap(c, model.stem_act.negative_slope)
    assert abs(c - 0.5) < 1e-4
    with pytest.raises(ValueError):
        tat_leaky_relu(7, 0.9)  # dks itself says the target cannot be reached
    spec = model_spec(
        compose_run(["cure=tat", "model.variant=plain", "model.depth=8", "cure.fallback_target=null"])
    )
    with pytest.raises(ModelError, match="cannot reach"):
        tat_choice(spec)


def test_tat_normalises_each_location_of_its_input() -> None:
    model = _net("tat", 8)
    x = torch.randn(4, 1, 8, 8)
    x[:, :, 0, :] = 0  # all-zero pixels, as digits' borders
    z = model.input(x)
    assert z.shape == (4, 2, 8, 8)
    assert torch.allclose(z.pow(2).mean(1), torch.ones(4, 8, 8), atol=1e-6)
    assert model.stem.in_channels == 2


# --------------------------------------------------------------------------- Fixup, SkipInit


@pytest.mark.parametrize("cure", RESIDUAL_CURES)
@pytest.mark.parametrize(("family", "shortcut"), [("cnn", "A"), ("cnn", "B"), ("mlp", "B")])
def test_fixup_and_skipinit_blocks_start_as_their_shortcut(cure, family, shortcut) -> None:
    model = _net(cure, 14, family, 0, f"model.shortcut={shortcut}")
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for b in model.blocks]
    with torch.no_grad():
        model(torch.randn(8, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(seen) == len(model.blocks) == 6
    for block, x, out in seen:
        assert torch.equal(out, torch.relu(block.shortcut(x)))


def test_fixup_starts_with_zero_logits_and_rescaled_branches() -> None:
    model = _net("fixup", 20)
    with torch.no_grad():
        assert model(torch.randn(4, 1, 8, 8)).abs().max() == 0  # the classifier starts at zero
    plain_he = (2 / (16 * 9)) ** 0.5  # He-normal std of a 16 -> 16 conv
    first = model.blocks[1].conv1.weight.std().item()
    assert abs(first / plain_he - 9**-0.5) < 0.1  # L = 9 branches of m = 2 layers: L^(-1/2)


def test_fixup_scalars_train_at_a_tenth_of_the_learning_rate() -> None:
    model = _net("fixup", 8)
    groups = param_groups(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    scalars = {id(p) for p in groups[1]["params"]}
    assert all(p.numel() == 1 for p in groups[1]["params"]) and len(scalars) == 3 * 5 + 2
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    assert [g["lr_scale"] for g in param_groups(_net("skipinit", 8))] == [1.0]


def test_the_exact_step_uses_each_groups_lr_scale() -> None:
    from degrade.accel import resolve
    from degrade.step import Step

    model = _net("fixup", 8).train()
    opt = torch.optim.SGD(param_groups(model), lr=0.1, momentum=0.0)
    step = Step(model, opt, resolve("cpu", "fp32", False), "exact")
    step.set_lr(0.1)
    step(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1), pytest.approx(0.01)]


def test_the_tensor_lr_step_scales_each_group_as_the_exact_step_does() -> None:
    import copy

    from degrade.accel import resolve
    from degrade.step import Step

    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    nets = []
    for path in ("exact", "eager"):
        model = copy.deepcopy(_net("fixup", 8)).train() if not nets else copy.deepcopy(nets[0][1])
        opt = torch.optim.SGD(param_groups(model), lr=0.1, momentum=0.9, weight_decay=1e-4)
        step = Step(model, opt, resolve("cpu", "fp32", False), path)
        nets.append((step, model))
    start = [p.detach().clone() for p in nets[0][1].parameters()]
    for step, _ in nets:
        for _ in range(3):
            step.set_lr(0.1)
            step(x, y)
    exact, eager = (list(m.parameters()) for _, m in nets)
    moved = [not torch.equal(p, q) for p, q in zip(exact, start, strict=True)]
    assert any(moved)
    for a, b in zip(exact, eager, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


# --------------------------------------------------------------------------- what a cure removes


@pytest.mark.parametrize("cure", PLAIN_CURES + RESIDUAL_CURES)
@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_no_cure_has_a_bn_layer(cure, family) -> None:
    model = _net(cure, 8, family)
    assert isinstance(model, CuredNet)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 1, 8, 8))).all()


def test_a_cure_refuses_bn_and_the_variant_it_is_not_for() -> None:
    for overrides, says in (
        (["cure=fixup", "model.variant=plain"], "cure=fixup applies to residual"),
        (["cure=tat", "model.variant=residual"], "cure=tat applies to plain"),
        (["cure=tat", "model.variant=plain", "model.norm=batch"], "trains without BN"),
        (["cure=skipinit", "model.block=pre"], "model.block=post"),
        (["cure=delta_orthogonal", "model.variant=plain", "cure.activation=relu"], "built with tanh"),
    ):
        with pytest.raises(ConfigError, match=says):
            compose_run(overrides)
    with pytest.raises(ModelError, match="unknown cure 'magic'"):
        check_spec(ModelSpec(cure="magic"))


def test_a_refused_pair_is_one_line_and_exit_2_through_the_cli(tmp_path) -> None:
    r = run_subprocess(["sweep", "--variants", "plain", "--depths", "8", "cure=fixup"], cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cure=fixup applies to residual nets only" in lines[0], r.stderr
    assert not (tmp_path / "outputs").exists()


def test_train_refuses_the_pair_too(capsys) -> None:
    code, _, err = run_cli(["train", "cure=skipinit", "model.variant=plain"], capsys)
    assert code == 2 and "cure=skipinit applies to residual nets only" in err
    assert len(err.strip().splitlines()) == 1


def test_a_cure_changes_the_run_id() -> None:
    ids = {run_id(compose_run([f"cure={c}", "model.variant=plain"])) for c in ("none", *PLAIN_CURES)}
    assert len(ids) == 4
    tat = compose_run(["cure=tat", "model.variant=plain"])
    assert run_id(tat) != run_id(compose_run(["cure=tat", "model.variant=plain", "cure.target=0.8"]))


# --------------------------------------------------------------------------- the grid


def test_a_grid_crossing_cures_and_variants_leaves_out_the_pairs_that_do_not_apply() -> None:
    overrides, configs = plan(SweepSpec(depths=[8, 20], overrides=["cure=none,tat,fixup"]))
    pairs = sorted({(c.cure.name, c.model.variant) for c in configs})
    assert pairs == [("fixup", "residual"), ("none", "plain"), ("none", "residual"), ("tat", "plain")]
    assert len(configs) == 8 and "hydra.sweeper.applicable_only=true" in overrides
    with pytest.raises(ConfigError, match="cure=fixup applies to residual"):
        plan(SweepSpec(variants=["plain"], overrides=["cure=none,fixup"]))
    with pytest.raises(ConfigError, match="unknown variant 'deep'"):  # not a pair to leave out
        plan(SweepSpec(variants=["plain", "deep"], overrides=["cure=none,fixup"]))


def test_the_cures_experiment_is_every_cure_beside_plain_and_residual() -> None:
    _, configs = plan(SweepSpec(overrides=["experiment=cures"]))
    assert len(configs) == 21
    assert {c.model.depth for c in configs} == {8, 20, 56}
    assert sorted({c.cure.name for c in configs if c.model.variant == "plain"}) == [
        "delta_orthogonal",
        "looks_linear",
        "none",
        "tat",
    ]
    lr = {(c.cure.name, c.optim.lr) for c in configs}
    assert lr == {
        ("none", 0.03),
        ("tat", 0.003),
        ("delta_orthogonal", 0.03),
        ("looks_linear", 0.003),
        ("fixup", 0.03),
        ("skipinit", 0.03),
    }
    _, one = plan(SweepSpec(overrides=["experiment=cures", "optim.lr=0.01"]))
    assert {c.optim.lr for c in one} == {0.01}
    _, gpu = plan(SweepSpec(overrides=["experiment=he2016_cifar10", "sweep.cures=[none,tat,fixup]"]))
    assert {(c.data.name, c.cure.name, c.model.norm) for c in gpu} == {
        ("cifar10", "none", "batch"),
        ("cifar10", "tat", "none"),
        ("cifar10", "fixup", "none"),
    }


def test_the_sweeper_launches_only_the_applicable_jobs(tmp_path) -> None:
    from degrade.sweep import run_sweep

    result = run_sweep(
        SweepSpec(
            depths=[8],
            epochs=1,
            out=str(tmp_path / "o"),
            overrides=[
                "cure=none,skipinit",
                "trainer.threads=1",
                "hydra/launcher=basic",
                "trainer.diagnostics=false",
            ],
        )
    )
    assert sorted((r.state, r.run_id.split("-")[1]) for r in result.runs) == [
        ("done", "plain"),
        ("done", "residual"),
        ("done", "residual"),
    ]
    assert len(list((tmp_path / "o" / "runs").iterdir())) == 3


# --------------------------------------------------------------------------- the verdict


def _metrics(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    out = []
    for cure, variant, depth, final in rows:
        for epoch in range(1, 11):
            err = final if epoch > 3 else 0.9
            out.append(
                {
                    "run_id": f"{cure}-{variant}-{depth}",
                    "variant": variant,
                    "depth": depth,
                    "seed": 0,
                    "epoch": epoch,
                    "train_error": err,
                    "test_error": err,
                    "state": "done",
                    "cure.name": cure,
                }
            )
    return pd.DataFrame(out)


def test_the_verdict_is_per_cure_and_names_it() -> None:
    m = _metrics(
        [
            ("tat", "plain", 8, 0.01),
            ("tat", "plain", 56, 0.015),
            ("fixup", "residual", 8, 0.02),
            ("fixup", "residual", 56, 0.30),
            ("none", "plain", 8, 0.01),
            ("none", "plain", 56, 0.5),
            ("none", "residual", 8, 0.01),
            ("none", "residual", 56, 0.01),
        ]
    )
    lines = verdict.verdicts(m, ["cure.name"])
    assert lines[0].startswith(
        "cure.name=fixup: Still degrades: residual-56 with Fixup trains worse than "
        "residual-8 with Fixup (train error 30.00 % vs 2.00 %)"
    )
    assert lines[1].startswith("cure.name=none: Degradation reproduced")
    assert lines[2].startswith(
        "cure.name=tat: No degradation: plain-56 with TAT trains as well as plain-8 "
        "with TAT (train error 1.50 % vs 1.00 %): degradation removed without a "
        "shortcut"
    )


def test_a_cure_whose_deep_nets_diverged_gets_no_call_on_the_depths_left() -> None:
    m = _metrics([("tat", "plain", 8, 0.01), ("tat", "plain", 20, 0.02), ("tat", "plain", 56, 0.9)])
    m.loc[m["depth"] == 56, "state"] = "diverged"
    line = verdict.verdicts(m, ["cure.name"])[0]
    assert line.startswith(
        "cure.name=tat: Diverged: plain-56 with TAT diverged at this learning rate "
        "(plain-8 ends at 1.00 %; plain-20 ends at 2.00 %)"
    )
    assert "trains as well" not in line


def test_a_cures_own_settings_are_not_settings_of_their_own() -> None:
    flattened = [
        flat.flatten(identity_config(compose_run([f"cure={c}", "model.variant=plain", f"model.depth={d}"])))
        for c in ("none", "tat")
        for d in (8, 20)
    ]
    assert flat.varied_keys(flattened) == ["cure.name", "model.norm"]  # TAT's own keys follow its name
    lr = [
        flat.flatten(identity_config(compose_run(["cure=tat", "model.variant=plain", f"optim.lr={r}"])))
        for r in (0.01, 0.1)
    ]
    assert flat.varied_keys(flattened + lr) == ["cure.name", "model.norm", "optim.lr"]


# --------------------------------------------------------------------------- probes


@pytest.fixture(scope="module")
def cured(tmp_path_factory: pytest.TempPathFactory):
    """A finished sweep of a looks-linear plain net and a SkipInit residual one, depth 8, 1 epoch."""
    out = tmp_path_factory.mktemp("cured") / "o"
    code = main(
        [
            "sweep",
            "--depths",
            "8",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--name",
            "cured",
            "cure=looks_linear,skipinit",
            "trainer.threads=1",
            "trainer.precision=fp32",
            "hydra/launcher=basic",
            "trainer.diagnostics=false",
        ]
    )
    assert code == 0
    return out


def test_every_probe_runs_on_cured_nets_rebuilt_from_their_config(cured, capsys) -> None:
    from degrade.probes.common import DataCache, subject

    out = cured
    code, said, err = run_cli(
        [
            "probe",
            "--out",
            str(out),
            "probe.images=32",
            "probe.landscape.points=5",
            "probe.landscape.grid=3",
            "probe.lesion.draws=1",
            "probe.gradcorr.points=16",
        ],
        capsys,
    )
    assert code == 0, err
    assert "8 probe files measured" in said
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        s = subject(out, run.name, 32, DataCache())
        initial, final = s.model("initial"), s.model("final")
        assert isinstance(final, CuredNet) and final.cure == s.cfg.cure.name
        # The initial weights are the run's own, rebuilt from its seed: a cure's init, not another's.
        if final.cure == "skipinit":
            assert all(b.alpha.item() == 0 for b in initial.blocks)
            assert any(b.alpha.item() != 0 for b in final.blocks)
        else:
            w = initial.blocks[0].conv1.weight
            half = w.shape[1] // 2
            assert torch.equal(w[:, :half], -w[:, half:])
        identity = pd.read_parquet(run / "probes" / "identity.parquet")
        assert identity["value"].notna().any()
