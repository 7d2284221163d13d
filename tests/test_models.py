import pytest
import torch

from degrade.models import (
    BasicBlock,
    ModelError,
    ModelSpec,
    ShortcutA,
    build_model,
    count_parameters,
    weight_layers,
)

CIFAR = (3, 32, 32)


# He et al. (2015), Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters (option A).
@pytest.mark.parametrize(
    "depth, params, paper",
    [
        (20, 269_722, 0.27),
        (32, 464_154, 0.46),
        (44, 658_586, 0.66),
        (56, 853_018, 0.85),
        (110, 1_727_962, 1.7),
    ],
)
def test_cifar_resnet_parameter_counts_match_the_paper(depth, params, paper):
    model = build_model(ModelSpec(depth=depth), CIFAR, 10)
    n = count_parameters(model)
    assert n == params
    digits = 1 if paper >= 1 else 2
    assert round(n / 1e6, digits) == paper


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_cnn_has_depth_weight_layers_and_the_papers_shape(depth):
    model = build_model(ModelSpec(depth=depth), CIFAR, 10)
    layers = weight_layers(model)
    assert len(layers) == depth
    convs = [m for _, m in layers if isinstance(m, torch.nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    # Feature maps 32, 16, 8: check the sizes each stage sees.
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in convs]
    out = model(torch.randn(2, *CIFAR))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    assert sorted(set(sizes)) == [8, 16, 32]
    n = (depth - 2) // 6
    assert sizes.count(32) == 1 + 2 * n and sizes.count(8) == 2 * n


def test_plain_twin_has_no_shortcut_and_same_parameters_with_option_a():
    res = build_model(ModelSpec(depth=20, variant="residual"), CIFAR, 10)
    plain = build_model(ModelSpec(depth=20, variant="plain"), CIFAR, 10)
    assert count_parameters(res) == count_parameters(plain)
    assert all(b.shortcut is None for b in plain.blocks)
    assert all(isinstance(b.shortcut, ShortcutA) for b in res.blocks)
    # Same layer names and shapes: the twin is the same net minus the additions.
    assert [(k, v.shape) for k, v in res.state_dict().items()] == [
        (k, v.shape) for k, v in plain.state_dict().items()
    ]


def test_shortcut_options_b_and_c_add_projections_only_where_they_should():
    a = count_parameters(build_model(ModelSpec(depth=20, shortcut="A"), CIFAR, 10))
    b_model = build_model(ModelSpec(depth=20, shortcut="B"), CIFAR, 10)
    c_model = build_model(ModelSpec(depth=20, shortcut="C"), CIFAR, 10)
    b, c = count_parameters(b_model), count_parameters(c_model)
    # B: two projections (16->32, 32->64), each a 1x1 conv + BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert c > b
    assert sum(not isinstance(blk.shortcut, ShortcutA) for blk in b_model.blocks) == 2
    assert all(not isinstance(blk.shortcut, ShortcutA) for blk in c_model.blocks)


def test_option_a_zero_pads_channels_and_subsamples():
    s = ShortcutA(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = s(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_post_activation_block_is_relu_of_branch_plus_shortcut():
    spec = ModelSpec(depth=8)
    block = BasicBlock(spec, 16, 16, 1).eval()
    x = torch.randn(2, 16, 8, 8)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch + x))


@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_zero_init_makes_every_residual_block_start_as_identity(family):
    spec = ModelSpec(family=family, depth=8, zero_init_residual=True, width=16)
    model = build_model(spec, (1, 8, 8), 10).eval()
    block = model.blocks[0]
    x = torch.relu(torch.randn(4, 16, 8, 8) if family == "cnn" else torch.randn(4, 16))
    assert torch.allclose(block(x), x)


def test_mlp_block_matches_the_seed_formulation():
    spec = ModelSpec(family="mlp", depth=8, norm="none", width=8, zero_init_residual=False)
    model = build_model(spec, (1, 8, 8), 10)
    block = model.blocks[1]  # widths 8 -> 16: W_s projection
    a = torch.randn(3, 8)
    z1 = block.fc1(a)
    z2 = block.fc2(torch.relu(z1))
    expected = torch.relu(z2 + a @ block.shortcut.weight.T)
    assert torch.allclose(block(a), expected)
    assert isinstance(model.blocks[0].shortcut, torch.nn.Identity)


def test_mlp_widths_double_by_stage_and_depth_counts_weight_layers():
    model = build_model(ModelSpec(family="mlp", depth=20, width=32), (1, 8, 8), 10)
    assert len(weight_layers(model)) == 20
    widths = [b.fc2.out_features for b in model.blocks]
    assert widths == [32] * 3 + [64] * 3 + [128] * 3
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_mlp_zero_init_defaults_on_only_for_residual_without_bn():
    assert ModelSpec(family="mlp", norm="none").zero_init
    assert not ModelSpec(family="mlp", norm="batch").zero_init
    assert not ModelSpec(family="mlp", norm="none", variant="plain").zero_init
    assert not ModelSpec(family="cnn").zero_init
    model = build_model(ModelSpec(family="mlp", depth=8, norm="none"), (1, 8, 8), 10)
    assert all(torch.count_nonzero(b.fc2.weight) == 0 for b in model.blocks)


@pytest.mark.parametrize("block", ["post", "pre"])
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_every_option_builds_and_runs(family, norm, block):
    spec = ModelSpec(family=family, depth=8, norm=norm, block=block)
    model = build_model(spec, CIFAR, 100)
    out = model(torch.randn(3, *CIFAR))
    assert out.shape == (3, 100)
    out.sum().backward()


@pytest.mark.parametrize("depth", [7, 9, 21, 4, 0])
def test_cnn_depth_that_is_not_6n_plus_2_names_the_valid_depths(depth):
    with pytest.raises(ModelError, match=r"6n\+2.*8, 14, 20"):
        build_model(ModelSpec(depth=depth), CIFAR, 10)


def test_bad_mlp_depth_and_variant_are_refused():
    with pytest.raises(ModelError, match="even"):
        build_model(ModelSpec(family="mlp", depth=7), CIFAR, 10)
    with pytest.raises(ModelError, match="unknown variant"):
        build_model(ModelSpec(variant="highway"), CIFAR, 10)
