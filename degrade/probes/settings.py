"""The settings of ``degrade probe`` (the ``probe`` config group), checked, without torch: a bad
setting is refused at once, before anything is read or written."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

NAMES = ("landscape", "lesion", "gradcorr", "identity")


class ProbeError(ValueError):
    """A probe a user asked for that cannot run (the message is one line)."""


def parse_kinds(kinds: list[str] | None) -> list[str]:
    """The kinds asked for (all when None), checked; ProbeError naming the ones there are."""
    chosen = list(NAMES) if kinds is None else kinds
    bad = [k for k in chosen if k not in NAMES]
    if bad or not chosen:
        raise ProbeError(f"unknown probe kind {bad[0] if bad else ''!r}; choose from {', '.join(NAMES)}")
    return list(dict.fromkeys(chosen))


def _whole(value: Any, least: int, key: str, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (odd and value % 2 == 0):
        rule = f"an odd whole number of at least {least}" if odd else f"a whole number of at least {least}"
        raise ProbeError(f"probe.{key} must be {rule}, got {value!r}")
    return value


def _real(value: Any, key: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 \
            or (positive and value == 0) or value == float("inf"):
        raise ProbeError(f"probe.{key} must be a finite number {'above' if positive else 'of at least'} 0, "
                         f"got {value!r}")
    return float(value)


def settings_of(probe: DictConfig | dict[str, Any], kind: str) -> dict[str, Any]:
    """The settings probe ``kind`` measures with (what its file records), checked."""
    p = OmegaConf.to_container(probe, resolve=True) if isinstance(probe, DictConfig) else dict(probe)
    assert isinstance(p, dict)
    s: dict[str, Any] = {"images": _whole(p.get("images"), 1, "images")}
    own = dict(p.get(kind) or {})
    if kind == "landscape":
        s |= {"points": _whole(own.get("points"), 3, "landscape.points", odd=True),
              "grid": _whole(own.get("grid"), 3, "landscape.grid", odd=True),
              "span": _real(own.get("span"), "landscape.span", positive=True),
              "margin": _real(own.get("margin"), "landscape.margin"),
              "curvature_tol": _real(own.get("curvature_tol"), "landscape.curvature_tol"),
              "seed": _whole(own.get("seed"), 0, "landscape.seed")}
    elif kind == "lesion":
        s |= {"draws": _whole(own.get("draws"), 1, "lesion.draws"),
              "seed": _whole(own.get("seed"), 0, "lesion.seed")}
    elif kind == "gradcorr":
        s |= {"points": _whole(own.get("points"), 3, "gradcorr.points")}
    return s
