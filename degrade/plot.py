"""Figures of a sweep, drawn with matplotlib (no display needed).

A sweep that varied settings besides depth (``optim.lr=0.01,0.1``) gets one row of panels per
setting in the curves and per-layer figures and one panel per setting in the depth figure:
runs trained differently are never averaged together. The grid puts a setting on an axis.
"""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from degrade import figstyle, flat, frames, store, sweepdata  # noqa: E402
from degrade.atomic import atomic_write  # noqa: E402
from degrade.probes.settings import NAMES as PROBE_KINDS  # noqa: E402
from degrade.verdict import published_errors, sweep_verdicts  # noqa: E402

FORMATS = ("png", "svg", "pdf")
KINDS = ("curves", "depth", "grid", "gradients", "responses", *PROBE_KINDS)
TITLES, PANELS = figstyle.TITLES, figstyle.PANELS
AXIS_LABELS = {"depth": "depth (weight layers)"}


class PlotError(ValueError):
    """A figure that cannot be drawn from what the sweep holds (the message is one line)."""


def _settings(frame: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the settings ``keys``; one unlabelled group without keys."""
    if not keys:
        return [("", frame)]
    groups = frame.groupby(keys, dropna=False, sort=True)
    return [
        (", ".join(f"{k}={flat.show(v)}" for k, v in zip(keys, values, strict=True)), part)
        for values, part in groups
    ]


def _panel_title(variant: str, setting: str) -> str:
    return PANELS[variant] + (f"\n{setting}" if setting else "")


def _panels(rows: int, columns: int) -> tuple[plt.Figure, Any]:
    """A grid of panels sharing one y axis: a row per setting, a column per variant."""
    return plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), sharey=True, squeeze=False)


def _top(frame: pd.DataFrame) -> float:
    """The top of an error axis in percent: a little above the largest error (100 with none)."""
    if frame.empty:
        return 100.0
    top = max(frame[["train_error", "test_error"]].max().max() * 100 * 1.05, 5)
    return top if top == top else 100.0  # every value NaN: nothing finished an epoch


def _no_runs(ax: plt.Axes, variant: str, setting: str) -> None:
    """A panel of a pair a grid left out (a cure defined for the other variant) says so."""
    ax.set_axis_off()
    said = f"no {variant} runs\n{setting}".strip()
    ax.text(0.5, 0.5, said, ha="center", va="center", fontsize=9, color="0.4", transform=ax.transAxes)


def _mean_band(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    g = frame.groupby("epoch")[column]
    return pd.DataFrame({"mean": g.mean(), "std": g.std().fillna(0.0)}).reset_index()


def curves(metrics: pd.DataFrame, title: str = "", keys: list[str] | None = None) -> plt.Figure:
    """The paper's Fig. 6 look in the figures' one language (``figstyle``): plain beside residual,
    one colour per depth, training error bold and solid, test error thin and dashed.

    With several seeds each line is the mean, with a band of one std. One row of panels per
    combination of the settings ``keys``.
    """
    variants = figstyle.variants(metrics)
    settings = _settings(metrics, keys or [])
    colours = figstyle.depth_colours(sorted(metrics["depth"].unique()))
    fig, axes = _panels(len(settings), len(variants))
    top = _top(metrics)
    for row, (setting, rows) in zip(axes, settings, strict=True):
        for ax, variant in zip(row, variants, strict=True):
            part = rows[rows["variant"] == variant]
            if part.empty:
                _no_runs(ax, variant, setting)
                continue
            for depth in sorted(part["depth"].unique()):
                runs = part[part["depth"] == depth]
                colour = colours[depth]
                diverged = "state" in runs and (runs.groupby("run_id")["state"].first() == "diverged").all()
                # Test first, so the training line is drawn over it.
                for column, style in (("test_error", figstyle.TEST), ("train_error", figstyle.TRAIN)):
                    band = _mean_band(runs, column)
                    label = None
                    if column == "train_error":
                        label = figstyle.name(variant, depth) + (" (diverged)" if diverged else "")
                    ax.plot(
                        band["epoch"],
                        band["mean"] * 100,
                        color=colour,
                        label=label,
                        marker="x" if diverged else None,
                        markevery=[-1],
                        **style,
                    )
                    if runs["seed"].nunique() > 1:
                        ax.fill_between(
                            band["epoch"],
                            (band["mean"] - band["std"]) * 100,
                            (band["mean"] + band["std"]) * 100,
                            color=colour,
                            alpha=0.15,
                        )
            ax.set_title(_panel_title(variant, setting), fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylim(0, top)
            ax.grid(alpha=0.3)
            figstyle.legend(ax, figstyle.train_test_proxies())
        row[0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _band(
    ax: plt.Axes,
    x,
    mean,
    std,
    colour,
    label: str | None,
    style: dict[str, Any] | None = None,
    marker: str | None = None,
    **more: Any,
) -> None:
    ax.plot(x, mean, color=colour, label=label, marker=marker, ms=5, **{**(style or figstyle.FINAL), **more})
    if (std > 0).any():
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)


def depth(metrics: pd.DataFrame, title: str = "", keys: list[str] | None = None) -> plt.Figure:
    """Final error against depth, plain beside residual: the degradation at a glance.

    Each point is the mean over seeds of a run's last epoch (coloured by its depth, as in every
    figure), with a band of one std; training error bold and solid, test error thin and dashed;
    diverged runs are left out. Where the runs train what He et al. (2015) trained (CIFAR-10,
    ResNet, option A), the published test errors of their Table 6 are marked. One row of panels
    per combination of the settings ``keys``.
    """
    last = sweepdata.final_rows(metrics)
    if "state" in last:
        last = last[last["state"] != "diverged"]
    variants = figstyle.variants(metrics)
    settings = _settings(last, keys or []) if not last.empty else [("", last)]
    colours = figstyle.depth_colours(sorted(metrics["depth"].unique()))
    fig, axes = _panels(len(settings), len(variants))
    # One scale for every panel, set once: a bottom of 0 set per panel would freeze the first
    # panel's autoscaled top for all the panels that share it.
    top = _top(last)
    for row, (setting, part_all) in zip(axes, settings, strict=True):
        paper = published_errors(part_all)
        for ax, variant in zip(row, variants, strict=True):
            part = part_all[part_all["variant"] == variant]
            if part.empty and setting:
                _no_runs(ax, variant, setting)
                continue
            g = part.groupby("depth")
            for column, style, hollow in (
                ("test_error", figstyle.TEST, True),
                ("train_error", figstyle.TRAIN, False),
            ):
                if part.empty:
                    break
                mean, std = g[column].mean() * 100, g[column].std().fillna(0) * 100
                _band(ax, mean.index, mean, std, figstyle.NEUTRAL, None, style)
                face = [("white" if hollow else colours[d]) for d in mean.index]
                ax.scatter(
                    mean.index,
                    mean,
                    s=42,
                    c=face,
                    edgecolors=[colours[d] for d in mean.index],
                    linewidths=1.5,
                    zorder=3,
                )
            for d in sorted(part["depth"].unique()):  # one legend entry per depth, in its colour
                ax.plot([], [], "o", color=colours[d], label=figstyle.name(variant, d))
            if paper and variant == "residual":
                ds = sorted(paper)
                ax.plot(
                    ds,
                    [100 * paper[d] for d in ds],
                    "*",
                    color="black",
                    ms=9,
                    ls="none",
                    label="He et al. 2015, Table 6\n(CIFAR-10 test)",
                )
            ax.set_xlabel(AXIS_LABELS["depth"])
            ax.set_ylim(0, top)
            if not part_all.empty:
                ax.set_xticks(sorted(part_all["depth"].unique()))
            ax.grid(alpha=0.3)
            ax.set_title(_panel_title(variant, setting), fontsize=10)
            figstyle.legend(
                ax,
                [
                    figstyle.proxy(figstyle.TRAIN, "training error", marker="o"),
                    figstyle.proxy(figstyle.TEST, "test error", marker="o", mfc="white"),
                ],
            )
        row[0].set_ylabel("final error (%)")
    fig.suptitle(title or "final error against depth", fontsize=10)
    fig.tight_layout()
    return fig


def grid(metrics: pd.DataFrame, x: str, y: str, keys: list[str] | None = None, title: str = "") -> plt.Figure:
    """A map of the final training error over two settings (``x`` and ``y``: ``depth`` or a key
    the sweep varied), plain beside residual on one colour scale, the mean over seeds in each cell.

    A cell whose runs all diverged says so; a combination the sweep did not run is grey. The
    settings in ``keys`` other than ``x`` and ``y`` get one row of panels per combination.
    """
    last = sweepdata.final_rows(metrics)
    others = [k for k in (keys or []) if k not in (x, y)]
    variants = figstyle.variants(last)
    xs = flat.sorted_values(list(last[x].unique()))
    ys = flat.sorted_values(list(last[y].unique()))
    state = last["state"] if "state" in last else pd.Series("done", index=last.index)
    ok = last[state != "diverged"]
    means = ok.groupby([*others, "variant", y, x], dropna=False)["train_error"].mean() * 100
    finite = means[np.isfinite(means)]
    vmax = float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#e6e6e6")
    norm = matplotlib.colors.Normalize(vmin=0.0, vmax=vmax)
    settings = _settings(last, others)
    seeds = last["seed"].nunique()
    width = max(1.0 * len(xs), 2.5) * len(variants) + 2.2
    height = (max(0.55 * len(ys), 1.6) + 1.1) * len(settings) + 0.6
    fig, axes = plt.subplots(
        len(settings), len(variants), figsize=(width, height), squeeze=False, layout="constrained"
    )
    image = None
    for row, (setting, rows) in zip(axes, settings, strict=True):
        for ax, variant in zip(row, variants, strict=True):
            part = rows[rows["variant"] == variant]
            cells = np.full((len(ys), len(xs)), np.nan)
            text = [["not run"] * len(xs) for _ in ys]
            for (i, yv), (j, xv) in itertools.product(enumerate(ys), enumerate(xs)):
                sel = part[(part[y] == yv) & (part[x] == xv)]
                if sel.empty:
                    continue
                done = sel[sel["state"] != "diverged"] if "state" in sel else sel
                if done.empty:
                    text[i][j] = "diverged"
                    continue
                cells[i, j] = done["train_error"].mean() * 100
                text[i][j] = f"{cells[i, j]:.1f}" if cells[i, j] == cells[i, j] else "no epoch"
                if len(done) < len(sel):
                    text[i][j] += f"\n({len(sel) - len(done)} div.)"
                if sel["seed"].nunique() < seeds:  # a mean of fewer seeds than the others
                    text[i][j] += f"\n({sel['seed'].nunique()} of {seeds} seeds)"
            image = ax.imshow(
                np.ma.masked_invalid(cells), cmap=cmap, norm=norm, aspect="auto", origin="lower"
            )
            for (i, _), (j, _) in itertools.product(enumerate(ys), enumerate(xs)):
                v = cells[i, j]
                dark = v == v and sum(cmap(norm(v))[:3]) < 1.5
                ax.text(
                    j, i, text[i][j], ha="center", va="center", fontsize=9, color="white" if dark else "black"
                )
            ax.set_xticks(range(len(xs)), [flat.show(v) for v in xs])
            ax.set_yticks(range(len(ys)), [flat.show(v) for v in ys])
            ax.set_xlabel(AXIS_LABELS.get(x, x))
            ax.set_ylabel(AXIS_LABELS.get(y, y))
            ax.set_title(_panel_title(variant, setting), fontsize=10)
    if image is not None:
        fig.colorbar(
            image,
            ax=axes,
            shrink=0.9,
            label="final training error (%)" + (f", mean of {seeds} seeds" if seeds > 1 else ""),
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _per_layer(
    layers: pd.DataFrame,
    column: str,
    ylabel: str,
    epochs: list[int] | None,
    title: str,
    log: bool,
    keys: list[str],
) -> plt.Figure:
    """``column`` against layer index: a panel per variant (and setting), a line per depth (and epoch)."""
    variants = figstyle.variants(layers)
    settings = _settings(layers, keys)
    all_epochs = sorted(layers["epoch"].unique())
    chosen = [e for e in (epochs or [all_epochs[-1]]) if e in all_epochs] or [all_epochs[-1]]
    colours = figstyle.depth_colours(sorted(layers["depth"].unique()))
    # Earlier epochs dotted (and dash-dot), the last one solid: "start" and "end" as in the probes.
    styles = [*figstyle.EARLIER[: len(chosen) - 1], figstyle.FINAL] if len(chosen) <= 3 else None
    fig, axes = _panels(len(settings), len(variants))
    for row, (setting, rows) in zip(axes, settings, strict=True):
        for ax, variant in zip(row, variants, strict=True):
            part = rows[rows["variant"] == variant]
            for d in sorted(part["depth"].unique()):
                for k, e in enumerate(chosen):
                    sel = part[(part["depth"] == d) & (part["epoch"] == e)]
                    if sel.empty:
                        continue
                    label = figstyle.name(variant, d) + (f", epoch {e}" if len(chosen) > 1 else "")
                    fade = 0.3 + 0.7 * k / max(len(chosen) - 1, 1)  # many epochs: later is darker
                    style = styles[k] if styles else {**figstyle.FINAL, "alpha": fade}
                    if log:
                        # Mean and spread of log values: a band that stays positive on a log axis.
                        g = np.log10(sel[column].clip(lower=1e-12)).groupby(sel["layer"])
                        m, sd = g.mean(), g.std().fillna(0)
                        ax.plot(m.index, 10**m, color=colours[d], label=label, **style)
                        if (sd > 0).any():
                            ax.fill_between(
                                m.index, 10 ** (m - sd), 10 ** (m + sd), color=colours[d], alpha=0.2
                            )
                    else:
                        g = sel.groupby("layer")[column]
                        _band(ax, g.mean().index, g.mean(), g.std().fillna(0), colours[d], label, style)
            ax.set_title(_panel_title(variant, setting), fontsize=10)
            ax.set_xlabel("layer index")
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            figstyle.legend(ax)
        row[0].set_ylabel(ylabel)
    fig.suptitle(f"{title} (epoch {', '.join(map(str, chosen))})", fontsize=10)
    fig.tight_layout()
    return fig


def gradients(
    layers: pd.DataFrame, epochs: list[int] | None = None, title: str = "", keys: list[str] | None = None
) -> plt.Figure:
    """Gradient norm of each weight layer against its index, plain beside residual."""
    return _per_layer(
        layers,
        "grad_norm",
        "gradient norm (fixed batch)",
        epochs,
        title or "gradient norm by layer",
        log=True,
        keys=keys or [],
    )


def responses(
    layers: pd.DataFrame, epochs: list[int] | None = None, title: str = "", keys: list[str] | None = None
) -> plt.Figure:
    """Std of each 3x3 layer's response (after BN, before ReLU/addition): the paper's Fig. 7.

    The linear head is left out, as in the paper: its outputs are logits, not responses.
    """
    layers = layers[layers["name"] != "fc"]
    return _per_layer(
        layers,
        "response_std",
        "std of layer response",
        epochs,
        title or "layer responses",
        log=False,
        keys=keys or [],
    )


def sweep_layers(sweep: sweepdata.SweepData) -> pd.DataFrame:
    """The sweep's per-layer diagnostics, with each run's variant, depth, seed and settings."""
    layers = frames.load_layers(sweep.out, list(sweep.metrics["run_id"].unique()))
    if layers.empty:
        return layers
    what = sweep.metrics.groupby("run_id")[["variant", "depth", "seed", *sweep.keys]].first()
    return layers.join(what, on="run_id")


def draw(
    kind: str,
    sweep: sweepdata.SweepData,
    epochs: list[int] | None = None,
    x: str = "depth",
    y: str | None = None,
    layers: pd.DataFrame | None = None,
    verdict: bool = True,
) -> plt.Figure:
    """The figure ``kind`` (one of KINDS) of ``sweep``, titled with what the sweep trained.

    ``epochs``: which epochs the per-layer figures show (default: the last). ``x``/``y``: the
    grid's axes (``y`` defaults to the one setting the sweep varied). ``layers``: the per-layer
    rows when already read. ``verdict``: the figures of errors carry the verdict under their
    panels (a page that says it above them passes False). PlotError when the sweep cannot give
    this figure.
    """
    if kind not in KINDS:
        raise PlotError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    title = f"sweep {sweep.name}: {sweepdata.describe(sweep)}"
    keys = sweep.keys
    # The figures of errors carry the verdict in the words summary and report use, below the
    # panels, and the one caption of the figures' language.
    said = [*(sweep_verdicts(sweep) if verdict else []), figstyle.CAPTION]
    if kind in ("curves", "depth", "grid"):
        if kind == "curves":
            fig = curves(sweep.metrics, title=title, keys=keys)
        elif kind == "depth":
            fig = depth(sweep.metrics, title=f"{title}\nfinal error against depth", keys=keys)
        else:
            x, y = grid_axes(sweep, x, y)
            fig = grid(sweep.metrics, x, y, keys=keys, title=f"{title}\nfinal training error")
            said = said[:-1]  # a map of training error only: no lines to explain
        figstyle.footer(fig, said)
        return fig
    if kind in PROBE_KINDS:
        return probe_figure(kind, sweep, title)
    layers = sweep_layers(sweep) if layers is None else layers
    if layers.empty:
        raise PlotError(f"sweep {sweep.name!r} has no per-layer diagnostics (trainer.diagnostics=false?)")
    draw_layers = gradients if kind == "gradients" else responses
    return draw_layers(layers, epochs, title=f"{title}\n{kind}", keys=keys)


def probe_figure(kind: str, sweep: sweepdata.SweepData, title: str) -> plt.Figure:
    """The figure of the probe ``kind`` (``degrade probe``) of the sweep's runs."""
    from degrade import probeplot

    settings = sweep.metrics.groupby("run_id")[sweep.keys].first() if sweep.keys else None
    frame = probeplot.probe_frame(sweep.out, list(sweep.metrics["run_id"].unique()), kind, settings)
    if frame.empty:
        raise PlotError(f"sweep {sweep.name!r} has no {kind} probes; run `degrade probe --kind {kind}` first")
    if settings is not None:
        title += "\n(the first setting: " + ", ".join(sweep.keys) + " varied)"
    return probeplot.draw(kind, frame, title)


