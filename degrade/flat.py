"""A sweep's configs flattened to dotted keys (``optim.lr``), and which of those keys a sweep
varied: the settings its tables, figures and verdicts are split by."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

# What places a run on the degradation curve itself: never a "setting the sweep varied".
_CURVE_KEYS = ("seed", "model.depth", "model.variant")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"optim.lr": 0.1, ...}``; lists become tuples so values compare."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for k, v in tree.items():
            flat.update(flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def varied_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The flat config keys that differ between runs of the same variant, depth and seed.

    Comparing within those groups leaves out values that follow from the depth alone (the
    paper's ResNet-110 warm-up) while catching every setting a sweep crossed with the depths.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for cfg in configs:
        groups[tuple(cfg.get(k) for k in _CURVE_KEYS)].append(cfg)
    keys: set[str] = set()
    for members in groups.values():
        for k in set().union(*members):
            if len({repr(m.get(k)) for m in members}) > 1:
                keys.add(k)
    keys -= set(_CURVE_KEYS)
    # A choice from a config group (``cure.name``) brings the settings of its own node
    # (``cure.target``): they are not settings of their own where they follow from it.
    names = [k for k in keys if k.endswith(".name")]
    return sorted(
        k
        for k in keys
        if k in names or not any(k.startswith(n[: -len("name")]) and _follows(configs, k, n) for n in names)
    )


def _follows(configs: list[dict[str, Any]], key: str, by: str) -> bool:
    """Whether ``key``'s value is the same in every run that has the same value of ``by``."""
    seen: dict[str, str] = {}
    return all(seen.setdefault(repr(c.get(by)), repr(c.get(key))) == repr(c.get(key)) for c in configs)


def differing_keys(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every flat config key whose value is not the same in all runs, with its values."""
    keys = set().union(*configs)
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    for cfg in configs:
        for k in keys:
            values[k][repr(cfg.get(k))] = cfg.get(k)
    return {k: sorted_values(list(vs.values())) for k, vs in sorted(values.items()) if len(vs) > 1}


def show(value: Any) -> str:
    """A config value as its override would write it: true, null, [0.5, 0.75], 0.1."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def sorted_values(values: list[Any]) -> list[Any]:
    """Numbers in numeric order, anything else by its text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def setting_column(values: list[Any]) -> list[Any]:
    """A setting's values as one sortable column: as they are when of one type, else as text."""

    def kind(v: Any) -> type:
        return float if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v)

    return values if len({kind(v) for v in values}) == 1 else [str(v) for v in values]
