"""Figures of a sweep, drawn with matplotlib (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from degrade.store import atomic_write  # noqa: E402

FORMATS = ("png", "svg", "pdf")
TITLES = {"plain": "plain", "residual": "ResNet"}


def _depth_colours(depths: list[int]) -> dict[int, tuple]:
    cmap = plt.get_cmap("viridis")
    n = max(len(depths) - 1, 1)
    return {d: cmap(0.85 * i / n) for i, d in enumerate(sorted(depths))}


def _mean_band(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    g = frame.groupby("epoch")[column]
    return pd.DataFrame({"mean": g.mean(), "std": g.std().fillna(0.0)}).reset_index()


def curves(metrics: pd.DataFrame, title: str = "") -> plt.Figure:
    """The paper's Fig. 6 look: plain beside residual, train error thin and dashed, test bold.

    One colour per depth; with several seeds each line is the mean, with a band of one std.
    """
    variants = [v for v in ("plain", "residual") if v in set(metrics["variant"])]
    colours = _depth_colours(sorted(metrics["depth"].unique()))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.2),
                             sharey=True, squeeze=False)
    top = max(metrics[["train_error", "test_error"]].max().max() * 100 * 1.05, 5)
    top = top if top == top else 100.0  # every value NaN: nothing finished an epoch
    for ax, variant in zip(axes[0], variants, strict=True):
        part = metrics[metrics["variant"] == variant]
        for depth in sorted(part["depth"].unique()):
            runs = part[part["depth"] == depth]
            colour = colours[depth]
            diverged = "state" in runs and (runs.groupby("run_id")["state"].first() == "diverged").all()
            for column, style, width in (("train_error", "--", 1.0), ("test_error", "-", 2.2)):
                band = _mean_band(runs, column)
                label = None
                if column == "test_error":
                    label = f"{TITLES[variant]}-{depth}" + (" (diverged)" if diverged else "")
                ax.plot(band["epoch"], band["mean"] * 100, style, lw=width, color=colour,
                        label=label, marker="x" if diverged else None, markevery=[-1])
                if runs["seed"].nunique() > 1:
                    ax.fill_between(band["epoch"], (band["mean"] - band["std"]) * 100,
                                    (band["mean"] + band["std"]) * 100, color=colour, alpha=0.15)
        ax.set_title(f"{TITLES[variant]} networks" if variant == "plain" else "residual networks (ResNet)")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend(title="bold: test, dashed: train", fontsize=8, title_fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, folder: Path, stem: str, formats: list[str]) -> list[Path]:
    """Write ``fig`` as ``folder/stem.<fmt>`` for each format; return the paths."""
    paths = []
    for fmt in formats:
        path = Path(folder) / f"{stem}.{fmt}"
        atomic_write(path, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=150))
        paths.append(path)
    plt.close(fig)
    return paths
