"""Where a study lives: storage URLs and bare paths, sniffed so a file is never mistaken.

* no storage given: an SQLite file ``<study file stem>.db`` next to the study file (WAL mode);
* ``sqlite:///...``, ``postgresql://...``, ``mysql://...``: Optuna's RDB storage (heartbeats);
* a bare path: an existing file is recognized by its content (SQLite's 16-byte header or a JSON
  journal line); a new file by its suffix (``.db``/``.sqlite``/``.sqlite3`` -> SQLite,
  ``.log``/``.jsonl``/``.journal`` -> Optuna journal); anything else is refused;
* ``:memory:``: in-process only (tests, single-worker experiments).

Every storage URL is handled here and nowhere else: a bare ``postgresql://`` (or ``postgres://``)
URL is given the psycopg2 driver that the ``hpo`` extra installs (SQLAlchemy 2 would pick psycopg
3 for it); what is printed, logged or written shows it with its password redacted
(:func:`redact`); child processes get it through ``RESEARCH_EXT_STORAGE``, never a command line.
A storage that fails is reported as one :class:`~research_ext.errors.StorageError` line naming the
storage, the likely cause and what to do (:func:`storage_error`); a database server that goes
away is waited for up to ``RESEARCH_EXT_STORAGE_RETRY`` seconds (default 30) before that.
"""

import dataclasses
import functools
import importlib.util
import logging
import os
import pathlib
import sqlite3
import sys
import time
import urllib.parse
import warnings
from collections.abc import Callable
from typing import Any

from research_ext.core import format_message
from research_ext.errors import ConfigError, StorageError

__all__ = [
    "RETRY_ENV",
    "STORAGE_ENV",
    "StorageSpec",
    "absolute_storage",
    "checkpoint",
    "open_storage",
    "redact",
    "resolve_storage",
    "retrying",
    "storage_error",
    "storage_from_env",
]

logger = logging.getLogger("research_ext.hpo")

#: environment variable holding a storage URL (how ``run`` hands it to worker processes)
STORAGE_ENV = "RESEARCH_EXT_STORAGE"
#: environment variable: seconds to wait for an unreachable database server (default 30)
RETRY_ENV = "RESEARCH_EXT_STORAGE_RETRY"
DEFAULT_RETRY_SECONDS = 30.0

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def redact(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query) shown as ``***``.

    Example:
        >>> redact("postgresql://user:secret@host/db")
        'postgresql://user:***@host/db'
    """
    text = str(url)
    if "://" not in text:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = "&".join(
                f"{k}=***" if k.lower() == "password" else f"{k}={v}" for k, v in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return text
    rest = text.split("://", 1)[1][len(parts.netloc) :].split("?", 1)[0].split("#", 1)[0]
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{text.split('://', 1)[0]}://{netloc}{rest}{'?' + query if query else ''}{fragment}"


def storage_from_env() -> str | None:
    """The storage URL in ``RESEARCH_EXT_STORAGE`` (how passwords stay off command lines)."""
    return os.environ.get(STORAGE_ENV) or None


def absolute_storage(storage: str | pathlib.Path) -> str:
    """A bare relative storage path made absolute against the current directory (URLs kept)."""
    text = str(storage)
    if "://" in text or text in (":memory:", "memory"):
        return text
    return str(pathlib.Path(text).resolve())


def _is_installed(package: str) -> bool:
    if package in sys.modules:
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


def _with_driver(url: str) -> str:
    """``postgres(ql)://`` without a driver -> the ``hpo`` extra's psycopg2 (if installed)."""
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in ("postgresql", "postgres"):
        return url
    driver = "psycopg2" if _is_installed("psycopg2") or not _is_installed("psycopg") else "psycopg"
    return f"postgresql+{driver}://{rest}"


