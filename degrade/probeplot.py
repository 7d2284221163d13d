"""Figures of a sweep's probes (``degrade probe``) in the figures' one language (``figstyle``):
plain beside residual, a colour per depth, dotted for the initial weights and solid for the
final ones, training error bold and test error dashed.

Each figure's title states its finding in words and numbers; the words are chosen from the
numbers by the rules of the ``*_finding`` functions, so a figure never says more than its data.
Several seeds are averaged (a band of one std where there are several); a sweep that varied a
setting besides depth is drawn for its first setting only, and the title says which.
"""

from __future__ import annotations

import textwrap
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
TITLES, PANELS = figstyle.TITLES, figstyle.PANELS
STYLES = {"initial": figstyle.INITIAL, "final": figstyle.FINAL}
# A net counts as trained for the lesion's finding at this training error (the verdict's rule).
TRAINED_ERROR = 0.10
# Lesion: one block removed costs a net "nothing to speak of" below this much test error, and
# makes it "fail" from this much on (chance on ten classes is 90 %).
LESION_SMALL, LESION_FATAL = 0.05, 0.25
# Gradcorr: neighbours whose gradients correlate below this are "shattered" (Balduzzi et al.).
SHATTERED = 0.5
# Identity: a block whose change is at most this share of its input is "near the identity".
NEAR_IDENTITY = 0.5
SYMBOLS = {"plain": "‖block(x) − x‖ / ‖x‖", "residual": "‖F(x)‖ / ‖x‖"}


def _numbers(frame: pd.DataFrame, quantity: str, weights: str | None = None) -> pd.Series:
    """A probe's number ``quantity`` (rows without coordinates) per (variant, depth), mean over seeds."""
    rows = frame[frame["quantity"] == quantity]
    if weights is not None and "weights" in rows:
        rows = rows[rows["weights"] == weights]
    return rows.groupby(["variant", "depth"])["value"].mean()


def _deepest_common(frame: pd.DataFrame) -> int | None:
    """The deepest depth every variant of ``frame`` has."""
    depths = frame.groupby("variant")["depth"].max()
    return int(depths.min()) if len(depths) else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %" if x < 0.995 else f"{100 * x:.0f} %"


def lesion_finding(frame: pd.DataFrame) -> str:
    """What removing one block does to the deepest net of each variant that trained (its training
    error at most TRAINED_ERROR; the deepest one when none did), in words and test errors."""
    base, single = _numbers(frame, "base_test_error"), _numbers(frame, "single_test_error_mean")
    trained = _numbers(frame, "base_train_error")
    said = []
    for v in figstyle.variants(frame):
        depths = sorted(d for (w, d) in single.index if w == v and (w, d) in base.index)
        if not depths:
            continue
        ok = [d for d in depths if trained.get((v, d), 1.0) <= TRAINED_ERROR]
        d = (ok or depths)[-1]
        b, s = base[(v, d)], single[(v, d)]
        cost = s - b
        verb = (
            "fails"
            if cost >= LESION_FATAL
            else "barely notices"
            if cost < LESION_SMALL
            else f"loses {100 * cost:.0f} points"
        )
        said.append(f"{figstyle.name(v, d)} {verb} (test error {_pct(b)} → {_pct(s)})")
    if not said:
        return "removing one block: no single lesions measured"
    return "removing one block from the deepest net of each kind that trained: " + ", ".join(said)


def _compare(a: float, b: float, more: str, less: str, same: str, tol: float = 0.1) -> str:
    """``more`` when ``a`` exceeds ``b`` by more than ``tol`` of the larger, ``less`` when it falls
    short by as much, else ``same``."""
    top = max(abs(a), abs(b), 1e-12)
    return more if a - b > tol * top else less if b - a > tol * top else same


