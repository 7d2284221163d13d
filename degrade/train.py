"""One training run: build, train, evaluate each epoch, persist, resume.

The data order and augmentation of epoch ``e`` come from a generator seeded by
``(seed, e)``, so a run resumed from its last epoch checkpoint sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from degrade import accel as accel_mod
from degrade import diagnostics, environment, hold, tblog
from degrade.atomic import save_checkpoint, write_rows_atomic
from degrade.compute import step_path
from degrade.data import Dataset, augment_batch, load_dataset
from degrade.job import RunResult, Steps, drain, process_started
from degrade.models import build_model, evaluate, param_groups
from degrade.packed import Packer
from degrade.runids import run_id
from degrade.sgd import SGD
from degrade.spec import model_spec
from degrade.step import Step
from degrade.store import RunDir, current_row, device_change, load_checkpoint, recorded_threads

log = logging.getLogger("degrade")
EpochCallback = Callable[[dict[str, Any]], None]
# The parts of a Trainer's state that are plain data: its metrics rows, one per epoch and layer.
PLAIN_STATE = ("rows", "layer_rows")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class ResumeError(RuntimeError):
    """A run's checkpoint was made on another kind of device than this session would use."""


def lr_at(it: int, total: int, optim: DictConfig) -> float:
    """Learning rate at iteration ``it`` of ``total``: linear warm-up, then steps of ``gamma``.

    Milestones are fractions of the total iterations, so one schedule fits any run length
    (the paper's 32k/48k of 64k are 0.5 and 0.75).
    """
    lr = float(optim.lr)
    warm = int(optim.warmup_iters)
    if it < warm:
        start = float(optim.warmup_factor)
        # "constant" is the paper's ResNet-110 warm-up: a small lr, then the full one.
        lr *= start if optim.get("warmup", "linear") == "constant" else start + (1.0 - start) * it / warm
    passed = sum(1 for m in optim.milestones if it >= round(float(m) * total))
    return lr * float(optim.gamma) ** passed


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + epoch)
    return gen


