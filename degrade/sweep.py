"""A grid of runs, launched through Hydra's own multirun machinery.

The grid is checked in full before anything is written: every combination is composed
and validated, so a bad depth or key fails the sweep before any folder exists. Hydra's
sweeper and launcher then run ``run_job`` once per combination, in this process (basic)
or elsewhere (joblib, submitit, ray); each job trains into the shared run store and
skips runs that are already done there.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from degrade import composed, compute, footprint, headstart, job, memory, pool, store
from degrade.config import (
    CONFIG_NAME,
    ConfigError,
    compose_grid,
    compose_run,
    cure_name,
    expand_overrides,
    hydra_context,
    inapplicable,
    one_line,
    quoted,
    shipped_file,
    validate,
)
from degrade.flat import flatten, show, varied_keys
from degrade.job import RunResult, Steps, job_steps
from degrade.runids import identity_config, run_id
from degrade.sources import prepare_dataset
from degrade.task import run_job


class LaunchError(RuntimeError):
    """The launcher failed while runs were under way; what finished is in the store."""


class SweepReporter(Protocol):
    """Receives the state of a sweep's runs, read from the run store while the sweep runs."""

    def sweep_started(self, name: str, run_ids: list[str], labels: dict[str, str] | None = None) -> None:
        """The sweep's runs, and per run the settings that tell it apart (``optim.lr=0.01``)."""

    def update(self, statuses: dict[str, dict[str, Any]]) -> None: ...

    def all_started(self) -> None:
        """Every run has begun (called once, from the watching thread, while runs still train)."""


# How often a sweep's watcher reads its runs' status files for the reporter.
POLL_SECONDS = 0.5


class _Watcher(threading.Thread):
    """Polls the status files of a sweep's runs, so progress works with any launcher."""

    def __init__(self, out: Path, run_ids: list[str], reporter: SweepReporter, every: float) -> None:
        super().__init__(daemon=True)
        self.runs = [store.RunDir(out, rid) for rid in run_ids]
        self.reporter, self.every = reporter, every
        self.stopped = threading.Event()

    def poll(self) -> dict[str, dict[str, Any]]:
        statuses = {r.id: r.status() for r in self.runs}
        self.reporter.update(statuses)
        return statuses

    def run(self) -> None:
        started = False
        while not self.stopped.wait(self.every):
            statuses = self.poll()
            if not started and all(s.get("state") != "new" for s in statuses.values()):
                started = True
                self.reporter.all_started()

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.poll()


@contextlib.contextmanager
def _watching(
    out: Path,
    name: str,
    run_ids: list[str],
    reporter: SweepReporter | None,
    every: float = POLL_SECONDS,
    labels: dict[str, str] | None = None,
) -> Iterator[None]:
    if reporter is None:
        yield
        return
    reporter.sweep_started(name, run_ids, labels)
    watcher = _Watcher(out, run_ids, reporter, every)
    watcher.poll()
    watcher.start()
    try:
        yield
    finally:
        watcher.stop()


@dataclass
class SweepSpec:
    """What the user asked to sweep; None means "the config's own value"."""

    depths: list[int] | None = None
    variants: list[str] | None = None
    seeds: list[int] | None = None
    epochs: int | None = None
    device: str | None = None
    name: str | None = None
    out: str | None = None
    overrides: list[str] = field(default_factory=list)
    together: int | None = None  # runs trained at once in this process, on CUDA streams
    command: str | None = None  # the command line as typed, for the sweep's record


@dataclass
class SweepResult:
    """What a sweep ended with."""

    name: str
    out: Path
    folder: Path
    runs: list[RunResult]


