"""The ``degrade`` command: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import gc
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from degrade import console, headstart

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="See why deeper plain networks train worse, and how residual connections fix it.",
)
# What the user typed, as the sweep records it (set by main).
_invoked: list[str] = []

T = TypeVar("T")

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Hydra overrides, e.g. optim.lr=0.05 model=mlp data=cifar10", show_default=False),
]
OutOption = Annotated[str, typer.Option("--out", help="The run store.")]
SweepOption = Annotated[str | None, typer.Option("--sweep", help="Sweep name (default: latest).")]


class UserError(Exception):
    """An error the user caused: one line, exit code 2."""


# The errors a user can cause (beside UserError), where each is defined. One whose module this
# command never imported cannot have been raised, and importing a module only to name its error
# would cost the error's message (or a command that never fails) up to a second: degrade.plot
# imports matplotlib and pandas, degrade.sweep Hydra.
_USER_ERRORS = (
    ("degrade.compute", "AccelError"),
    ("degrade.config", "ConfigError"),
    ("degrade.plot", "PlotError"),
    ("degrade.probes.settings", "ProbeError"),
    ("degrade.sources", "DataError"),
    ("degrade.store", "StoreError"),
)


def _raised(where: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """The error classes named in ``where`` (module, name) whose modules are imported."""
    return tuple(getattr(sys.modules[m], n) for m, n in where if m in sys.modules)


def _user_errors() -> tuple[type[BaseException], ...]:
    return (UserError, *_raised(_USER_ERRORS))


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except _user_errors() as e:
        console.err_console.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except _raised((("degrade.sweep", "LaunchError"),)) as e:
        console.err_console.print(f"error: {e}", markup=False, highlight=False)
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
        with console.reporter() as rep:
            result = run_sweep(spec, rep)
        states: dict[str, int] = {}
        for r in result.runs:
            states[r.state] = states.get(r.state, 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in states.items())
        print(f"sweep {result.name}: {len(result.runs)} runs ({counts}) -> {result.folder}")
        from degrade import store

        default = store.latest_sweep(result.out)
        if default != result.name and store.latest_pinned(result.out):
            console.err_console.print(
                f"note: the default sweep stays {default} (pinned by `degrade use`); "
                f"--sweep {result.name} reads this one",
                markup=False,
                highlight=False,
            )
        for r in result.runs:
            if r.state == "failed":
                console.err_console.print(
                    f"error: run {r.run_id} failed: {r.error}", markup=False, highlight=False
                )
        if any(r.state in ("done", "skipped") for r in result.runs):
            console.print_summary(str(result.out), result.name)
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
        with console.reporter() as rep:
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
            console.err_console.print(
                "note: plot --epochs is now --at-epochs (the old name still works for now)", highlight=False
            )
        chosen = _int_list(at_epochs if at_epochs is not None else epochs, "--at-epochs")
        data = sweepdata.load(out, sweep)
        fig = plots.draw(kind, data, chosen, x=x or "depth", y=y)
        folder = store.sweep_dir(Path(out), data.name)
        with store.writing(folder):
            return plots.save(fig, folder, kind, formats)

    paths = _guard(go)
    _guard(lambda: console.say_default(out, sweep))
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
    _guard(lambda: console.print_summary(out, sweep, say_default_sweep=True))
    if probes:
        _guard(lambda: console.print_probe_numbers(out, sweep))


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
        console.say_default(out, sweep)
        for rid, why in plan.unfinished.items():
            console.err_console.print(f"warning: run {rid} not probed: {why}", markup=False, highlight=False)
        todo = plan.todo
        if not todo:
            return plan, []
        from degrade.probes import runner

        runner.count(plan)
        console.err_console.print(
            f"sweep {plan.name}: {len(todo)} of {len(plan.jobs)} probe files to measure, "
            f"{plan.evaluations:,} evaluations",
            markup=False,
            highlight=False,
        )
        with console.counter("evaluations", plan.evaluations) as tick:
            measured = runner.run(
                plan,
                tick=tick,
                done=lambda job: print(f"{job.run_id} {job.kind}: measured -> {job.path}", flush=True),
            )
        for rid, why in measured.not_probed.items():
            console.err_console.print(f"warning: run {rid} not probed: {why}", markup=False, highlight=False)
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
    _guard(lambda: console.say_default(out, sweep))
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
    warmup: Annotated[int, typer.Option(help="Untimed steps each loop trains before its timing.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Throughput of degrade's step against a reference loop.

    ResNets at batch 128 on CIFAR-shaped data, side by side with a typical training loop.
    """
    import json

    from degrade import bench as benchmark

    def go() -> list[Any]:
        if sweep:
            console.err_console.print(
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
            warmup=warmup,
        )

    rows = _guard(go)
    if json_out:
        print(json.dumps(benchmark.as_dicts(rows), indent=1))
        return

    console.print_bench(rows, repeats, together=concurrent or sweep)


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
    _guard(lambda: console.say_default(out, sweep))
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

    console.print_sweeps(_guard(go), out)


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

    console.print_runs(_guard(go), f"runs of sweep {sweep}" if sweep else "runs in the store")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; Click's usage errors become one line and exit code 2."""
    log = logging.getLogger("degrade")
    if not log.handlers:
        log.addHandler(console.WarningLine())
        log.setLevel(logging.WARNING)
        log.propagate = False
    for handler in log.handlers:
        if isinstance(handler, console.WarningLine):
            handler.said.clear()  # each command says its own warnings
    # What the user typed, as the sweep records it (not sys.argv: main may be called with its own).
    _invoked[:] = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args=argv, prog_name="degrade", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        console.err_console.print("aborted", highlight=False)
        return 130
    except typer.TyperException as e:
        # Usage errors (unknown flag, bad value): one line instead of the usage block.
        console.err_console.print(f"error: {e.format_message()}", markup=False, highlight=False)
        return e.exit_code
    return rc if isinstance(rc, int) else 0


def run() -> None:
    """The ``degrade`` program: ``main`` on the command line's arguments, then exit with its code."""
    with headstart.sweep_workers(sys.argv[1:]):
        code = main()
    # What the command built is dropped with the process: without this, the collector walks
    # every object once more on the way out (0.1 s, after the command has said everything).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
