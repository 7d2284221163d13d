"""The training step, by the path a run computes it on.

Every path does the same arithmetic: forward, cross-entropy, backward, SGD with momentum and
weight decay, and sums of the loss and of the wrong predictions kept on the device. They differ
in how the work reaches the device:

- ``exact``: eager PyTorch with ``degrade.sgd.SGD`` (``torch.optim.SGD``'s arithmetic) and the
  learning rate as a Python float.
- ``eager``: eager PyTorch with the tensor-lr update below: exactly what ``graph`` captures.
- ``graph`` (CUDA): the whole step, update and metric sums included, captured once as a CUDA
  graph and replayed, so a step costs one launch instead of hundreds.

Outside ``exact`` the learning rate lives in a device tensor that the step reads, so a schedule
changes it without recapturing anything and without waiting for the device.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from degrade.accel import Accel
from degrade.sgd import SGD

log = logging.getLogger("degrade")


def momentum_buffers(opt: SGD) -> list[torch.Tensor]:
    """The momentum buffer of every parameter, created as zeros where the optimizer has none yet.

    They live in the optimizer's own state, so its ``state_dict`` (and so a checkpoint) is the
    same on every path. Zeros give the first step torch's own result: ``0 * m + g == g``.
    """
    bufs = []
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
    return bufs


def sgd_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor],
    lr: torch.Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    """``torch.optim.SGD``'s update (no dampening) with the learning rate read from a tensor.

    Nothing here reads a value back to the host, so it can be captured in a CUDA graph.
    """
    if weight_decay:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    steps = grads
    if momentum:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        steps = list(torch._foreach_add(grads, bufs, alpha=momentum)) if nesterov else bufs
    torch._foreach_sub_(params, torch._foreach_mul(steps, lr))


class Step:
    """One run's training step on its path, with the epoch's loss and error sums on the device.

    Call ``set_lr`` before a step, the step itself with an (already augmented) batch, and
    ``sums`` once per epoch: that is the only place the host waits for the device.
    """

    def __init__(self, model: torch.nn.Module, opt: SGD, acc: Accel, path: str) -> None:
        self.model, self.opt, self.acc, self.path = model, opt, acc, path
        dev = acc.device
        self.loss_sum = torch.zeros((), device=dev)
        self.wrong = torch.zeros((), device=dev, dtype=torch.long)
        self.lr = torch.zeros((), device=dev)
        group = opt.param_groups[0]
        self._hyper = (float(group["momentum"]), float(group["weight_decay"]), bool(group["nesterov"]))
        self._lr_float = 0.0
        self._params = [p for g in opt.param_groups for p in g["params"]]
        # Each group's share of the parameters and its factor on the learning rate (a cure's
        # scalars may train at a fraction of it).
        self._scales = [(len(g["params"]), float(g.get("lr_scale", 1.0))) for g in opt.param_groups]
        self._bufs: list[torch.Tensor] | None = None
        self._graph: Any = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eager_steps = 0
        self.setup_seconds = 0.0  # time spent capturing the CUDA graph

    @property
    def captured(self) -> bool:
        """Whether the step now replays a CUDA graph."""
        return self._graph is not None

    # -- the arithmetic, shared by every path ---------------------------------------------

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # The autocast cache must be off for CUDA-graph capture; at one forward per step it saves nothing.
        with self.acc.autocast(cache=False):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        with torch.no_grad():
            self.loss_sum.add_(loss.detach() * y.shape[0])
            self.wrong.add_((logits.detach().argmax(1) != y).sum())

    def _tensor_lr_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward and the tensor-lr update, onto gradients the backward creates."""
        self._forward_backward(x, y)
        if self._bufs is None:
            self._bufs = momentum_buffers(self.opt) if self._hyper[0] else []
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            raise RuntimeError("a parameter got no gradient; the tensor-lr update needs them all")
        with torch.no_grad():
            start = 0
            for count, scale in self._scales:
                part = slice(start, start + count)
                bufs = self._bufs[part] if self._bufs else []
                lr = self.lr if scale == 1.0 else self.lr * scale
                sgd_update(self._params[part], grads[part], bufs, lr, *self._hyper)
                start += count

    # -- the public interface -----------------------------------------------------------------

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next step (no host wait: an asynchronous fill on the device)."""
        self._lr_float = lr
        if self.path != "exact":
            self.lr.fill_(lr)

    def reset_sums(self) -> None:
        """Start an epoch's loss and error sums at zero."""
        self.loss_sum.zero_()
        self.wrong.zero_()

    def sums(self) -> tuple[float, int]:
        """The loss sum and the count of wrong predictions since ``reset_sums`` (waits for the device)."""
        return float(self.loss_sum.item()), int(self.wrong.item())

    def forget_state(self) -> None:
        """Drop anything bound to the optimizer's tensors (after its state was loaded anew)."""
        self._bufs = None
        self._graph = self._static = None
        self._eager_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on the batch (x, y)."""
        if self.path == "exact":
            for group in self.opt.param_groups:
                group["lr"] = self._lr_float * float(group.get("lr_scale", 1.0))
            self.opt.zero_grad()
            self._forward_backward(x, y)
            self.opt.step()
        elif self.path == "graph":
            self._graph_step(x, y)
        else:
            self._eager_step(x, y)

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad()
        self._tensor_lr_step(x, y)

    # -- CUDA graph --------------------------------------------------------------------------

    WARMUP_STEPS = 3  # eager steps (real ones) before capture, so lazy initialisation is not captured

    def _graph_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        static = self._static
        if self._graph is not None and static is not None and static[0].shape == x.shape:
            static[0].copy_(x)
            static[1].copy_(y)
            self._graph.replay()
            return
        if self._graph is not None or self._eager_steps < self.WARMUP_STEPS:
            # A batch of another shape (an epoch's last) or a warm-up step: the same step, eagerly,
            # on a side stream as capture requires of warm-up work.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager_step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_steps += 1
            return
        self._capture(x, y)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        static = (x.clone(), y.clone())
        self.opt.zero_grad()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads of the process (the progress display, a data loader)
            # must not invalidate the capture. Runs trained together are interleaved from one
            # thread, so no other run issues work while this step is recorded.
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(), capture_error_mode="thread_local"):
                self._tensor_lr_step(*static)
        except RuntimeError as e:
            # Capture records without running, so this step has not happened yet: take it eagerly
            # and stay eager for the rest of the run.
            log.warning("CUDA graph capture failed (%s); this run continues eagerly", e)
            torch.cuda.synchronize()
            self.path = "eager"
            self._eager_step(x, y)
            self.setup_seconds += time.perf_counter() - start
            return
        self._graph, self._static = graph, static
        graph.replay()  # the step the capture stood for
        self.setup_seconds += time.perf_counter() - start
