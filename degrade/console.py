"""What the terminal shows: the consoles, the progress reporters of a sweep, and the tables the
commands print. ``degrade.cli`` parses and calls the library; the rendering lives here."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

# Piped output has no width to fit; 120 columns keep the wider tables (bench) on one line each.
out_console = Console() if sys.stdout.isatty() else Console(width=120)
err_console = Console(stderr=True, soft_wrap=True)


FINAL = ("done", "diverged", "failed")


class NewWarnings:
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


def named(rid: str, labels: dict[str, str]) -> str:
    """A run's id with the settings that tell it apart from its sweep's other runs, if any."""
    return f"{rid} ({labels[rid]})" if labels.get(rid) else rid


class _SummaryAhead:
    """Once every run of a sweep has begun, import what the final table reads the store with
    and works it out with (pandas, pyarrow's Parquet reader and its pandas bridge, the verdict:
    about 0.35 s) while the last runs train, not after them."""

    def all_started(self) -> None:
        try:
            import pyarrow.dataset  # noqa: F401  # what read_table reads through
            import pyarrow.pandas_compat  # noqa: F401
            import pyarrow.parquet  # noqa: F401

            from degrade import results, sweepdata, verdict  # noqa: F401
        except ImportError:
            pass  # only a head start: the table imports them itself and says what is missing


REFRESHES_PER_SECOND = 2


class RichReporter(_SummaryAhead):
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
            # As often as the sweep's watcher reads the statuses (``sweep.POLL_SECONDS``): Rich's
            # 10 a second redrew the same bars, 2 % of a core taken from the runs beside it.
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self.sweep = self.progress.add_task("runs", total=None, info="")
        self.runs: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self.warnings = NewWarnings()

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
                    named(rid, self.labels), total=s.get("epochs"), info=""
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


class QuietReporter(_SummaryAhead):
    """One line per run that finishes, for output that is not a terminal."""

    def __init__(self) -> None:
        self.seen: dict[str, str] | None = None
        self.labels: dict[str, str] = {}
        self.warnings = NewWarnings()

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
                    print(f"{named(rid, self.labels)}: {state}{extra}", flush=True)
        self.seen = states


def reporter() -> RichReporter | QuietReporter:
    """Progress bars on a terminal, one line per finished run elsewhere."""
    return RichReporter() if err_console.is_terminal else QuietReporter()


@contextlib.contextmanager
def counter(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar of ``total`` ``what`` on stderr; yields the function that advances it."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def say_default(out: str, name: str | None) -> None:
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


def print_summary(out: str, name: str | None, say_default_sweep: bool = False) -> None:
    """The final-errors table of a sweep, the paper's numbers where they apply, and the verdicts."""
    from degrade import flat, results, sweepdata, verdict

    results_sweep = results.open_store(out).sweep(name)
    data = results_sweep.loaded
    if say_default_sweep:
        say_default(out, name)
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


def print_probe_numbers(out: str, name: str | None) -> None:
    """Each probe's numbers of a sweep, a table per probe (and per probe setting where runs differ)."""
    import pandas as pd

    from degrade import flat, results
    from degrade.probes import tables

    sweep = results.open_store(out).sweep(name)
    if not sweep.probe_kinds():
        out_console.print("no probes in this sweep yet: run `degrade probe`", highlight=False)
        return
    table = tables.in_percent(sweep.probe_summary())
    keys, settings = sweep.keys, tables.settings_of(table)
    table["settings"] = [
        ", ".join(f"{k}={v}" for k, v in zip(settings, row, strict=True) if pd.notna(v))
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


def print_bench(rows: list[Any], repeats: int, together: bool) -> None:
    """The throughput table of ``degrade bench``."""

    def spread(s: Any, fmt: str, unit: str = "") -> str:
        head = f"{s.median:{fmt}}{unit}"
        return f"{head} ({s.min:{fmt}}-{s.max:{fmt}})" if len(s.repeats) > 1 else head

    t = Table(
        title=f"training throughput, batch 128, img/s: median (min-max) of {repeats} alternating repeats"
    )
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


def print_sweeps(sweeps: pd.DataFrame, out: str) -> None:
    """The table of ``degrade ls --sweeps``: each sweep with how many of its runs are in each state."""
    from degrade.store import STATES

    t = Table(title=f"sweeps in {out}")
    states = [s for s in STATES if sweeps[s].any()]
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


def print_runs(runs: pd.DataFrame, title: str) -> None:
    """The table of ``degrade ls``: each run with its state, epochs and final errors."""
    t = Table(title=title)
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


class WarningLine(logging.Handler):
    """Library warnings (a damaged file, a fallback) as one line on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line not in self.said:  # two readers of one damaged file: said once
            self.said.add(line)
            err_console.print(f"warning: {line}", markup=False, highlight=False)
