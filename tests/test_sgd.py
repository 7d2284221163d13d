"""degrade's SGD steps as torch.optim.SGD steps on the CPU (its default there: one tensor at a
time), bit for bit, and shares its checkpoint layout."""

import copy
import subprocess
import sys

import pytest
import torch

from degrade.models import ModelSpec, build_model
from degrade.sgd import SGD

HYPER = [
    {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False},
    {"momentum": 0.9, "weight_decay": 1e-3, "nesterov": True},
    {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
]
RATES = [0.1, 0.1, 0.01, 0.5, 0.001]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(depth=8, width=4), (1, 8, 8), 10).train()


def _groups(model: torch.nn.Module) -> list[dict]:
    """Two groups, the second at a tenth of the learning rate (as a cure's scalars train)."""
    params = list(model.parameters())
    return [{"params": params[:-2], "lr_scale": 1.0}, {"params": params[-2:], "lr_scale": 0.1}]


def _train(model: torch.nn.Module, opt, rates: list[float], seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for rate in rates:
        for group in opt.param_groups:
            group["lr"] = rate * group["lr_scale"]
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("hyper", HYPER, ids=["momentum", "nesterov", "plain"])
def test_the_steps_are_torch_sgds_bit_for_bit(hyper):
    ours, theirs = _net(), _net()
    opt = SGD(_groups(ours), lr=0.1, **hyper)
    ref = torch.optim.SGD(_groups(theirs), lr=0.1, **hyper)
    _train(ours, opt, RATES)
    _train(theirs, ref, RATES)
    assert _same(ours, theirs)
    mine, torchs = opt.state_dict(), ref.state_dict()
    assert mine["param_groups"] == torchs["param_groups"]  # every key and value, lr_scale included
    assert mine["state"].keys() == torchs["state"].keys()
    for k, v in torchs["state"].items():
        assert v.keys() == mine["state"][k].keys()
        assert all(torch.equal(mine["state"][k][n], t) for n, t in v.items())


def test_a_checkpoint_of_either_loads_into_the_other_and_trains_on_alike():
    hyper = HYPER[0]
    start = _net()
    ref = torch.optim.SGD(_groups(start), lr=0.1, **hyper)
    _train(start, ref, RATES[:2])
    saved = copy.deepcopy({"model": start.state_dict(), "optimizer": ref.state_dict()})

    def resumed(kind):
        model = _net()
        model.load_state_dict(saved["model"])
        opt = (SGD if kind == "ours" else torch.optim.SGD)(_groups(model), lr=0.5, **hyper)
        opt.load_state_dict(copy.deepcopy(saved["optimizer"]))
        return model, opt

    (a, opt_a), (b, opt_b) = resumed("ours"), resumed("torch")
    # The saved hyperparameters win over the new ones, as in torch.
    assert [g["lr"] for g in opt_a.param_groups] == [g["lr"] for g in opt_b.param_groups]
    _train(a, opt_a, RATES[2:], seed=2)
    _train(b, opt_b, RATES[2:], seed=2)
    assert _same(a, b)
    # And ours back into torch's.
    c = _net()
    c.load_state_dict(a.state_dict())
    opt_c = torch.optim.SGD(_groups(c), lr=0.5, **hyper)
    opt_c.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _train(a, opt_a, RATES[:2], seed=3)
    _train(c, opt_c, RATES[:2], seed=3)
    assert _same(a, c)


def test_a_state_of_other_groups_is_refused():
    model = _net()
    opt = SGD(_groups(model), lr=0.1, momentum=0.9)
    _train(model, opt, RATES[:1])
    other = SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="number of parameter groups"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(model.parameters(), lr=0.1, nesterov=True)


def test_training_a_run_does_not_import_the_compiler(tmp_path):
    # The point of the class: torch.optim would import torch._dynamo, a second per process.
    code = (
        "import sys\n"
        "from degrade.config import compose_run\n"
        "from degrade.train import train_run\n"
        "cfg = compose_run(['model.depth=8', 'trainer.threads=1', 'trainer.epochs=1'])\n"
        f"train_run(cfg, {str(tmp_path)!r})\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
