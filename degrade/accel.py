"""Where and how a run computes: device choice, CPU threads, numeric precision."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from degrade import compute

# The names, the machine facts and the device choice live in compute (re-exported here).
from degrade.compute import (  # noqa: F401
    DEVICES,
    PRECISIONS,
    AccelError,
    resolve_device,
    usable_cores,
)


@dataclass(frozen=True)
class Accel:
    """The resolved compute setting of one run."""

    device: torch.device
    precision: str  # "fp32" or "bf16"
    channels_last: bool

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass, or nothing for fp32; ``cache=False`` for CUDA-graph capture."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        return contextlib.nullcontext()


def resolve(device: str, precision: str, channels_last: bool | None = None) -> Accel:
    """The compute setting for the names a config gives."""
    dev = resolve_device(device)
    prec = compute.resolve_precision(precision, dev.type)
    if channels_last is None:
        channels_last = dev.type in ("cuda", "cpu")
    return Accel(dev, prec, bool(channels_last))


def apply_numerics(acc: Accel) -> None:
    """Make ``fp32`` mean fp32: no TF32 in cuDNN convolutions or CUDA matmuls (process-wide).

    PyTorch lets cuDNN use TF32 by default, which rounds convolution inputs to 10 mantissa
    bits on Ampere and later GPUs; the exact path must not. Other precisions keep the defaults.
    """
    torch.backends.cudnn.allow_tf32 = acc.precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False


def new_stream(device: str) -> torch.cuda.Stream | None:
    """A CUDA stream of its own when ``device`` resolves to CUDA, else None.

    Runs trained together (`degrade sweep --together`) each issue their work on one, so their
    kernels overlap on the GPU instead of queueing behind each other on the default stream.
    """
    return torch.cuda.Stream() if resolve_device(device).type == "cuda" else None


def on_stream(stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager:
    """Make ``stream`` current for the body (nothing for None)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (default: every core this process may use); return the count."""
    threads = int(threads or usable_cores())
    torch.set_num_threads(threads)
    return threads


def gpu_count() -> int:
    """Number of CUDA GPUs visible (0 without CUDA); does not start CUDA."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_for_job(job_num: int, visible: str | None, count: int) -> str | None:
    """The one GPU (as a CUDA_VISIBLE_DEVICES value) job ``job_num`` should use, or None.

    None when there is at most one GPU: nothing to split.
    """
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    if len(ids) <= 1:
        return None
    return ids[job_num % len(ids)]
