"""What every figure of a sweep shares: matplotlib without a display, a colour per depth, and the
order of the variants (plain left, residual right)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def depth_colours(depths: list[int]) -> dict[int, Any]:
    """One viridis colour per depth, shallow dark to deep light (the top avoided: too pale)."""
    cmap = plt.get_cmap("viridis")
    n = max(len(depths) - 1, 1)
    return {d: cmap(0.85 * i / n) for i, d in enumerate(sorted(depths))}


def variants(frame: pd.DataFrame) -> list[str]:
    """The variants ``frame`` holds, plain first."""
    return [v for v in ("plain", "residual") if v in set(frame["variant"])]
