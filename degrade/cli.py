"""The ``degrade`` command: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="See why deeper plain networks train worse, and how residual connections fix it.",
)
# Piped output has no width to fit; 120 columns keep the wider tables (bench) on one line each.
out_console = Console() if sys.stdout.isatty() else Console(width=120)
err_console = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Hydra overrides, e.g. optim.lr=0.05 model=mlp data=cifar10", show_default=False),
]
OutOption = Annotated[str, typer.Option("--out", help="The run store.")]
SweepOption = Annotated[str | None, typer.Option("--sweep", help="Sweep name (default: latest).")]


class UserError(Exception):
    """An error the user caused: one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    # From the modules that do not import torch: an error is reported without waiting for it.
    from degrade.compute import AccelError
    from degrade.config import ConfigError
    from degrade.plot import PlotError
    from degrade.probes.settings import ProbeError
    from degrade.sources import DataError
    from degrade.store import StoreError

    return (UserError, ConfigError, DataError, StoreError, AccelError, PlotError, ProbeError)


def _guard(fn: Callable[[], T]) -> T:
    from degrade.sweep import LaunchError

    try:
        return fn()
    except _user_errors() as e:
        err_console.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except LaunchError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None


def _str_list(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


FINAL = ("done", "diverged", "failed")
_invoked: list[str] = []


class _NewWarnings:
    """The warnings runs record in their status (a damaged checkpoint, a fallback) that this
    sweep has not shown yet; those there when it started belong to earlier sessions."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, str]] | None = None

    def __call__(self, statuses: dict[str, dict[str, Any]]) -> list[str]:
        now = {
            (rid, len(s.get("sessions") or []), str(w))
            for rid, s in statuses.items()
            for w in s.get("warnings") or []
        }
        new = [] if self.seen is None else sorted(now - self.seen)
        self.seen = now if self.seen is None else self.seen | now
        return [f"warning: run {rid}: {w}" for rid, _, w in new]


def _named(rid: str, labels: dict[str, str]) -> str:
    """A run's id with the settings that tell it apart from its sweep's other runs, if any."""
    return f"{rid} ({labels[rid]})" if labels.get(rid) else rid


class RichReporter:
    """Progress bars: the sweep (runs finished / total) and each running run (epochs)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.sweep = self.progress.add_task("runs", total=None, info="")
        self.runs: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self.warnings = _NewWarnings()

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def sweep_started(self, name: str, run_ids: list[str], labels: dict[str, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self.progress.update(self.sweep, total=len(run_ids), description=f"sweep {name}")

    def update(self, statuses: dict[str, dict[str, Any]]) -> None:
        for line in self.warnings(statuses):
            self.progress.console.print(line, markup=False, highlight=False)
        finished = sum(1 for s in statuses.values() if s.get("state") in FINAL)
        self.progress.update(self.sweep, completed=finished)
        for rid, s in statuses.items():
            if s.get("state") != "running" and rid not in self.runs:
                continue
            if rid not in self.runs:
                self.runs[rid] = self.progress.add_task(
                    _named(rid, self.labels), total=s.get("epochs"), info=""
                )
            err = s.get("train_error")
            self.progress.update(
                self.runs[rid],
                completed=s.get("epochs_done", 0),
                total=s.get("epochs"),
                info=f"train err {err:.3f}" if err is not None else s.get("state", ""),
            )
            if s.get("state") in FINAL:
                self.progress.remove_task(self.runs.pop(rid))


class QuietReporter:
    """One line per run that finishes, for output that is not a terminal."""

    def __init__(self) -> None:
        self.seen: dict[str, str] | None = None
        self.labels: dict[str, str] = {}
        self.warnings = _NewWarnings()

    def __enter__(self) -> QuietReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def sweep_started(self, name: str, run_ids: list[str], labels: dict[str, str] | None = None) -> None:
        self.labels = dict(labels or {})

    def update(self, statuses: dict[str, dict[str, Any]]) -> None:
        for line in self.warnings(statuses):
            err_console.print(line, markup=False, highlight=False)
        states = {rid: s.get("state", "new") for rid, s in statuses.items()}
        if self.seen is not None:
            for rid, state in states.items():
                if state in FINAL and self.seen.get(rid) != state:
                    err = statuses[rid].get("train_error")
                    extra = f" train_error={err:.4f}" if err is not None else ""
                    print(f"{_named(rid, self.labels)}: {state}{extra}", flush=True)
        self.seen = states


def _reporter() -> RichReporter | QuietReporter:
    return RichReporter() if err_console.is_terminal else QuietReporter()


def _say_default(out: str, name: str | None) -> None:
    """The first line of a command that reads the default sweep: which one it is, and why."""
    if name is not None:
        return
    from degrade import store

    root = store.store_root(out)
    latest = store.latest_sweep(root)
    if latest is not None:
        why = "pinned by `degrade use`" if store.latest_pinned(root) else "the latest started"
        line = f"sweep {latest} ({why}; --sweep NAME reads another)"
        err_console.print(line, markup=False, highlight=False)


def _print_summary(out: str, name: str | None, say_default: bool = False) -> None:
    from degrade import flat, results, sweepdata, verdict

    results_sweep = results.open_store(out).sweep(name)
    data = results_sweep.loaded
    if say_default:
        _say_default(out, name)
    table = results_sweep.summary()
    multi = bool((table["seeds"] > 1).any())
    paper = bool(table["paper_test_error"].notna().any())
    t = Table(title=f"sweep {data.name}: final errors (%), {sweepdata.describe(data)}")
    columns = [*data.keys, "variant", "depth", "seeds", "epochs", "train error", "test error"]
    columns += ["paper test error", "test - paper"] if paper else []
    for col in (*columns, "diverged"):
        t.add_column(col, justify="left" if col == "variant" or col in data.keys else "right")

    def cell(mean: float, std: float = float("nan")) -> str:
        if mean != mean:  # NaN: every seed diverged, or nothing to compare
            return "-"
        return f"{100 * mean:.2f} ± {100 * std:.2f}" if multi and std == std else f"{100 * mean:.2f}"

    for r in table.to_dict("records"):
        paper_cells = [r["paper_test_error"], r["test_error_mean"] - r["paper_test_error"]]
        extra = [cell(v) for v in paper_cells] if paper else []
        t.add_row(
            *(flat.show(r[k]) for k in data.keys),
            r["variant"],
            str(r["depth"]),
            str(r["seeds"]),
            str(int(r["epochs"]) if r["epochs"] == r["epochs"] else "-"),
            cell(r["train_error_mean"], r["train_error_std"]),
            cell(r["test_error_mean"], r["test_error_std"]),
            *extra,
            str(r["diverged"]),
        )
    out_console.print(t)
    if paper:
        pub = verdict.published()
        out_console.print(f"paper: {pub['metric']}, {pub['source']}", highlight=False)
    for line in results_sweep.verdicts():
        out_console.print(f"{line} ({sweepdata.numerics(data)})", highlight=False)


@app.command()
def sweep(
    overrides: Overrides = None,
    depths: Annotated[str | None, typer.Option(help="Comma list of depths, e.g. 8,20,56.")] = None,
    variants: Annotated[str | None, typer.Option(help="plain,residual (default: both).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma list of seeds, e.g. 0,1,2.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps")] = None,
    name: Annotated[str | None, typer.Option(help="The sweep's name.")] = None,
    out: Annotated[str | None, typer.Option(help="The run store (default ./outputs).")] = None,
    together: Annotated[
        int | None,
        typer.Option(
            help="Train up to N runs at once in this process, each on its own CUDA stream (for a GPU)."
        ),
    ] = None,
) -> None:
    """Train plain and residual twins at each depth.

    Every run goes to the run store; finished runs are skipped and unfinished ones resumed.
    """
    from degrade.sweep import SweepSpec, run_sweep

    def go() -> int:
        spec = SweepSpec(
            depths=_int_list(depths, "--depths"),
            variants=_str_list(variants) if variants is None or variants.strip() else [],
            seeds=_int_list(seeds, "--seeds"),
            epochs=epochs,
            device=device,
            name=name,
            out=out,
            overrides=list(overrides or []),
            together=together,
            command=shlex.join(_invoked),
        )
        with _reporter() as rep:
            result = run_sweep(spec, rep)
        states: dict[str, int] = {}
        for r in result.runs:
            states[r.state] = states.get(r.state, 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in states.items())
        print(f"sweep {result.name}: {len(result.runs)} runs ({counts}) -> {result.folder}")
        from degrade import store

        default = store.latest_sweep(result.out)
        if default != result.name and store.latest_pinned(result.out):
            err_console.print(
                f"note: the default sweep stays {default} (pinned by `degrade use`); "
                f"--sweep {result.name} reads this one",
                markup=False,
                highlight=False,
            )
        for r in result.runs:
            if r.state == "failed":
                err_console.print(f"error: run {r.run_id} failed: {r.error}", markup=False, highlight=False)
        if any(r.state in ("done", "skipped") for r in result.runs):
            _print_summary(str(result.out), result.name)
        return 1 if any(r.state == "failed" for r in result.runs) else 0

    raise typer.Exit(_guard(go))


@app.command()
def train(
    overrides: Overrides = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (trainer.epochs).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps (trainer.device)")] = None,
) -> None:
    """Train one run into the run store.

    For example: degrade train model.depth=20 model.variant=plain --epochs 5
    """
    from degrade.sweep import train_one

    flags = [f"trainer.{k}={v}" for k, v in (("epochs", epochs), ("device", device)) if v is not None]

    def go() -> None:
        for flag in flags:
            key = flag.split("=", 1)[0]
            if any(o.lstrip("+").split("=", 1)[0] == key for o in overrides or []):
                raise UserError(f"--{key.split('.')[-1]} and {key}= both given; give one")
        with _reporter() as rep:
            r = train_one([*(overrides or []), *flags], rep)
        final = r.final or {}
        errs = ", ".join(f"{k}={final[k]:.4f}" for k in ("train_error", "test_error") if k in final)
        print(f"{r.run_id}: {r.state}" + (f" ({errs})" if errs else "") + f" -> {r.path}")
        if r.state == "failed":
            raise UserError(r.error or "run failed")

    _guard(go)


@app.command()
def show(overrides: Overrides = None) -> None:
    """Print the resolved config of one run as YAML."""
    from degrade.config import compose_run, to_yaml

    print(_guard(lambda: to_yaml(compose_run(list(overrides or [])))), end="")


@app.command()
def plot(
    sweep: SweepOption = None,
    out: OutOption = "outputs",
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="curves | depth | grid | gradients | responses, "
            "or a probe: landscape | lesion | gradcorr | identity",
        ),
    ] = "curves",
    at_epochs: Annotated[
        str | None, typer.Option("--at-epochs", help="Epochs for gradients/responses, e.g. 1,15.")
    ] = None,
    epochs: Annotated[
        str | None, typer.Option("--epochs", hidden=True, help="Old name of --at-epochs.")
    ] = None,
    x: Annotated[
        str | None, typer.Option("--x", help="The grid's columns: depth (default) or a swept key.")
    ] = None,
    y: Annotated[
        str | None,
        typer.Option(
            "--y", help="The grid's rows: a key the sweep varied, e.g. optim.lr (default: the only one)."
        ),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Comma list of png, svg, pdf.")] = "png",
) -> None:
    """Draw a figure of a sweep (curves, depth, grid, per layer).

    By default the training curves, the paper's Fig. 6 look; --kind grid maps the final training
    error over depth and a setting the sweep varied (--y optim.lr).
    """
    from degrade import plot as plots
    from degrade import store, sweepdata

    def go() -> list[Path]:
        formats = _str_list(format) or ["png"]
        bad = [f for f in formats if f not in plots.FORMATS]
        if bad:
            raise UserError(f"unknown format {bad[0]!r}; choose from {', '.join(plots.FORMATS)}")
        if kind not in plots.KINDS:
            raise UserError(f"unknown kind {kind!r}; choose from {', '.join(plots.KINDS)}")
        if kind != "grid" and (x is not None or y is not None):
            raise UserError("--x and --y belong to --kind grid")
        if epochs is not None:
            if at_epochs is not None:
                raise UserError("--epochs is the old name of --at-epochs; give one of them")
            err_console.print(
                "note: plot --epochs is now --at-epochs (the old name still works for now)", highlight=False
            )
        chosen = _int_list(at_epochs if at_epochs is not None else epochs, "--at-epochs")
        data = sweepdata.load(out, sweep)
        fig = plots.draw(kind, data, chosen, x=x or "depth", y=y)
        folder = store.sweep_dir(Path(out), data.name)
        with store.writing(folder):
            return plots.save(fig, folder, kind, formats)

    paths = _guard(go)
    _guard(lambda: _say_default(out, sweep))
    for path in paths:
        print(path)


@app.command()
def summary(
    sweep: SweepOption = None,
    out: OutOption = "outputs",
    probes: Annotated[
        bool, typer.Option("--probes", help="Add the numbers of every probe the sweep has.")
    ] = False,
) -> None:
    """Final errors per setting, variant and depth, and a verdict.

    Mean ± std over seeds, in %; for the he2016 presets, the paper's Table 6 beside ours.
    """
    _guard(lambda: _print_summary(out, sweep, say_default=True))
    if probes:
        _guard(lambda: _print_probe_numbers(out, sweep))


def _print_probe_numbers(out: str, name: str | None) -> None:
    from degrade import flat, results
    from degrade.probes import tables

    sweep = results.open_store(out).sweep(name)
    if not sweep.probe_kinds():
        out_console.print("no probes in this sweep yet: run `degrade probe`", highlight=False)
        return
    table = tables.in_percent(sweep.probe_summary())
    keys, settings = sweep.keys, tables.settings_of(table)
    table["settings"] = [
        ", ".join(f"{k}={v}" for k, v in zip(settings, row, strict=True) if v == v)
        for row in table[settings].itertuples(index=False)
    ]
    multi = bool((table["seeds"] > 1).any())
    depths = sorted(table["depth"].unique())
    for (kind, said), rows in table.groupby(["kind", "settings"], sort=False):
        # Runs probed with other settings get a table of their own, titled with them.
        apart = table.loc[table["kind"] == kind, "settings"].nunique() > 1
        t = Table(
            title=f"probe {kind}, by depth"
            + (": mean ± std over seeds" if multi else "")
            + (f" ({said})" if apart else "")
        )
        for col in ("quantity", "weights", *keys, "variant", *map(str, depths)):
            t.add_column(col, justify="right" if col in map(str, depths) else "left")
        for group, part in rows.groupby(["quantity", "weights", *keys, "variant"], sort=False, dropna=False):
            cells = {
                int(r["depth"]): f"{r['mean']:.4g}"
                + (f" ± {r['std']:.2g}" if multi and r["std"] == r["std"] else "")
                for r in part.to_dict("records")
            }
            t.add_row(
                *(flat.show(v) if isinstance(v, (bool, type(None))) else str(v) for v in group),
                *(cells.get(int(d), "-") for d in depths),
            )
        out_console.print(t)


@app.command()
def probe(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="probe.* overrides, e.g. probe.landscape.grid=21 probe.images=512", show_default=False
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="Comma list of landscape, lesion, gradcorr, identity.")
    ] = "landscape,lesion,gradcorr,identity",
    sweep: SweepOption = None,
    out: OutOption = "outputs",
) -> None:
    """Measure why plain nets degrade, on a sweep's runs.

    Loss landscape, lesions, gradient correlation and distance from the identity, on the final
    (and initial) weights of every finished run of a sweep; each run's results go to
    probes/<kind>.parquet in its folder. Settings: probe.* overrides, e.g. probe.landscape.grid=21.
    """

    def go() -> Any:
        from degrade.probes import planning

        plan = planning.plan_asked(out, sweep, _str_list(kind), list(overrides or []))
        _say_default(out, sweep)
        for rid, why in plan.unfinished.items():
            err_console.print(f"warning: run {rid} not probed: {why}", markup=False, highlight=False)
        todo = plan.todo
        if not todo:
            return plan, []
        from degrade.probes import runner

        runner.count(plan)
        err_console.print(
            f"sweep {plan.name}: {len(todo)} of {len(plan.jobs)} probe files to measure, "
            f"{plan.evaluations:,} evaluations",
            markup=False,
            highlight=False,
        )
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
            disable=not todo,
        )
        with bar:
            task = bar.add_task("evaluations", total=plan.evaluations)
            measured = runner.run(
                plan,
                tick=lambda n: bar.advance(task, n),
                done=lambda job: print(f"{job.run_id} {job.kind}: measured -> {job.path}", flush=True),
            )
        for rid, why in measured.not_probed.items():
            err_console.print(f"warning: run {rid} not probed: {why}", markup=False, highlight=False)
        return plan, measured.jobs

    plan, measured = _guard(go)
    print(
        f"sweep {plan.name}: {len(measured)} probe files measured, "
        f"{len(plan.jobs) - len(plan.todo)} unchanged (skipped)"
        + (f", {len(plan.todo) - len(measured)} not measured" if len(plan.todo) > len(measured) else "")
    )


