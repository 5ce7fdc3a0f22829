"""Process liveness: who runs a trial, whether that process still lives, and a worker's owner.

A RUNNING trial records its process as ``{"host", "pid", "start"}`` (the start time from /proc
tells a reused pid apart). On the same host a dead process is detected at once; on another host
only a stale heartbeat says so (the queue's recovery, ``_queue.recover``). A worker process that
``run`` started watches its parent and stops when it dies (:class:`OwnerWatch`).
"""

import logging
import os
import pathlib
import signal
import socket
import threading
from typing import Any, TypeVar

__all__ = ["OWNER_ENV", "OwnerWatch", "is_alive", "process_identity"]

logger = logging.getLogger("research_ext.hpo")

#: environment variable with the pid of the ``run`` that started a worker process
OWNER_ENV = "RESEARCH_EXT_HPO_OWNER"


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """``{"host", "pid", "start"}`` of a process (start time from /proc, where it exists).

    This process's own identity is looked up once per pid (a forked child has its own) and
    copied out: it never changes, and every trial records it.
    """
    own = os.getpid()
    if pid is None or pid == own:
        if own not in _OWN:
            _OWN.clear()  # a forked child forgets its parent's identity
            _OWN[own] = {"host": socket.gethostname(), "pid": own, "start": _start_time(own)}
        return dict(_OWN[own])
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


_OWN: dict[int, dict[str, Any]] = {}  # this process's identity, keyed by its pid


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the process in ``owner`` lives; ``None`` when it ran on another host."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):  # a zombie, killed and not yet reaped
            return False
        start = owner.get("start")
        if start is not None and len(fields) > 19 and int(fields[19]) != int(start):
            return False  # the pid was reused by another process
    return True


_Loop = TypeVar("_Loop", bound="BackgroundLoop")


class BackgroundLoop:
    """A daemon thread that runs :meth:`_loop` for the life of a ``with`` block.

    The thread starts only when ``active``; ``stop`` is set on exit and the thread is joined, so
    ``_loop`` should wait on ``self.stop`` between rounds.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self: _Loop) -> _Loop:
        if self.active:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _loop(self) -> None:
        raise NotImplementedError


class OwnerWatch(BackgroundLoop):
    """Sends this process SIGTERM once its parent, the ``run`` that started it, has died.

    A worker that ``run`` started belongs to that run: when the run is killed (even ``kill -9``)
    the worker stops within ``interval`` seconds, its running trial marked ``terminated`` and
    re-queued with its parameters for the next ``run``.
    """

    def __init__(self, owner_pid: int | None, interval: float = 0.5) -> None:
        super().__init__(active=owner_pid is not None)
        self.owner_pid, self.interval = owner_pid, interval

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            if os.getppid() != self.owner_pid:  # reparented: the owner is gone
                logger.warning("the run that started this worker (pid %s) died", self.owner_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
