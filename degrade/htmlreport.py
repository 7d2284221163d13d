"""A sweep's report as one HTML file that opens offline in any browser.

It holds the verdict, the summary table, the figures (inline SVG, text drawn as paths), what
was run and with which settings, where it ran, and the state of every run, so the file alone
is enough to share a result. Nothing in it loads from anywhere: no script, no font, no image
file, no stylesheet but its own.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from degrade import compute, environment, flat, frames, plot, store, sweepdata, verdict
from degrade.atomic import write_text_atomic
from degrade.probes import tables
from degrade.runids import identity_config

FILE = "report.html"
# What each probe's figure shows (docs/probes.md has the whole story).
PROBE_CAPTIONS = {
    "landscape": "Probe: the training loss around the final weights along two filter-normalised random "
    "directions (Li et al. 2018): the deepest plain net beside the ResNet of its depth, one "
    "colour scale; below, the 1-D slices of every depth.",
    "lesion": "Probe: training (bold) and test (dashed) error when blocks are removed at test time (Veit et "
    "al. 2016), against the number removed; triangles: a down-sampling block removed alone.",
    "gradcorr": "Probe: correlation of input gradients against distance along a line between two training "
    "images (Balduzzi et al. 2017), at initialisation (dotted) and after training (solid).",
    "identity": "Probe: each block's distance from the identity, ‖F(x)‖/‖x‖ (ResNet) and "
    "‖block(x) − x‖/‖x‖ (plain), two ratios on two axes, at initialisation (dotted) and after "
    "training (solid).",
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1180px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.what { color: #555; margin-top: 0; }
.verdict { font-size: 1.05em; background: #f4f7fb; border-left: 4px solid #3a6ea5; padding: 0.6em 1em; }
.verdict li { margin: 0.2em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tr.bad td { background: #fff1f0; }
figure { margin: 1em 0 2em 0; } figure svg { width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
.warn { color: #a61b1b; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Any, std: Any = None) -> str:
    if value is None or value != value:
        return "-"
    if std is not None and std == std:
        return f"{100 * value:.2f} ± {100 * std:.2f}"
    return f"{100 * value:.2f}"


def _table(
    header: list[str], rows: list[list[Any]], text_columns: int = 1, bad: list[bool] | None = None
) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned text."""

    def cells(values: list[Any], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=text' if i < text_columns else ''}>{_e(v)}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(
        f"<tr{' class=bad' if bad and bad[i] else ''}>{cells(r, 'td')}</tr>" for i, r in enumerate(rows)
    )
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- sections


def _summary(sweep: sweepdata.SweepData, table: pd.DataFrame) -> str:
    paper = bool(table["paper_test_error"].notna().any())
    multi = bool((table["seeds"] > 1).any())
    header = [*sweep.keys, "variant", "depth", "seeds", "epochs", "train error (%)", "test error (%)"]
    header += ["paper test error (%)", "test - paper"] if paper else []
    header += ["diverged"]
    rows = []
    for r in table.to_dict("records"):
        row = [
            *(flat.show(r[k]) for k in sweep.keys),
            r["variant"],
            r["depth"],
            r["seeds"],
            int(r["epochs"]) if r["epochs"] == r["epochs"] else "-",
            _pct(r["train_error_mean"], r["train_error_std"] if multi else None),
            _pct(r["test_error_mean"], r["test_error_std"] if multi else None),
        ]
        if paper:
            row += [_pct(r["paper_test_error"]), _pct(r["test_error_mean"] - r["paper_test_error"])]
        rows.append([*row, r["diverged"]])
    out = _table(header, rows, text_columns=len(sweep.keys) + 1)
    out += (
        '<p class="note">Final epoch of each run; mean ± std over seeds where there are several. '
        "Diverged runs are counted, not averaged.</p>"
    )
    absent = len(sweep.record.get("runs", [])) - len(_plotted(sweep))
    if absent > 0:
        out += (
            f'<p class="warn">{absent} of the sweep\'s {len(sweep.record["runs"])} runs have no '
            'readable epoch and are not in this table: see <a href="#runs">Runs</a>.</p>'
        )
    if paper:
        pub = verdict.published()
        out += (
            f'<p class="note">Paper: {_e(pub["metric"])}, {_e(pub["source"])}. These are '
            "CIFAR-10 <em>test</em> errors of fully trained ResNets (64k iterations); compare them "
            "only with runs of the same setting.</p>"
        )
    return out


