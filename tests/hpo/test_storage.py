import sqlite3

import optuna
import pytest

from research_ext.errors import ConfigError
from research_ext.hpo import resolve_storage
from research_ext.hpo._storage import open_storage


@pytest.mark.parametrize(
    "name,kind",
    [
        ("a.db", "sqlite"),
        ("a.sqlite", "sqlite"),
        ("a.sqlite3", "sqlite"),
        ("a.log", "journal"),
        ("a.jsonl", "journal"),
    ],
)
def test_new_bare_path_by_suffix(tmp_path, name, kind):
    spec = resolve_storage(name, base_dir=tmp_path)
    assert spec.kind == kind and spec.path == tmp_path / name
    if kind == "sqlite":
        assert spec.url == f"sqlite:///{tmp_path / name}"


def test_default_is_sqlite_next_to_the_study_file(tmp_path):
    spec = resolve_storage(None, base_dir=tmp_path, default_stem="dp")
    assert spec.kind == "sqlite" and spec.path == tmp_path / "dp.db"


def test_existing_files_are_sniffed_by_content_not_suffix(tmp_path):
    # An SQLite database whose name says journal, and a journal whose name says database.
    db = tmp_path / "really_sqlite.log"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    assert resolve_storage(str(db)).kind == "sqlite"
    journal = tmp_path / "really_journal.db"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    optuna.create_study(storage=storage, study_name="j")
    assert resolve_storage(str(journal)).kind == "journal"
    with pytest.raises(
        ConfigError, match=r"`storage` must be an SQLite database, .*holds an Optuna journal log"
    ):
        resolve_storage(f"sqlite:///{journal}")


def test_refuses_to_guess(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"`storage` must be a URL or a path ending in \.db.*got storage='study.data'",
    ):
        resolve_storage("study.data", base_dir=tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00\x01binary")
    with pytest.raises(
        ConfigError, match=r"must be an SQLite database or an Optuna journal file.*is neither"
    ):
        resolve_storage(str(junk))
    with pytest.raises(ConfigError, match=r"`storage` must be a URL with scheme sqlite"):
        resolve_storage("redis://localhost")


def test_urls(tmp_path):
    assert resolve_storage("postgresql://u@h/db").kind == "rdb"
    assert resolve_storage("sqlite:///x.db", base_dir=tmp_path).path == tmp_path / "x.db"
    assert resolve_storage(f"sqlite:///{tmp_path}/y.db").path == tmp_path / "y.db"
    assert resolve_storage(":memory:").kind == "memory"


def test_sqlite_is_opened_in_wal_mode(tmp_path):
    spec = resolve_storage("w.db", base_dir=tmp_path)
    open_storage(spec)
    mode = sqlite3.connect(spec.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
