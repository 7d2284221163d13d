"""Figures of a sweep, drawn with matplotlib (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from degrade.store import atomic_write  # noqa: E402

FORMATS = ("png", "svg", "pdf")
KINDS = ("curves", "depth", "gradients", "responses")
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


def _band(ax: plt.Axes, x, mean, std, colour, label: str | None, style: str = "-",
          marker: str | None = None) -> None:
    ax.plot(x, mean, style, color=colour, label=label, marker=marker, ms=4)
    if (std > 0).any():
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)


VARIANT_COLOURS = {"plain": "tab:red", "residual": "tab:blue"}


def depth(metrics: pd.DataFrame, title: str = "") -> plt.Figure:
    """Final training error against depth, plain and residual: the degradation at a glance.

    Each point is the mean over seeds of a run's last epoch, with a band of one std;
    diverged runs are left out.
    """
    from degrade.report import final_rows

    last = final_rows(metrics)
    if "state" in last:
        last = last[last["state"] != "diverged"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for variant in ("plain", "residual"):
        part = last[last["variant"] == variant]
        if part.empty:
            continue
        g = part.groupby("depth")
        for column, style in (("train_error", "-"), ("test_error", ":")):
            mean, std = g[column].mean() * 100, g[column].std().fillna(0) * 100
            label = f"{TITLES[variant]}, {'train' if column == 'train_error' else 'test'}"
            _band(ax, mean.index, mean, std, VARIANT_COLOURS[variant], label, style, marker="o")
    ax.set_xlabel("depth (weight layers)")
    ax.set_ylabel("final error (%)")
    ax.set_ylim(bottom=0)
    ax.set_xticks(sorted(last["depth"].unique()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "final error against depth", fontsize=10)
    fig.tight_layout()
    return fig


def _per_layer(layers: pd.DataFrame, column: str, ylabel: str, epochs: list[int] | None,
               title: str, log: bool) -> plt.Figure:
    """``column`` against layer index: one panel per variant, a line per depth (and epoch)."""
    variants = [v for v in ("plain", "residual") if v in set(layers["variant"])]
    all_epochs = sorted(layers["epoch"].unique())
    chosen = [e for e in (epochs or [all_epochs[-1]]) if e in all_epochs] or [all_epochs[-1]]
    colours = _depth_colours(sorted(layers["depth"].unique()))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.2), sharey=True,
                             squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        part = layers[layers["variant"] == variant]
        for d in sorted(part["depth"].unique()):
            for k, e in enumerate(chosen):
                sel = part[(part["depth"] == d) & (part["epoch"] == e)]
                if sel.empty:
                    continue
                label = f"{TITLES[variant]}-{d}" + (f", epoch {e}" if len(chosen) > 1 else "")
                style = styles[k % len(styles)]
                if log:
                    # Mean and spread of log values: a band that stays positive on a log axis.
                    g = np.log10(sel[column].clip(lower=1e-12)).groupby(sel["layer"])
                    m, sd = g.mean(), g.std().fillna(0)
                    ax.plot(m.index, 10**m, style, color=colours[d], label=label)
                    if (sd > 0).any():
                        ax.fill_between(m.index, 10 ** (m - sd), 10 ** (m + sd), color=colours[d], alpha=0.2)
                else:
                    g = sel.groupby("layer")[column]
                    _band(ax, g.mean().index, g.mean(), g.std().fillna(0), colours[d], label, style)
        ax.set_title(f"{TITLES[variant]} networks", fontsize=10)
        ax.set_xlabel("layer index")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(f"{title} (epoch {', '.join(map(str, chosen))})", fontsize=10)
    fig.tight_layout()
    return fig


def gradients(layers: pd.DataFrame, epochs: list[int] | None = None, title: str = "") -> plt.Figure:
    """Gradient norm of each weight layer against its index, plain beside residual."""
    return _per_layer(layers, "grad_norm", "gradient norm (fixed batch)", epochs,
                      title or "gradient norm by layer", log=True)


def responses(layers: pd.DataFrame, epochs: list[int] | None = None, title: str = "") -> plt.Figure:
    """Std of each 3x3 layer's response (after BN, before ReLU/addition): the paper's Fig. 7.

    The linear head is left out, as in the paper: its outputs are logits, not responses.
    """
    layers = layers[layers["name"] != "fc"]
    return _per_layer(layers, "response_std", "std of layer response", epochs,
                      title or "layer responses", log=False)


def save(fig: plt.Figure, folder: Path, stem: str, formats: list[str]) -> list[Path]:
    """Write ``fig`` as ``folder/stem.<fmt>`` for each format; return the paths."""
    paths = []
    for fmt in formats:
        path = Path(folder) / f"{stem}.{fmt}"
        atomic_write(path, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=150))
        paths.append(path)
    plt.close(fig)
    return paths