@dataclasses.dataclass(frozen=True, repr=False)
class StorageSpec:
    """A resolved storage: its kind and the URL (RDB) or file path (journal) Optuna is given.

    Attributes:
        kind: ``"sqlite"``, ``"rdb"`` (a database server), ``"journal"`` or ``"memory"``.
        url: SQLAlchemy URL for ``sqlite``/``rdb``; the file path for ``journal``; ``":memory:"``.
            It may hold a password: show :attr:`display` instead.
        path: the file for ``sqlite``/``journal``, else ``None``.
        read_only: open without writing anything (inspection: status, trials, report, export).
    """

    kind: str
    url: str
    path: pathlib.Path | None = None
    read_only: bool = False

    @property
    def display(self) -> str:
        """The URL or path to print, log or write: its password redacted."""
        return redact(self.url)

    def __repr__(self) -> str:
        return f"StorageSpec(kind={self.kind!r}, url={self.display!r}, path={self.path!r})"

    def as_read_only(self) -> "StorageSpec":
        """The same storage, opened for reading only."""
        return dataclasses.replace(self, read_only=True)

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
                    fn,
                    "storage",
                    f"a URL with scheme {', '.join(_RDB_SCHEMES)} or a path",
                    redact(text),
                )
            )
        if scheme != "sqlite":
            try:
                parts = urllib.parse.urlsplit(text)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError as err:
                raise ConfigError(
                    format_message(
                        fn,
                        "storage",
                        "a URL like postgresql://user@host:5432/db",
                        redact(text),
                        str(err),
                    )
                ) from err
            if not parts.hostname and not parts.path.strip("/"):
                raise ConfigError(
                    format_message(fn, "storage", "a URL naming a host or a database", redact(text))
                )
            return StorageSpec("rdb", _with_driver(text))
        file_part = text.split(":///", 1)[1].split("?", 1)[0] if ":///" in text else ""
        if not file_part or file_part == ":memory:":
            raise ConfigError(
                format_message(fn, "storage", "an SQLite URL with a file", redact(text))
            )
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


def _chain(err: BaseException) -> list[BaseException]:
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
    chain = [e for e in _chain(err) if _is_storage_exception(e, os_errors)]
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


def _secrets(url: str) -> list[str]:
    found = []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    if parts.password:
        found += [parts.password, urllib.parse.unquote(parts.password)]
    for key, value in urllib.parse.parse_qsl(parts.query):
        if key.lower() == "password" and value:
            found.append(value)
    return [s for s in found if s]


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
    for secret in _secrets(url):
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


def retrying(action: Callable[[], Any], spec: StorageSpec) -> Any:
    """Run ``action``; while the server is unreachable, retry for ``RESEARCH_EXT_STORAGE_RETRY`` s."""
    seconds = _retry_seconds()
    deadline, delay, warned = time.monotonic() + seconds, 0.1, False
    while True:
        try:
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


def _retry_calls(storage: Any, spec: StorageSpec) -> None:
    """Every public storage call is retried while the server is unreachable.

    Each call of Optuna's RDB storage is one transaction, rolled back when its connection dies,
    so a call that failed because the server went away (a statement in flight, or a pooled
    connection that a restart closed) is simply made again once the server is back.
    """
    for name in dir(type(storage)):
        method = getattr(storage, name)
        if name.startswith("_") or not callable(method):
            continue

        def call(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            return retrying(lambda: __method(*args, **kwargs), spec)

        setattr(storage, name, functools.update_wrapper(call, method))


def _reconnect_with_retries(engine: Any, spec: StorageSpec) -> None:
    """New connections (after a server restart) wait for the server instead of failing at once."""
    import sqlalchemy

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return retrying(lambda: dialect.connect(*cargs, **cparams), spec)

    sqlalchemy.event.listen(engine, "do_connect", connect)


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


def _connect_sqlite(path: str) -> sqlite3.Connection:
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
            connect = _connect_sqlite
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
        if spec.read_only and any("version_info" in str(e) for e in _chain(err)):
            # a database without Optuna's tables holds no study; reading must not create them
            return optuna.storages.InMemoryStorage()
        raise
    if spec.kind != "sqlite":
        _reconnect_with_retries(storage.engine, spec)
    _retry_calls(storage, spec)
    return storage