def _flag_overrides(spec: SweepSpec, grid: DictConfig) -> list[str]:
    """Overrides for the flags given; the config's ``sweep`` grid fills in the rest.

    A flag not given adds nothing of its own; neither does the grid for a key the user
    overrides directly (``model.variant=plain``).
    """
    given = {_key(o) for o in spec.overrides}
    ov = []
    for key, flag, default in (
        ("model.depth", spec.depths, grid.get("depths")),
        ("model.variant", spec.variants, grid.get("variants")),
        ("seed", spec.seeds, grid.get("seeds")),
        ("cure", None, grid.get("cures")),
    ):
        values = flag if flag is not None else (None if key in given else default)
        if values is not None:
            ov.append(f"{key}=" + ",".join(str(v) for v in values))
    if spec.epochs is not None:
        ov.append(f"trainer.epochs={spec.epochs}")
    if spec.device is not None:
        ov.append(f"trainer.device={spec.device}")
    if spec.out is not None:
        ov.append(quoted(spec.out, "out"))
    return ov


def _refuse_conflicts(spec: SweepSpec) -> None:
    """ConfigError when a flag and an override set the same thing (``--depths 8,20 model.depth=56``):
    one of them would be dropped without a word."""
    flags = (
        ("--depths", spec.depths, ("model.depth", "sweep.depths")),
        ("--variants", spec.variants, ("model.variant", "sweep.variants")),
        ("--seeds", spec.seeds, ("seed", "sweep.seeds")),
        ("--epochs", spec.epochs, ("trainer.epochs", "trainer.iterations")),
        ("--device", spec.device, ("trainer.device",)),
        ("--name", spec.name, ("name",)),
        ("--out", spec.out, ("out",)),
    )
    for flag, value, keys in flags:
        if value is None:
            continue
        for o in spec.overrides:
            key = _key(o)
            if key not in keys:
                continue
            if key == "trainer.iterations" and o.split("=", 1)[-1].strip() in ("null", "~"):
                continue  # null: the run counts epochs, which is what --epochs sets
            what = "the run's length" if key == "trainer.iterations" else key
            raise ConfigError(f"{flag} and {o} both set {what}; give one of them")


def _refuse_unused_epochs(spec: SweepSpec, configs: list[DictConfig]) -> None:
    """ConfigError for ``--epochs`` where ``trainer.iterations`` (from a preset) sets the length."""
    if spec.epochs is None:
        return
    for cfg in configs:
        if cfg.trainer.get("iterations") is not None:
            raise ConfigError(
                f"--epochs {spec.epochs} would not be used: trainer.iterations="
                f"{cfg.trainer.iterations} sets the run's length (a preset sets it); give "
                "trainer.iterations=N instead, or add trainer.iterations=null to count epochs"
            )


def _key(override: str) -> str:
    """The config key an override sets (``+a.b=1`` -> ``a.b``)."""
    return override.lstrip("+~").split("=", 1)[0]


def _is_hydra_override(o: str) -> bool:
    key = _key(o)
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def plan(spec: SweepSpec) -> tuple[list[str], list[DictConfig]]:
    """The sweep's full override list and the validated config of every run in it."""
    planned = _plan(spec)
    return planned.overrides, planned.configs


class _Plan(NamedTuple):
    overrides: list[str]  # the sweep's, for Hydra's multirun
    configs: list[DictConfig]  # every run's, validated, precision pinned
    asked: dict[str, str]  # what the user asked for where the configs hold what it resolved to
    launcher: DictConfig | None  # the launcher's config (None: Hydra's default)
    composed: list[tuple[list[str], DictConfig]]  # each run's overrides and config as composed