@app.command()
def use(
    name: Annotated[
        str | None, typer.Argument(help="The sweep to read by default.", show_default=False)
    ] = None,
    out: OutOption = "outputs",
    unpin: Annotated[
        bool, typer.Option("--unpin", help="Let the next sweep started be the default again.")
    ] = False,
) -> None:
    """Choose the sweep that commands read by default.

    By default they read the sweep last started. `degrade use NAME` pins NAME instead: sweeps
    started afterwards (side runs) leave it, until `degrade use --unpin` or another `use`.
    """
    from degrade import store

    def go() -> str:
        if unpin == (name is not None):
            raise UserError("give a sweep name to pin, or --unpin (not both)")
        return store.use_sweep(out, name)

    chosen = _guard(go)
    print(
        f"sweep {chosen} is the default (the next sweep started takes over)"
        if unpin
        else f"sweep {chosen} is the default; sweeps started later leave it (degrade use --unpin)"
    )


@app.command("report")
def report_page(sweep: SweepOption = None, out: OutOption = "outputs") -> None:
    """Write the sweep's report.html, one file to share.

    Verdict, table, figures, settings, environment and every run's state; opens offline.
    """
    from degrade import htmlreport

    page = _guard(lambda: htmlreport.write(out, sweep))
    _guard(lambda: _say_default(out, sweep))
    print(page)


