"""The probes' instruments, checked where the answer is known: filter-normalised orthogonal
directions, a convex quadratic, a lesion of a block that does nothing, a linear model's gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from degrade.models import build_model
from degrade.probes import common, gradcorr, identity, landscape, lesion
from degrade.probes.settings import ProbeError, settings_of
from degrade.spec import ModelSpec

LANDSCAPE = {
    "images": 16,
    "points": 5,
    "grid": 5,
    "span": 1.0,
    "margin": 0.1,
    "curvature_tol": 0.01,
    "seed": 0,
}


def _net(variant: str, depth: int = 14, family: str = "cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shape = (1, 8, 8) if family == "cnn" else (64,)
    return build_model(ModelSpec(family=family, depth=depth, variant=variant), shape, 10).eval()


def _zero_branches(model: nn.Module) -> None:
    """Make every residual branch output zero: its last BN scales by 0 and shifts by 0."""
    with torch.no_grad():
        for b in model.blocks:
            b.bn2.weight.zero_()
            b.bn2.bias.zero_()


def test_directions_are_filter_normalised_and_orthogonal() -> None:
    model = _net("residual")
    d1, d2 = landscape.directions(model, torch.Generator().manual_seed(3))
    dot = 0.0
    for p, a, b in zip(model.parameters(), d1, d2, strict=True):
        if p.dim() <= 1:  # biases and BN parameters do not move
            assert a.abs().max() == 0 and b.abs().max() == 0
            continue
        w = p.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(a.flatten(1).norm(dim=1), w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b.flatten(1).norm(dim=1), w, rtol=1e-5, atol=1e-6)
        dot += float((a.double() * b.double()).sum())
        assert not torch.allclose(a, b)
    norm = sum(float(a.double().norm() ** 2) for a in d1) ** 0.5
    assert abs(dot) < 1e-6 * norm**2


def test_nonconvex_fraction_of_known_quadratics() -> None:
    axis = np.linspace(-1, 1, 9)
    a, b = np.meshgrid(axis, axis)
    step = float(axis[1] - axis[0])
    convex = 3 * a**2 + a * b + 2 * b**2 + 1
    saddle = a**2 - b**2
    assert landscape.nonconvex_fraction(convex, step, 0.01) == 0.0
    assert landscape.nonconvex_fraction(saddle, step, 0.01) == 1.0
    assert landscape.nonconvex_fraction(-convex, step, 0.01) == 1.0


def test_basin_width_of_a_parabola() -> None:
    alphas = np.linspace(-1, 1, 21)
    assert landscape.basin_width(alphas, alphas**2, 0.25) == pytest.approx(1.0)
    assert landscape.basin_width(alphas, alphas**2, 0.0) == pytest.approx(0.0)
    assert landscape.basin_width(alphas, np.zeros(21), 0.1) == pytest.approx(2.0)


def test_landscape_of_softmax_regression_is_convex_and_leaves_weights() -> None:
    """Cross-entropy is convex in a linear model's weights: every plane through them is a bowl."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    ticks = []
    rows = landscape.measure_model(model, x, y, {**LANDSCAPE, "grid": 7}, ticks.append)
    numbers = {r["quantity"]: r["value"] for r in rows if r["section"] == "number"}
    assert numbers["nonconvex_fraction"] == 0.0
    assert sum(ticks) == landscape.evaluations(LANDSCAPE | {"grid": 7}, model) == 5 + 49
    centre = [r["value"] for r in rows if r["section"] == "grid" and r["alpha"] == 0 and r["beta"] == 0]
    assert centre == [pytest.approx(numbers["centre_loss"], rel=1e-6)]
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)