def _plan(spec: SweepSpec) -> _Plan:
    """``plan``, what the user asked for where the runs' configs hold what it resolved to
    (``{"trainer.precision": "auto"}``), the launcher's config, and each run as composed,
    before its precision was pinned (what Hydra's sweeper can take instead of composing it)."""
    for name, values in (("--depths", spec.depths), ("--variants", spec.variants), ("--seeds", spec.seeds)):
        if values is not None and not values:
            raise ConfigError(f"{name} is empty: the sweep would run nothing")
    if spec.out is not None:
        store.store_root(spec.out)  # an empty --out is refused before anything is composed
    _refuse_conflicts(spec)
    if spec.together is not None:
        if spec.together < 1:
            raise ConfigError("--together must be at least 1")
        if any(_key(o).startswith(("hydra/launcher", "hydra.launcher")) for o in spec.overrides):
            raise ConfigError("--together trains in this process; it cannot be combined with a launcher")
    user_run = [o for o in spec.overrides if not _is_hydra_override(o)]
    first = expand_overrides(user_run)[0]
    base = compose_run(first, pin=False, check_variant=False)
    overrides = _flag_overrides(spec, base.sweep) + list(spec.overrides)
    for key in ("depths", "variants", "seeds"):
        if base.sweep.get(key) is not None and len(base.sweep[key]) == 0:
            raise ConfigError(f"sweep.{key} is empty: the sweep would run nothing")
    run_overrides = [o for o in overrides if not _is_hydra_override(o)]
    hydra_overrides = [o for o in overrides if _is_hydra_override(o)]
    combos = expand_overrides(run_overrides)
    # Most runs differ from the first only in plain values (a depth, a seed): derived from it.
    raw = compose_grid(combos, (first, base))
    grid = [compute.pin_precision(copy.deepcopy(c)) for c in raw]
    configs = applicable(grid)
    kept = {id(c) for c in configs}
    as_composed = [
        (combo, c) for combo, c, pinned in zip(combos, raw, grid, strict=True) if id(pinned) in kept
    ]
    if not configs:
        raise ConfigError("the sweep would run nothing")
    if len(configs) < len(grid):
        # Hydra's sweeper forms the full product of the overrides: it leaves those runs out too.
        hydra_overrides.append("hydra.sweeper.applicable_only=true")
        overrides.append(hydra_overrides[-1])
    _refuse_unused_epochs(spec, configs)
    if spec.together is None and _parallel_on_cpu_by_default(configs, hydra_overrides):
        # Small same-shape runs use two cores better as two 1-thread processes than as one
        # 2-thread process (85 s -> 67 s for the default sweep on 2 cores).
        n_jobs = min(len(configs), compute.usable_cores())
        hydra_overrides += ["hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={n_jobs}"]
        overrides += hydra_overrides[-2:]
        launcher: DictConfig | None = own_launcher(n_jobs)
    else:
        launcher = _launcher_config(run_overrides, hydra_overrides)
    given = {_key(o) for o in run_overrides}
    if "trainer.threads" not in given:
        overrides.append(f"trainer.threads={_threads_per_job(launcher, len(configs))}")
    precisions = {str(c.trainer.precision) for c in configs}
    if "trainer.precision" not in given and len(precisions) == 1:
        # What auto means where the sweep is planned, for every job wherever it runs (a SLURM
        # node, another worker): the run ids the sweep records are the ones its jobs train.
        overrides.append(f"trainer.precision={precisions.pop()}")
    # As the user asked (auto, unless an override or preset said otherwise): the runs' configs
    # hold what it became. A sweep over precisions asked each run for its own value.
    swept = any(_key(o) == "trainer.precision" and "," in o for o in run_overrides)
    asked = {} if swept else {"trainer.precision": str(base.trainer.precision)}
    return _Plan(overrides, configs, asked, launcher, as_composed)


def applicable(grid: list[DictConfig]) -> list[DictConfig]:
    """The runs of ``grid`` whose cure is defined for their variant; a grid crossing cures with
    variants leaves out the pairs that do not apply (Fixup on a plain net). ConfigError (the
    cure's own refusal) when a cure the grid names is left with no run at all."""
    kept = [c for c in grid if not inapplicable(c)]
    for cure in dict.fromkeys(cure_name(c) for c in grid):
        if not any(cure_name(c) == cure for c in kept):
            validate(next(c for c in grid if cure_name(c) == cure))  # raises its one line
    return kept


def _parallel_on_cpu_by_default(configs: list[DictConfig], hydra_overrides: list[str]) -> bool:
    """No launcher chosen, several runs, several cores, and every run on the CPU."""
    if any(
        _key(o) in ("hydra/launcher", "hydra.launcher") or _key(o).startswith("hydra.launcher.")
        for o in hydra_overrides
    ):
        return False
    if len(configs) < 2 or compute.usable_cores() < 2:
        return False
    return all(compute.device_type(str(c.trainer.device)) == "cpu" for c in configs)


