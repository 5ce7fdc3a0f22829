"""Every storage call of a run rides out a dropped connection: the run loop's own SQL, and the
private backend calls of Optuna's cache layer (every trial list and every suggested parameter).

A database server that restarts (or an SQLite file another process holds locked) makes the
statement in flight fail; the run must run that transaction again once the storage answers,
not end with "unreachable". Each case below makes one statement fail once, the way the driver
reports it, and checks that the operation still gives its result. A server can also go away
after a commit landed and before it acknowledged it: the client sees the same error and runs
the transaction again, and a write that changes a trial's state (create, claim, fail) must find
that its first run landed instead of doing the change a second time or reporting it undone.
"""

import sqlite3
import subprocess
import sys

import optuna
import pytest
import sqlalchemy

import research_ext.hpo as rh
from research_ext.hpo import _queue
from research_ext.hpo._liveness import process_identity
from research_ext.hpo._progress import RunProgress
from research_ext.hpo._queue import admitted, new_trial, pop_ticket, recover, top_up
from research_ext.hpo._seeding import sample_index
from research_ext.hpo._storage_faults import CACHE_LAYER_CALLS
from research_ext.hpo._study import OWNER, counts, open_study, rdb_storage
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class _FailOnce:
    """Makes the first statement containing ``fragment`` fail as a locked SQLite file does."""

    def __init__(self, engine, fragment):
        self.fragment, self.fired = fragment, False
        sqlalchemy.event.listen(engine, "before_cursor_execute", self)

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if not self.fired and self.fragment in statement:
            self.fired = True
            raise sqlite3.OperationalError("database is locked")


def _running_trial_of_a_dead_process(handle):
    top_up(handle, limit=1)
    trial_id = pop_ticket(handle)
    with rdb_storage(handle.storage).engine.begin() as connection:
        _queue._put_attrs(connection, trial_id, {OWNER: {**process_identity(), "pid": _dead_pid()}})
    return trial_id


def _new_trial(handle):
    return isinstance(new_trial(handle), int)


def _admitted(handle):
    return admitted(handle, new_trial(handle))


def _pop_ticket(handle):
    top_up(handle, limit=1)
    return pop_ticket(handle) is not None


def _recover(handle):
    _running_trial_of_a_dead_process(handle)
    return recover(handle)


def _progress(handle):
    return RunProgress(handle, show_progress=False, log_trials=False).seen == set()


def _optunas_trials(handle):  # Optuna's cache layer reads through its backend's _get_trials
    return len(handle.storage.get_all_trials(handle.study_id))


def _optunas_suggest(handle):  # ... and writes a parameter through _set_trial_param
    trial = optuna.trial.Trial(handle.study, new_trial(handle))
    return 0.0 <= trial.suggest_float("x", 0.0, 1.0) <= 1.0


def _sample_index(handle):
    new_trial(handle)
    return sample_index(handle, new_trial(handle))


CASES = [
    (_new_trial, "RETURNING trial_id", True),  # retried before the others were
    (_admitted, "AND trial_id <", True),
    (_pop_ticket, "SELECT trial_id FROM trials WHERE", True),
    (_pop_ticket, "SET state = 'RUNNING'", True),
    (_recover, "LEFT JOIN trial_system_attributes", 1),
    (_recover, "SET state = 'FAIL'", 1),
    (counts, "GROUP BY state", {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}),
    (_progress, "trial_id >=", True),
    (_sample_index, "o.number < t.number", 1),
    (_optunas_trials, "FROM studies", 0),
    (_optunas_suggest, "INSERT INTO trial_params", True),
]


@pytest.mark.parametrize(
    "operation,fragment,expected", CASES, ids=[f"{c[0].__name__}-{c[1]}" for c in CASES]
)
def test_the_run_loops_sql_is_run_again_when_the_storage_drops_it(
    tmp_path, operation, fragment, expected
):
    handle = open_study(rh.load_config(write_study(tmp_path, n_trials=5, sampler='"random"')))
    fault = _FailOnce(rdb_storage(handle.storage).engine, fragment)
    assert operation(handle) == expected
    assert fault.fired


