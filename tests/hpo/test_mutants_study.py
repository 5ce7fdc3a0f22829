"""The ticket queue and crash recovery pinned exactly: how many tickets, who may run, who is failed.

Written from a mutation-testing pass over ``research_ext/hpo/_queue.py`` (the exact-count logic
that ``hpo/_study.py`` held before the study code was re-cut by concept; see
``tools/mutation.sh``). Each test drives one study in SQLite or journal storage in this process
and checks the counts that a slip in the bookkeeping would change.
"""

import datetime
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo import _queue
from research_ext.hpo._queue import admitted, new_trial, pop_ticket, recover, top_up
from research_ext.hpo._study import (
    ENDED,
    OWNER,
    RETRY_OF,
    RETRY_REASON,
    TICKET,
    TRIAL_DIR,
    counts,
    open_study,
)
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState


def _handle(tmp_path, n_trials=5, storage=""):
    extra = f'storage = "{storage}"' if storage else ""
    path = write_study(tmp_path, n_trials=n_trials, sampler='"random"', extra_study=extra)
    return open_study(rh.load_config(path))


def _complete(handle, trial_id, value=1.0):
    handle.storage.set_trial_state_values(trial_id, state=State.COMPLETE, values=[value])


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# SQLite takes the SQL paths, the journal Optuna's API paths
@pytest.mark.parametrize("storage", ["", "study.log"], ids=["sqlite", "journal"])
def test_top_up_fills_to_n_trials_less_finished_running_and_waiting(tmp_path, storage):
    handle = _handle(tmp_path, n_trials=5, storage=storage)
    assert top_up(handle, limit=2) == 2
    assert counts(handle)["WAITING"] == 2
    assert top_up(handle, limit=3) == 1  # the limit caps the waiting tickets, not the new ones
    assert top_up(handle, limit=3) == 0
    assert top_up(handle) == 2
    assert top_up(handle) == 0
    assert counts(handle)["WAITING"] == 5
    tickets = handle.study.get_trials(deepcopy=False)
    assert all(t.state == State.WAITING and t.system_attrs[TICKET] is True for t in tickets)

    first = pop_ticket(handle)
    second = pop_ticket(handle)
    assert first is not None and second is not None and first != second
    assert counts(handle) == {
        "COMPLETE": 0,
        "PRUNED": 0,
        "FAIL": 0,
        "RUNNING": 2,
        "WAITING": 3,
    }
    assert top_up(handle) == 0  # 5 - 0 finished - 2 running - 3 waiting
    _complete(handle, first)
    assert top_up(handle) == 0  # 5 - 1 finished - 1 running - 3 waiting
    handle.storage.set_trial_state_values(second, state=State.FAIL)
    assert top_up(handle) == 1  # a failed trial no longer counts: its place is offered again
    assert counts(handle)["WAITING"] == 4


@pytest.mark.parametrize("storage", ["", "study.log"], ids=["sqlite", "journal"])
def test_pop_ticket_takes_each_ticket_once_then_none(tmp_path, storage):
    handle = _handle(tmp_path, n_trials=3, storage=storage)
    assert pop_ticket(handle) is None
    top_up(handle)
    ids = [pop_ticket(handle) for _ in range(3)]
    assert None not in ids and len(set(ids)) == 3
    assert pop_ticket(handle) is None
    running = handle.study.get_trials(deepcopy=False, states=(State.RUNNING,))
    assert sorted(t._trial_id for t in running) == sorted(ids)
    if not storage:  # the SQL claim records the claiming process in the same transaction
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        assert all({k: t.system_attrs[OWNER][k] for k in me} == me for t in running)
        assert all(t.datetime_start is not None for t in running)


@pytest.mark.parametrize("storage", ["", "study.log"], ids=["sqlite", "journal"])
def test_new_trial_stops_at_n_trials_and_admitted_counts_live_trials_before(tmp_path, storage):
    handle = _handle(tmp_path, n_trials=2, storage=storage)
    a = new_trial(handle)
    b = new_trial(handle)
    assert a is not None and b is not None and a < b
    assert new_trial(handle) is None  # two running = n_trials
    assert admitted(handle, a) and admitted(handle, b)
    # each records the process running it, which is what recovery checks for liveness
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for trial_id in (a, b):
        owner = handle.storage.get_trial(trial_id).system_attrs[OWNER]
        assert {k: owner[k] for k in me} == me
    # a third trial created behind the check (as a racing process would) is refused ...
    c = int(handle.storage.create_new_trial(handle.study_id))
    assert not admitted(handle, c)
    # ... but admitted once a trial before it has failed (failed trials are not live)
    handle.storage.set_trial_state_values(a, state=State.FAIL)
    assert admitted(handle, c)
    # complete, pruned and waiting trials before it are live
    _complete(handle, b)
    assert admitted(handle, c)
    top_up(handle)  # no room: 1 complete + 1 running
    assert counts(handle)["WAITING"] == 0
    d = int(handle.storage.create_new_trial(handle.study_id))
    assert not admitted(handle, d)
    assert new_trial(handle) is None


