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