def _threads_per_job(launcher: DictConfig | None, runs: int) -> int:
    """Split this machine's cores between the jobs a local parallel launcher runs at once (every
    core for a job that runs alone, or for runs trained together: one computes at a time)."""
    cores = compute.usable_cores()
    if launcher is None:
        return cores
    target = str(launcher.get("_target_", ""))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)  # what the scheduler gives each job
    if "joblib" not in target and "local_parallel" not in target:
        return cores
    return max(1, cores // compute.jobs_at_once(int(launcher.get("n_jobs", -1)), runs, cores))


def _workers_ahead(launcher: DictConfig | None, remaining: list[DictConfig]) -> int:
    """How many of degrade's pool workers to start before Hydra's set-up: as many as its
    launcher will run at once, where the runs train on the CPU (0 otherwise: on GPUs each
    worker's environment names its GPU, which the launcher chooses)."""
    if launcher is None or "local_parallel" not in str(launcher.get("_target_", "")):
        return 0
    if not all(compute.device_type(str(c.trainer.device)) == "cpu" for c in remaining):
        return 0
    return compute.jobs_at_once(int(launcher.get("n_jobs", -1)), len(remaining), compute.usable_cores())


def check_fits(configs: list[DictConfig]) -> None:
    """ConfigError when a run needs more memory than its device has (estimated, nothing built)."""
    free: dict[str, int | None] = {}
    for cfg in configs:
        device = compute.device_type(str(cfg.trainer.device))
        if device not in free:
            free[device] = memory.available_bytes(device)
        have = free[device]
        need = footprint.estimate(cfg)
        if have is not None and need.total > have:
            m = cfg.model
            raise ConfigError(
                f"{m.family}-{m.variant}-{m.depth} needs about {footprint.gigabytes(need.total)} "
                f"({footprint.count(need.parameters)} parameters with their gradients and momentum, "
                f"{footprint.gigabytes(need.activation_bytes)} of activations for a batch of "
                f"{cfg.trainer.batch_size}) and {device} has {footprint.gigabytes(have)} available"
            )


def prepare_data(configs: list[DictConfig]) -> None:
    """Find (or fetch) and read each dataset once, here, so a bad one fails before any run starts."""
    seen = set()
    for cfg in configs:
        key = OmegaConf.to_yaml(cfg.data)
        if key not in seen:
            seen.add(key)
            prepare_dataset(cfg.data)


def own_launcher(n_jobs: int) -> DictConfig:
    """The config of degrade's pool launcher with ``n_jobs``, as Hydra composes it when nothing
    else about it is overridden: its file, read (Hydra would compose the whole config, 60 ms)."""
    cfg = shipped_file("hydra/launcher/local_parallel")
    assert cfg is not None  # a file of the package
    cfg.n_jobs = n_jobs
    return cfg


def _launcher_config(run_overrides: list[str], hydra_overrides: list[str]) -> DictConfig | None:
    """The launcher's config; composing it here makes an unknown launcher fail before any run."""
    if not hydra_overrides:
        return None
    from hydra import compose

    first = expand_overrides(run_overrides)[0]
    try:
        with hydra_context():
            cfg = compose(CONFIG_NAME, overrides=first + hydra_overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
    return cfg.hydra.launcher


def default_name(configs: list[DictConfig]) -> str:
    """A name that is the same whenever the same runs are swept."""
    ids = sorted({run_id(c) for c in configs})
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:6]
    first = configs[0]
    return f"{first.model.family}-{first.data.name}-{digest}"


def _check_same_device(configs: list[DictConfig], root: Path) -> None:
    """ConfigError for a run begun on one device type that would now resume on another.

    A run keeps its numerics for its whole life: its precision is part of its id, and its
    device type (cuDNN's kernels are not the CPU's) is what its last session recorded.
    """
    for cfg in configs:
        run = store.RunDir(root, run_id(cfg))
        before = store.recorded_device(run)
        now = compute.device_type(str(cfg.trainer.device))
        if before is not None and before != now:
            raise ConfigError(store.device_change(run.id, before, now))


def _check_writable(runs: list[store.RunDir]) -> None:
    """StoreError for a run folder that is there but this process may not write."""
    for run in runs:
        lock = run.lock_file
        if (run.path.exists() and not os.access(run.path, os.W_OK | os.X_OK)) or (
            lock.exists() and not os.access(lock, os.W_OK)
        ):
            raise store.StoreError(f"cannot write to run folder {run.path}; make it writable, then rerun")


def _sweep_name(spec: SweepSpec, configs: list[DictConfig]) -> str:
    names = {c.get("name") for c in configs} - {None}
    if len(names) > 1:
        raise ConfigError("name takes one value per sweep")
    name = store.check_sweep_name(str(spec.name or (names.pop() if names else None) or default_name(configs)))
    quoted(name, "name")  # checked here, before anything is written: the launcher is given it so
    return name


@contextlib.contextmanager
def _workers_end_with(pid: int) -> Iterator[None]:
    """Tell the workers a launcher starts which process they must not outlive."""
    before = os.environ.get(compute.SWEEP_PID_ENV)
    os.environ[compute.SWEEP_PID_ENV] = str(pid)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(compute.SWEEP_PID_ENV, None)
        else:
            os.environ[compute.SWEEP_PID_ENV] = before


def _pool_ahead(workers: int) -> contextlib.AbstractContextManager[None]:
    """Start ``workers`` pool workers for degrade's launcher now, or take those started before
    the plan (none: nothing to start)."""
    if not workers:
        return contextlib.nullcontext()
    return pool.ahead(workers, headstart.worker_env(workers), headstart.WORKER_IMPORTS)


def run_labels(configs: list[DictConfig]) -> dict[str, str]:
    """Per run id, the settings the grid varies besides depth, variant and seed, as overrides
    (``optim.lr=0.01``): what tells apart runs whose ids differ only in their hash. Empty when
    the grid varies nothing else."""
    flattened = {run_id(c): flatten(identity_config(c)) for c in configs}
    keys = varied_keys(list(flattened.values()))
    if not keys:
        return {}
    return {rid: ", ".join(f"{k}={show(f.get(k))}" for k in keys) for rid, f in flattened.items()}


def run_sweep(spec: SweepSpec, reporter: SweepReporter | None = None) -> SweepResult:
    """Check, record and launch a sweep; return each run's outcome.

    Runs the store already holds finished are decided here, from their files, and nothing is
    launched for them: a finished sweep reruns in the time it takes to read its status files.
    """
    overrides, configs, asked, launcher, as_composed = _plan(spec)
    name = _sweep_name(spec, configs)
    root = Path(configs[0].out).expanduser().absolute()
    ids = [run_id(c) for c in configs]
    unique = list(dict.fromkeys(ids))
    # A sweep folder, or a file Hydra writes in it, that is a link is refused before anything is written.
    for written in ("multirun.yaml", ".submitit"):
        store.sweep_file(root, name, written)
    finished = {rid: store.RunDir(root, rid).finished() for rid in unique}
    remaining = [c for c, rid in zip(configs, ids, strict=True) if finished[rid] is None]
    ahead = _workers_ahead(launcher, remaining) if remaining and spec.together is None else 0
    if not ahead:
        pool.drop_ahead()  # workers begun before the plan (degrade.headstart): none will train
    check_fits(remaining)
    _check_same_device(remaining, root)
    _check_writable([store.RunDir(root, run_id(c)) for c in remaining])
    prepare_data(remaining)
    out = store.make_out(root)
    folder = store.write_sweep(
        out,
        name,
        {
            "name": name,
            "runs": unique,
            "overrides": overrides,
            "command": spec.command if spec.command is not None else " ".join(sys.argv[1:]),
            "asked": asked,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    for cfg, rid in zip(configs, ids, strict=True):
        if finished[rid] is not None:
            with store.writing(store.RunDir(out, rid).path):
                job.log_finished(cfg, store.RunDir(out, rid))
    results: dict[str, RunResult] = {
        rid: RunResult(
            rid,
            "skipped",
            int(store.RunDir(out, rid).status().get("epochs_done", 0)),
            final=final,
            path=store.RunDir(out, rid).path,
        )
        for rid, final in finished.items()
        if final is not None
    }
    labels = run_labels(configs) if reporter is not None else {}
    if remaining:
        with _watching(out, name, unique, reporter, labels=labels):
            if spec.together is not None:
                try:
                    launched = _run_together(remaining, out, name, spec.together)
                except OSError as e:  # the store failed under a run (a full disk): name it
                    raise stopped(e, out, unique) from None
            else:
                # Found none finished: the sweeper need not compose every job to check again.
                own = any(_key(o).startswith(("hydra/sweeper", "hydra.sweeper")) for o in overrides)
                fresh = len(remaining) == len(configs) and not own
                check = ["hydra.sweeper.check_store=false"] if fresh else []
                launched = _multirun(overrides + check, out, name, unique, ahead, as_composed)
        results.update((r.run_id, r) for r in launched)
    elif reporter is not None:
        reporter.sweep_started(name, unique, labels)
        reporter.update({rid: store.RunDir(out, rid).status() for rid in unique})
    return SweepResult(name, out, folder, [results[rid] for rid in unique if rid in results])


def _register_plugins() -> None:
    """degrade's sweeper and launcher, registered by hand: Hydra's scan for plugins does not see
    packages installed in editable mode."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.degrade_plugins.local_parallel import LocalParallelLauncher
    from hydra_plugins.degrade_plugins.remaining_sweeper import RemainingSweeper

    for plugin in (RemainingSweeper, LocalParallelLauncher):
        Plugins.instance().register(plugin)


def stopped(e: BaseException, out: Path, run_ids: list[str], who: str = "the launcher") -> LaunchError:
    """The failure ``e`` of the launcher (or of ``who``) as one line that names each run it left
    unfinished and where its error is: recorded in the run's status (``degrade ls`` shows it) as
    ``interrupted``.
    """
    first = (str(e).strip().splitlines() or [""])[0]
    error = f"{e.__class__.__name__}: {first}"
    if "signal 9" in first:
        error += " (SIGKILL: often the kernel ending a process out of memory)"
    said = []
    for rid in run_ids:
        run = store.RunDir(out, rid)
        if run.state() != store.INTERRUPTED:
            continue
        try:
            marked = run.mark_interrupted(error)
            where = (
                f"its error is recorded in {run.status_file}"
                if marked
                else f"what it last recorded is in {run.status_file}"
            )
        except OSError as w:
            where = f"its folder {run.path} could not record the error ({w.strerror or w})"
        said.append(f"run {rid} was left unfinished: {where}")
    runs = "; ".join(said) if said else "no run was left unfinished"
    return LaunchError(f"{who} stopped ({error}); {runs}; rerun the same command to resume")


def _not_ours(given: list[str]) -> list[str]:
    # The store and the name are the sweep's own, as it resolved them.
    return [o for o in given if _key(o) not in ("out", "name")]


def _multirun_overrides(overrides: list[str], out: Path, name: str) -> list[str]:
    """What Hydra's multirun is given: the sweep's overrides, with its store and its name."""
    return _not_ours(overrides) + [quoted(name, "name"), quoted(str(out), "out"), "hydra.mode=MULTIRUN"]


def _offered(planned: list[tuple[list[str], DictConfig]]) -> list[tuple[list[str], DictConfig]]:
    """The planned runs as ``composed.offering`` takes them: a job's config is its run's
    once the sweep's own values (the store, the name, threads, precision) are set over it."""
    return [(_not_ours(combo), cfg) for combo, cfg in planned]


def _multirun(
    overrides: list[str],
    out: Path,
    name: str,
    run_ids: list[str],
    ahead: int = 0,
    planned: list[tuple[list[str], DictConfig]] | None = None,
) -> list[RunResult]:
    """The sweep through Hydra's multirun: its sweeper launches the runs not finished, and
    ``ahead`` pool workers start importing before Hydra sets up (its launcher takes them).
    ``planned`` (each run's overrides and config, as the plan composed them) spares Hydra
    composing those jobs again."""
    try:
        with (
            hydra_context(),
            _workers_end_with(os.getpid()),
            _pool_ahead(ahead),
            composed.offering(_offered(planned or [])),
        ):
            _register_plugins()
            batches = GlobalHydra.instance().hydra.multirun(  # type: ignore[union-attr]  # set up by hydra_context just above
                config_name=CONFIG_NAME,
                task_function=run_job,
                overrides=_multirun_overrides(overrides, out, name),
            )
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - a launcher's failure (a cancelled job, a lost node)
        raise stopped(e, out, run_ids) from None
    return [RunResult.from_dict(ret.return_value, out) for batch in batches for ret in batch]


def _run_together(configs: list[DictConfig], out: Path, name: str, at_once: int) -> list[RunResult]:
    """Train the runs in this process, ``at_once`` at a time, interleaved step by step.

    One thread issues every run's work, each run on a CUDA stream of its own: the GPU overlaps
    the runs' kernels while the host never issues two runs' work at once, which is what lets
    each run capture its step as a CUDA graph while the others train. Each run goes through
    ``job_steps`` as under a launcher (lock, skip what is done, resume). Hydra's own job runner
    keeps per-job state in process-wide singletons, so the validated configs are used directly.
    """
    pending: deque[tuple[int, DictConfig]] = deque()
    for k, cfg in enumerate(configs):
        cfg = copy.deepcopy(cfg)
        cfg.out, cfg.name = str(out), name
        if cfg.trainer.threads is None:  # one run computes at a time: each may use every core
            cfg.trainer.threads = compute.usable_cores()
        pending.append((k, cfg))
    import torch

    from degrade import accel  # torch, now that runs train in this process
    from degrade.train import run_steps

    active: list[tuple[int, Steps[dict[str, Any]], Any, DictConfig]] = []
    returns: dict[int, dict[str, Any]] = {}
    try:
        while pending or active:
            while pending and len(active) < at_once:
                k, cfg = pending.popleft()
                stream = accel.new_stream(str(cfg.trainer.device))
                active.append((k, job_steps(cfg, run_steps, settle=False), stream, cfg))
            for slot in list(active):
                k, steps, stream, cfg = slot
                if cfg.trainer.threads != torch.get_num_threads():
                    # Torch's thread count is the process's: each run steps with its own (a resumed
                    # run keeps the count it began with, which its job sets in its config).
                    accel.set_threads(cfg.trainer.threads)
                with accel.on_stream(stream):
                    try:
                        next(steps)
                    except StopIteration as stop:
                        returns[k] = stop.value
                        active.remove(slot)
    finally:
        for _, steps, _, _ in active:
            steps.close()  # a run stopped half-way lets go of its lock: it reads as interrupted
    return [RunResult.from_dict(r, out) for _, r in sorted(returns.items())]


def train_one(overrides: list[str], reporter: SweepReporter | None = None) -> RunResult:
    """Train the single run ``overrides`` describe into the store (no launcher)."""
    cfg = compose_run(overrides)
    check_fits([cfg])
    root = Path(cfg.out).expanduser().absolute()
    _check_writable([store.RunDir(root, run_id(cfg))])
    prepare_data([cfg])
    out = store.make_out(root)
    cfg.out = str(out)
    rid = run_id(cfg)
    with _watching(out, "train", [rid], reporter):
        try:
            r = run_job(cfg)
        except OSError as e:  # the store failed under the run (a full disk): name it
            raise stopped(e, out, [rid], who="training") from None
    return RunResult.from_dict(r, out)
