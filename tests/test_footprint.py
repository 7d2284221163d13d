"""The memory estimate against real networks, and the refusal of one that cannot fit."""

import itertools
from pathlib import Path

import pytest
import torch

from degrade import footprint, memory
from degrade.config import ConfigError, compose_run
from degrade.footprint import Shapes, activation_bytes, parameter_count
from degrade.models import build_model, count_parameters
from degrade.spec import ModelSpec

DIGITS, CIFAR100 = Shapes((1, 8, 8), 10, 1797), Shapes((3, 32, 32), 100, 60000)
SPECS = [
    ModelSpec(family=f, depth=d, variant=v, shortcut=s, norm=n, block=b, width=8)
    for f, d, v, s, n, b in itertools.product(
        ("cnn", "mlp"), (8, 14), ("plain", "residual"), ("A", "B", "C"), ("batch", "none"), ("post", "pre")
    )
    if not (f == "mlp" and s == "A")
]


@pytest.mark.parametrize("shapes", [DIGITS, CIFAR100], ids=["digits", "cifar100"])
def test_parameter_count_without_building_equals_the_built_network(shapes):
    for spec in SPECS:
        assert parameter_count(spec, shapes) == count_parameters(
            build_model(spec, shapes.in_shape, shapes.classes)
        ), spec


def _saved_bytes(spec: ModelSpec, shapes: Shapes, batch: int) -> int:
    """Bytes of the activations autograd keeps for backward in one fp32 training forward pass
    (the weights it also keeps are counted with the parameters)."""
    torch.manual_seed(0)
    model = build_model(spec, shapes.in_shape, shapes.classes).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(torch.randn(batch, *shapes.in_shape)).sum()
    return sum(storages.values())


NETS = [ModelSpec(depth=20, variant=v, norm=n) for v in ("plain", "residual") for n in ("batch", "none")] + [
    ModelSpec(family="mlp", depth=8, shortcut="B", norm=n, width=64) for n in ("batch", "none")
]


@pytest.mark.parametrize("spec", NETS, ids=lambda s: f"{s.family}-{s.variant}-{s.norm}")
def test_activation_estimate_stays_above_what_torch_keeps_and_near_it(spec):
    for shapes in (DIGITS, Shapes((3, 32, 32), 10, 1)):
        measured = _saved_bytes(spec, shapes, 16)
        estimate = activation_bytes(spec, shapes, 16)
        assert measured <= estimate <= 4 * measured, (shapes, measured, estimate)


def test_a_network_that_cannot_fit_is_refused_saying_what_it_needs_and_has(monkeypatch):
    from degrade.sweep import check_fits

    cfg = compose_run(["model.depth=56", "trainer.device=cpu"])
    need = footprint.estimate(cfg).total
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    with pytest.raises(ConfigError, match=r"cnn-residual-56 needs about .* and cpu has .* available"):
        check_fits([cfg])
    monkeypatch.setattr(memory, "available_bytes", lambda device: need)
    check_fits([cfg])


def test_cpu_memory_is_read_from_the_kernel():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo on this system")
    total = next(
        int(line.split()[1]) * 1024
        for line in meminfo.read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    have = memory.available_bytes("cpu")
    assert have is not None and 0 < have <= total


def test_the_training_cost_orders_the_default_sweep_longest_first():
    # The order a sweep launches its runs in: residual before plain at a depth (the shortcut's
    # addition costs more), and every deeper pair before a shallower one.
    runs = [(v, d) for d in (8, 20, 56) for v in ("plain", "residual")]
    cost = {
        r: footprint.training_cost(compose_run([f"model.variant={r[0]}", f"model.depth={r[1]}"]))
        for r in runs
    }
    assert sorted(runs, key=lambda r: -cost[r]) == [
        ("residual", 56),
        ("plain", 56),
        ("residual", 20),
        ("plain", 20),
        ("residual", 8),
        ("plain", 8),
    ]