def test_every_private_call_of_optunas_cache_layer_is_retried():
    """The private backend methods Optuna's cache layer calls are those ``retry_calls`` wraps
    (an Optuna release that calls another one fails here, not in a user's outage)."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    called = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_cached_storage)))
    assert called and called <= set(CACHE_LAYER_CALLS)


class _LoseCommitAck:
    """Commits the first transaction that ran a statement containing ``fragment``, then fails
    as a server does that goes away before acknowledging the commit: the change has landed,
    but the client sees an error and runs the transaction again."""

    def __init__(self, engine, fragment):
        self.fragment, self.armed, self.fired = fragment, False, False
        sqlalchemy.event.listen(engine, "before_cursor_execute", self.watch)
        commit = engine.dialect.do_commit
        # the driver's own error, as it reports a connection lost at that point
        lost = sqlite3.OperationalError
        if engine.dialect.name == "postgresql":
            import psycopg2

            lost = psycopg2.OperationalError

        def do_commit(dbapi_connection):
            commit(dbapi_connection)
            if self.armed and not self.fired:
                self.fired = True
                raise lost("server closed the connection unexpectedly")

        engine.dialect.do_commit = do_commit

    def watch(self, conn, cursor, statement, parameters, context, executemany):
        if self.fragment in statement:
            self.armed = True


def _trial_states(handle):
    trials = handle.storage.get_all_trials(handle.study_id, deepcopy=False)
    return sorted(t.state.name for t in trials)


def _claimed_after_a_lost_ack(handle):
    top_up(handle, limit=1)
    trial_id = pop_ticket(handle)
    owner = handle.storage.get_trial(trial_id).system_attrs[OWNER] if trial_id else None
    return trial_id is not None and owner == process_identity() and _trial_states(handle)


def _created_after_a_lost_ack(handle):
    trial_id = new_trial(handle)
    return isinstance(trial_id, int) and _trial_states(handle)


def _recovered_after_a_lost_ack(handle):
    _running_trial_of_a_dead_process(handle)
    return recover(handle), _trial_states(handle)


def _finished_after_a_lost_ack(handle):  # Optuna's own call, as the run loop finishes a trial
    trial_id = new_trial(handle)
    done = handle.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [1.5])
    return done, handle.storage.get_trial(trial_id).values, _trial_states(handle)


def _ticket_after_a_lost_ack(handle):  # WAITING tickets are created through Optuna
    return top_up(handle, limit=1), _trial_states(handle)


def _requeued_after_a_lost_ack(handle):  # so are the copies that re-run a dead trial
    _running_trial_of_a_dead_process(handle)
    fault = _LoseCommitAck(rdb_storage(handle.storage).engine, "INSERT INTO trials (number")
    recovered = recover(handle)
    return fault.fired, recovered, _trial_states(handle)


ACK_CASES = [
    # the claim landed: this process runs the trial (not left RUNNING with no one running it)
    (_claimed_after_a_lost_ack, "SET state = 'RUNNING'", ["RUNNING"]),
    # one trial, not a second one next to an orphan RUNNING one
    (_created_after_a_lost_ack, "RETURNING trial_id", ["RUNNING"]),
    # the dead trial failed once and re-queued once (not failed with no copy to run it again)
    (_recovered_after_a_lost_ack, "SET state = 'FAIL'", (1, ["FAIL", "WAITING"])),
    # the result is stored once and the run goes on (not "Trial#0 has already finished")
    (_finished_after_a_lost_ack, "INSERT INTO trial_values", (True, [1.5], ["COMPLETE"])),
    # one ticket, one copy: not two WAITING trials that would run the same trial twice
    (_ticket_after_a_lost_ack, "INSERT INTO trials (number", (1, ["WAITING"])),
    (_requeued_after_a_lost_ack, "SET state = 'FAIL'", (True, 1, ["FAIL", "WAITING"])),
]


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "operation,fragment,expected", ACK_CASES, ids=[c[0].__name__ for c in ACK_CASES]
)
def test_a_write_whose_commit_landed_but_was_not_acknowledged_is_not_done_twice(
    tmp_path, request, storage, operation, fragment, expected
):
    extra = ""
    if storage == "postgresql":
        extra = f'storage = "{request.getfixturevalue("postgres_url")}"'
    path = write_study(
        tmp_path, name=f"a-{tmp_path.name}", n_trials=5, sampler='"random"', extra_study=extra
    )
    handle = open_study(rh.load_config(path))
    fault = _LoseCommitAck(rdb_storage(handle.storage).engine, fragment)
    assert operation(handle) == expected
    assert fault.fired
