"""The one visual language of every figure of a sweep (training, probes, the report's):

- **variant**: plain nets in the left panel, ResNets in the right one, always in that order;
- **depth**: one colour per depth, the same colour for that depth in every panel;
- **training vs test**: training error is the bold solid line (the quantity the degradation
  is about), test error the thin dashed one;
- **initial vs final weights** (probes) and earlier vs last epoch (per-layer figures): dotted
  for the start, solid for the end;
- the verdict, where a figure carries it, sits in its own space below the panels.

Matplotlib runs without a display here: figures are files.
"""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# Legend labels as the paper writes them (plain-20, ResNet-20), and one name for each panel.
TITLES = {"plain": "plain", "residual": "ResNet"}
PANELS = {"plain": "plain networks", "residual": "residual networks (ResNet)"}

TRAIN: dict[str, Any] = {"ls": "-", "lw": 2.2}
TEST: dict[str, Any] = {"ls": "--", "lw": 1.1, "alpha": 0.9}
INITIAL: dict[str, Any] = {"ls": ":", "lw": 1.4}
FINAL: dict[str, Any] = {"ls": "-", "lw": 2.0}
# The line the per-layer figures draw for their epochs, earliest first; the last one is FINAL.
EARLIER = [{"ls": ":", "lw": 1.4}, {"ls": "-.", "lw": 1.2}]
NEUTRAL = "#333333"  # the proxies in legends: a style, not a depth

# Said once, under every figure that draws errors and in the report's captions.
CAPTION = (
    "Bold solid lines: training error, the quantity the degradation is about; thin dashed: "
    "test error. One colour per depth in every figure; plain nets left, ResNets right."
)
FOOTER_WIDTH = 120  # characters per line of the text under a figure


def depth_colours(depths: list[int]) -> dict[int, Any]:
    """One colour per depth from plasma, shallow orange to deep indigo: the deepest net, the one
    the figures are about, is the darkest line, and no colour is too pale to read on white."""
    cmap = plt.get_cmap("plasma")
    ordered = sorted(depths)
    n = max(len(ordered) - 1, 1)
    return {d: cmap(0.75 - 0.72 * i / n) for i, d in enumerate(ordered)}


def variants(frame: pd.DataFrame) -> list[str]:
    """The variants ``frame`` holds, plain first."""
    return [v for v in ("plain", "residual") if v in set(frame["variant"])]


def name(variant: str, depth: int) -> str:
    """``plain-56``, ``ResNet-56``."""
    return f"{TITLES[variant]}-{int(depth)}"


def proxy(style: dict[str, Any], label: str, colour: Any = NEUTRAL, **more: Any) -> Line2D:
    """A legend entry for a line style or a marker that no single drawn line stands for."""
    return Line2D([], [], color=colour, label=label, **{**style, **more})


def train_test_proxies() -> list[Line2D]:
    """The two legend entries that say which line is training error and which is test error."""
    return [proxy(TRAIN, "training error"), proxy(TEST, "test error")]


def weights_proxies(start: str = "initial weights", end: str = "final weights") -> list[Line2D]:
    """The two legend entries for the start (dotted) and the end (solid) of training."""
    return [proxy(INITIAL, start), proxy(FINAL, end)]


def legend(ax: plt.Axes, extra: list[Any] | None = None, **kwargs: Any) -> None:
    """The lines drawn with a label, then ``extra`` (style proxies), in one legend."""
    handles, labels = ax.get_legend_handles_labels()
    handles = [*handles, *(extra or [])]
    if handles:
        ax.legend(handles=handles, fontsize=kwargs.pop("fontsize", 8), **kwargs)


def footer(fig: plt.Figure, lines: list[str]) -> None:
    """Text under the panels, in its own space: saved with ``bbox_inches="tight"`` the image grows
    to hold it, so the panels keep their size however long the text is."""
    text = "\n".join(textwrap.fill(line, FOOTER_WIDTH) for line in lines if line)
    if text:
        fig.text(0.01, -0.01, text, ha="left", va="top", fontsize=8.5, wrap=False)
