"""Compose and check run configs from the YAML files shipped in ``configs/``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# No torch (nor anything that imports it) here: a config is checked, and a bad one refused, in
# a fraction of the time importing torch takes. Devices, precisions and paths are checked by name.
from degrade import compute, tblog
from degrade.sources import DATASETS
from degrade.spec import CURES, VARIANTS, ModelError, check_spec, cure_applies, model_spec

CONFIG_NAME = "config"
_WHOLE = (
    "seed",
    "model.depth",
    "model.width",
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.eval_batch_size",
    "trainer.diagnostics_batch",
    "optim.warmup_iters",
)
_REAL = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.gamma", "optim.warmup_factor")
# Whole-number keys and the least value each may take.
_AT_LEAST = {
    "seed": 0,
    "trainer.epochs": 1,
    "trainer.batch_size": 1,
    "trainer.eval_batch_size": 1,
    "trainer.diagnostics_batch": 1,
    "optim.warmup_iters": 0,
}


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


# Names people give a variant when they ask for it as a model (``model=resnet``).
_VARIANT_WORDS = {
    "resnet": "residual",
    "residual": "residual",
    "res": "residual",
    "plain": "plain",
    "plainnet": "plain",
}


def _variant_as_model(option: str, families: list[str]) -> str:
    """The line for a variant asked for as a family (``model=resnet``): where variants are chosen."""
    variant = _VARIANT_WORDS[option.lower()]
    return (
        f"unknown model option {option!r}: model= picks the family ({', '.join(families)}); "
        f"plain or residual is model.variant, e.g. model=cnn model.variant={variant}"
    )


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
        if group == "model" and option.lower() in _VARIANT_WORDS:
            return _variant_as_model(option, options)
        if group:
            return f"unknown {group} option {option!r}{choose}"
        return f"config {option!r} not found"
    if lines and lines[0].startswith("In '") and len(lines) > 1:
        lines = lines[1:]
    return lines[0] if lines else err.__class__.__name__


def _check_ranges(cfg: DictConfig) -> None:
    """Values of the right type but outside what trains: refused like ``--epochs 0``."""
    for key, least in _AT_LEAST.items():
        value = OmegaConf.select(cfg, key)
        if value < least:
            raise ConfigError(f"{key} must be {least} or more, got {value}")
    o = cfg.optim
    for key, value, ok, rule in (
        ("lr", o.lr, o.lr > 0, "a finite number above 0"),
        ("momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        ("weight_decay", o.weight_decay, o.weight_decay >= 0, "a finite number, 0 or more"),
        ("gamma", o.gamma, o.gamma > 0, "a finite number above 0"),
        ("warmup_factor", o.warmup_factor, o.warmup_factor >= 0, "a finite number, 0 or more"),
    ):
        if not (math.isfinite(value) and ok):
            raise ConfigError(f"optim.{key} must be {rule}, got {value}")
    milestones = OmegaConf.select(cfg, "optim.milestones")
    if not isinstance(milestones, (list, tuple)) and not OmegaConf.is_list(milestones):
        raise ConfigError(f"optim.milestones must be a list of fractions of the run, got {milestones!r}")
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
            raise ConfigError(f"optim.milestones are fractions of all iterations in [0, 1], got {m!r}")
    t = cfg.trainer
    for key in ("iterations", "threads"):
        value = t.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"trainer.{key} must be a whole number of at least 1 (or null), got {value!r}")


def validate(cfg: DictConfig, check_variant: bool = True) -> None:
    """Raise ConfigError when ``cfg`` names a model, dataset or device that cannot run.

    ``check_variant=False`` lets a cure stand beside a variant it is not defined for: a grid
    (``sweep``) leaves such runs out instead, see ``inapplicable``.
    """
    for key in _WHOLE:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
    for key in _REAL:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        _check_ranges(cfg)
        spec = model_spec(cfg)
        if not check_variant and _pairs_wrongly(spec.cure, spec.variant):
            spec = dataclasses.replace(spec, variant=CURES[spec.cure][0])
        check_spec(spec)
        if cfg.data.name not in DATASETS:
            raise ConfigError(f"unknown dataset {cfg.data.name!r}; choose one of {', '.join(DATASETS)}")
        if not isinstance(cfg.get("out"), str) or not cfg.out.strip():
            raise ConfigError(f"out (the run store) must name a folder, got {cfg.get('out')!r}")
        compute.check_precision(str(cfg.trainer.precision))
        compute.check_path(str(cfg.trainer.path), compute.device_type(str(cfg.trainer.device)))
        if not isinstance(cfg.trainer.get("tensorboard", False), bool):
            raise ConfigError(f"trainer.tensorboard must be true or false, got {cfg.trainer.tensorboard!r}")
        if tblog.wanted(cfg) and not tblog.available():
            raise ConfigError(tblog.MISSING)
    except (ModelError, compute.AccelError) as e:
        raise ConfigError(str(e)) from None
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"invalid config value: {one_line(e)}") from None


@functools.cache
def config_groups() -> frozenset[str]:
    """The names of the config groups (``model``, ``data``, ...): the folders of ``configs/``."""
    return frozenset(p.name for p in config_dir().iterdir() if p.is_dir())


def _refuse_unknown_keys(overrides: list[str]) -> None:
    """Refuse ``+key=…`` / ``++key=…`` that would add a key the config does not have, and
    ``~key`` (a key cannot be removed): ``key=…`` of an unknown key is refused by Hydra itself.

    Config groups (``+experiment=…``) are not keys and pass; nothing documents extra keys.
    """
    parser = OverridesParser.create()
    groups = config_groups()
    added = []
    for text in overrides:
        o = parser.parse_overrides([text])[0]
        if o.key_or_group in groups or not (o.is_add() or o.is_force_add() or o.is_delete()):
            continue
        if o.is_delete():
            raise ConfigError(f"{text}: config keys cannot be removed; set {o.key_or_group}=… instead")
        added.append((text, o.key_or_group))
    if not added:
        return
    plain = [t for t in overrides if t not in {text for text, _ in added}]
    try:
        with hydra_context():
            base = compose(CONFIG_NAME, overrides=plain)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
    missing = object()
    for _, key in added:
        if OmegaConf.select(base, key, default=missing) is missing:
            raise ConfigError(f"unknown config key {key!r}; see `degrade show` for the keys there are")


def _refuse_unknown_options(overrides: list[str]) -> None:
    """Refuse a group option there is no file for (``experiment=nope``).

    Hydra refuses it for most groups, but ``experiment`` is optional in the defaults list (a
    run need not use a preset), and Hydra then skips a missing preset without a word.
    """
    parser = OverridesParser.create()
    groups = config_groups() - {"hydra"}
    for text in overrides:
        o = parser.parse_overrides([text])[0]
        if o.key_or_group not in groups or o.is_delete():
            continue
        value = o.value()
        folder = config_dir() / o.key_or_group
        for option in value if isinstance(value, list) else [value]:
            if option is not None and not (folder / f"{option}.yaml").is_file():
                there = sorted(p.stem for p in folder.glob("*.yaml"))
                if o.key_or_group == "model" and str(option).lower() in _VARIANT_WORDS:
                    raise ConfigError(_variant_as_model(str(option), there))
                raise ConfigError(
                    f"unknown {o.key_or_group} option {str(option)!r}; choose one of {', '.join(there)}"
                )


def shipped_file(name: str) -> DictConfig | None:
    """One file of the shipped configs as it is written (``hydra/launcher/local_parallel``),
    nothing composed; None when there is no such file or it is not a mapping."""
    try:
        node = OmegaConf.load(config_dir() / f"{name}.yaml")
    except (OSError, OmegaConfBaseException):
        return None
    return node if isinstance(node, DictConfig) else None


def shipped_default(option: str, key: str) -> object:
    """``key``'s value when nothing but the group option ``option`` (``data/digits``) is chosen:
    the option's file if it sets the key (its package is global), else the main config's; None
    when the option has no file or neither sets the key. A YAML read (a few ms), where composing
    with Hydra takes 60 ms; a test holds it to what Hydra composes for every option it is used for."""
    missing = object()
    for name in (option, CONFIG_NAME):
        node = shipped_file(name)
        if node is None:
            return None
        value = OmegaConf.select(node, key, default=missing)
        if value is not missing:
            return value
    return None


def normal_overrides(overrides: Sequence[str]) -> dict[str, Override] | None:
    """``overrides`` parsed, by a spelling of each that is the same however it was written
    (``out='a b'`` and ``out=a\\ b``); None when Hydra cannot parse them."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return None
    return {_spelling(o): o for o in parsed}


