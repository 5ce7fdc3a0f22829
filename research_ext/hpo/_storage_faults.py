"""What a failing storage says, and how long a vanished database server is waited for.

A storage that fails is reported as one :class:`~research_ext.errors.StorageError` line naming the
storage (password redacted), the likely cause and what to do (:func:`storage_error`). A database
server that goes away (or an SQLite database another process holds locked) is waited for up to
``RESEARCH_EXT_STORAGE_RETRY`` seconds (default 30) before that: :func:`retrying` runs one
storage call or transaction again, :func:`retry_calls` makes every call of an Optuna storage so,
and :func:`retried_sql` runs the run loop's own SQL (claims, counts, recovery) the same way.
"""

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from research_ext.errors import StorageError
from research_ext.hpo._storage import StorageSpec, redact, url_secrets

__all__ = [
    "CACHE_LAYER_CALLS",
    "DEFAULT_RETRY_SECONDS",
    "RETRY_ENV",
    "error_chain",
    "reconnect_with_retries",
    "retried_sql",
    "retry_calls",
    "retrying",
    "storage_error",
]

logger = logging.getLogger("research_ext.hpo")
T = TypeVar("T")

#: environment variable: seconds to wait for an unreachable database server (default 30)
RETRY_ENV = "RESEARCH_EXT_STORAGE_RETRY"
DEFAULT_RETRY_SECONDS = 30.0

# (cause, what to do, fragments of the driver's message that identify it), first match wins
_DAMAGED = "the SQLite file is damaged (truncated or corrupted)"
# SQLite in WAL mode answers "database is locked" at once (no busy wait) when a transaction that
# read before another process committed tries to write: the call is retried like a server that
# went away, since each storage call is one transaction, rolled back when it fails.
_LOCKED = "another process keeps the SQLite database locked"
_UNREACHABLE = "the database server is unreachable (down, restarting, or a wrong host or port)"
_CAUSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        _DAMAGED,
        "restore it from a backup, or point --storage at a new file",
        ("file is not a database", "malformed", "database disk image"),
    ),
    (
        "the database or its directory is not writable",
        "make both writable, or copy the study somewhere writable; `status`, `best`, `trials`, "
        "`report` and `export` read it as it is",
        (
            "readonly database",
            "read-only file system",
            "unable to open database file",
            "permission denied",
        ),
    ),
    (
        "the server refused the user name or password",
        "check the user and the password (in the URL, PGPASSWORD or ~/.pgpass)",
        ("password authentication failed", "no password supplied", "access denied for user"),
    ),
    (
        "the database named in the URL does not exist",
        "create it (e.g. `createdb NAME` on the server) or fix the URL",
        ("does not exist", "unknown database"),
    ),
    (
        _UNREACHABLE,
        "start the server or wait for it, then run again: `research-ext tune run` resumes the "
        "study where it stopped",
        (
            "connection refused",
            "could not connect",
            "could not translate host name",
            "server closed the connection",
            "terminating connection",
            "connection to server",
            "the database system is",
            "timeout expired",
            "connection already closed",
            "ssl syscall",
            "no route to host",
            "network is unreachable",
            "can't connect",
            "lost connection",
        ),
    ),
    (
        "the storage's directory does not exist and cannot be created",
        "create it, or point --storage at a file in a directory that exists",
        ("no such file or directory", "not a directory"),
    ),
    (
        "the disk is full or failing",
        "free space on the disk that holds the study and run again",
        ("disk i/o error", "no space left", "database or disk is full"),
    ),
    (
        _LOCKED,
        "let the other process finish (or stop it) and run again",
        ("database is locked",),
    ),
)
_DRIVER_MODULES = ("sqlite3", "sqlalchemy", "psycopg", "psycopg2", "pymysql", "MySQLdb")


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_storage_exception(err: BaseException, os_errors: bool) -> bool:
    module = type(err).__module__.split(".", 1)[0]
    if module in _DRIVER_MODULES or isinstance(err, sqlite3.Error):
        return True
    if type(err).__name__ == "StorageInternalError":  # optuna.exceptions, not imported here
        return True
    return os_errors and isinstance(err, OSError)


def _classify(err: BaseException, os_errors: bool = False) -> tuple[str, str, str] | None:
    """(cause, what to do, the driver's own first line) for a storage failure, else ``None``.

    ``os_errors``: count an ``OSError`` as the storage's (true while opening it; elsewhere it may
    be, e.g., a report's output directory).
    """
    chain = [e for e in error_chain(err) if _is_storage_exception(e, os_errors)]
    if not chain:
        return None
    driver = chain[-1]  # the innermost: the database driver's own words
    detail = " ".join(str(driver).split()) or type(driver).__name__
    detail = detail.split("(Background on this error", 1)[0].strip()
    text = " ".join(str(e) for e in chain).lower()
    for cause, todo, fragments in _CAUSES:
        if any(f in text for f in fragments):
            return cause, todo, detail
    return "the storage failed", "check that the storage is reachable and intact", detail


