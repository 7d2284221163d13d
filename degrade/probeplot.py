"""Figures of a sweep's probes (``degrade probe``): plain beside residual, a line per depth.

Several seeds are averaged (a band of one std where there are several); a sweep that varied a
setting besides depth is drawn for its first setting only, and the title says which.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from degrade import figstyle  # noqa: E402
from degrade.probes import tables  # noqa: E402
from degrade.probes.settings import NAMES, ProbeError  # noqa: E402

KINDS = NAMES
TITLES = {"plain": "plain", "residual": "ResNet"}
PANELS = {"plain": "plain networks", "residual": "residual networks (ResNet)"}
STYLES = {"initial": ":", "final": "-"}




def _line(ax: plt.Axes, rows: pd.DataFrame, x: str, colour: Any, label: str | None, style: str = "-",
          marker: str | None = None) -> None:
    """Mean of ``value`` over runs (seeds) against ``x``, with a band of one std."""
    per_run = rows.groupby(["run_id", x])["value"].mean().reset_index()
    g = per_run.groupby(x)["value"]
    mean, std = g.mean(), g.std().fillna(0.0)
    # A net with one block of a kind has one point: a marker shows it.
    marker = marker or ("." if len(mean) < 3 else None)
    ax.plot(mean.index, mean.values, style, color=colour, label=label, marker=marker, ms=4)
    if (std > 0).any():
        ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.15)


def _panels(frame: pd.DataFrame) -> tuple[plt.Figure, list[plt.Axes]]:
    variants = figstyle.variants(frame)
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.2), sharey=True, squeeze=False)
    return fig, list(axes[0])


def landscape(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Li et al. (2018): contour maps of the loss of the deepest plain net beside the ResNet of the
    same depth on one (log) colour scale, above the 1-D slices of every depth."""
    grid = frame[(frame["quantity"] == "loss") & (frame["section"] == "grid")]
    line = frame[(frame["quantity"] == "loss") & (frame["section"] == "slice")]
    variants = figstyle.variants(frame)
    deepest = int(grid.groupby("variant")["depth"].max().min()) if not grid.empty else None
    fig, axes = plt.subplots(2, len(variants), figsize=(5.4 * len(variants), 9.0), squeeze=False,
                             layout="constrained")
    maps = {}
    for v in variants:
        part = grid[(grid["variant"] == v) & (grid["depth"] == deepest)]
        if part.empty:
            continue
        mean = part.groupby(["beta", "alpha"])["value"].mean().unstack("alpha")
        maps[v] = mean
    if maps:
        values = np.concatenate([m.values.ravel() for m in maps.values()])
        low = max(float(np.nanmin(values)), 1e-4)
        high = max(float(np.nanmax(values)), low * 10)
        levels = np.geomspace(low, high, 25)
        norm = matplotlib.colors.LogNorm(vmin=low, vmax=high)
        image = None
        for ax, v in zip(axes[0], variants, strict=True):
            if v not in maps:
                ax.set_axis_off()
                continue
            m = maps[v]
            image = ax.contourf(m.columns, m.index, np.clip(m.values, low, high), levels=levels, norm=norm,
                                cmap="viridis")
            ax.contour(m.columns, m.index, np.clip(m.values, low, high), levels=levels[::3], colors="white",
                       linewidths=0.5, alpha=0.6)
            ax.plot([0], [0], "+", color="red", ms=10)
            ax.set_title(f"{TITLES[v]}-{deepest}: training loss around the final weights", fontsize=10)
            ax.set_xlabel("direction 1 (α)")
            ax.set_ylabel("direction 2 (β)")
            ax.set_aspect("equal")
        if image is not None:
            bar = fig.colorbar(image, ax=list(axes[0]), shrink=0.85,
                               label="training loss (log scale, shared)")
            bar.set_ticks([t for t in 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
                           if low <= t <= high])
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes[1], variants, strict=True):
        part = line[line["variant"] == v]
        for d in sorted(part["depth"].unique()):
            _line(ax, part[part["depth"] == d], "alpha", colours[d], f"{TITLES[v]}-{d}")
        ax.set_yscale("log")
        ax.set_title(f"{PANELS[v]}: 1-D slice along direction 1", fontsize=10)
        ax.set_xlabel("α")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lesion(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Veit et al. (2016): test (bold) and training (dashed) error against the number of blocks
    removed, a line per depth; one block removed is the mean of every single lesion, k > 1 the
    mean of the random draws. Down-sampling blocks removed alone are the triangles."""
    fig, axes = _panels(frame)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        part = frame[frame["variant"] == v]
        for d in sorted(part["depth"].unique()):
            rows = part[part["depth"] == d]
            for q, style, lw in (("test_error", "-", 2.0), ("train_error", "--", 1.0)):
                r = rows[(rows["quantity"] == q) & (rows["mode"] != "number")]
                same = r[~r["downsampling"].fillna(False).astype(bool)]
                same = same[(same["mode"] != "random") | (same["removed"] > 1)]
                same = same.assign(value=same["value"] * 100)
                label = f"{TITLES[v]}-{d}" if q == "test_error" else None
                _line(ax, same, "removed", colours[d], label, style, marker="o" if lw > 1 else None)
                down = r[r["downsampling"].fillna(False).astype(bool)]
                if q == "test_error" and not down.empty:
                    ax.plot(down["removed"] + 0.06 * np.arange(len(down)), down["value"] * 100, "v",
                            color=colours[d], ms=6, ls="none",
                            label=f"{TITLES[v]}-{d}, a down-sampling block alone")
        ks = sorted(part["removed"].dropna().unique())
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(int(k)) for k in ks])
        ax.set_xlabel("blocks removed at test time")
        ax.set_title(PANELS[v], fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="bold: test, dashed: train", title_fontsize=7)
    return _finish(fig, axes, "error (%)", title)


def _finish(fig: plt.Figure, axes: list[plt.Axes], ylabel: str, title: str) -> plt.Figure:
    """The shared y label and the figure's title, laid out."""
    axes[0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gradcorr(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Balduzzi et al. (2017): correlation of input gradients against their distance along the
    line between two images; dotted at initialisation, solid after training."""
    fig, axes = _panels(frame)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    corr = frame[frame["quantity"] == "correlation"]
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        part = corr[corr["variant"] == v]
        for d in sorted(part["depth"].unique()):
            for w in ("initial", "final"):
                rows = part[(part["depth"] == d) & (part["weights"] == w)]
                _line(ax, rows, "distance", colours[d], f"{TITLES[v]}-{d}, {w}", STYLES[w])
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("distance between the two points (fraction of the line)")
        ax.set_title(PANELS[v], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, axes, "correlation of input gradients", title)


def identity(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Distance from the identity per block: ‖F(x)‖/‖x‖ for ResNets, ‖block(x) − x‖/‖x‖ for plain
    nets, against the block's last layer index; dotted at initialisation, solid after training.
    Hollow markers: down-sampling blocks (ResNet only: a plain one has no identity to compare)."""
    fig, axes = _panels(frame)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        q = "branch_ratio" if v == "residual" else "change_ratio"
        part = frame[(frame["variant"] == v) & (frame["quantity"] == q)]
        for d in sorted(part["depth"].unique()):
            for w in ("initial", "final"):
                rows = part[(part["depth"] == d) & (part["weights"] == w)]
                _line(ax, rows, "layer", colours[d], f"{TITLES[v]}-{d}, {w}", STYLES[w])
                down = rows[rows["downsampling"].astype(bool)]
                if not down.empty:
                    mean = down.groupby("layer")["value"].mean()
                    ax.plot(mean.index, mean.values, "o", mfc="none", color=colours[d], ms=6)
        ax.set_yscale("log")
        ax.set_xlabel("layer index (the block's last weight layer)")
        ax.set_title(f"{PANELS[v]}: " + ("‖F(x)‖ / ‖x‖" if v == "residual" else "‖block(x) − x‖ / ‖x‖"),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, axes, "distance from the identity", title)


DRAW = {"landscape": landscape, "lesion": lesion, "gradcorr": gradcorr, "identity": identity}


def probe_frame(out: Any, run_ids: list[str], kind: str,
                settings: pd.DataFrame | None = None) -> pd.DataFrame:
    """The probe's rows of the runs; with ``settings`` (run_id -> varied settings), only the runs of
    its first combination of settings, so runs trained differently are never averaged together."""
    frame = tables.load(out, run_ids, kind)
    if frame.empty or settings is None or settings.empty:
        return frame
    first = settings.drop_duplicates().sort_values(list(settings.columns)).iloc[0]
    keep = settings[(settings == first).all(axis=1)].index
    return frame[frame["run_id"].isin(keep)]


def draw(kind: str, frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """The figure of probe ``kind`` from its rows; ProbeError when there are none."""
    if frame.empty:
        raise ProbeError(f"no {kind} probes in this sweep; run `degrade probe --kind {kind}` first")
    return DRAW[kind](frame, title)