def landscape_finding(frame: pd.DataFrame) -> str:
    """Where the deepest plain net sits against the ResNet of its depth: the loss at the final
    weights and the share of the map that is non-convex."""
    d = _deepest_common(frame)
    loss, rough = _numbers(frame, "centre_loss"), _numbers(frame, "nonconvex_fraction")
    keys = [("plain", d), ("residual", d)]
    if d is None or any(k not in loss.index or k not in rough.index for k in keys):
        return "loss landscape around the final weights"
    (lp, lr), (rp, rr) = (loss[k] for k in keys), (rough[k] for k in keys)
    return (
        f"around its final weights {figstyle.name('plain', d)} sits "
        f"{_compare(lp, lr, 'higher', 'lower', 'as high')} than {figstyle.name('residual', d)} "
        f"(loss {lp:.3g} vs {lr:.3g}), on a {_compare(rp, rr, 'more', 'less', 'as')} non-convex "
        f"surface ({_pct(rp)} vs {_pct(rr)} of the map)"
    )


def gradcorr_finding(frame: pd.DataFrame) -> str:
    """Whether the input gradients of the deepest nets are shattered (neighbours correlated below
    SHATTERED) at initialisation and after training."""
    d = _deepest_common(frame)
    if d is None:
        return "correlation of input gradients"
    parts = []
    for w, when in (("initial", "at initialisation"), ("final", "after training")):
        corr = _numbers(frame, "corr_lag1", w)
        said = [
            f"{figstyle.name(v, d)}'s are {'shattered' if corr[(v, d)] < SHATTERED else 'correlated'} "
            f"({corr[(v, d)]:.2f})"
            for v in figstyle.variants(frame)
            if (v, d) in corr.index
        ]
        if said:
            parts.append(f"{when} " + ", ".join(said))
    if not parts:
        return "correlation of input gradients"
    return "input gradients of neighbouring points: " + "; ".join(parts)


def identity_finding(frame: pd.DataFrame) -> str:
    """How far the deepest nets' blocks are from the identity after training (the mean ratio)."""
    d = _deepest_common(frame)
    ratio = _numbers(frame, "ratio", "final")
    said = []
    for v in figstyle.variants(frame):
        if d is None or (v, d) not in ratio.index:
            continue
        r = ratio[(v, d)]
        where = "near the identity" if r <= NEAR_IDENTITY else "far from the identity"
        said.append(f"{figstyle.name(v, d)}'s blocks are {where} ({SYMBOLS[v]} = {r:.2f})")
    return ("after training " + ", ".join(said)) if said else "distance from the identity"


def _line(
    ax: plt.Axes,
    rows: pd.DataFrame,
    x: str,
    colour: Any,
    label: str | None,
    style: dict[str, Any] | None = None,
    marker: str | None = None,
) -> None:
    """Mean of ``value`` over runs (seeds) against ``x``, with a band of one std."""
    per_run = rows.groupby(["run_id", x])["value"].mean().reset_index()
    g = per_run.groupby(x)["value"]
    mean, std = g.mean(), g.std().fillna(0.0)
    # A net with one block of a kind has one point: a marker shows it.
    marker = marker or ("." if len(mean) < 3 else None)
    ax.plot(
        mean.index, mean.values, color=colour, label=label, marker=marker, ms=4, **(style or figstyle.FINAL)
    )
    if (std > 0).any():
        ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.15)


def _panels(frame: pd.DataFrame, sharey: bool = True) -> tuple[plt.Figure, list[plt.Axes]]:
    variants = figstyle.variants(frame)
    fig, axes = plt.subplots(
        1, len(variants), figsize=(5.2 * len(variants), 4.4), sharey=sharey, squeeze=False
    )
    return fig, list(axes[0])


def _depth_entries(ax: plt.Axes, variant: str, depths: list[int], colours: dict[int, Any]) -> None:
    """One legend entry per depth, in its colour, where the lines themselves carry no label."""
    for d in depths:
        ax.plot([], [], color=colours[d], label=figstyle.name(variant, d), **figstyle.FINAL)


