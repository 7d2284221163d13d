"""The training step's paths: the tensor-lr update and eager step that a CUDA graph captures."""

import pytest
import torch
from pandas import read_parquet

from degrade.accel import resolve
from degrade.config import compose_run
from degrade.models import ModelSpec, build_model
from degrade.step import Step, sgd_update
from degrade.train import Trainer, train_run
from tests.conftest import run_cli

SMALL = ["model.depth=8", "trainer.threads=1", "trainer.diagnostics=false"]


@pytest.mark.parametrize("nesterov", [False, True])
def test_tensor_lr_update_is_torch_sgd_while_the_lr_changes(nesterov):
    torch.manual_seed(0)
    ours = [torch.randn(5, 3), torch.randn(7)]
    theirs = [p.clone().requires_grad_() for p in ours]
    opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    bufs = [torch.zeros_like(p) for p in ours]
    lr = torch.zeros(())
    for k, rate in enumerate([0.1, 0.1, 0.01, 0.5]):
        grads = [torch.randn_like(p) for p in ours]
        lr.fill_(rate)  # the same tensor every step: what a captured graph reads
        sgd_update(ours, grads, bufs, lr, 0.9, 1e-3, nesterov)
        for p, g in zip(theirs, grads, strict=True):
            p.grad = g.clone()
        opt.param_groups[0]["lr"] = rate
        opt.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7, msg=f"step {k}")


def _tiny_step(path):
    torch.manual_seed(0)
    model = build_model(ModelSpec(depth=8, width=4), (1, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    return Step(model, opt, resolve("cpu", "fp32", False), path), model, x, y


def test_the_schedule_reaches_inside_the_fast_step_through_its_lr_tensor():
    step, model, x, y = _tiny_step("eager")
    lr_tensor = step.lr
    step.set_lr(0.1)
    step(x, y)  # builds momentum, moves the weights
    before = [p.detach().clone() for p in model.parameters()]
    step.set_lr(0.0)
    step(x, y)
    assert step.lr is lr_tensor and float(step.lr) == 0.0
    after_zero = [p.detach().clone() for p in model.parameters()]
    # lr 0: the weights stay (BN statistics and momentum still move, as torch's SGD would).
    assert all(torch.equal(a, b) for a, b in zip(before, after_zero, strict=True))
    step.set_lr(0.05)
    step(x, y)
    moved = [p.detach() - a for p, a in zip(model.parameters(), after_zero, strict=True)]
    bufs = [step.opt.state[p]["momentum_buffer"] for p in model.parameters()]
    for m, b in zip(moved, bufs, strict=True):
        torch.testing.assert_close(m, -0.05 * b, rtol=1e-4, atol=1e-6)  # rounding of p - p0


# Each precision's code path runs on every CPU (bf16 slowly where the CPU has no bf16 units, so
# these nets are narrow); a tolerance holds for the precision it is written for.
PRECISIONS = pytest.mark.parametrize("precision", ["fp32", "bf16"])
# (first epoch, later epochs): how far two paths that differ only in the order of the update's
# float operations may drift apart. bf16 rounds activations to 8 bits of mantissa, so a weight
# that moves by one fp32 ulp can flip a rounding and the drift is coarser.
DRIFT = {"fp32": (1e-6, 1e-3), "bf16": (1e-3, 3e-2)}


@PRECISIONS
def test_the_fast_path_trains_as_the_exact_path_within_tolerance(precision):
    rows = {}
    for path in ("exact", "eager"):
        t = Trainer(
            compose_run(
                SMALL
                + [
                    f"trainer.path={path}",
                    "trainer.epochs=3",
                    "model.width=4",
                    f"trainer.precision={precision}",
                ]
            )
        )
        assert t.stepper.path == path and t.acc.precision == precision
        rows[path] = [t.train_epoch() for _ in range(3)]
    first, later = DRIFT[precision]
    # Same batches and arithmetic; only the order of float operations in the update differs.
    assert rows["exact"][0]["train_loss"] == pytest.approx(rows["eager"][0]["train_loss"], rel=first)
    for a, b in zip(rows["exact"], rows["eager"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=later)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=later)
        assert a["scheduled_lr"] == b["scheduled_lr"]


@PRECISIONS
def test_a_fast_run_resumes_bit_for_bit_and_keeps_torch_checkpoint_format(precision):
    cfg = SMALL + [
        "trainer.path=eager",
        "trainer.epochs=2",
        "model.width=4",
        f"trainer.precision={precision}",
    ]
    whole = Trainer(compose_run(cfg))
    full = [whole.train_epoch() for _ in range(2)]
    first = Trainer(compose_run(cfg))
    first.train_epoch()
    state = first.state()
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    resumed = Trainer(compose_run(cfg))
    resumed.load_state(state)
    second = resumed.train_epoch()
    assert second["train_loss"] == full[1]["train_loss"] and second["test_loss"] == full[1]["test_loss"]


def test_the_path_is_recorded_and_not_part_of_the_run_identity(tmp_path):
    a = train_run(compose_run(SMALL + ["trainer.epochs=1", "trainer.path=eager"]), tmp_path)
    b = compose_run(SMALL + ["trainer.epochs=1", "trainer.path=exact"])
    from degrade.runids import run_id
    from degrade.store import RunDir

    assert run_id(b) == a.run_id
    frame = read_parquet(RunDir(tmp_path, a.run_id).metrics)
    assert frame["step_path"].tolist() == ["eager"] and frame["setup_seconds"].tolist() == [0.0]


@pytest.mark.parametrize(
    ("value", "words"), [("graph", "needs a CUDA device"), ("fast", "unknown step path")]
)
def test_a_path_this_machine_cannot_run_is_one_line_and_exit_2(capsys, tmp_path, value, words):
    if value == "graph" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["train", f"trainer.path={value}", f"out={tmp_path}"], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_fp32_means_no_tf32_and_auto_is_the_default():
    from omegaconf import OmegaConf

    from degrade.config import config_dir

    assert OmegaConf.load(config_dir() / "config.yaml").trainer.precision == "auto"
    t = Trainer(compose_run(SMALL))  # auto: what this CPU computes natively
    native = t.acc.precision == "bf16"
    assert torch.backends.cudnn.allow_tf32 is native
    Trainer(compose_run(SMALL + ["trainer.precision=bf16"]))
    assert torch.backends.cudnn.allow_tf32 is True
    Trainer(compose_run(SMALL + ["trainer.precision=fp32"]))
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