def grid_axes(sweep: sweepdata.SweepData, x: str, y: str | None) -> tuple[str, str]:
    """The grid's two axes, checked: ``depth`` or settings the sweep varied, and not the same."""
    choices = ["depth", *sweep.keys]
    if y is None:
        rest = [k for k in choices if k != x]
        if len(rest) != 1:
            raise PlotError(
                f"--kind grid needs --y: one of {', '.join(rest)}"
                if rest
                else f"sweep {sweep.name!r} varied nothing but depth; sweep a setting too, "
                "e.g. degrade sweep --depths 8,20,56 optim.lr=0.01,0.03,0.1"
            )
        y = rest[0]
    for flag, key in (("--x", x), ("--y", y)):
        if key not in choices:
            raise PlotError(
                f"{flag} {key!r} is not a setting sweep {sweep.name!r} varied; "
                f"choose from {', '.join(choices)}"
            )
    if x == y:
        raise PlotError(f"--x and --y are both {x!r}; the grid needs two different settings")
    return x, y


def save(fig: plt.Figure, folder: Path, stem: str, formats: list[str]) -> list[Path]:
    """Write ``fig`` as ``folder/stem.<fmt>`` for each format; return the paths."""
    paths = []
    for fmt in formats:
        path = store.resolve(Path(folder), f"{stem}.{fmt}")
        atomic_write_figure(fig, path, fmt)
        paths.append(path)
    plt.close(fig)
    return paths


def atomic_write_figure(fig: plt.Figure, path: Path, fmt: str) -> None:
    """Write one figure file atomically (bbox tight, so colour bars and titles fit)."""
    atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight"))


# SVG that lives inside an HTML page: ids made unique per figure, nothing that names a URL.
_SVG_RC: dict[str, Any] = {"svg.fonttype": "path", "svg.hashsalt": "degrade"}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def inline_svg(fig: plt.Figure, prefix: str) -> str:
    """``fig`` as an ``<svg>`` element to paste into an HTML page, then closed.

    Text is drawn as paths (no font to fetch); the XML prolog, DOCTYPE and namespace
    declarations go (an HTML parser puts ``<svg>`` in its namespace itself), and every id and
    reference gets ``prefix``, so several figures on one page cannot take each other's
    clip paths or glyphs.
    """
    buf = io.StringIO()
    with plt.rc_context(_SVG_RC):  # type: ignore[arg-type]  # matplotlib types rc keys as literals
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', text)
    text = re.sub(r'(href)="#([^"]+)"', rf'\1="#{prefix}\2"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", text)
    return text.strip()
