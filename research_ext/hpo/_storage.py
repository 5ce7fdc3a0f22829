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
(:func:`redact`, :func:`url_secrets`); child processes get it through ``RESEARCH_EXT_STORAGE``,
never a command line. Opening a storage is ``_storage_open.py``; what a failing storage says, and
how long a vanished server is waited for, is ``_storage_faults.py``.
"""

import dataclasses
import importlib.util
import os
import pathlib
import sys
import urllib.parse

from research_ext.core import format_message
from research_ext.errors import ConfigError

__all__ = [
    "STORAGE_ENV",
    "StorageSpec",
    "absolute_storage",
    "redact",
    "resolve_storage",
    "storage_from_env",
    "url_secrets",
]

#: environment variable holding a storage URL (how ``run`` hands it to worker processes)
STORAGE_ENV = "RESEARCH_EXT_STORAGE"

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


def url_secrets(url: str) -> list[str]:
    """The passwords in ``url`` (user part or ``password=`` query, raw and %-decoded).

    What a message that may quote the URL must not show (see :func:`redact`).

    Example:
        >>> url_secrets("postgresql://user:p%40ss@host/db")
        ['p%40ss', 'p@ss']
    """
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