def _figures(sweep: sweepdata.SweepData) -> str:
    layers = plot.sweep_layers(sweep)
    wanted: list[tuple[str, dict[str, Any], str]] = [
        ("curves", {}, "Training (bold, solid) and test (thin, dashed) error by epoch, a colour per depth."),
        ("depth", {}, "Final error against depth: a rising plain line is the degradation."),
    ]
    for key in sweep.keys:
        wanted.append(
            (
                "grid",
                {"y": key},
                f"Final training error over depth and {key}, plain beside residual on one colour scale.",
            )
        )
    if not layers.empty:
        wanted += [
            (
                "gradients",
                {},
                "Gradient norm of each weight layer on a fixed batch (last epoch, log scale). "
                "At the last epoch the norms also reflect how far each net has converged: a net that fits "
                "its training data gets small gradients, one stuck at a high error keeps larger ones.",
            ),
            ("responses", {}, "Std of each layer's response after BN (the paper's Fig. 7), last epoch."),
        ]
    wanted += [
        (kind, {}, PROBE_CAPTIONS[kind])
        for kind in tables.kinds_present(sweep.out, list(sweep.metrics["run_id"].unique()))
    ]
    parts = []
    for i, (kind, args, caption) in enumerate(wanted):
        fig = plot.draw(kind, sweep, layers=layers, verdict=False, **args)  # the page says it at the top
        svg = plot.inline_svg(fig, prefix=f"f{i}-")
        parts.append(f'<figure id="figure-{kind}{i}">{svg}<figcaption>{_e(caption)}</figcaption></figure>')
    if layers.empty:
        parts.append(
            '<p class="note">No per-layer diagnostics in these runs '
            "(trainer.diagnostics=false), so no gradient or response figures.</p>"
        )
    return "\n".join(parts)


def _runs(sweep: sweepdata.SweepData, listing: pd.DataFrame) -> str:
    plotted = _plotted(sweep)
    settings = {rid: flat.flatten(identity_config(cfg)) for rid, cfg in sweep.configs.items()}
    header = [
        "run",
        "state",
        *sweep.keys,
        "epochs",
        "metrics",
        "in figures",
        "train error (%)",
        "test error (%)",
        "error",
    ]
    rows, bad, missing = [], [], []
    for r in listing.to_dict("records"):
        rid = r["run_id"]
        try:
            has_file = store.RunDir(sweep.out, rid).metrics.is_file()
        except store.StoreError:  # a link: unreadable, as the listing says
            has_file = True
        readable = "readable" if rid in plotted else ("unreadable" if has_file else "none yet")
        epochs = f"{r['epochs_done']}/{r['epochs']}" if r.get("epochs") else str(r["epochs_done"])
        values = [flat.show(settings[rid].get(k)) if rid in settings else "?" for k in sweep.keys]
        rows.append(
            [
                rid,
                r["state"],
                *values,
                epochs,
                readable,
                "yes" if rid in plotted else "no",
                _pct(r["train_error"]),
                _pct(r["test_error"]),
                r.get("error") or "",
            ]
        )
        bad.append(r["state"] != "done" or rid not in plotted)
        if rid not in plotted:
            missing.append(f"{rid} ({r['state']}, metrics {readable})")
    counts = Counter(listing["state"])
    out = f"<p>{len(listing)} runs: " + ", ".join(f"{n} {_e(s)}" for s, n in sorted(counts.items())) + ".</p>"
    if missing:
        out += '<p class="warn">Not in the table or figures: ' + _e("; ".join(missing)) + ".</p>"
    return out + _table(header, rows, text_columns=2 + len(sweep.keys), bad=bad)


def _plotted(sweep: sweepdata.SweepData) -> set[str]:
    """The runs with at least one readable epoch: those the table and figures show."""
    return set(sweep.metrics.loc[sweep.metrics["epoch"] > 0, "run_id"])


def _what_was_run(sweep: sweepdata.SweepData, listing: pd.DataFrame) -> str:
    record = sweep.record
    # The store's folder is a path on the machine that ran the sweep: a shared file says <out>.
    stores = {str(c.get("out")) for c in sweep.configs.values() if c.get("out")} | {str(sweep.out.absolute())}

    def local(text: str) -> str:
        for path in sorted((p for p in stores if Path(p).is_absolute() and p != "/"), key=len, reverse=True):
            text = text.replace(path, "<out>")
        return text

    out = f"<p>Command: <code>degrade {_e(local(record.get('command', '')))}</code>"
    if record.get("started"):
        out += f", started {_e(record['started'])}"
    out += ".</p><p>Overrides (flags and Hydra overrides as the sweep expanded them):</p><pre>"
    out += _e(local("\n".join(record.get("overrides", []))) or "(none)") + "</pre>"
    ids = [rid for rid in listing["run_id"] if rid in sweep.configs]
    flattened = [flat.flatten(OmegaConf.to_container(sweep.configs[rid], resolve=True)) for rid in ids]
    differing = flat.differing_keys(flattened) if flattened else {}
    out += "<p>What differs between runs:</p>"
    out += (
        _table(
            ["key", "values"],
            [[k, ", ".join(map(flat.show, v))] for k, v in differing.items()],
            text_columns=2,
        )
        if differing
        else "<p>(nothing)</p>"
    )
    if ids:
        out += f"<p>The resolved config of one run, <code>{_e(ids[0])}</code>:</p>"
        shown = OmegaConf.to_container(sweep.configs[ids[0]], resolve=True)
        assert isinstance(shown, dict)
        shown.pop("out", None)
        out += f"<pre>{_e(OmegaConf.to_yaml(shown))}</pre>"
    return out


