"""A small pool of worker processes on this machine, for a sweep's jobs.

Each worker is ``python -m degrade.pool``, started with two pipes: jobs come in on one,
results go back on the other, one pickled message at a time. No semaphores, no shared memory,
no helper processes: a pool leaves nothing behind in ``/dev/shm``.

A worker ends with the process that started it, even when that one is killed with SIGKILL:
the kernel closes the job pipe of a dead process, the worker reads end-of-file on it, and a
thread that does nothing but wait for that ends the worker at once, whatever it was doing
(importing torch, waiting for its first job, training). A run's files are replaced atomically
and its lock is the kernel's, so that loses only the epoch in flight, which a rerun trains again.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import queue
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Tests set this to a folder: each worker then writes ``<pid>.ready`` there once it watches
# its parent, and waits for a file named ``go`` before it takes a job. The moment between a
# worker's start and its first job can then be held on purpose instead of hit by chance.
HOLD_ENV = "DEGRADE_POOL_HOLD"
_HEADER = struct.Struct(">Q")
# A worker imports what the sweep's process imported: it starts with that process's module
# search path, not with the current folder first (``python -m`` would put it there, and a
# ``degrade/`` folder in it would then stand in for the installed package).
_BOOT = (
    "import json, runpy, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "runpy.run_module('degrade.pool', run_name='__main__', alter_sys=True)"
)


def _send(f: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


def _receive(f: IO[bytes]) -> bytes:
    """The next message's bytes; EOFError when the other end has closed the pipe."""
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    size = _HEADER.unpack(header)[0]
    data = f.read(size)
    if len(data) < size:
        raise EOFError
    return data


def _search_path() -> list[str]:
    """This process's module search path, with the current folder spelled out."""
    return [os.path.abspath(p) if p in ("", ".") else p for p in sys.path]