def _spelling(o: Override) -> str:
    return f"{o.get_key_element()}={o.value()!r}"


def _plain(o: Override) -> bool:
    """Whether Hydra sets ``o`` as a value after composing the config groups: not a group's
    option, not an addition or a deletion, one value that is not a list or a mapping."""
    key = o.key_or_group
    return (
        o.type == OverrideType.CHANGE
        and o.package is None
        and not o.is_sweep_override()
        and "/" not in key
        and key not in config_groups()
        and not isinstance(o.value(), (list, dict))
    )


def _set_after(job: dict[str, Override], base: Iterable[str]) -> list[Override] | None:
    """The overrides of ``job`` that are not ``base``'s, when ``base`` is a part of ``job`` and
    the rest are plain values under keys ``base`` does not set; else None."""
    base = set(base)
    if not base <= job.keys():
        return None
    rest = [o for n, o in job.items() if n not in base]
    keys = {n.split("=", 1)[0] for n in base}
    # A value under a key the base sets, or inside or around one, would depend on the order.
    if any(
        k == r or k.startswith(r + ".") or r.startswith(k + ".")
        for r in (o.key_or_group for o in rest)
        for k in keys
    ):
        return None
    return rest if all(_plain(o) for o in rest) else None


def derive(job: dict[str, Override], base: Iterable[str], cfg: DictConfig) -> DictConfig | None:
    """The config Hydra composes for the overrides ``job`` (as ``normal_overrides`` gives them),
    from ``cfg``, the config composed from the overrides ``base`` (their normal spellings).

    Hydra sets a plain ``key=value`` after it has composed the config groups: when every
    override of ``base`` is one of ``job``'s and the rest are plain values under keys ``base``
    does not set, the job's config is a copy of ``cfg`` with those values set, without a
    second composition (about 60 ms). None when that does not hold, or Hydra refuses a value.
    """
    rest = _set_after(job, base)
    if rest is None:
        return None
    derived = copy.deepcopy(cfg)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(rest, derived)
    except (HydraException, OmegaConfBaseException):
        return None  # composed as Hydra would, which says what is wrong with it
    return derived