def storage_error(
    err: BaseException, spec: "StorageSpec | str", *, os_errors: bool = False
) -> StorageError | None:
    """One-line :class:`StorageError` for a storage failure ``err`` of ``spec``; else ``None``.

    The message names the storage (password redacted), the likely cause, what to do, and the
    database driver's own words.

    Args:
        err: the exception raised while using the storage.
        spec: the storage (its URL may hold a password: it is redacted).
        os_errors: count an ``OSError`` as a storage failure (when it was raised opening it).

    Returns:
        The error to raise, or ``None`` when ``err`` is not a storage failure.

    Example:
        >>> err = sqlite3.DatabaseError("file is not a database")
        >>> print(storage_error(err, "sqlite:////tmp/x.db"))  # doctest: +NORMALIZE_WHITESPACE
        storage sqlite:////tmp/x.db: the SQLite file is damaged (truncated or corrupted); restore
        it from a backup, or point --storage at a new file (file is not a database)
    """
    if isinstance(err, StorageError):
        return err
    found = _classify(err, os_errors)
    if found is None:
        return None
    url = spec.url if isinstance(spec, StorageSpec) else str(spec)
    cause, todo, detail = found
    message = f"storage {redact(url)}: {cause}; {todo} ({detail[:200]})"
    for secret in url_secrets(url):
        message = message.replace(secret, "***")
    return StorageError(" ".join(message.split()))


def _retry_seconds() -> float:
    try:
        return max(float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_SECONDS)), 0.0)
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def _is_unreachable(err: BaseException) -> bool:
    found = _classify(err)
    return found is not None and found[0] in (_UNREACHABLE, _LOCKED)


def retrying(
    action: Callable[[], Any], spec: StorageSpec, landed: Callable[[], Any] | None = None
) -> Any:
    """Run ``action``; while the storage is unreachable or locked, run it again, up to a limit.

    ``action`` must be one transaction (rolled back when it fails), so running it again is
    safe. The limit is ``RESEARCH_EXT_STORAGE_RETRY`` seconds (default 30); after it, or on any
    other failure, the error is raised as it came.

    Args:
        action: the storage call, without arguments.
        spec: the storage (named, password redacted, in the one warning logged).
        landed: for a write that cannot be made twice: before each run after the first, what it
            returns, unless ``None``, is taken as ``action``'s result: the earlier run's commit
            landed although the server went away before acknowledging it.

    Returns:
        What ``action`` returned.

    Example:
        >>> from research_ext.hpo._storage import resolve_storage
        >>> retrying(lambda: 42, resolve_storage(":memory:"))
        42
    """
    seconds = _retry_seconds()
    deadline, delay, warned = time.monotonic() + seconds, 0.1, False
    runs = 0
    while True:
        try:
            runs += 1
            if landed is not None and runs > 1:
                done = landed()
                if done is not None:
                    return done
            return action()
        except Exception as err:
            if not _is_unreachable(err) or time.monotonic() + delay > deadline:
                raise
            if not warned:
                logger.warning(
                    "storage %s is unreachable; retrying for up to %g s", spec.display, seconds
                )
                warned = True
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def retried_sql(
    rdb: Any,
    spec: StorageSpec,
    work: Callable[[Any], T],
    *,
    write: bool = False,
    landed: Callable[[Any], T | None] | None = None,
) -> T:
    """``work(connection)`` on an RDB storage's engine, retried like :func:`retrying`.

    The run's own SQL (claims, counts, recovery) must ride out a server restart or a locked
    SQLite file as Optuna's storage calls do: a statement in flight when the connection drops
    fails, and the whole of ``work`` runs again on a new connection once the storage answers.

    Args:
        rdb: Optuna's ``RDBStorage`` (its ``engine``).
        spec: the storage (named, password redacted, in the warning logged while waiting).
        work: the statements, given an open connection; it must not commit by itself.
        write: run ``work`` in one transaction (``engine.begin()``: committed when it returns,
            rolled back when it raises); otherwise on a plain connection (reads).
        landed: for a write that must not be done twice: before every run after the first,
            called on a new connection; what it returns, unless ``None``, is the result of an
            earlier run whose commit landed although the server went away before acknowledging
            it (the client saw an error), and ``work`` is not run again.

    Returns:
        What ``work`` returned.

    Example:
        >>> import optuna, sqlalchemy
        >>> from research_ext.hpo._storage import resolve_storage
        >>> rdb = optuna.storages.RDBStorage("sqlite:///:memory:")
        >>> spec = resolve_storage(":memory:")  # named in the warning only
        >>> retried_sql(rdb, spec, lambda c: c.execute(sqlalchemy.text("SELECT 1")).scalar())
        1
    """

    def once() -> T:
        with rdb.engine.begin() if write else rdb.engine.connect() as connection:
            return work(connection)

    def found() -> T | None:
        assert landed is not None
        with rdb.engine.connect() as connection:
            return landed(connection)

    return typing.cast(T, retrying(once, spec, None if landed is None else found))


