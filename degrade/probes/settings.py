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


def _whole(value: Any, least: int, key: str, odd: bool = False, most: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < least
        or (odd and value % 2 == 0)
        or (most is not None and value > most)
    ):
        rule = f"an odd whole number of at least {least}" if odd else f"a whole number of at least {least}"
        rule += f" and at most {most:,}" if most is not None else ""
        raise ProbeError(f"probe.{key} must be {rule}, got {value!r}")
    return value


# Seeds seed numpy's and torch's generators: numpy takes 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


def _real(value: Any, key: str, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value < 0
        or (positive and value == 0)
        or value == float("inf")
    ):
        raise ProbeError(
            f"probe.{key} must be a finite number {'above' if positive else 'of at least'} 0, got {value!r}"
        )
    return float(value)


def settings_of(probe: DictConfig | dict[str, Any], kind: str) -> dict[str, Any]:
    """The settings probe ``kind`` measures with (what its file records), checked."""
    p = OmegaConf.to_container(probe, resolve=True) if isinstance(probe, DictConfig) else dict(probe)
    if not isinstance(p, dict):
        raise ProbeError(f"the probe settings must be a group of keys (probe.images=...), got {p!r}")
    s: dict[str, Any] = {"images": _whole(p.get("images"), 1, "images")}
    own = p.get(kind) or {}
    if not isinstance(own, dict):
        raise ProbeError(
            f"probe.{kind} is a group of settings (e.g. probe.{kind}.seed=0), not a value: "
            f"got probe.{kind}={own!r}"
        )
    if kind == "landscape":
        s |= {
            "points": _whole(own.get("points"), 3, "landscape.points", odd=True),
            "grid": _whole(own.get("grid"), 3, "landscape.grid", odd=True),
            "span": _real(own.get("span"), "landscape.span", positive=True),
            "margin": _real(own.get("margin"), "landscape.margin"),
            "curvature_tol": _real(own.get("curvature_tol"), "landscape.curvature_tol"),
            "seed": _whole(own.get("seed"), 0, "landscape.seed", most=SEED_MAX),
        }
    elif kind == "lesion":
        s |= {
            "draws": _whole(own.get("draws"), 1, "lesion.draws"),
            "seed": _whole(own.get("seed"), 0, "lesion.seed", most=SEED_MAX),
        }
    elif kind == "gradcorr":
        s |= {"points": _whole(own.get("points"), 3, "gradcorr.points")}
    return s


# The most evaluations one probe file may take: about a quarter of an hour on one CPU core for
# the deepest default net (a default file takes 50 to 300). Larger sizes are refused up front.
MAX_EVALUATIONS = 20_000


def _bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_size(
    kind: str, s: dict[str, Any], depth: int, pixels: int, train_images: int, available: int | None
) -> None:
    """ProbeError, naming the largest value that fits, when probe ``kind`` with settings ``s`` on a
    net of ``depth`` and data of ``pixels`` per image and ``train_images`` images would take more
    than ``MAX_EVALUATIONS`` evaluations or more memory than ``available`` bytes (None: unknown).

    The estimate is worked out from the settings alone, before anything is built: the landscape
    holds its grid x grid surface (and the curvature's copies) in float64; gradcorr holds one
    input gradient per point of its line (and two normalised copies) in float32; lesion's draws
    repeat for each k = 1, 2, 4, ... up to the number of blocks (at most ``depth``).
    """
    if s["images"] > train_images:
        raise ProbeError(
            f"probe.images={s['images']:,} is more than the {train_images:,} training images "
            f"the run's data has: the most is probe.images={train_images}"
        )
    room = available if available is not None else float("inf")
    if kind == "landscape":

        def fits(g: int) -> bool:
            return s["points"] + g * g <= MAX_EVALUATIONS and 4 * 8 * g * g <= room

        if not fits(s["grid"]):
            g = 3
            while fits(g + 2):
                g += 2
            raise ProbeError(
                f"probe.landscape.grid={s['grid']:,} takes {s['grid'] ** 2:,} evaluations and "
                f"{_bytes(32 * s['grid'] ** 2)}; the largest that fits is {g} (at most "
                f"{MAX_EVALUATIONS:,} evaluations{', ' + _bytes(room) + ' free' if available else ''})"
            )
        if s["points"] > MAX_EVALUATIONS // 2:
            raise ProbeError(
                f"probe.landscape.points={s['points']:,} is too many: the largest is "
                f"{MAX_EVALUATIONS // 2 - 1:,}"
            )
    elif kind == "gradcorr":
        most = min(MAX_EVALUATIONS // 2, int(room // (3 * 4 * pixels)))
        if s["points"] > most:
            raise ProbeError(
                f"probe.gradcorr.points={s['points']:,} takes {2 * s['points']:,} gradients and "
                f"{_bytes(12 * pixels * s['points'])}; the largest that fits is {most:,}"
            )
    elif kind == "lesion":
        ks = max(1, depth.bit_length())
        most = max(1, (MAX_EVALUATIONS - 1 - depth) // ks)
        if s["draws"] > most:
            raise ProbeError(
                f"probe.lesion.draws={s['draws']:,} takes about {s['draws'] * ks:,} evaluations; "
                f"the largest that fits is {most:,} (at most {MAX_EVALUATIONS:,})"
            )