def compose_run(
    overrides: list[str],
    pin: bool = True,
    check_variant: bool = True,
    like: tuple[list[str], DictConfig] | None = None,
) -> DictConfig:
    """The validated config of one run; ConfigError on any composition or value problem.

    ``pin=False`` leaves ``trainer.precision`` as asked (``auto``) instead of what it means here;
    ``check_variant``: see ``validate``. ``like``: another run's overrides and its config as
    composed (not pinned), which this one is derived from where it can be (see ``derive``).
    """
    combos = expand_overrides(overrides)
    if len(combos) > 1:
        raise ConfigError("these overrides sweep several values; use `degrade sweep` for a grid")
    _refuse_unknown_options(combos[0])
    cfg = None
    if like is not None:
        job, base = normal_overrides(combos[0]), normal_overrides(like[0])
        if job is not None and base is not None:
            cfg = derive(job, base, like[1])
    if cfg is None:
        try:
            with hydra_context():
                cfg = compose(CONFIG_NAME, overrides=combos[0])
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(one_line(e)) from None
    _refuse_unknown_keys(combos[0])
    validate(cfg, check_variant)
    return compute.pin_precision(cfg) if pin else cfg


def compose_grid(combos: list[list[str]], like: tuple[list[str], DictConfig]) -> list[DictConfig]:
    """``compose_run(combo, pin=False, check_variant=False)`` for every run of a grid.

    A run is derived (see ``derive``) from ``like``, another run's overrides and its config as
    composed, where it can be; else from a config composed once for its own choice of config
    groups (an experiment, a cure, a model), so that a grid over six cures composes six times,
    not once for each run (about 70 ms each)."""
    first = normal_overrides(like[0])
    bases: dict[frozenset[str], tuple[list[str], DictConfig] | None] = {}
    return [
        compose_run(combo, pin=False, check_variant=False, like=_like_for(combo, like, first, bases))
        for combo in combos
    ]