def _environment(sweep: sweepdata.SweepData, listing: pd.DataFrame) -> str:
    last = sweepdata.final_rows(sweep.metrics).set_index("run_id")
    seen: Counter[tuple] = Counter()
    for rid in listing["run_id"]:
        try:
            sessions = store.RunDir(sweep.out, rid).status().get("sessions") or []
        except store.StoreError:  # named in the runs table
            sessions = []
        if not sessions and rid not in last.index:
            continue  # never started: it ran nowhere
        env: dict[str, Any] = next((s["environment"] for s in reversed(sessions) if s.get("environment")), {})
        cfg = sweep.configs.get(rid)
        row = last.loc[rid] if rid in last.index else {}
        asked = (sweep.record.get("asked") or {}).get("trainer.precision") or (
            OmegaConf.select(cfg, "trainer.precision") if cfg is not None else None
        )
        threads = env.get("threads", OmegaConf.select(cfg, "trainer.threads") if cfg is not None else None)
        seen[
            (
                env.get("degrade", "not recorded"),
                env.get("torch", "not recorded"),
                row.get("device", env.get("device", "?")),
                env.get("device_name", "not recorded"),
                f"{asked or '?'} -> {row.get('precision', env.get('precision', '?'))}",
                threads if threads is not None else "all cores",
                ", ".join(env["cpu_features"]) or "none" if "cpu_features" in env else "not recorded",
                row.get("step_path", "?"),
            )
        ] += 1
    header = [
        "runs",
        "degrade",
        "torch",
        "device",
        "device name",
        "precision (asked -> used)",
        "threads",
        "bf16 CPU features",
        "step path",
    ]
    out = "<p>Recorded by the runs (each run's latest training session and its metrics rows):</p>"
    out += _table(header, [[n, *k] for k, n in seen.items()], text_columns=0)
    out += (
        '<p class="note">With <code>trainer.precision=auto</code> a CPU that has one of the bf16 '
        f"features ({', '.join(compute.NUMERICS_FLAGS)}) trains in bf16, others in fp32: "
        "the same command gives different numbers on the two kinds of CPU.</p>"
    )
    here = environment.this_machine()
    rows = [
        ["degrade", here["degrade"]],
        ["torch", here["torch"]],
        ["Python", here["python"]],
        ["platform", here["platform"]],
        ["CPU", here["cpu"]],
        ["bf16 CPU features", ", ".join(here["cpu_features"]) or "none"],
        ["GPUs", ", ".join(here["gpus"]) or "none"],
        ["torch threads", here["threads"]],
    ]
    out += "<p>The machine that wrote this report (not necessarily the one that trained):</p>"
    return out + _table(["", "this machine"], rows, text_columns=2)


# --------------------------------------------------------------------------- the page


def build(sweep: sweepdata.SweepData) -> str:
    """The whole report page of ``sweep`` as one HTML string."""
    table = verdict.summarize(sweep.metrics, sweep.keys)
    listing = frames.list_runs(sweep.out, sweep.name)
    lines = "".join(f"<li>{_e(v)}</li>" for v in verdict.sweep_verdicts(sweep))
    sections = [
        ("Verdict", f'<ul class="verdict">{lines}</ul>'),
        ("Final errors", _summary(sweep, table)),
        ("Figures", _figures(sweep)),
        ("Runs", _runs(sweep, listing)),
        ("What was run", _what_was_run(sweep, listing)),
        ("Environment", _environment(sweep, listing)),
    ]
    body = "\n".join(
        f'<section id="{_e(t.lower().replace(" ", "-"))}"><h2>{_e(t)}</h2>\n{s}\n</section>'
        for t, s in sections
    )
    title = f"degrade: sweep {sweep.name}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="what">{_e(sweepdata.describe(sweep))}. Plain and residual networks of the same depths
(He et al. 2015): does the deeper plain net train worse? Written {_e(time.strftime("%Y-%m-%d %H:%M"))}
by degrade {_e(environment.software()["degrade"])}.</p>
{body}
</body>
</html>
"""


def write(out: str | Path, name: str | None = None) -> Path:
    """Write the report of sweep ``name`` (default: the latest) to its folder; return the path.

    The file is replaced atomically: a reader, or a failure half-way, never leaves half a page.
    """
    sweep = sweepdata.load(out, name)
    page = build(sweep)
    folder = store.sweep_dir(sweep.out, sweep.name)
    path = store.resolve(folder, FILE)
    with store.writing(folder):  # a full disk, no permission: one line, as for a figure
        write_text_atomic(path, page)
    return path
