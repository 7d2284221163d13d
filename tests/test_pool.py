"""degrade's process pool: results in order, failures per job, nothing left behind."""

import operator
import signal

from degrade.pool import Pool, WorkerDied


def test_jobs_run_in_workers_with_results_in_order_and_errors_per_job():
    jobs = [(7, 2), (1, 0), (9, 3), (4, 4)]
    with Pool(2) as pool:
        outcomes = pool.map(operator.truediv, jobs)
    assert [o.value for o in outcomes] == [3.5, None, 3.0, 1.0]
    assert isinstance(outcomes[1].error, ZeroDivisionError)


def test_a_worker_killed_mid_job_fails_only_that_job():
    with Pool(1) as pool:
        outcomes = pool.map(signal.raise_signal, [(signal.SIGKILL,)])
        assert isinstance(outcomes[0].error, WorkerDied) and "signal 9" in str(outcomes[0].error)
        # The pool goes on with a new worker.
        assert [o.value for o in pool.map(operator.add, [(1, 2), (3, 4)])] == [3, 7]


def _imported(name: str) -> tuple[int, bool]:
    import os
    import sys

    return os.getpid(), name in sys.modules


def test_workers_started_ahead_are_taken_by_a_pool_with_the_same_environment_and_preload():
    import os

    from degrade import pool

    env = dict(os.environ)
    with pool.ahead(2, env, preload=("colorsys",)):
        started = {w.proc.pid for ws in pool._ahead.values() for w in ws}
        with Pool(2, env=lambda _: env, preload=("colorsys",)) as taken:
            assert {w.proc.pid for w in taken.idle} == started and taken.started == 2
            outcomes = taken.map(_imported, [("colorsys",), ("colorsys",)])
        # The module the worker preloaded is there before any job asked for it.
        assert all(o.value[1] for o in outcomes) and {o.value[0] for o in outcomes} <= started
        assert not pool._ahead
    with pool.ahead(1, env):
        (left,) = next(iter(pool._ahead.values()))
        with Pool(1, env=lambda _: {**env, "OTHER": "1"}) as other:  # another environment: its own
            assert [w.proc.pid for w in other.idle] != [left.proc.pid]
            assert other.map(_imported, [("colorsys",)])[0].value[1] is False
    # Not taken: stopped when the block ended.
    assert left.proc.poll() is not None and not pool._ahead


def test_workers_started_ahead_are_counted_for_the_same_and_stopped_at_once_for_others():
    import os

    from degrade import pool

    env = dict(os.environ)
    with pool.ahead(1, env):
        (early,) = [w for ws in pool._ahead.values() for w in ws]
        with pool.ahead(2, env):  # the plan wants two like it: one more is started
            both = [w for ws in pool._ahead.values() for w in ws]
            assert len(both) == 2 and early in both
            with Pool(2, env=lambda _: env) as taken:
                assert set(taken.idle) == set(both) and not pool._ahead
    with pool.ahead(2, env):
        early2 = [w for ws in pool._ahead.values() for w in ws]
        with pool.ahead(1, env):  # fewer: the one too many goes now
            assert sum(w.proc.poll() is None for w in early2) == 1
        with pool.ahead(1, {**env, "OTHER": "1"}):  # others: the early ones go now
            assert all(w.proc.poll() is not None for w in early2)
            (other,) = next(iter(pool._ahead.values()))
            pool.drop_ahead()  # and where it wants none at all
            assert other.proc.poll() is not None and not pool._ahead


def test_a_job_the_worker_cannot_read_fails_with_why_instead_of_waiting_for_good(tmp_path, monkeypatch):
    import importlib
    import shutil
    import sys
    import threading

    (tmp_path / "gone_by_then.py").write_text("def twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gone = importlib.import_module("gone_by_then")
    monkeypatch.setitem(sys.modules, "gone_by_then", gone)  # and gone again when the test ends
    outcomes = []
    with Pool(1) as workers:
        # The worker has this process's module search path; the module leaves it before the job.
        (tmp_path / "gone_by_then.py").unlink()
        shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
        mapping = threading.Thread(target=lambda: outcomes.extend(workers.map(gone.twice, [(3,)])))
        mapping.start()
        mapping.join(timeout=120)  # a generous bound: the answer comes as soon as the worker reads
        assert not mapping.is_alive(), "the pool waited for a reply that never comes"
        (outcome,) = outcomes
        assert "could not be read in the worker" in str(outcome.error) and "gone_by_then" in str(
            outcome.error
        )
        assert [o.value for o in workers.map(abs, [(-2,)])] == [2]  # the worker goes on