def landscape(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Li et al. (2018): contour maps of the loss of the deepest plain net beside the ResNet of the
    same depth on one (log) colour scale, above the 1-D slices of every depth."""
    grid = frame[(frame["quantity"] == "loss") & (frame["section"] == "grid")]
    line = frame[(frame["quantity"] == "loss") & (frame["section"] == "slice")]
    variants = figstyle.variants(frame)
    deepest = int(grid.groupby("variant")["depth"].max().min()) if not grid.empty else None
    fig, axes = plt.subplots(
        2, len(variants), figsize=(5.4 * len(variants), 9.0), squeeze=False, layout="constrained"
    )
    maps = {}
    for v in variants:
        part = grid[(grid["variant"] == v) & (grid["depth"] == deepest)]
        if part.empty:
            continue
        mean = part.groupby(["beta", "alpha"])["value"].mean().unstack("alpha")
        maps[v] = mean
    if maps and deepest is not None:
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
            image = ax.contourf(
                m.columns, m.index, np.clip(m.values, low, high), levels=levels, norm=norm, cmap="viridis"
            )
            ax.contour(
                m.columns,
                m.index,
                np.clip(m.values, low, high),
                levels=levels[::3],
                colors="white",
                linewidths=0.5,
                alpha=0.6,
            )
            ax.plot(
                [0], [0], "+", color="red", ms=12, mew=2, ls="none", label="the trained weights (α = β = 0)"
            )
            ax.legend(fontsize=8, loc="upper right")
            ax.set_title(f"{figstyle.name(v, deepest)}: training loss around the final weights", fontsize=10)
            ax.set_xlabel("direction 1 (α)")
            ax.set_ylabel("direction 2 (β)")
            ax.set_aspect("equal")
        if image is not None:
            bar = fig.colorbar(
                image,
                ax=list(axes[0]),
                shrink=0.85,
                label="training loss (log scale, shared; white lines: contours)",
            )
            bar.set_ticks(
                [
                    t
                    for t in 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
                    if low <= t <= high
                ]
            )
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes[1], variants, strict=True):
        part = line[line["variant"] == v]
        for d in sorted(part["depth"].unique()):
            _line(ax, part[part["depth"] == d], "alpha", colours[d], figstyle.name(v, d))
        ax.axvline(0, color="red", lw=0.8, label="the trained weights (α = 0)")
        ax.set_yscale("log")
        ax.set_title(f"{PANELS[v]}: 1-D slice along direction 1", fontsize=10)
        ax.set_xlabel("α")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        figstyle.legend(ax)
    _title(fig, landscape_finding(frame), title)
    return fig


def lesion(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Veit et al. (2016): training (bold) and test (dashed) error against the number of blocks
    removed, a line per depth; one block removed is the mean of every single lesion, k > 1 the
    mean of the random draws. Down-sampling blocks removed alone are the triangles."""
    fig, axes = _panels(frame)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        part = frame[frame["variant"] == v]
        depths = sorted(part["depth"].unique())
        downs = False
        for d in depths:
            rows = part[part["depth"] == d]
            for q, style in (("test_error", figstyle.TEST), ("train_error", figstyle.TRAIN)):
                r = rows[(rows["quantity"] == q) & (rows["mode"] != "number")]
                flag = r["downsampling"].fillna(False).astype(bool)
                same = r[~flag]
                same = same[(same["mode"] != "random") | (same["removed"] > 1)]
                same = same.assign(value=same["value"] * 100)
                marker = "o" if q == "train_error" else None
                _line(ax, same, "removed", colours[d], None, style, marker=marker)
                down = r[flag]
                if q == "test_error" and not down.empty:
                    downs = True
                    ax.plot(
                        down["removed"] + 0.06 * np.arange(len(down)),
                        down["value"] * 100,
                        "v",
                        color=colours[d],
                        ms=6,
                        ls="none",
                    )
        _depth_entries(ax, v, depths, colours)
        extra = figstyle.train_test_proxies()
        if downs:
            extra.append(
                figstyle.proxy({"ls": "none"}, "a down-sampling block removed alone (test)", marker="v", ms=6)
            )
        ks = sorted(part["removed"].dropna().unique())
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(int(k)) for k in ks])
        ax.set_xlabel("blocks removed at test time")
        ax.set_title(PANELS[v], fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        figstyle.legend(ax, extra, fontsize=7)
    axes[0].set_ylabel("error (%)")
    _title(fig, lesion_finding(frame), title)
    figstyle.footer(
        fig,
        [
            "1 block removed: the mean over removing each shape-keeping block alone; "
            f"k > 1: the mean of random draws of k blocks. {figstyle.CAPTION}"
        ],
    )
    return fig


def _title(fig: plt.Figure, finding: str, title: str) -> None:
    """The finding, first and prominent, above what the sweep trained; then the layout, so that
    neither overlaps a panel."""
    fig.suptitle(textwrap.fill(finding, 110) + (f"\n{title}" if title else ""), fontsize=10.5)
    if fig.get_layout_engine() is None:  # the landscape lays itself out (constrained)
        fig.tight_layout()


def gradcorr(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Balduzzi et al. (2017): correlation of input gradients against their distance along the
    line between two images; dotted at initialisation, solid after training."""
    fig, axes = _panels(frame)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    corr = frame[frame["quantity"] == "correlation"]
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        part = corr[corr["variant"] == v]
        depths = sorted(part["depth"].unique())
        for d in depths:
            for w in ("initial", "final"):
                rows = part[(part["depth"] == d) & (part["weights"] == w)]
                _line(ax, rows, "distance", colours[d], None, STYLES[w])
        _depth_entries(ax, v, depths, colours)
        ax.axhline(SHATTERED, color="grey", lw=0.8, label=f"correlation {SHATTERED}: below it, shattered")
        ax.set_xlabel("distance between the two points (fraction of the line)")
        ax.set_title(PANELS[v], fontsize=10)
        ax.grid(alpha=0.3)
        figstyle.legend(ax, figstyle.weights_proxies(), fontsize=7)
    axes[0].set_ylabel("correlation of input gradients")
    _title(fig, gradcorr_finding(frame), title)
    return fig


def identity(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Distance from the identity per block: ‖F(x)‖/‖x‖ for ResNets, ‖block(x) − x‖/‖x‖ for plain
    nets, against the block's last layer index; dotted at initialisation, solid after training.
    Two different ratios: each panel has its own axis. Hollow markers: down-sampling blocks (ResNet
    only: a plain one has no identity to compare)."""
    fig, axes = _panels(frame, sharey=False)
    colours = figstyle.depth_colours(sorted(frame["depth"].unique()))
    for ax, v in zip(axes, figstyle.variants(frame), strict=True):
        q = "branch_ratio" if v == "residual" else "change_ratio"
        part = frame[(frame["variant"] == v) & (frame["quantity"] == q)]
        depths = sorted(part["depth"].unique())
        downs = False
        for d in depths:
            for w in ("initial", "final"):
                rows = part[(part["depth"] == d) & (part["weights"] == w)]
                _line(ax, rows, "layer", colours[d], None, STYLES[w])
                down = rows[rows["downsampling"].fillna(False).astype(bool)]
                if not down.empty:
                    downs = True
                    mean = down.groupby("layer")["value"].mean()
                    ax.plot(mean.index, mean.values, "o", mfc="none", color=colours[d], ms=6)
        _depth_entries(ax, v, depths, colours)
        extra = figstyle.weights_proxies()
        if downs:
            extra.append(
                figstyle.proxy({"ls": "none"}, "a down-sampling block", marker="o", mfc="none", ms=6)
            )
        ax.axhline(1.0, color="grey", lw=0.8, label="1: a change as large as the input")
        if v == "residual":  # a branch's share falls along the stack: a log axis, in plain numbers
            ax.set_yscale("log")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(matplotlib.ticker.FormatStrFormatter("%.2g"))
        ax.set_xlabel("layer index (the block's last weight layer)")
        ax.set_ylabel(SYMBOLS[v] + (" (branch against input)" if v == "residual" else " (change of input)"))
        ax.set_title(PANELS[v], fontsize=10)
        ax.grid(alpha=0.3)
        figstyle.legend(ax, extra, fontsize=7)
    _title(fig, identity_finding(frame), title)
    return fig


DRAW = {"landscape": landscape, "lesion": lesion, "gradcorr": gradcorr, "identity": identity}


def probe_frame(
    out: Any, run_ids: list[str], kind: str, settings: pd.DataFrame | None = None
) -> pd.DataFrame:
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
