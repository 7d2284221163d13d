"""Compose and check run configs from the YAML files shipped in ``configs/``."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from degrade import accel, tblog
from degrade.data import DATASETS
from degrade.models import ModelError, check_spec
from degrade.step import PathError, resolve_path

CONFIG_NAME = "config"
_WHOLE = ("seed", "model.depth", "model.width", "trainer.epochs", "trainer.batch_size",
          "trainer.eval_batch_size", "optim.warmup_iters")
_REAL = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.gamma", "optim.warmup_factor")


def _deep_only(depth: int, min_depth: int, value: int) -> int:
    """``value`` for nets of at least ``min_depth`` layers, else 0 (the paper's ResNet-110 warm-up)."""
    return int(value) if int(depth) >= int(min_depth) else 0


OmegaConf.register_new_resolver("deep_only", _deep_only, replace=True)


class ConfigError(ValueError):
    """A config a user composed that cannot run; the message is one line."""


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and the groups (shipped inside the package)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise ConfigError(f"the configs folder is missing from the installation ({here})")


@contextlib.contextmanager
def hydra_context(job_name: str = "degrade") -> Iterator[None]:
    """Hydra initialised on the shipped configs, cleared again afterwards."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name=job_name):
        yield


def one_line(err: BaseException) -> str:
    """A one-line message for a Hydra / OmegaConf error, naming the offending key or option."""
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Could not override" in text and err.__cause__ is not None:
        key = lines[0].split("'")[1] if "'" in lines[0] else ""
        return f"unknown config key {key!r}; see `degrade show` for the keys there are"
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options, listing = [], False
        for ln in lines:
            if ln.startswith("Available options in"):
                listing = True
            elif ln.startswith("Config search path"):
                break
            elif listing:
                options.append(ln)
        choose = f"; choose one of {', '.join(options)}" if options else ""
        if group:
            return f"unknown {group} option {option!r}{choose}"
        return f"config {option!r} not found"
    if lines and lines[0].startswith("In '") and len(lines) > 1:
        lines = lines[1:]
    return lines[0] if lines else err.__class__.__name__


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError when ``cfg`` names a model, dataset or device that cannot run."""
    from degrade.train import model_spec

    for key in _WHOLE:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
    for key in _REAL:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        check_spec(model_spec(cfg))
        if cfg.data.name not in DATASETS:
            raise ConfigError(
                f"unknown dataset {cfg.data.name!r}; choose one of {', '.join(DATASETS)}"
            )
        accel.resolve_precision(cfg.trainer.precision, accel.resolve_device("cpu"))
        resolve_path(str(cfg.trainer.path), accel.resolve_device(cfg.trainer.device))
        if int(cfg.trainer.batch_size) < 1 or int(cfg.trainer.epochs) < 1:
            raise ConfigError("trainer.batch_size and trainer.epochs must be at least 1")
        if not isinstance(cfg.trainer.get("tensorboard", False), bool):
            raise ConfigError(f"trainer.tensorboard must be true or false, got {cfg.trainer.tensorboard!r}")
        if tblog.wanted(cfg) and not tblog.available():
            raise ConfigError(tblog.MISSING)
    except (ModelError, accel.AccelError, PathError) as e:
        raise ConfigError(str(e)) from None
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"invalid config value: {one_line(e)}") from None


def compose_run(overrides: list[str]) -> DictConfig:
    """The validated config of one run; ConfigError on any composition or value problem."""
    combos = expand_overrides(overrides)
    if len(combos) > 1:
        raise ConfigError("these overrides sweep several values; use `degrade sweep` for a grid")
    try:
        with hydra_context():
            cfg = compose(CONFIG_NAME, overrides=combos[0])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
    validate(cfg)
    return cfg


def expand_overrides(overrides: list[str]) -> list[list[str]]:
    """Every combination of a list of overrides that may hold Hydra sweeps (``a=1,2``)."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as e:
            raise ConfigError(f"bad override {text!r}: {one_line(e)}") from None
    choices = []
    for text, o in zip(overrides, parsed, strict=True):
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(combo) for combo in itertools.product(*choices)]


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)