@dataclass
class Outcome:
    """What one job gave: its return value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None


class WorkerDied(RuntimeError):
    """A worker process ended in the middle of a job (killed, out of memory)."""


class _Worker:
    """One worker process and the parent's ends of its pipes."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = ()) -> None:
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    str(job_r),
                    str(result_w),
                    json.dumps(_search_path()),
                    json.dumps(list(preload)),
                ],
                pass_fds=(job_r, result_w),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(job_r)
            os.close(result_w)
        self.jobs = os.fdopen(job_w, "wb")
        self.results = os.fdopen(result_r, "rb")
        self.job: int | None = None  # index of the job it is running

    def give(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.job = index
        _send(self.jobs, (fn, args))

    def stop(self, wait: float) -> None:
        """Close its job pipe (an idle worker then exits) and make sure it is gone."""
        self.let_go()
        self.reap(wait)

    def let_go(self) -> None:
        """Close its pipes: an idle worker reads end-of-file on its job pipe and exits."""
        for f in (self.jobs, self.results):
            try:
                f.close()
            except OSError:
                pass

    def reap(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for it to exit, then kill it."""
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Workers started by ``ahead`` and not yet taken by a Pool: (environment, preload) -> workers.
_ahead: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], list[_Worker]] = {}


def _key(env: dict[str, str], preload: tuple[str, ...]) -> tuple:
    return tuple(sorted(env.items())), preload


def _take(env: dict[str, str], preload: tuple[str, ...]) -> _Worker | None:
    """A worker started ahead with this environment and preload, now the caller's; or None."""
    key = _key(env, preload)
    have = _ahead.get(key)
    if not have:
        return None
    w = have.pop(0)
    if not have:
        del _ahead[key]
    return w


@contextlib.contextmanager
def ahead(workers: int, env: dict[str, str], preload: tuple[str, ...] = ()) -> Iterator[None]:
    """Have ``workers`` workers started now for a ``Pool`` that this process asks for later,
    within the block, with this environment for each and this ``preload``: their imports then
    overlap the caller's work in between. Workers no Pool took are stopped when the block ends,
    however it ends.

    Workers an enclosing block started for the same are counted, and only the rest started;
    those started ahead for anything else are stopped at once (the caller knows better now).
    """
    key = _key(env, preload)
    _stop([w for k in list(_ahead) if k != key for w in _ahead.pop(k)], wait=0.0)
    started = _ahead.setdefault(key, [])
    _stop(started[workers:], wait=0.0)
    del started[workers:]
    started.extend(_Worker(env, preload) for _ in range(workers - len(started)))
    try:
        yield
    finally:
        _stop(_ahead.pop(key, []), wait=0.0)


def drop_ahead() -> None:
    """Stop every worker started ``ahead`` that no Pool has taken: none will be asked for."""
    _stop([w for k in list(_ahead) for w in _ahead.pop(k)], wait=0.0)


def _stop(workers: list[_Worker], wait: float = 5.0) -> None:
    """Stop ``workers``: all told at once, then each given ``wait`` seconds to go before it is
    killed. An idle worker takes a few hundredths of a second; one that never had a job holds
    nothing to let go of, and may be importing torch, which lets its watching thread run only
    between imports (a killed one is not waited for)."""
    for w in workers:
        w.let_go()
    for w in workers:
        w.reap(wait)


class Pool:
    """Up to ``workers`` worker processes, started at once (they import while the caller does
    other work, first the modules in ``preload``); ``env(k)`` gives worker ``k``'s environment
    (default: this process's). Workers started ``ahead`` for the same are taken, not started."""

    def __init__(
        self,
        workers: int,
        env: Callable[[int], dict[str, str]] | None = None,
        preload: tuple[str, ...] = (),
    ) -> None:
        self.env = env
        self.preload = preload
        self.idle: list[_Worker] = []
        for k in range(workers):
            env_k = self._env(k)
            self.idle.append(_take(env_k, preload) or _Worker(env_k, preload))
        self.started = workers

    def _env(self, k: int) -> dict[str, str]:
        return self.env(k) if self.env else dict(os.environ)

    def _start(self) -> _Worker:
        w = _Worker(self._env(self.started), self.preload)
        self.started += 1
        return w

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers: idle ones exit when their job pipe closes."""
        _stop(self.idle)
        self.idle = []

    def map(
        self,
        fn: Callable[..., Any],
        jobs: Sequence[tuple[Any, ...]],
        on_result: Callable[[int, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """``fn(*args)`` for each ``args`` of ``jobs``; the outcomes in the order of ``jobs``.

        A job that raises gives its exception; a worker that dies mid-job fails that job with
        WorkerDied and the rest go on in a new worker. ``on_result(index, outcome)`` is called
        as each job's outcome arrives.
        """
        outcomes: list[Outcome | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        busy: list[_Worker] = []
        sel = selectors.DefaultSelector()

        def feed(w: _Worker) -> None:
            if pending:
                i = pending.pop(0)
                w.give(i, fn, tuple(jobs[i]))
                busy.append(w)
                sel.register(w.results, selectors.EVENT_READ, w)
            else:
                w.job = None
                self.idle.append(w)

        def done(w: _Worker) -> None:
            sel.unregister(w.results)
            busy.remove(w)

        try:
            workers, self.idle = self.idle, []
            for w in workers:
                feed(w)
            while any(o is None for o in outcomes):
                if not busy:  # every worker died and none could be fed
                    feed(self._start())
                for key, _ in sel.select():
                    w = key.data
                    done(w)
                    index = w.job
                    assert index is not None  # a worker the selector reports is running a job
                    try:
                        data = _receive(w.results)
                    except (EOFError, OSError):
                        code = w.proc.wait()
                        how = f"signal {-code}" if code < 0 else f"exit code {code}"
                        outcomes[index] = Outcome(error=WorkerDied(f"a worker process ended ({how})"))
                        w.stop(wait=0.0)
                        if pending:
                            feed(self._start())
                        continue
                    try:
                        ok, payload = pickle.loads(data)
                    except Exception as e:  # noqa: BLE001 - e.g. an exception type that cannot be rebuilt
                        ok, payload = False, RuntimeError(f"a job's result could not be read back: {e}")
                    outcome = Outcome(value=payload) if ok else Outcome(error=payload)
                    outcomes[index] = outcome
                    if on_result is not None:
                        on_result(index, outcome)
                    feed(w)
        finally:
            sel.close()
            # Workers still busy (an interrupted sweep) are stopped; their epoch in flight is
            # trained again by a rerun.
            for w in busy:
                w.stop(wait=0.0)
        return [o if o is not None else Outcome(error=WorkerDied("no result")) for o in outcomes]


# --------------------------------------------------------------------------- worker side


def _unreadable(why: str) -> None:
    raise RuntimeError(f"a job could not be read in the worker process: {why}")


def _watch_parent(jobs: IO[bytes], inbox: queue.Queue) -> None:
    """Pass jobs on to the main thread; at end-of-file (the parent is gone) end the process."""
    while True:
        try:
            data = _receive(jobs)
        except (EOFError, OSError):
            # No flushing or clean-up: whatever the main thread holds (a run's lock, half an
            # epoch) is let go by the kernel, and a rerun repeats the lost epoch exactly.
            os._exit(0)
        try:
            message = pickle.loads(data)
        except Exception as e:  # noqa: BLE001 - e.g. its function's module cannot be imported here
            # The job fails with this as its error; without a reply the parent would wait for good.
            message = (_unreadable, (f"{type(e).__name__}: {e}",))
        inbox.put(message)


def _hold(folder: str) -> None:
    here = Path(folder)
    (here / f"{os.getpid()}.ready").write_text("")
    while not (here / "go").exists():
        time.sleep(0.05)


def worker(job_fd: int, result_fd: int, preload: tuple[str, ...] = ()) -> None:
    """A worker's life: watch the parent from the first instant, import ``preload`` while the
    first job is on its way, then run jobs until the parent goes."""
    jobs = os.fdopen(job_fd, "rb")
    results = os.fdopen(result_fd, "wb")
    inbox: queue.Queue = queue.Queue()
    threading.Thread(
        target=_watch_parent, args=(jobs, inbox), daemon=True, name="degrade-parent-watch"
    ).start()
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the job that needs it imports it again and fails with its own error
    if os.environ.get(HOLD_ENV):
        _hold(os.environ[HOLD_ENV])
    while True:
        fn, args = inbox.get()
        try:
            reply = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - the parent decides what a failed job means
            reply = (False, e)
        try:
            _send(results, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            _send(results, (False, RuntimeError(f"a job's result could not be sent back: {e}")))


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the sweep's process decides what happens then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker(int(sys.argv[1]), int(sys.argv[2]), tuple(json.loads(sys.argv[4])))
