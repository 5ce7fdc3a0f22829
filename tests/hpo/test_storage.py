import contextlib
import json
import os
import pathlib
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

from research_ext.errors import ConfigError, StorageError
from research_ext.hpo import load_config, resolve_storage, status
from research_ext.hpo._cli import main
from research_ext.hpo._storage import STORAGE_ENV, absolute_storage, redact, storage_from_env
from research_ext.hpo._storage_faults import RETRY_ENV
from research_ext.hpo._storage_open import open_storage
from tests.hpo.conftest import write_study
from tests.postgres import throwaway_server


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


# --- URLs as the README writes them -------------------------------------------------------------


def test_plain_postgresql_url_uses_the_hpo_extras_driver(monkeypatch):
    # The extra installs psycopg2; SQLAlchemy 2 would pick psycopg 3 for a bare postgresql://.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for url in ("postgresql://user@host/db", "postgres://user@host/db"):
        spec = resolve_storage(url)
        assert spec.kind == "rdb" and spec.url == "postgresql+psycopg2://user@host/db"
    explicit = "postgresql+psycopg://user@host/db"
    assert resolve_storage(explicit).url == explicit  # a driver the user named is kept


def test_readme_url_opens_a_study_without_psycopg3(postgres_url, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert postgres_url.startswith("postgresql://postgres@")
    storage = open_storage(resolve_storage(postgres_url))
    study = optuna.create_study(storage=storage, study_name="readme-url", load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) >= 2


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        (
            "postgresql+psycopg2://user:p%40ss@host:5432/db",
            "postgresql+psycopg2://user:***@host:5432/db",
        ),
        (
            "postgresql://user@host/db?password=pw&sslmode=require",
            "postgresql://user@host/db?password=***&sslmode=require",
        ),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("mysql://u:pw@h/db", "mysql://u:***@h/db"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown
    spec = resolve_storage(url)
    assert (
        spec.display == redact(spec.url) and "pw" not in repr(spec) and "p%40ss" not in repr(spec)
    )


def test_storage_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, "postgresql://user:pw@host/db")
    assert storage_from_env() == "postgresql://user:pw@host/db"
    monkeypatch.delenv(STORAGE_ENV)
    assert storage_from_env() is None


def test_absolute_storage_keeps_urls_and_resolves_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_storage("x.db") == str(tmp_path / "x.db")
    assert absolute_storage("postgresql://u@h/db") == "postgresql://u@h/db"
    assert absolute_storage(":memory:") == ":memory:"


# --- faults: one line naming the storage, the likely cause and what to do -----------------------


def _sqlite_study(path, study_name="s", n_trials=30):
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name=study_name)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_trials)
    storage.engine.dispose()


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
@pytest.mark.parametrize("command", ["status", "run"])
def test_damaged_sqlite_file_is_one_line_and_exit_4(tmp_path, damage, command, capsys):
    path = write_study(tmp_path, n_trials=40)
    db = tmp_path / "study.db"
    _sqlite_study(db, study_name="s", n_trials=40)
    data = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(data[: len(data) // 3])
    else:
        db.write_bytes(data[:100] + bytes(range(256)) * 8 + data[100 + 2048 :])
    assert (
        main([command, str(path), "--no-progress"] if command == "run" else [command, str(path)])
        == 4
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(db) in err
    assert "damaged" in err and "backup" in err


def test_inspecting_never_switches_the_journal_mode(tmp_path):
    # An archived database in SQLite's default rollback mode stays byte-for-byte as it was.
    path = tmp_path / "archived.db"
    _sqlite_study(path)
    before = path.read_bytes()
    storage = open_storage(resolve_storage(str(path)).as_read_only())
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 30
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archived.db"]


def test_wrong_postgresql_password_is_one_line(postgres_server):
    url = postgres_server.add_user("wrongpw", "right-horse")
    bad = url.replace("right-horse", "wrong-battery")
    with pytest.raises(StorageError) as info:
        open_storage(resolve_storage(bad))
    message = str(info.value)
    assert "\n" not in message and "wrong-battery" not in message
    assert "postgresql+psycopg2://wrongpw:***@127.0.0.1" in message
    assert "password" in message and "PGPASSWORD" in message


def test_unreachable_server_is_one_line(monkeypatch):
    from tests.helpers import free_port

    monkeypatch.setenv(RETRY_ENV, "0.5")
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    with pytest.raises(StorageError) as info:
        open_storage(resolve_storage(url))
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message
    assert "unreachable" in message and "run again" in message


# --- an archived study in a read-only directory -------------------------------------------------

_READ_ONLY_SCRIPT = """
import json, sys
from research_ext.hpo._cli import main
study, out = sys.argv[1], sys.argv[2]
codes = {}
for command, *rest in (["status"], ["best"], ["trials"], ["export"], ["report", out],
                       ["run", "--n-trials", "6", "--no-progress"]):
    codes[command] = main([command, study, *rest])
print(json.dumps(codes))
"""


def _run_with_read_only_dir(directory, *args):
    """Run the script with ``directory`` read-only (a private read-only bind mount as root)."""
    command = [sys.executable, "-c", _READ_ONLY_SCRIPT, *map(str, args)]
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=300)
        finally:
            directory.chmod(0o755)
    mount = (
        f"mount --bind {shlex.quote(str(directory))} {shlex.quote(str(directory))} && "
        f"mount -o remount,ro,bind {shlex.quote(str(directory))} && exec {shlex.join(command)}"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", mount], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_read_only_study_can_be_shown_but_not_run(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    path = write_study(archive, n_trials=4, sampler='"random"')
    assert main(["run", str(path), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in archive.iterdir() if p.is_file()}
    result = _run_with_read_only_dir(archive, path, tmp_path / "report")
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    assert codes == {"status": 0, "best": 0, "trials": 0, "export": 0, "report": 0, "run": 4}, (
        result.stderr
    )
    assert "4/4 finished" in result.stdout and (tmp_path / "report" / "index.md").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("research-ext")]
    assert len(errors) == 1 and "not writable" in errors[0] and str(archive) in errors[0]
    assert {p.name: p.read_bytes() for p in archive.iterdir() if p.is_file()} == before


# --- a PostgreSQL server that restarts under a running study ------------------------------------


def _states(url):
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT state, count(*) FROM trials GROUP BY state")
        return {str(state): n for state, n in cursor.fetchall()}


def _start_run(path, url, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "research_ext.cli", "tune", "run", str(path), "--no-progress"],
        env={**os.environ, STORAGE_ENV: url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_complete(url, n, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _states(url).get("COMPLETE", 0) >= n:
                return
        except Exception:  # the tables do not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {n} complete trials: {proc.poll()=}")


@pytest.mark.slow
def test_a_postgresql_restart_is_ridden_out():
    with throwaway_server() as server:
        url = server.add_user("restarts", "pw-restart")
        with tempfile.TemporaryDirectory() as directory:
            path = write_study(
                pathlib.Path(directory), n_trials=16, sampler='"random"', args="{ sleep = 0.3 }"
            )
            proc = _start_run(path, url)
            _wait_for_complete(url, 3, proc)
            server.stop()
            time.sleep(5.0)
            server.start()
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            assert "16/16 finished" in out
            assert _states(url) == {"COMPLETE": 16}


@pytest.mark.slow
def test_a_long_outage_ends_run_in_one_line_and_the_next_run_recovers():
    with throwaway_server() as server:
        url = server.add_user("outage", "pw-outage")
        with tempfile.TemporaryDirectory() as directory:
            path = write_study(
                pathlib.Path(directory), n_trials=12, sampler='"random"', args="{ sleep = 0.3 }"
            )
            proc = _start_run(path, url, **{RETRY_ENV: "2"})
            _wait_for_complete(url, 3, proc)
            server.stop()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 4, err
            lines = [line for line in err.splitlines() if line.startswith("research-ext")]
            assert len(lines) == 1 and "unreachable" in lines[0] and "outage:***@" in lines[0]
            assert "pw-outage" not in out + err
            server.start()
            rerun = _start_run(path, url)
            out, err = rerun.communicate(timeout=240)
            assert rerun.returncode == 0, err
            states = _states(url)
            assert states["COMPLETE"] == 12 and set(states) <= {"COMPLETE", "FAIL"}


def test_python_api_errors_show_the_url_redacted(tmp_path, postgres_server):
    url = postgres_server.add_user("apiuser", "api-secret-9")
    config = load_config(write_study(tmp_path), storage=url)
    with pytest.raises(
        ConfigError, match=r"no study named 's' in postgresql\+psycopg2://apiuser:\*\*\*@"
    ) as info:
        status(config)
    assert "api-secret-9" not in str(info.value)


def test_a_storage_directory_that_cannot_exist_is_one_line(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2, sampler='"random"')
    (tmp_path / "afile").write_text("")
    target = f"sqlite:///{tmp_path / 'afile' / 'sub' / 's.db'}"
    assert main(["run", str(path), "--storage", target, "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be created" in err and "afile" in err


def test_an_unwritable_output_is_one_line_not_a_storage_fault(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2, sampler='"random"')
    assert main(["run", str(path), "--no-progress"]) == 0
    (tmp_path / "afile").write_text("")
    capsys.readouterr()
    assert main(["export", str(path), "-o", str(tmp_path / "afile" / "best.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Not a directory" in err and "storage" not in err


def test_a_missing_postgresql_database_is_one_line(postgres_url, tmp_path, capsys):
    path = write_study(tmp_path)
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    assert main(["status", str(path), "--storage", missing]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "createdb" in err


@pytest.mark.parametrize(
    "url,why",
    [
        (
            "postgresql://u:pw-leak@host:notaport/db",
            "must be a URL like postgresql://user@host:5432/db",
        ),
        ("postgresql://u:pw-leak@[bad/db", "must be a URL like postgresql://user@host:5432/db"),
        ("postgresql://", "must be a URL naming a host or a database"),
    ],
)
def test_malformed_server_urls_name_the_storage_redacted(url, why):
    with pytest.raises(ConfigError, match=why) as info:
        resolve_storage(url)
    assert "pw-leak" not in str(info.value)
