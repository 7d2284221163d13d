"""Sweeps through Hydra's launcher plugins: the same store, the same results."""

import json

import pandas as pd
import pytest

from degrade.cli import main
from tests.conftest import run_subprocess

COLUMNS = ["epoch", "train_loss", "train_error", "test_loss", "test_error"]


GRID = ["sweep", "--depths", "8", "--epochs", "1", "trainer.threads=1"]


@pytest.fixture(scope="module")
def basic_store(tmp_path_factory):
    """The sweep through Hydra's basic launcher (one process, one run after another)."""
    out = tmp_path_factory.mktemp("basic") / "basic"
    assert main([*GRID, "--out", str(out), "hydra/launcher=basic"]) == 0  # in this process
    return out


# joblib with one job runs it in the sweep's own process (as on a one-core machine).
@pytest.mark.parametrize(
    "launcher", ["local_parallel", "joblib", "joblib hydra.launcher.n_jobs=1", "submitit_local"]
)
def test_local_launchers_fill_the_store_like_the_basic_one(launcher, tmp_path, basic_store):
    name, *more = launcher.split()
    other = run_subprocess([*GRID, "--out", "other", f"hydra/launcher={name}", *more], cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert "2 runs (2 done)" in other.stdout
    for p in sorted((basic_store / "runs").glob("*/metrics.parquet")):
        twin = tmp_path / "other" / "runs" / p.parent.name / "metrics.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(twin)[COLUMNS], pd.read_parquet(p)[COLUMNS])
    if launcher == "submitit_local":
        # The jobs really went through submitit: it keeps a folder per job beside the sweep.
        (sweep,) = (tmp_path / "other" / "sweeps").iterdir()
        assert len(list((sweep / ".submitit").iterdir())) >= 2


def test_together_trains_the_runs_in_the_sweep_process_like_the_basic_launcher(tmp_path, basic_store):
    r = run_subprocess([*GRID, "--out", "together", "--together", "2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 runs (2 done)" in r.stdout
    for p in sorted((basic_store / "runs").glob("*/metrics.parquet")):
        twin = tmp_path / "together" / "runs" / p.parent.name / "metrics.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(twin)[COLUMNS], pd.read_parquet(p)[COLUMNS])
    pids = {
        json.loads(p.read_text())["sessions"][0]["pid"]
        for p in (tmp_path / "together" / "runs").glob("*/status.json")
    }
    assert len(pids) == 1  # both runs trained in the one sweep process
    # ... interleaved step by step: each run's epoch began before the other's ended.
    a, b = (pd.read_parquet(p).iloc[0] for p in (tmp_path / "together" / "runs").glob("*/metrics.parquet"))
    assert a["ended"] - a["epoch_seconds"] < b["ended"] and b["ended"] - b["epoch_seconds"] < a["ended"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [(["--together", "0"], "at least 1"), (["--together", "2", "hydra/launcher=joblib"], "launcher")],
)
def test_together_refuses_what_it_cannot_do(capsys, tmp_path, extra, words):
    from tests.conftest import run_cli

    code, _, err = run_cli(["sweep", "--depths", "8", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and words in err and not (tmp_path / "o").exists()


# Machines with 1, 2 and 16 cores, whatever this one has: (cores, threads per job with joblib's
# 2 jobs, threads per job with local_parallel's one job per core for 4 runs).
CORES = [(1, 1, 1), (2, 1, 1), (16, 8, 4)]


@pytest.mark.parametrize(("cores", "joblib_threads", "pool_threads"), CORES)
def test_joblib_splits_the_cores_between_parallel_jobs(
    tmp_path, monkeypatch, cores, joblib_threads, pool_threads
):
    from degrade import compute
    from degrade.sweep import SweepSpec, plan

    monkeypatch.setattr(compute, "usable_cores", lambda: cores)
    overrides, _ = plan(
        SweepSpec(
            depths=[8, 14], out=str(tmp_path), overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        )
    )
    assert f"trainer.threads={joblib_threads}" in overrides
    overrides, _ = plan(
        SweepSpec(depths=[8, 14], out=str(tmp_path), overrides=["hydra/launcher=local_parallel"])
    )
    assert f"trainer.threads={pool_threads}" in overrides
    overrides, _ = plan(
        SweepSpec(
            depths=[8],
            out=str(tmp_path),
            overrides=["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=3"],
        )
    )
    assert "trainer.threads=3" in overrides
    overrides, _ = plan(SweepSpec(depths=[8], out=str(tmp_path), overrides=["trainer.threads=3"]))
    assert not any(o.startswith("trainer.threads=") and o != "trainer.threads=3" for o in overrides)


def test_joblib_jobs_spread_over_the_visible_gpus():
    from degrade.accel import gpu_for_job

    assert gpu_for_job(0, None, 1) is None and gpu_for_job(3, None, 0) is None
    assert [gpu_for_job(n, None, 4) for n in range(5)] == ["0", "1", "2", "3", "0"]
    assert [gpu_for_job(n, "2,5", 8) for n in range(3)] == ["2", "5", "2"]
    assert gpu_for_job(7, "3", 8) is None


@pytest.mark.pool
@pytest.mark.parametrize(("cores", "jobs"), [(1, None), (2, 2), (16, 4)])
def test_several_cpu_runs_go_to_parallel_processes_by_default(tmp_path, monkeypatch, cores, jobs):
    from degrade import compute
    from degrade.sweep import SweepSpec, plan

    monkeypatch.setattr(compute, "usable_cores", lambda: cores)
    overrides, _ = plan(SweepSpec(depths=[8, 14], out=str(tmp_path)))  # 4 runs
    if jobs is None:  # one core: one run after another in the sweep's process
        assert not any(o.startswith("hydra/launcher") for o in overrides)
        assert f"trainer.threads={cores}" in overrides
    else:
        assert "hydra/launcher=local_parallel" in overrides
        assert f"hydra.launcher.n_jobs={jobs}" in overrides
        assert f"trainer.threads={cores // jobs}" in overrides
    for chosen in (["hydra/launcher=basic"], ["model.variant=plain", "model.depth=8"]):
        overrides, _ = plan(SweepSpec(out=str(tmp_path), overrides=chosen))
        assert "hydra/launcher=local_parallel" not in overrides


@pytest.mark.pool
def test_the_default_pool_takes_the_workers_started_ahead_and_composes_no_job_again(tmp_path, monkeypatch):
    import gc
    import sys

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from degrade import cli, compute, headstart, pool
    from degrade.sweep import SweepSpec, run_sweep

    monkeypatch.setattr(compute, "usable_cores", lambda: 2)
    monkeypatch.setattr(compute, "torch_may_have_gpu", lambda: False)
    calls = {"workers": 0, "composed": 0}

    def counted(key: str, f):
        def g(*a, **k):
            calls[key] += 1
            return f(*a, **k)

        return g

    monkeypatch.setattr(pool._Worker, "__init__", counted("workers", pool._Worker.__init__))
    monkeypatch.setattr(
        ConfigLoaderImpl, "load_sweep_config", counted("composed", ConfigLoaderImpl.load_sweep_config)
    )
    # The program as the command line starts it: its workers begin before anything is parsed.
    monkeypatch.setattr(
        sys, "argv", ["degrade", "sweep", "--depths", "8", "--out", str(tmp_path), "trainer.epochs=1"]
    )
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run()
    finally:
        gc.unfreeze()  # cli.run leaves its objects to the process, which here goes on
    assert exit_.value.code == 0
    runs = [json.loads(p.read_text())["state"] for p in tmp_path.glob("runs/*/status.json")]
    assert runs == ["done", "done"]
    # Two workers in all, both taken by the launcher: one started first thing (before anything
    # was parsed) and one by the plan, which wanted two like it (else three would have started).
    # Each job's config is its planned run's: Hydra composes none of them again.
    assert calls == {"workers": 2, "composed": 0}
    # Where the plan wants none (the sweep is finished) or others (one job at a time), the early
    # workers are stopped as soon as it knows, not when the command ends.
    # (One thread: a test has one core of its own, and two threads would spin on it.)
    one_at_a_time = [
        "trainer.epochs=1",
        "trainer.threads=1",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=1",
    ]
    for overrides, seed, started, state in (
        (["trainer.epochs=1"], 0, 1, "skipped"),
        (one_at_a_time, 1, 2, "done"),
    ):
        calls["workers"] = 0
        with headstart.sweep_workers(["sweep"]):
            early = [w for ws in pool._ahead.values() for w in ws]
            spec = SweepSpec(
                depths=[8], seeds=[seed], out=str(tmp_path), overrides=overrides, name=f"s{seed}"
            )
            result = run_sweep(spec)
            assert all(w.proc.poll() is not None for w in early) and not pool._ahead
        assert len(early) == 1 and calls["workers"] == started
        assert {r.state for r in result.runs} == {state}


def test_workers_of_a_killed_sweep_stop_training(tmp_path):
    import json
    import signal
    import time

    from tests.conftest import alive
    from tests.test_reliability import _held, _popen

    # The runs hold at step 30 (degrade.hold): a worker that outlived its sweep would wait there
    # for good, so it is seen alive, whatever the CPU's pace.
    gate = tmp_path / "gate"
    gate.touch()
    out = tmp_path / "o"
    sweep = ["sweep", "--depths", "14", "--epochs", "5", "--out", str(out), "hydra/launcher=local_parallel"]
    proc = _popen(sweep, tmp_path, DEGRADE_HOLD_RUN=f"30:{gate}")
    _held(gate, proc)
    statuses = [json.loads(p.read_text()) for p in out.glob("runs/*/status.json")]
    pids = {s["sessions"][-1]["pid"] for s in statuses if s.get("sessions")}
    assert pids and proc.pid not in pids  # trained by workers, not by the sweep's own process
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while any(alive(pid) for pid in pids):
        assert time.time() < deadline, "a worker outlived its sweep by 30 s"
        time.sleep(0.1)
    assert all(json.loads(p.read_text())["state"] == "running" for p in out.glob("runs/*/status.json"))


def _results(out) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_parquet(p)[COLUMNS] for p in sorted(out.glob("runs/*/metrics.parquet"))}


def test_sigkill_between_worker_start_and_first_job_leaves_no_process_and_reruns_identically(tmp_path):
    """The sweep is killed while its workers are held, on purpose, before their first job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from degrade.pool import HOLD_ENV
    from tests.conftest import session_processes

    grid = [
        *GRID[:-1],
        "--epochs",
        "2",
        "trainer.threads=1",
        "trainer.precision=fp32",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
    ]
    # The uninterrupted reference, in this process (the launchers give the same results, above).
    assert main([*grid[:-2], "hydra/launcher=basic", "--out", str(tmp_path / "ref")]) == 0
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", HOLD_ENV: str(hold)}
    stderr = (tmp_path / "stderr").open("w")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "degrade", *grid, "--out", "killed"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.time() + 120
    while len(list(hold.glob("*.ready"))) < 2 and sweep.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = [int(p.stem) for p in hold.glob("*.ready")]
    assert len(workers) == 2 and sweep.poll() is None, "the workers never reached their first job"
    assert set(workers) <= set(session_processes(sweep.pid))
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 5
    while session_processes(sweep.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert session_processes(sweep.pid) == []
    # Nothing left for a resource tracker to clean up or warn about (semaphores, shared memory).
    stderr.close()
    assert "leaked" not in (tmp_path / "stderr").read_text()
    pids = [str(p) for p in (sweep.pid, *workers)]
    shm = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    assert [e for e in shm if any(p in e for p in pids)] == []
    assert list((tmp_path / "killed").glob("runs/*/*.parquet")) == []  # no job had begun

    rerun = run_subprocess([*grid, "--out", "killed"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    got, want = _results(tmp_path / "killed"), _results(tmp_path / "ref")
    assert got.keys() == want.keys() and len(want) == 2
    for rid in want:
        pd.testing.assert_frame_equal(got[rid], want[rid])


def test_a_finished_sweep_reruns_without_launching_or_importing_torch(tmp_path, monkeypatch):
    import subprocess
    import sys

    args = [*GRID, "--out", "o", "--name", "done"]
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0  # the first sweep, in this process; the rerun is what is watched
    multirun = tmp_path / "o" / "sweeps" / "done" / "multirun.yaml"
    stamp = multirun.stat().st_mtime_ns
    probe = (
        "import sys; from degrade.cli import main; rc = main(sys.argv[1:]); "
        "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "2 runs (2 skipped)" in r.stdout and "torch imported: False" in r.stdout
    assert multirun.stat().st_mtime_ns == stamp  # Hydra's multirun did not even start
    assert sorted(json.loads((multirun.parent / "sweep.json").read_text())["runs"]) == sorted(
        p.name for p in (tmp_path / "o" / "runs").iterdir()
    )


def test_only_the_runs_not_finished_are_launched(tmp_path, monkeypatch, capsys):
    import degrade.sweep
    from tests.conftest import run_cli

    args = [*GRID, "--out", str(tmp_path / "o"), "--name", "part", "hydra/launcher=basic"]
    assert run_cli(args, capsys)[0] == 0
    first = sorted((tmp_path / "o" / "runs").iterdir())
    # One run's status says it never finished: only that run is launched again.
    status = first[0] / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "running"}))
    launched = []
    real = degrade.sweep.run_job
    monkeypatch.setattr(degrade.sweep, "run_job", lambda cfg: launched.append(cfg.model.variant) or real(cfg))
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert launched == [first[0].name.split("-")[1]]
    assert "2 runs (1 done, 1 skipped)" in out or "2 runs (1 skipped, 1 done)" in out
    record = json.loads((tmp_path / "o" / "sweeps" / "part" / "sweep.json").read_text())
    assert sorted(record["runs"]) == [p.name for p in first]


def test_a_joblib_worker_whose_sweep_is_gone_ends_before_its_first_job():
    """A worker compares its parent with the sweep's pid from its environment, not with the
    parent it finds at its first job (init, once the sweep is dead)."""
    import os
    import subprocess
    import sys

    from degrade.compute import SWEEP_PID_ENV

    probe = "from degrade.job import _exit_with_parent; _exit_with_parent(); print('trains')"
    for sweep_pid, alive in ((os.getpid(), True), (os.getpid() + 1_000_000, False)):
        env = {**os.environ, SWEEP_PID_ENV: str(sweep_pid)}
        r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode == 0 and "trains" in r.stdout) is alive, (sweep_pid, r.stdout, r.stderr)


def test_the_watcher_tells_the_reporter_once_when_every_run_has_begun_and_from_its_own_thread(tmp_path):
    import threading

    from degrade import store
    from degrade.sweep import _Watcher

    class Reporter:
        def __init__(self) -> None:
            self.polls = 0
            self.polled = threading.Condition()
            self.started: list[threading.Thread] = []

        def sweep_started(self, name, run_ids, labels=None) -> None:
            pass

        def update(self, statuses) -> None:
            with self.polled:
                self.polls += 1
                self.polled.notify_all()

        def all_started(self) -> None:
            self.started.append(threading.current_thread())

    def polls_after(reporter: Reporter, more: int) -> None:
        with reporter.polled:
            until = reporter.polls + more
            assert reporter.polled.wait_for(lambda: reporter.polls >= until, timeout=60)

    first, second = (store.RunDir(tmp_path, f"cnn-plain-{d}-s0-0123456789") for d in (8, 14))
    first.set_status("running", epochs_done=0, epochs=2)
    reporter = Reporter()
    watcher = _Watcher(tmp_path, [first.id, second.id], reporter, every=0.01)
    watcher.start()
    try:
        polls_after(reporter, 3)
        assert reporter.started == []  # the second run has not begun
        second.set_status("running", epochs_done=0, epochs=2)
        # A poll that began after the write sees it; the one after that has been reported.
        polls_after(reporter, 3)
        assert reporter.started == [watcher]
        first.set_status("done", epochs_done=2, epochs=2)
        polls_after(reporter, 3)
        assert reporter.started == [watcher]  # once
    finally:
        watcher.stop()


def test_the_progress_bars_redraw_no_more_often_than_the_statuses_are_read():
    from degrade import console, sweep

    reporter = console.RichReporter()
    # Each redraw beyond a new reading draws the same bars, on cores the runs train on.
    assert reporter.progress.live.refresh_per_second * sweep.POLL_SECONDS <= 1