def _crashed_trial(handle):
    """A RUNNING trial whose owner on this host is gone; its id and sampled x."""
    top_up(handle, limit=1)
    trial_id = pop_ticket(handle)
    x = optuna.trial.Trial(handle.study, trial_id).suggest_float("x", 0.0, 1.0)
    handle.storage.set_trial_system_attr(
        trial_id, OWNER, {"host": socket.gethostname(), "pid": _dead_pid(), "start": None}
    )
    return trial_id, x


@pytest.mark.parametrize("storage", ["", "study.log"], ids=["sqlite", "journal"])
def test_recover_fails_a_crashed_trial_once_and_requeues_its_parameters(tmp_path, storage):
    handle = _handle(tmp_path, n_trials=4, storage=storage)
    trial_id, x = _crashed_trial(handle)
    alive = new_trial(handle)  # a RUNNING trial of this (live) process is left alone
    ownerless = int(handle.storage.create_new_trial(handle.study_id))  # no owner: not judged
    stale_view = _queue._running_owners(handle)
    assert recover(handle) == 1
    dead = handle.storage.get_trial(trial_id)
    assert dead.state == State.FAIL and dead.system_attrs[ENDED] == "crashed"
    assert dead.datetime_complete is not None
    assert handle.storage.get_trial(alive).state == State.RUNNING
    assert handle.storage.get_trial(ownerless).state == State.RUNNING
    (retry,) = handle.study.get_trials(deepcopy=False, states=(State.WAITING,))
    assert retry.params == {"x": x}
    assert retry.system_attrs[RETRY_OF] == dead.number
    assert retry.system_attrs[RETRY_REASON] == "crashed"
    assert retry.system_attrs[TRIAL_DIR] == f"trial-{dead.number:05d}"
    assert recover(handle) == 0

    # a second process that listed the trial as RUNNING before the first failed it must not
    # re-queue it again: the RUNNING -> FAIL transition is made by one of them only
    second = open_study(handle.config, create=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_queue, "_running_owners", lambda h: list(stale_view))
        assert recover(second) == 0
    assert counts(handle)["WAITING"] == 1
    assert counts(handle)["FAIL"] == 1


@pytest.fixture
def new_york(monkeypatch):
    """This process in a time zone west of UTC (Optuna shows trial times in local time)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_written_by_claims_and_recovery_agree_with_optunas_off_utc(tmp_path, new_york):
    """Times our SQL writes are read back by Optuna like its own: durations stay true."""
    handle = _handle(tmp_path, n_trials=3)
    trial_id, _ = _crashed_trial(handle)  # claimed by our SQL (datetime_start)
    assert recover(handle) == 1  # failed by our SQL (datetime_complete)
    dead = handle.storage.get_trial(trial_id)
    assert datetime.timedelta(0) <= dead.duration < datetime.timedelta(minutes=10)
    assert abs(dead.datetime_complete - datetime.datetime.now()) < datetime.timedelta(minutes=10)
    claimed = pop_ticket(handle)  # the re-queued copy, claimed by SQL, completed by Optuna
    _complete(handle, claimed)
    done = handle.storage.get_trial(claimed)
    assert datetime.timedelta(0) <= done.duration < datetime.timedelta(minutes=10)


@pytest.mark.parametrize("storage", ["", "study.log"], ids=["sqlite", "journal"])
def test_new_trial_counts_waiting_tickets_as_taken_places(tmp_path, storage):
    handle = _handle(tmp_path, n_trials=3, storage=storage)
    assert top_up(handle, limit=1) == 1
    first = new_trial(handle)
    second = new_trial(handle)  # 0 finished + 2 running + 1 waiting = 3
    assert first is not None and second is not None
    assert new_trial(handle) is None
    assert counts(handle)["RUNNING"] == 2 and counts(handle)["WAITING"] == 1
    _complete(handle, first)
    assert new_trial(handle) is None  # 1 finished + 1 running + 1 waiting
    # a snapshot of the counts can be passed in (the owner's loop has just taken one)
    assert new_trial(handle, counts(handle)) is None
