"""Where a study lives: storage URLs and bare paths, sniffed so a file is never mistaken.

* no storage given: an SQLite file ``<study file stem>.db`` next to the study file (WAL mode);
* ``sqlite:///...``, ``postgresql://...``, ``mysql://...``: Optuna's RDB storage (heartbeats);
* a bare path: an existing file is recognized by its content (SQLite's 16-byte header or a JSON
  journal line); a new file by its suffix (``.db``/``.sqlite``/``.sqlite3`` -> SQLite,
  ``.log``/``.jsonl``/``.journal`` -> Optuna journal); anything else is refused;
* ``:memory:``: in-process only (tests, single-worker experiments).
"""

import dataclasses
import functools
import pathlib
import sqlite3
import warnings
from collections.abc import Callable
from typing import Any

from research_ext.core import format_message
from research_ext.errors import ConfigError

__all__ = ["StorageSpec", "open_storage", "resolve_storage"]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


@dataclasses.dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: its kind and the URL (RDB) or file path (journal) Optuna is given.

    Attributes:
        kind: ``"sqlite"``, ``"rdb"`` (a database server), ``"journal"`` or ``"memory"``.
        url: SQLAlchemy URL for ``sqlite``/``rdb``; the file path for ``journal``; ``":memory:"``.
        path: the file for ``sqlite``/``journal``, else ``None``.
    """

    kind: str
    url: str
    path: pathlib.Path | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes can join a study in this storage."""
        return self.kind != "memory"

    @property
    def has_native_heartbeat(self) -> bool:
        """Whether Optuna's RDB heartbeat is available (the journal gets ours)."""
        return self.kind in ("sqlite", "rdb")


def _sniff_file(path: pathlib.Path) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if not head:
        return None
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head.lstrip().startswith(b"{"):
        return "journal"
    return "unknown"


def resolve_storage(
    storage: str | pathlib.Path | None,
    *,
    base_dir: str | pathlib.Path = ".",
    default_stem: str = "study",
) -> StorageSpec:
    """Resolve a storage URL or bare path into a :class:`StorageSpec`, never guessing wrong.

    Args:
        storage: a URL (``sqlite:///x.db``, ``postgresql://user@host/db``), a bare path, ``":memory:"``
            or ``None`` for ``<base_dir>/<default_stem>.db``.
        base_dir: directory that relative bare paths resolve against.
        default_stem: file stem of the default SQLite database.

    Returns:
        The storage's kind, URL and file.

    Raises:
        ConfigError: if a bare path is neither a recognizable file nor has a known suffix, or a
            file's content contradicts the URL scheme it was given with.

    Example:
        >>> resolve_storage("runs/study.db", base_dir="/tmp").url
        'sqlite:////tmp/runs/study.db'
        >>> resolve_storage("runs/study.log", base_dir="/tmp").kind
        'journal'
    """
    fn = "resolve_storage"
    base = pathlib.Path(base_dir)
    if storage is None:
        path = (base / f"{default_stem}.db").resolve()
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    text = str(storage)
    if text in (":memory:", "memory"):
        return StorageSpec("memory", ":memory:")
    if "://" in text:
        scheme = text.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in _RDB_SCHEMES:
            raise ConfigError(
                format_message(
                    fn, "storage", f"a URL with scheme {', '.join(_RDB_SCHEMES)} or a path", text
                )
            )
        if scheme != "sqlite":
            return StorageSpec("rdb", text)
        file_part = text.split(":///", 1)[1].split("?", 1)[0] if ":///" in text else ""
        if not file_part or file_part == ":memory:":
            raise ConfigError(format_message(fn, "storage", "an SQLite URL with a file", text))
        path = base / file_part  # an absolute file_part (sqlite:////abs.db) ignores base
        path = path.resolve()
        if _sniff_file(path) == "journal":
            raise ConfigError(
                format_message(
                    fn, "storage", "an SQLite database", text, f"{path} holds an Optuna journal log"
                )
            )
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    path = (base / text).resolve()
    sniffed = _sniff_file(path)
    if sniffed == "sqlite":
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    if sniffed == "journal":
        return StorageSpec("journal", str(path), path)
    if sniffed == "unknown":
        raise ConfigError(
            format_message(
                fn,
                "storage",
                "an SQLite database or an Optuna journal file",
                text,
                f"{path} is neither; pass an explicit URL",
            )
        )
    suffix = path.suffix.lower()
    if suffix in SQLITE_SUFFIXES:
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    if suffix in JOURNAL_SUFFIXES:
        return StorageSpec("journal", str(path), path)
    allowed = ", ".join((*SQLITE_SUFFIXES, *JOURNAL_SUFFIXES))
    raise ConfigError(
        format_message(
            fn,
            "storage",
            f"a URL or a path ending in {allowed}",
            text,
            "a new bare path must say by its suffix whether it is SQLite or a journal",
        )
    )


def _enable_wal(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    try:
        # WAL persists in the file: readers never block the writer, and commits are cheaper.
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def _connect_sqlite(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    # With WAL, NORMAL syncs at checkpoints instead of every commit: a crash of the process
    # loses nothing, a power cut at most the last commits; SQLite recommends it for WAL.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def open_storage(
    spec: StorageSpec,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Open ``spec`` as an Optuna storage; RDB storages get heartbeats when an interval is given.

    Args:
        spec: from :func:`resolve_storage`.
        heartbeat_interval: seconds between a running trial's heartbeats (RDB only; the journal's
            heartbeat is kept by the runner as a trial attribute).
        grace_period: seconds without a heartbeat after which a trial is stale.
        on_stale: called as ``on_stale(study, frozen_trial)`` for each trial failed as stale.

    Returns:
        An ``optuna.storages.BaseStorage``.
    """
    import optuna

    if spec.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if spec.kind == "journal":
        assert spec.path is not None
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(spec.path))
        return optuna.storages.JournalStorage(backend)
    engine_kwargs: dict[str, Any] = {}
    if spec.kind == "sqlite":
        assert spec.path is not None
        _enable_wal(spec.path)
        engine_kwargs["creator"] = functools.partial(_connect_sqlite, str(spec.path))
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            spec.url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=on_stale,
        )