def _like_for(
    combo: list[str],
    like: tuple[list[str], DictConfig],
    first: dict[str, Override] | None,
    bases: dict[frozenset[str], tuple[list[str], DictConfig] | None],
) -> tuple[list[str], DictConfig]:
    """What ``combo`` is best derived from: ``like`` if it can be, else the config composed (once,
    kept in ``bases``) for the overrides of ``combo`` that are not plain values."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(combo))
    except HydraException:
        return like  # composed as Hydra would, which says what is wrong with it
    job = {_spelling(o): o for o in parsed}
    if first is not None and _set_after(job, first) is not None:
        return like
    groups = [text for text, o in zip(combo, parsed, strict=True) if not _plain(o)]
    key = frozenset(_spelling(o) for o in parsed if not _plain(o))
    if key not in bases:
        try:
            bases[key] = (groups, compose_run(groups, pin=False, check_variant=False))
        except ConfigError:
            bases[key] = None  # each such run is composed whole, and says what is wrong
    return bases[key] or like


def cure_name(cfg: DictConfig) -> str:
    """The cure a run's config builds its net with (``none`` for runs recorded before cures)."""
    return str(OmegaConf.select(cfg, "cure.name", default="none"))


def inapplicable(cfg: DictConfig) -> bool:
    """Whether ``cfg`` pairs a cure with a variant it is not defined for (Fixup on a plain net)."""
    return _pairs_wrongly(cure_name(cfg), str(cfg.model.variant))


def _pairs_wrongly(cure: str, variant: str) -> bool:
    # A cure or variant that does not exist is not a pair to leave out: it is refused as it is.
    return cure in CURES and variant in VARIANTS and not cure_applies(cure, variant)


def expand_overrides(overrides: list[str]) -> list[list[str]]:
    """Every combination of a list of overrides that may hold Hydra sweeps (``a=1,2``)."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as e:
            if re.fullmatch(r"[0-9.,]+", text.strip()):
                # `--depths 8 20`: the shell split a list the flag takes as one word.
                raise ConfigError(
                    f"bad override {text!r}: a list is one word with commas, e.g. "
                    "--depths 8,20 or --seeds 0,1 (an override is key=value)"
                ) from None
            raise ConfigError(f"bad override {text!r}: {one_line(e)}") from None
    seen: dict[str, str] = {}
    for text, o in zip(overrides, parsed, strict=True):
        key = o.key_or_group
        if key in seen:
            # Hydra would apply the last one without a word: what was asked first would not run.
            raise ConfigError(f"{seen[key]} and {text} both set {key}; give it once")
        seen[key] = text
    choices = []
    for text, o in zip(overrides, parsed, strict=True):
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(combo) for combo in itertools.product(*choices)]


def quoted(value: str, key: str) -> str:
    """``key=value`` as a Hydra override that reads back as exactly ``value`` (a name or path
    with spaces, brackets or non-ASCII letters); ConfigError when no override can say it."""
    if "${" in value or any(ord(c) < 32 for c in value):
        raise ConfigError(
            f"{key} {value!r} cannot be passed to Hydra (no '${{' or control characters); choose another"
        )
    text = "'" + re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    # Backslashes before the closing quote are escaped too.
    trail = len(value) - len(value.rstrip("\\"))
    text += "\\" * trail + "'"
    override = f"{key}={text}"
    try:
        parsed = OverridesParser.create().parse_overrides([override])[0].value()
    except HydraException:
        parsed = None
    if parsed != value:
        raise ConfigError(f"{key} {value!r} cannot be passed to Hydra; choose another")
    return override


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)
