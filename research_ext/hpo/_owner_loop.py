"""The owner's loop, ``run``: create or resume a study, drive it to exactly ``n_trials`` finished.

With ``workers=1`` the trials run in this process; with ``workers=K`` this process starts K
``research-ext tune worker`` processes on the same storage, re-queues the trials of any that die,
forwards SIGTERM/Ctrl-C to them, and returns once the study is complete and no trial is RUNNING.

Owner death. The workers a ``run`` starts belong to it: when it dies, even by ``kill -9``, they
notice within a second (their parent is gone), stop as on SIGTERM (the running trial is marked
``terminated`` and re-queued with its parameters) and exit; the next ``run`` resumes exactly.
A worker joined by hand (``research-ext tune worker``, on any host) is independent: it takes the
tickets the owner issues, and when none comes for ``patience`` seconds (the owner is busy in a
long trial, or gone) it creates trials itself, so it finishes the study rather than wait forever.
Storage URLs reach worker processes through ``RESEARCH_EXT_STORAGE``, never a command line.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

from research_ext.core import check_int, format_message
from research_ext.errors import StudyFailedError
from research_ext.hpo._config import StudyConfig
from research_ext.hpo._liveness import OWNER_ENV
from research_ext.hpo._progress import RunProgress
from research_ext.hpo._queue import recover, top_up
from research_ext.hpo._storage import STORAGE_ENV
from research_ext.hpo._study import (
    StudyHandle,
    counts,
    n_done,
    open_study,
    rdb_storage,
    resolve_config,
)
from research_ext.hpo._worker_loop import SignalGuard, Terminated, work, worker, worker_overrides

__all__ = ["run"]

EXIT_TOO_MANY_FAILURES = 3
EXIT_TERMINATED = 143


def run(
    config: StudyConfig | str | pathlib.Path,
    *,
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    show_progress: bool | None = None,
    poll_interval: float = 0.5,
    log_trials: bool | None = None,
) -> Any:
    r"""Create or resume the study and run it until it has exactly ``n_trials`` finished trials.

    Idempotent: after a crash, running again completes the remainder (dead trials are failed
    once and re-run with the same parameters); on a complete study it does nothing. Finished means
    complete or pruned; a trial whose objective raised is failed and replaced by a fresh one, up to
    ``study.max_failures`` failures per run.

    Args:
        config: a :class:`StudyConfig` or the path of a study file.
        n_trials: overrides the study's target number of finished trials.
        workers: local worker processes sharing the storage (1 runs in this process).
        storage: overrides the study's storage (URL or path; relative to the current directory).
        study_name: overrides the study's name.
        show_progress: progress bar on/off; ``None`` shows it only on a terminal or notebook.
        poll_interval: seconds between checks while waiting on other processes.
        log_trials: one line on stderr per trial finished during the run (number, state,
            values, duration, count, this run's rate); ``None`` logs them when the output is not
            a terminal and ``show_progress`` is ``None`` (a batch job's log shows progress).

    Returns:
        The ``optuna.Study``.

    Raises:
        StudyFailedError: after ``max_failures`` objective failures, or workers that keep crashing.
        KeyboardInterrupt: on Ctrl-C (running trials are marked interrupted and re-queued).

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "obj.py").write_text("def f(params):\n    return (params['x'] - 0.5) ** 2\n")
        >>> _ = (d / "s.toml").write_text('''
        ... [study]
        ... n_trials = 4
        ... sampler = "random"
        ... seed = 0
        ... [objective]
        ... entry = "obj.py:f"
        ... [space.x]
        ... type = "float"
        ... low = 0.0
        ... high = 1.0
        ... ''')
        >>> study = run(d / "s.toml")
        >>> len(study.trials), run(d / "s.toml").trials[-1].number  # the second run adds nothing
        (4, 3)
    """
    config = resolve_config(config, n_trials, storage, study_name)
    check_int("run", "workers", workers, minimum=1)
    handle = open_study(config)
    handle.store_target()  # status on any host shows this run's target, overrides included
    if workers > 1 and (config.path is None or not handle.spec.shared):
        raise ValueError(
            format_message(
                "run",
                "workers",
                "1 unless the study has a study file and a shared storage",
                workers,
            )
        )
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    bar = RunProgress(handle, show_progress=show_progress, log_trials=log_trials)
    try:
        if workers == 1:
            _run_inline(handle, deadline, bar, poll_interval)
        else:
            _run_processes(handle, workers, deadline, bar, poll_interval)
    finally:
        bar.close()
    return handle.study


def _run_inline(
    handle: StudyHandle, deadline: float | None, bar: RunProgress, poll_interval: float
) -> None:
    while True:
        result = work(
            handle, deadline=deadline, on_trial=lambda *_: bar.poll(force=True), owner=True
        )
        if result.stopped == "terminated":
            raise Terminated()
        recover(handle)
        c = counts(handle)
        if n_done(c) >= handle.n_trials or (deadline is not None and time.monotonic() >= deadline):
            return
        if c["WAITING"] == 0 or result.ran == 0:
            time.sleep(poll_interval)  # trials running or reserved elsewhere: wait for them


def _worker_command(handle: StudyHandle, index: int, deadline: float | None) -> list[str]:
    """The command line of a worker process (the storage URL goes in :func:`_worker_env`)."""
    config = handle.config
    assert config.path is not None
    command = [
        sys.executable,
        "-m",
        "research_ext.hpo",
        "worker",
        str(config.path),
        "--study",
        config.name,
        "--n-trials",
        str(config.n_trials),
        "--index",
        str(index),
        "--exit-when-idle",
        "--quiet",
    ]
    command += ["--overrides", json.dumps(worker_overrides(config))]
    if deadline is not None:
        command += ["--time-left", f"{max(deadline - time.monotonic(), 0.0):.3f}"]
    return command


def _worker_env(handle: StudyHandle) -> dict[str, str]:
    """The environment of a worker process: the storage (password off the command line), us."""
    storage = handle.spec.url if handle.spec.kind != "journal" else str(handle.spec.path)
    return {**os.environ, STORAGE_ENV: storage, OWNER_ENV: str(os.getpid())}


class _ForkedWorker:
    """A worker forked from this process, starting in milliseconds with the modules imported.

    A fresh interpreter would spend seconds importing torch and optuna again; the fork opens its
    own storage connections.
    """

    def __init__(self, config: StudyConfig, index: int, time_left: float | None) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        args = (config, index, time_left, os.getpid())
        self.process = context.Process(target=_forked_main, args=args)
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork with threads alive
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        if self.process.exitcode is None and self.pid is not None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("worker", timeout or 0)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


def _forked_main(config: StudyConfig, index: int, time_left: float | None, owner: int) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    try:
        worker(
            config,
            index=index,
            time_left=time_left,
            poll_interval=0.05,
            announce=False,
            owner_pid=owner,
        )
    except StudyFailedError:
        sys.exit(EXIT_TOO_MANY_FAILURES)
    except Terminated:
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        sys.exit(130)


def _spawn(handle: StudyHandle, index: int, deadline: float | None) -> Any:
    rdb = rdb_storage(handle.storage)
    if sys.platform == "linux":
        if rdb is not None:
            rdb.engine.dispose()  # no pooled connection may cross the fork
        time_left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return _ForkedWorker(handle.config, index, time_left)
    return subprocess.Popen(_worker_command(handle, index, deadline), env=_worker_env(handle))


def _run_processes(
    handle: StudyHandle,
    workers: int,
    deadline: float | None,
    bar: RunProgress,
    poll_interval: float,
) -> None:
    procs: list[Any] = []
    crashes, started = 0, 0
    with SignalGuard() as guard:
        try:
            while guard.stop is None:
                for proc in [p for p in procs if p.poll() is not None]:
                    procs.remove(proc)
                    if proc.returncode == EXIT_TOO_MANY_FAILURES:
                        raise StudyFailedError(
                            f"run: a worker stopped after study.max_failures="
                            f"{handle.config.max_failures} objective failures"
                        )
                    if proc.returncode != 0:
                        crashes += 1
                if crashes > 2 * workers:
                    raise StudyFailedError(
                        f"run: worker processes crashed {crashes} times; see their output above"
                    )
                recover(handle)
                c = counts(handle)
                bar.poll()
                expired = deadline is not None and time.monotonic() >= deadline
                if n_done(c) >= handle.n_trials or (expired and not procs):
                    break
                if not expired:
                    top_up(handle, limit=2 * workers)
                    c = counts(handle)
                    while len(procs) < workers and c["WAITING"] > 0:
                        procs.append(_spawn(handle, started, deadline))
                        started += 1
                        c["WAITING"] -= 1
                time.sleep(min(poll_interval, 0.1))
        finally:
            _stop_children(procs, guard.stop)
    if guard.stop == "terminated":
        raise Terminated()
    if guard.stop == "interrupted":
        raise KeyboardInterrupt()
    recover(handle)


def _stop_children(procs: list[Any], stop: str | None) -> None:
    if stop is not None:
        signum = signal.SIGTERM if stop == "terminated" else signal.SIGINT
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)
    for proc in procs:
        try:
            proc.wait(timeout=60 if stop is None else 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