#: Private methods of Optuna's RDB storage that its cache layer (``_CachedStorage``, which
#: every study wraps around it) calls: each is one transaction, retried like the public calls
#: (every ``get_all_trials`` and every ``suggest_*`` goes through them).
CACHE_LAYER_CALLS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_get_trials",
    "_set_trial_param",
)


def retry_calls(storage: Any, spec: StorageSpec) -> None:
    """Every storage call a study makes is retried while the server is unreachable.

    Wrapped: the public methods, and the private ones Optuna's cache layer calls
    (``CACHE_LAYER_CALLS``).

    Each call of Optuna's RDB storage is one transaction, rolled back when its connection dies,
    so a call that failed because the server went away (a statement in flight, or a pooled
    connection that a restart closed) is simply made again once the server is back.
    """
    for name in dir(type(storage)):
        method = getattr(storage, name)
        if (name.startswith("_") and name not in CACHE_LAYER_CALLS) or not callable(method):
            continue
        check = _LANDED_CHECKS.get(name)

        def call(*args: Any, __method: Any = method, __check: Any = check, **kwargs: Any) -> Any:
            landed = None if __check is None else lambda: __check(storage, *args, **kwargs)
            return retrying(lambda: __method(*args, **kwargs), spec, landed)

        setattr(storage, name, functools.update_wrapper(call, method))
    if hasattr(storage, "_get_prepared_new_trial"):
        _create_once(storage)


def _finished_as_asked(storage: Any, trial_id: int, state: Any, values: Any = None) -> bool | None:
    """True when a retried ``set_trial_state_values`` finishing a trial finds it so finished.

    Run again after its commit landed unacknowledged, Optuna's call would raise
    ``UpdateFinishedTrialError`` on the trial it finished itself, ending the run. ``None``
    (make the call) for a non-final state, or a trial in another state or with other values.
    """
    if not state.is_finished():
        return None
    trial = storage.get_trial(trial_id)
    if trial.state != state:
        return None
    if values is not None and [float(v) for v in trial.values or ()] != [float(v) for v in values]:
        return None
    return True


#: Optuna's storage writes that cannot be made twice, and how a retry finds one that landed.
_LANDED_CHECKS: dict[str, Callable[..., Any]] = {"set_trial_state_values": _finished_as_asked}


def _create_once(storage: Any) -> None:
    """Optuna's trial creation, run again after its commit landed unacknowledged, finds its trial.

    ``_create_new_trial`` retries by itself when a statement fails (and ``retry_calls`` runs it
    again after that); after a commit that landed unacknowledged, either would add a second
    trial: a ticket or a re-queued copy run twice. The templates of ours carry a random token
    (``research_ext:write``): an attempt with the token of this thread's previous attempt (a
    retry; a new trial brings a new token) first looks for the trial that holds it.
    """
    import sqlalchemy
    from optuna.storages._rdb import models

    from research_ext.hpo._study import WRITE  # _study imports this module

    prepare = storage._get_prepared_new_trial
    last = threading.local()
    find = sqlalchemy.text(
        "SELECT trial_id FROM trial_system_attributes WHERE key = :key AND value_json = :token"
    )

    def prepared(study_id: int, template_trial: Any, session: Any) -> Any:
        token = None if template_trial is None else template_trial.system_attrs.get(WRITE)
        if token is not None and getattr(last, "token", None) == token:
            row = session.execute(find, {"key": WRITE, "token": json.dumps(token)}).first()
            if row is not None:
                return session.get(models.TrialModel, row[0])
        last.token = token
        return prepare(study_id, template_trial, session)

    storage._get_prepared_new_trial = prepared


def reconnect_with_retries(engine: Any, spec: StorageSpec) -> None:
    """New connections (after a server restart) wait for the server instead of failing at once."""
    import sqlalchemy

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return retrying(lambda: dialect.connect(*cargs, **cparams), spec)

    sqlalchemy.event.listen(engine, "do_connect", connect)
