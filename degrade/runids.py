"""Run ids: what names a run in the store, computed from the part of its config that decides its
results, and the check that a name read back from a file is such an id and nothing more."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from degrade import compute

# How a run computes, not what: the device, its threads and the step path (all within rounding).
# The probe settings measure a finished run afterwards; each probe file records its own.
_NOT_IDENTITY = (
    "out",
    "name",
    "sweep",
    "probe",
    "trainer.device",
    "trainer.threads",
    "trainer.path",
    "trainer.tensorboard",
)

# What run_id makes: family-variant-depth-s<seed>-<hash>, letters, digits and a few marks.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def is_run_id(rid: object) -> bool:
    """Whether ``rid`` is a plain run id: a name directly inside ``runs/``, never a path."""
    return isinstance(rid, str) and RUN_ID.fullmatch(rid) is not None and ".." not in rid


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a resolved config that decides a run's results."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(container, dict):
        raise TypeError(f"a run config is a mapping, not {type(container).__name__}")
    plain: dict[str, Any] = {str(k): v for k, v in container.items()}
    plain.pop("hydra", None)
    trainer = plain.get("trainer")
    if isinstance(trainer, dict) and trainer.get("precision") == "auto":
        # What auto becomes here: the id names the numerics that run, not the word "auto".
        trainer["precision"] = compute.resolve_precision("auto", compute.device_type(str(trainer["device"])))
    for key in _NOT_IDENTITY:
        node: Any = plain
        *parents, last = key.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return plain


def run_id(cfg: DictConfig) -> str:
    """A readable, stable name for the run ``cfg`` describes: family-variant-depth-seed-hash."""
    identity = identity_config(cfg)
    if identity.get("cure") == {"name": "none"}:
        # The nets of before the cure axis: their runs keep the ids stores already hold.
        identity.pop("cure")
    blob = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    m = cfg.model
    return f"{m.family}-{m.variant}-{m.depth}-s{cfg.seed}-{digest}"