@app.command()
def bench(
    depths: Annotated[str, typer.Option(help="ResNet depths to measure.")] = "20,56",
    steps: Annotated[
        int | None, typer.Option(help="Timed steps per loop (default 300 on CUDA, 10 on CPU).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16")] = "auto",
    path: Annotated[str, typer.Option(help="degrade's step path: auto | exact | eager | graph")] = "auto",
    concurrent: Annotated[
        bool,
        typer.Option(
            "--concurrent", help="Also measure several same-shape runs at once, as a sweep trains them."
        ),
    ] = False,
    sweep: Annotated[bool, typer.Option("--sweep", hidden=True, help="Old name of --concurrent.")] = False,
    runs: Annotated[
        int | None, typer.Option(help="Runs at once for --concurrent (default: cores; 8 on a GPU).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed repeats of each side, alternating.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Throughput of degrade's step against a reference loop.

    ResNets at batch 128 on CIFAR-shaped data, side by side with a typical training loop.
    """
    import json

    from degrade import bench as benchmark

    def go() -> list[Any]:
        if sweep:
            err_console.print(
                "note: bench --sweep is now --concurrent (the old name still works for now)", highlight=False
            )
        return benchmark.run(
            tuple(_int_list(depths, "--depths") or []),
            device,
            precision,
            steps,
            path=path,
            concurrent=concurrent or sweep,
            runs=runs,
            repeats=repeats,
        )

    rows = _guard(go)
    if json_out:
        print(json.dumps(benchmark.as_dicts(rows), indent=1))
        return

    def spread(s: Any, fmt: str, unit: str = "") -> str:
        head = f"{s.median:{fmt}}{unit}"
        return f"{head} ({s.min:{fmt}}-{s.max:{fmt}})" if len(s.repeats) > 1 else head

    t = Table(
        title=f"training throughput, batch 128, img/s: median (min-max) of {repeats} alternating repeats"
    )
    together = concurrent or sweep
    numbers = ["reference", "degrade", "speedup", "setup s"]
    numbers += ["runs at once", "at once"] if together else []
    for col in ("model", "device", "precision", "path", *numbers):
        t.add_column(col, justify="right" if col in numbers else "left")
    for r in rows:
        extra = [str(r.sweep_runs), spread(r.sweep_img_s, ",.0f")] if together else []
        t.add_row(
            r.model,
            r.device,
            r.precision,
            r.path,
            spread(r.reference_img_s, ",.0f"),
            spread(r.degrade_img_s, ",.0f"),
            spread(r.speedup, ".2f", "x"),
            f"{r.setup_s:.1f}",
            *extra,
        )
    out_console.print(t)


@app.command()
def export(
    sweep: SweepOption = None,
    out: OutOption = "outputs",
    format: Annotated[
        str | None, typer.Option("--format", help="csv | parquet (default: what --to ends in, else csv).")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="The file to write (default: <out>/sweeps/<name>/<table>.<format>)."),
    ] = None,
    table: Annotated[
        str, typer.Option("--table", help="metrics | layers | summary | runs | probes | probe_summary")
    ] = "metrics",
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="The probe of --table probes or probe_summary (default: every kind)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file --to names if it exists.")] = False,
) -> None:
    """Write a sweep's tidy table to one CSV or Parquet file.

    For R, Excel or any other tool: the table degrade.open(out).sweep(name).metrics() returns in
    Python (or layers, summary, runs): one row per run and epoch, the swept settings as columns,
    errors as fractions.
    """
    from degrade import results

    def go() -> Path:
        return results.export(results.open_store(out).sweep(sweep), table, format, to, force, kind)

    path = _guard(go)
    _guard(lambda: _say_default(out, sweep))
    print(path)


def _print_sweeps(out: str, sweep: str | None) -> None:
    from degrade import results

    def go() -> Any:
        if sweep is not None:
            raise UserError("--sweeps lists every sweep; leave out --sweep")
        found = results.open_store(out).sweeps()
        if found.empty:
            raise UserError(f"no sweeps in {out}; run `degrade sweep` first")
        return found

    sweeps = _guard(go)
    t = Table(title=f"sweeps in {out}")
    states = [s for s in results.STATES if sweeps[s].any()]
    for col in ("sweep", "runs", *states, "started", "command"):
        # Names and counts stay whole; a long command (a store's path in it) folds instead.
        t.add_column(
            col, justify="right" if col == "runs" or col in states else "left", no_wrap=col != "command"
        )
    for r in sweeps.to_dict("records"):
        name = r["sweep"] + (" (latest)" if r["latest"] else "")
        t.add_row(
            name,
            str(r["runs"]),
            *(str(r[s]) for s in states),
            str(r["started"] or "?"),
            f"degrade {r['command']}" if r["command"] else "?",
        )
    out_console.print(t)


@app.command("ls")
def ls(
    sweep: Annotated[str | None, typer.Option("--sweep", help="Sweep name (default: every run).")] = None,
    out: OutOption = "outputs",
    sweeps: Annotated[
        bool, typer.Option("--sweeps", help="List the sweeps, with their runs' states.")
    ] = False,
) -> None:
    """List runs (--sweeps: the sweeps) with their state.

    Runs with epochs done and final errors, sorted by family, variant, depth and seed; sweeps with
    how many of their runs are in each state.
    """
    from degrade import frames

    if sweeps:
        _print_sweeps(out, sweep)
        return

    def go() -> Any:
        runs = frames.list_runs(out, sweep)
        if runs.empty:
            raise UserError(f"no runs in {out}; run `degrade sweep` first")
        return runs

    runs = _guard(go)
    t = Table(title=f"runs of sweep {sweep}" if sweep else "runs in the store")
    for col in ("run", "state", "variant", "depth", "seed", "epochs", "train err", "test err"):
        t.add_column(col, justify="left" if col in ("run", "state", "variant") else "right")

    def pct(v: Any) -> str:
        return "-" if v is None or v != v else f"{100 * v:.2f}"

    def known(v: Any) -> str:
        return "?" if v is None or v != v else str(v)

    for r in runs.to_dict("records"):
        said = r["state"] in ("failed", "interrupted") and r.get("error")
        state = r["state"] + (f" ({r['error']})" if said else "")
        if r.get("damaged"):
            state = f"damaged ({r['damaged']})"
        epochs = f"{r['epochs_done']}/{r['epochs']}" if r.get("epochs") else str(r["epochs_done"])
        t.add_row(
            r["run_id"],
            state,
            *(known(r.get(k)) for k in ("variant", "depth", "seed")),
            epochs,
            pct(r["train_error"]),
            pct(r["test_error"]),
        )
    out_console.print(t)


class _WarningLine(logging.Handler):
    """Library warnings (a damaged file, a fallback) as one line on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line not in self.said:  # two readers of one damaged file: said once
            self.said.add(line)
            err_console.print(f"warning: {line}", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; Click's usage errors become one line and exit code 2."""
    log = logging.getLogger("degrade")
    if not log.handlers:
        log.addHandler(_WarningLine())
        log.setLevel(logging.WARNING)
        log.propagate = False
    for handler in log.handlers:
        if isinstance(handler, _WarningLine):
            handler.said.clear()  # each command says its own warnings
    # What the user typed, as the sweep records it (not sys.argv: main may be called with its own).
    _invoked[:] = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args=argv, prog_name="degrade", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        return 130
    except typer.TyperException as e:
        # Usage errors (unknown flag, bad value): one line instead of the usage block.
        err_console.print(f"error: {e.format_message()}", markup=False, highlight=False)
        return e.exit_code
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
