"""What a command starts before it parses its arguments: a sweep's pool workers, where it would want them."""

import os

import pytest

from degrade import compute, headstart, pool


@pytest.mark.parametrize(
    ("args", "cores", "gpu", "starts"),
    [
        (["sweep", "--depths", "8,20,56"], 2, False, True),
        (["sweep"], 4, False, True),
        (["sweep", "--depths", "8"], 3, False, True),
        (["summary"], 2, False, False),  # only a sweep trains
        (["sweep", "--help"], 2, False, False),
        (["sweep", "--together", "2"], 2, False, False),  # trains in the sweep's own process
        (["sweep", "--together=2"], 2, False, False),
        (["sweep"], 1, False, False),  # one core: the runs train in the sweep's own process
        (["sweep"], 2, True, False),  # a torch that may have a GPU: the launcher picks per GPU
        ([], 2, False, False),
    ],
)
def test_a_sweep_on_cpu_cores_starts_its_workers_but_one_first_thing(args, cores, gpu, starts, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(compute, "usable_cores", lambda: cores)
    monkeypatch.setattr(compute, "torch_may_have_gpu", lambda: gpu)
    started: list[tuple[dict[str, str], tuple[str, ...]]] = []
    monkeypatch.setattr(pool, "_Worker", lambda env, preload: started.append((env, preload)) or object())
    monkeypatch.setattr(pool, "_stop", lambda workers, wait=5.0: None)
    with headstart.sweep_workers(args):
        pass
    # One core is left to the sweep's own process: a sweep that trains nothing is not slowed.
    assert len(started) == (cores - 1 if starts else 0)
    for env, preload in started:
        # One thread each on its core, ending with this process, importing the trainer: what
        # the sweep's plan asks of its workers on these cores (and so takes them).
        assert env == headstart.worker_env(cores) and env["OMP_NUM_THREADS"] == "1"
        assert env[compute.SWEEP_PID_ENV] == str(os.getpid()) and preload == headstart.WORKER_IMPORTS