def test_lesion_of_zero_branches_is_flat_at_its_own_error() -> None:
    model = _net("residual")
    _zero_branches(model)
    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 10, (48,))
    xt, yt = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    settings = {"draws": 2, "seed": 0}
    ticks = []
    rows = lesion.measure_model(model, (x, y), (xt, yt), settings, ticks.append)
    base = {r["quantity"]: r["value"] for r in rows if r["mode"] == "none"}
    lesioned = [r for r in rows if r["mode"] in ("single", "random")]
    # 6 blocks of which 2 down-sample; k = 1, 2, 4 with 2 draws each.
    assert sum(ticks) == lesion.evaluations(settings, model) == 1 + 4 + 2 + 3 * 2
    assert len(lesioned) == 2 * (sum(ticks) - 1)
    assert {r["value"] for r in lesioned if r["quantity"] == "train_error"} == {base["train_error"]}
    assert {r["value"] for r in lesioned if r["quantity"] == "test_error"} == {base["test_error"]}


@pytest.mark.parametrize(("family", "variant"), [("cnn", "plain"), ("cnn", "residual"), ("mlp", "residual")])
def test_lesions_measured_from_kept_inputs_equal_the_whole_net_bit_for_bit(
    family: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lesion runs only the blocks from its first removed one on, from the intact net's
    input there: the errors are those of the whole net, and the blocks before run once a batch."""
    model = _net(variant, family=family)
    shape = (1, 8, 8) if family == "cnn" else (64,)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(23, *shape, generator=gen), torch.randint(0, 10, (23,), generator=gen)
    xt, yt = torch.randn(17, *shape, generator=gen), torch.randint(0, 10, (17,), generator=gen)
    common.calibrate_bn(model, x)  # every block does something, so lesions differ
    monkeypatch.setattr(lesion, "BATCH", 5)  # several batches of each set, the last one short
    settings = {"draws": 2, "seed": 0}
    first = model.blocks[0]
    calls: list[int] = []
    hook = first.register_forward_hook(lambda *_: calls.append(1))
    kept = lesion.measure_model(model, (x, y), (xt, yt), settings, lambda n: None)
    assert len(calls) == 5 + 4  # once per batch of each set (train 23 images, test 17)
    monkeypatch.setattr(lesion, "CACHE_BYTES", 0)
    calls.clear()
    whole = lesion.measure_model(model, (x, y), (xt, yt), settings, lambda n: None)
    hook.remove()
    assert len(calls) > 5 + 4
    assert kept == whole
    assert len({r["value"] for r in kept if r["quantity"] == "train_error"}) > 1
    assert model.blocks[0] is first and isinstance(model.blocks, nn.Sequential)


def test_lesion_of_a_trained_like_net_changes_its_output() -> None:
    """The counterpart: removing a block that does something changes what the net computes."""
    model = _net("residual")
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        original = model.blocks[1]
        model.blocks[1] = lesion.Lesioned(original)
        after = model(x)
        model.blocks[1] = original
    assert not torch.allclose(before, after)


def test_plain_lesions_skip_downsampling_blocks() -> None:
    same, down = lesion.removable(_net("plain"))
    assert same == [0, 1, 3, 5] and down == []
    same, down = lesion.removable(_net("residual"))
    assert same == [0, 1, 3, 5] and down == [2, 4]


def test_gradients_of_a_linear_model_are_perfectly_correlated() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    a, b = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    corr = gradcorr.correlation_by_lag(gradcorr.line_gradients(model, a, b, 3, 32))
    assert corr.shape == (31,)
    torch.testing.assert_close(corr, torch.ones(31, dtype=corr.dtype))
    assert gradcorr.numbers(corr, 32) == {"corr_lag1": pytest.approx(1.0), "half_lag": 32.0}


def test_gradients_of_random_features_are_not() -> None:
    """Independent random gradients (white noise along the line) correlate near 0 at every lag."""
    g = torch.randn(64, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    corr = gradcorr.correlation_by_lag(g)
    assert corr.abs().max() < 0.2
    assert gradcorr.numbers(corr, 64)["half_lag"] == 1.0


@pytest.mark.parametrize("block", ["post", "pre"])
@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_branch_is_what_the_block_adds_to_its_shortcut(block: str, family: str) -> None:
    torch.manual_seed(0)
    shape = (1, 8, 8) if family == "cnn" else (64,)
    model = build_model(ModelSpec(family=family, depth=14, variant="residual", block=block), shape, 10).eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        h = model.stem(x.flatten(1) if family == "mlp" else x)
        h = h if block == "pre" else torch.relu(model.stem_bn(h))
        for b in model.blocks:
            total = common.branch(b, h) + b.shortcut(h)
            out = b(h)
            torch.testing.assert_close(out, total if block == "pre" else torch.relu(total))
            h = out


def test_identity_of_zero_branches_is_zero() -> None:
    model = _net("residual")
    _zero_branches(model)
    rows = identity.measure_model(model, torch.randn(16, 1, 8, 8), "final", residual=True)
    branch = [r["value"] for r in rows if r["quantity"] == "branch_ratio"]
    assert len(branch) == 6 and max(branch) == 0.0
    # Post-activation: block(x) = relu(x) = x for the non-negative x a block sees.
    change = [r["value"] for r in rows if r["quantity"] == "change_ratio"]
    assert len(change) == 4 and max(change) < 1e-6
    assert [r["value"] for r in rows if r["quantity"] == "ratio"] == [0.0]


def test_identity_of_a_plain_net_measures_the_change() -> None:
    rows = identity.measure_model(_net("plain"), torch.randn(16, 1, 8, 8), "initial", residual=False)
    assert {r["quantity"] for r in rows} == {"change_ratio", "ratio"}
    change = [r for r in rows if r["quantity"] == "change_ratio"]
    assert [r["block"] for r in change] == [1, 2, 4, 6] and min(r["value"] for r in change) > 0.1


def test_calibrated_bn_statistics_are_those_of_the_images() -> None:
    model = _net("plain")
    x = torch.randn(64, 1, 8, 8) * 3 + 2
    common.calibrate_bn(model, x, batch=16)
    stem = model.stem(x)
    mean = stem.mean((0, 2, 3)).detach()
    torch.testing.assert_close(model.stem_bn.running_mean, mean, rtol=1e-4, atol=1e-4)
    assert not model.training


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("landscape.points", 4),
        ("landscape.grid", 1),
        ("images", 0),
        ("landscape.span", 0),
        ("lesion.draws", "x"),
    ],
)
def test_bad_settings_are_refused(key: str, value: object) -> None:
    probe = {
        "images": 8,
        "landscape": {k: v for k, v in LANDSCAPE.items() if k != "images"},
        "lesion": {"draws": 1, "seed": 0},
    }
    part, _, leaf = key.rpartition(".")
    (probe[part] if part else probe)[leaf] = value
    kind = part or "landscape"
    with pytest.raises(ProbeError, match=f"probe.{key}"):
        settings_of(probe, kind)


def test_initial_weights_are_those_training_started_from(tmp_path) -> None:
    """The probes rebuild a run's initial weights from its seed: the same tensors train built."""
    from degrade.config import compose_run
    from degrade.train import Trainer

    cfg = compose_run(["model.depth=8", "seed=3", f"out={tmp_path}", "trainer.threads=1"])
    started = Trainer(cfg).model.state_dict()
    subject = common.Subject("run", cfg, torch.device("cpu"), Trainer(cfg).data, images=32)
    rebuilt = subject.model("initial").state_dict()
    weights = [k for k in started if "running" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(started[k].cpu(), rebuilt[k]) for k in weights)
    other = (
        common.Subject(
            "run", compose_run(["model.depth=8", "seed=4"]), torch.device("cpu"), subject.data, images=32
        )
        .model("initial")
        .state_dict()
    )
    assert not torch.equal(other["stem.weight"], rebuilt["stem.weight"])