class Trainer:
    """Holds the model, optimizer and data of one run and trains it epoch by epoch."""

    def __init__(self, cfg: DictConfig, data: Dataset | None = None) -> None:
        self.cfg = cfg
        t = cfg.trainer
        self.threads = accel_mod.set_threads(t.threads)
        self.acc = accel_mod.resolve(t.device, t.precision, t.channels_last)
        accel_mod.apply_numerics(self.acc)
        fmt = torch.channels_last if self.acc.channels_last else None
        # When each part of the set-up ended (time.time()), for the session's timeline.
        self.marks = {"job_started": time.time()}
        raw = data if data is not None else load_dataset(cfg.data)
        self.data = raw.to(self.acc.device, memory_format=fmt if cfg.model.family == "cnn" else None)
        self.marks["data_loaded"] = time.time()
        torch.manual_seed(int(cfg.seed))
        self.model = build_model(model_spec(cfg), self.data.in_shape, self.data.num_classes)
        self.model.to(self.acc.device)
        if fmt is not None and cfg.model.family == "cnn":
            self.model.to(memory_format=fmt)  # type: ignore[call-overload]  # Module.to takes it; its stubs do not say
        o = cfg.optim
        self.opt = SGD(
            param_groups(self.model),
            lr=float(o.lr),
            momentum=float(o.momentum),
            weight_decay=float(o.weight_decay),
            nesterov=bool(o.nesterov),
        )
        self.stepper = Step(self.model, self.opt, self.acc, step_path(str(t.path), self.acc.device.type))
        self.marks["model_built"] = time.time()
        self.batch = int(t.batch_size)
        self.augment = bool(self.data.augment and cfg.data.augment)
        n = len(self.data.x_train)
        self.steps_per_epoch = math.ceil(n / self.batch)
        iters = t.get("iterations")
        self.total_iters = int(iters) if iters else int(t.epochs) * self.steps_per_epoch
        self.epochs = math.ceil(self.total_iters / self.steps_per_epoch)
        self.iteration = 0
        self.epoch = 0
        self.rows: list[dict[str, Any]] = []  # one metrics row per finished epoch
        self.layer_rows: list[dict[str, Any]] = []  # per-layer diagnostics, every epoch
        self.hold = hold.from_env()  # a test's pause point; None in normal use
        self.packer = Packer()  # the checkpoint's flat tensors, kept from epoch to epoch
        k = int(t.diagnostics_batch) if t.diagnostics else 0
        # A fixed batch: the first k training images, never augmented.
        self.diag_batch = (self.data.x_train[:k], self.data.y_train[:k]) if k else None

    # -- persistence -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly after the last finished epoch (its
        ``PLAIN_STATE`` parts hold no tensors)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "device": self.acc.device.type,  # a run resumes on the same kind of device only
            "threads": self.threads,  # and with the CPU threads it began with (see keep_threads)
            "epoch": self.epoch,
            "iteration": self.iteration,
            "rows": list(self.rows),
            "layer_rows": list(self.layer_rows),
        }

    def keep_threads(self, began: int) -> None:
        """Train on with the ``began`` CPU threads the run began with.

        On the CPU the order of a reduction's partial sums depends on the thread count, so a run
        resumed with another count would not end as an uninterrupted run ends. The count is
        not part of the run's id (a rerun with other parallelism finds its finished runs): a
        run keeps it for life instead, as it keeps its device type.
        """
        self.threads = accel_mod.set_threads(began)
        self.cfg.trainer.threads = began

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``state()`` snapshot."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.stepper.forget_state()  # the optimizer's buffers are new tensors now
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.rows = [current_row(r) for r in state["rows"]]
        self.layer_rows = list(state.get("layer_rows", []))

    # -- one epoch ---------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, gen: torch.Generator) -> None:
        """One optimizer step on batch (x, y) at learning rate ``lr``, augmenting it first.

        Nothing here waits for the device: the step adds to sums that are read once per epoch.
        """
        if self.augment:
            x = augment_batch(x, gen)
        self.stepper.set_lr(lr)
        self.stepper(x, y)

    def train_epoch(self) -> dict[str, Any]:
        """Train one epoch and evaluate; return its metrics row."""
        return drain(self.epoch_steps())

    def epoch_steps(self) -> Steps[dict[str, Any]]:
        """``train_epoch`` one optimizer step at a time (runs trained together interleave so)."""
        d, model, acc = self.data, self.model, self.acc
        seed = int(self.cfg.seed)
        start = time.perf_counter()
        gen_cpu = _epoch_generator(seed, self.epoch, torch.device("cpu"))
        order = torch.randperm(len(d.x_train), generator=gen_cpu).to(acc.device)
        gen_aug = _epoch_generator(seed, self.epoch, acc.device)
        model.train()
        self.stepper.reset_sums()
        setup_before = self.stepper.setup_seconds
        seen = 0
        lr = lr_at(self.iteration, self.total_iters, self.cfg.optim)
        for i in range(0, len(order), self.batch):
            if self.iteration >= self.total_iters:
                break
            idx = order[i : i + self.batch]
            lr = lr_at(self.iteration, self.total_iters, self.cfg.optim)
            self.step(d.x_train[idx], d.y_train[idx], lr, gen_aug)
            seen += len(idx)
            self.iteration += 1
            if self.hold is not None:
                self.hold(self.iteration)
            yield
        loss_sum, wrong = self.stepper.sums()
        train_loss = loss_sum / max(seen, 1)
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} in epoch {self.epoch + 1}")
        if self.diag_batch is not None:
            for r in diagnostics.measure(model, *self.diag_batch, acc.autocast()):
                self.layer_rows.append({"epoch": self.epoch + 1, **r})
        model.eval()
        test_loss, test_error = evaluate(
            model, d.x_test, d.y_test, int(self.cfg.trainer.eval_batch_size), acc.autocast
        )
        self.epoch += 1
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "scheduled_lr": lr,
            "train_loss": train_loss,
            "train_error": wrong / max(seen, 1),
            "test_loss": test_loss,
            "test_error": test_error,
            "epoch_seconds": time.perf_counter() - start,
            "images_per_second": seen / train_seconds if train_seconds > 0 else float("nan"),
            "step_path": self.stepper.path,
            "setup_seconds": self.stepper.setup_seconds - setup_before,
            "ended": time.time(),
        }


def _row_header(cfg: DictConfig, rid: str, acc: accel_mod.Accel) -> dict[str, Any]:
    m = cfg.model
    return {
        "run_id": rid,
        "family": m.family,
        "variant": m.variant,
        "depth": int(m.depth),
        "shortcut": str(m.shortcut),
        "seed": int(cfg.seed),
        "dataset": cfg.data.name,
        "device": acc.device.type,
        "precision": acc.precision,
    }


def _write_layers(run: RunDir, trainer: Trainer) -> None:
    if trainer.layer_rows:
        write_rows_atomic(run.layers, [{"run_id": run.id, **r} for r in trainer.layer_rows])


