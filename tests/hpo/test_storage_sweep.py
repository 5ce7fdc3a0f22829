"""A run gives the same study whichever one of its storage statements a fault hits.

The cases in ``test_storage_faults.py`` pick statements by hand. Here a study is run once to
record every statement the run loop makes, then run again once per statement kind with one
fault at its first occurrence, in two forms: the statement fails (a dropped connection), or
its transaction commits and the acknowledgement is lost (the client sees an error after the
change landed). Each run must end with the very trials of the clean run: same numbers,
states, parameters and values, no duplicate, no trial left running. A hang (a trial left
RUNNING under the live process) ends at the study's timeout and shows as a difference.

Statements of Optuna's heartbeat thread are left out: when they run depends on timing, not on
the study (the run loop's own statements are the same in every run).
"""

import sqlite3
import threading

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import Engine, default

import research_ext.hpo as rh
from tests.hpo.conftest import write_study

pytestmark = pytest.mark.slow

optuna.logging.set_verbosity(optuna.logging.ERROR)

SCENARIOS = {
    # trials that fail and are replaced: creates, FAIL, WAITING tickets and their claims
    "failures": {"fn": "quadratic", "args": "{ fail_above = 0.6 }"},
    # intermediate values and pruned trials
    "pruning": {
        "fn": "stepped",
        "extra_study": 'pruner = { type = "median", n_startup_trials = 1, n_warmup_steps = 0 }',
    },
}


def _kind(statement):
    return " ".join(statement.split())


def _lost(dialect):
    """The driver's own error for a connection lost mid-call."""
    if dialect.name == "postgresql":
        import psycopg2

        return psycopg2.OperationalError("server closed the connection unexpectedly")
    return sqlite3.OperationalError("server closed the connection unexpectedly")


class _Faults:
    """Records the run loop's statements, or puts one fault at the first one of a kind."""

    def __init__(self):
        self.mode = self.target = None
        self.armed = self.fired = False
        self.seen: list[str] = []  # statement kinds of the main thread, in order
        self.committed: set[str] = set()  # kinds whose transaction committed
        self._open: dict[int, set[str]] = {}  # kinds in each pooled connection's open transaction
        self._main = threading.get_ident()
        self._commit = default.DefaultDialect.do_commit

    def __enter__(self):
        sqlalchemy.event.listen(Engine, "before_cursor_execute", self._before)
        faults = self

        def do_commit(dialect, dbapi_connection):
            faults._commit(dialect, dbapi_connection)
            faults.committed |= faults._open.pop(id(dbapi_connection), set())
            if faults.mode == "unacknowledged" and faults.armed and not faults.fired:
                faults.fired = True
                raise _lost(dialect)

        default.DefaultDialect.do_commit = do_commit
        return self

    def __exit__(self, *exc):
        sqlalchemy.event.remove(Engine, "before_cursor_execute", self._before)
        default.DefaultDialect.do_commit = self._commit

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() != self._main:
            return
        kind = _kind(statement)
        if self.mode is None:
            self.seen.append(kind)
            self._open.setdefault(id(conn.connection), set()).add(kind)
            return
        if self.fired or kind != self.target:
            return
        if self.mode == "dropped":
            self.fired = True
            raise _lost(conn.dialect)
        self.armed = True

    def aim(self, mode, target):
        self.mode, self.target, self.armed, self.fired = mode, target, False, False


def _run(directory, scenario, storage=""):
    directory.mkdir()
    path = write_study(
        directory,
        name=f"s-{directory.parent.name}-{directory.name}",  # one study per run on a server
        n_trials=4,
        sampler='"random"',
        extra_study=f"{scenario.get('extra_study', '')}\ntimeout = 30\n{storage}",
        fn=scenario["fn"],
        args=scenario.get("args", "{}"),
    )
    study = rh.run(path, show_progress=False, log_trials=False)
    return sorted(
        (t.number, t.state.name, sorted(t.params.items()), t.values) for t in study.trials
    )


CASES = [
    *((s, "sqlite") for s in sorted(SCENARIOS)),
    ("failures", "postgresql"),  # its own statements (row locks, RETURNING) and driver
]


@pytest.mark.parametrize("fault", ["dropped", "unacknowledged"])
@pytest.mark.parametrize("scenario,storage", CASES)
def test_a_fault_at_any_statement_of_a_run_leaves_the_same_study(
    tmp_path, request, monkeypatch, scenario, storage, fault
):
    monkeypatch.setenv("RESEARCH_EXT_STORAGE_RETRY", "10")
    url = ""
    if storage == "postgresql":
        url = f'storage = "{request.getfixturevalue("postgres_url")}"'
    with _Faults() as faults:
        reference = _run(tmp_path / "reference", SCENARIOS[scenario], url)
        kinds = [
            k
            for k in dict.fromkeys(faults.seen)
            # creating the schema (once per new file or database) has its own retry
            if not k.startswith(("PRAGMA", "CREATE"))
            and "alembic_version" not in k
            and "version_info" not in k
            and (fault == "dropped" or k in faults.committed)
        ]
        assert len(kinds) >= 15, kinds  # the run loop's statements were recorded
        differences = []
        for i, kind in enumerate(kinds):
            faults.aim(fault, kind)
            try:
                got = _run(tmp_path / f"run{i}", SCENARIOS[scenario], url)
            except Exception as err:  # noqa: BLE001 - reported with the statement below
                got = f"{type(err).__name__}: {err}"
            if not faults.fired:
                differences.append(f"never ran: {kind[:150]}")
            elif got != reference:
                differences.append(f"{kind[:150]} -> {str(got)[:300]}")
    assert not differences, "\n".join(differences)
