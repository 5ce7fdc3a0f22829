"""Opening a study's storage as Optuna's: SQLite in WAL mode, read-only opens, retried calls.

An SQLite study is switched to WAL once (readers never block the writer) and written with
``synchronous=NORMAL``; a read-only open writes nothing, not even that switch, so an archived
study can be inspected. Every call of an RDB storage is retried while its server is away
(``_storage_faults.py``); a storage that cannot be opened ends in one
:class:`~research_ext.errors.StorageError` line.
"""

import functools
import logging
import pathlib
import sqlite3
import warnings
from collections.abc import Callable
from typing import Any

from research_ext.hpo._storage import StorageSpec
from research_ext.hpo._storage_faults import (
    error_chain,
    reconnect_with_retries,
    retry_calls,
    retrying,
    storage_error,
)

__all__ = ["checkpoint", "connect_sqlite", "open_storage"]

logger = logging.getLogger("research_ext.hpo")


def _enable_wal(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    try:
        # WAL persists in the file: readers never block the writer, and commits are cheaper.
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def checkpoint(spec: StorageSpec) -> None:
    """Fold an SQLite study's write-ahead log into its file, so the file alone holds the study.

    Called when a run ends: a process that exits without closing its connections leaves the
    last trials in ``<db>-wal``, which a copy of the database file alone would lose.
    """
    if spec.kind != "sqlite" or spec.read_only or spec.path is None or not spec.path.exists():
        return
    try:
        connection = sqlite3.connect(spec.path, timeout=60)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    except sqlite3.Error as err:  # other processes still reading: they checkpoint later
        logger.info("checkpoint of %s skipped: %s", spec.path, err)


def connect_sqlite(path: str) -> sqlite3.Connection:
    """A connection to the SQLite study ``path`` as every process writing it opens one."""
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    # With WAL, NORMAL syncs at checkpoints instead of every commit: a crash of the process
    # loses nothing, a power cut at most the last commits; SQLite recommends it for WAL.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _connect_sqlite_read_only(path: str) -> sqlite3.Connection:
    uri = pathlib.Path(path).as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError:
        # A WAL database in a directory nobody may write to (an archive): SQLite cannot create
        # the shared-memory file a reader needs, but can read the file as immutable.
        connection.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=60, check_same_thread=False)


def open_storage(
    spec: StorageSpec,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Open ``spec`` as an Optuna storage; RDB storages get heartbeats when an interval is given.

    A read-only spec writes nothing: no WAL switch, no table creation, SQLite opened read-only.

    Args:
        spec: from :func:`resolve_storage`.
        heartbeat_interval: seconds between a running trial's heartbeats (RDB only; the journal's
            heartbeat is kept by the runner as a trial attribute).
        grace_period: seconds without a heartbeat after which a trial is stale.
        on_stale: called as ``on_stale(study, frozen_trial)`` for each trial failed as stale.

    Returns:
        An ``optuna.storages.BaseStorage``.

    Raises:
        StorageError: one line naming the storage, the likely cause and what to do.
    """
    try:
        return _open(spec, heartbeat_interval, grace_period, on_stale)
    except Exception as err:
        translated = storage_error(err, spec, os_errors=True)
        if translated is None or translated is err:
            raise
        raise translated from err


def _open(
    spec: StorageSpec,
    heartbeat_interval: int | None,
    grace_period: int | None,
    on_stale: Callable[[Any, Any], None] | None,
) -> Any:
    import optuna

    if spec.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if spec.kind == "journal":
        assert spec.path is not None
        if not spec.read_only:
            spec.path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(spec.path))
        return optuna.storages.JournalStorage(backend)
    engine_kwargs: dict[str, Any] = {}
    if spec.kind == "sqlite":
        assert spec.path is not None
        if spec.read_only:
            connect = _connect_sqlite_read_only
        else:
            _enable_wal(spec.path)
            connect = connect_sqlite
        engine_kwargs["creator"] = functools.partial(connect, str(spec.path))
    else:
        engine_kwargs["pool_pre_ping"] = True

    def create() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                spec.url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=on_stale,
                skip_table_creation=spec.read_only,
            )

    try:
        storage = retrying(create, spec)  # a server starting, or SQLite locked by a creator
    except Exception as err:
        if spec.read_only and any("version_info" in str(e) for e in error_chain(err)):
            # a database without Optuna's tables holds no study; reading must not create them
            return optuna.storages.InMemoryStorage()
        raise
    if spec.kind != "sqlite":
        reconnect_with_retries(storage.engine, spec)
    retry_calls(storage, spec)
    return storage