def _timeline(trainer: Trainer) -> dict[str, float]:
    """Seconds from this process's start to each part of the run's set-up."""
    start = process_started()
    return {
        "process_started": round(start, 3),
        **{k: round(v - start, 3) for k, v in trainer.marks.items()},
        "training_started": round(time.time() - start, 3),
    }


def train_run(
    cfg: DictConfig,
    out: Path | None = None,
    on_epoch: EpochCallback | None = None,
    data: Dataset | None = None,
) -> RunResult:
    """Train the run ``cfg`` describes; with ``out``, persist it there and resume what exists.

    A loss that stops being finite ends the run with state ``diverged`` rather than raising.
    """
    return drain(run_steps(cfg, out, on_epoch, data))


def run_steps(
    cfg: DictConfig,
    out: Path | None = None,
    on_epoch: EpochCallback | None = None,
    data: Dataset | None = None,
) -> Steps[RunResult]:
    """``train_run`` one optimizer step at a time: the run is set up at the first ``next``."""
    rid = run_id(cfg)
    run = RunDir(out, rid) if out is not None else None
    trainer = Trainer(cfg, data)
    # What the model was built with that the run should say (a cure's fallback at this depth).
    warnings: list[str] = list(getattr(trainer.model, "notes", []))
    if run is not None:
        ckpt = load_checkpoint(run.checkpoint, warn=warnings.append)
        if ckpt is not None:
            before, now = ckpt.get("device", trainer.acc.device.type), trainer.acc.device.type
            if before != now:  # the sweep refuses this before launching; a lone job says so here
                raise ResumeError(device_change(rid, before, now))
            # On the CPU its thread count shapes a run's numbers; a GPU's kernels do not use it.
            began = (ckpt.get("threads") or recorded_threads(run)) if now == "cpu" else None
            if isinstance(began, int) and began >= 1 and began != trainer.threads:
                warnings.append(
                    f"resumed on {began} CPU thread{'s' if began != 1 else ''}, the count it "
                    f"began with, not {trainer.threads}: a run keeps its thread count so that "
                    "it ends as an uninterrupted run would"
                )
                trainer.keep_threads(began)
            # The checkpoint holds the rows up to its epoch: rewriting the metrics from it
            # drops a row of an epoch that is trained again and mends a damaged file.
            trainer.load_state(ckpt)
            write_rows_atomic(run.metrics, trainer.rows)
            _write_layers(run, trainer)
        run.write_config(cfg)  # with the thread count the run trains with
        run.begin_session(
            trainer.epoch,
            trainer.epochs,
            environment=environment.of_run(trainer.acc),
            timeline=_timeline(trainer),
        )
        if warnings:
            # The console shows them from here, whichever process or machine trains the run.
            run.set_status("running", epochs_done=trainer.epoch, epochs=trainer.epochs, warnings=warnings)
    rows = trainer.rows
    header = _row_header(cfg, rid, trainer.acc)
    where = run.path if run else None
    with tblog.epoch_log(cfg, where, rows, trainer.layer_rows) as live:
        while trainer.epoch < trainer.epochs:
            try:
                row = {**header, **(yield from trainer.epoch_steps())}
            except Diverged as e:
                if run is not None:
                    run.set_status(
                        "diverged",
                        error=str(e),
                        epochs_done=trainer.epoch,
                        epochs=trainer.epochs,
                        warnings=warnings,
                    )
                return RunResult(
                    rid, "diverged", trainer.epoch, rows[-1] if rows else {}, str(e), where, warnings
                )
            rows.append(row)
            if run is not None:
                save_checkpoint(run.checkpoint, trainer.packer.pack(trainer.state(), plain=PLAIN_STATE))
                write_rows_atomic(run.metrics, rows)
                _write_layers(run, trainer)
                run.set_status(
                    "running",
                    epochs_done=trainer.epoch,
                    epochs=trainer.epochs,
                    train_error=row["train_error"],
                    warnings=warnings,
                )
            if live is not None:
                live.write(row, trainer.layer_rows)
            if on_epoch is not None:
                on_epoch({**row, "epochs": trainer.epochs})
    final = rows[-1] if rows else {}
    if run is not None:
        run.set_status(
            "done",
            epochs_done=trainer.epoch,
            epochs=trainer.epochs,
            train_error=final.get("train_error"),
            test_error=final.get("test_error"),
            warnings=warnings,
        )
    return RunResult(rid, "done", trainer.epoch, final, None, where, warnings)
