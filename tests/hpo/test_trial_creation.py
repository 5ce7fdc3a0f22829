"""Trials that ``run`` creates and claims by SQL are the trials Optuna would create.

The owner creates each trial in one transaction of its own (its owner recorded in the same
commit) and tells Optuna's trial cache about it; these tests hold that trial to what Optuna's
``create_new_trial`` makes: consecutive numbers however many processes create at once, a start
time on Optuna's clock (local time), a trial Optuna can sample and tell.
"""

import datetime
import multiprocessing
import os
import time
import warnings

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo import _queue
from research_ext.hpo._liveness import process_identity
from research_ext.hpo._queue import new_trial, pop_ticket, recover, top_up
from research_ext.hpo._study import ENDED, OWNER, open_study, rdb_storage
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState
STORAGES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture
def far_from_utc(monkeypatch):
    """Local time 5 h behind UTC, so a start time written in UTC shows (Optuna writes local)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _study_file(tmp_path, request, storage, n_trials=50):
    extra = ""
    if storage == "postgresql":
        extra = f'storage = "{request.getfixturevalue("postgres_url")}"'
    return write_study(
        tmp_path,
        name=f"c-{tmp_path.name}",
        n_trials=n_trials,
        sampler='"random"',
        extra_study=extra,
    )


def _assert_started_now(frozen, before, after):
    slack = datetime.timedelta(seconds=1)  # the database may round to its own precision
    assert before - slack <= frozen.datetime_start <= after + slack, (before, frozen, after)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_trial_created_by_sql_is_the_trial_optuna_creates(
    tmp_path, request, storage, monkeypatch, far_from_utc
):
    handle = open_study(rh.load_config(_study_file(tmp_path, request, storage)))
    by_sql = []
    create_sql = _queue._create_sql
    monkeypatch.setattr(
        _queue, "_create_sql", lambda *a: by_sql.append(create_sql(*a)) or by_sql[-1]
    )
    before = datetime.datetime.now()
    with monkeypatch.context() as patch:  # an Optuna whose cache differs: through Optuna
        patch.setattr(_queue, "_cache_ready", lambda handle: False)
        first = new_trial(handle)
    second = new_trial(handle)
    plain = handle.storage.create_new_trial(handle.study_id)  # Optuna's own, between ours
    third = new_trial(handle)
    after = datetime.datetime.now()
    assert by_sql == [second, third]
    frozen = [handle.storage.get_trial(i) for i in (first, second, plain, third)]
    assert [t.number for t in frozen] == [0, 1, 2, 3]
    assert [t.state for t in frozen] == [State.RUNNING] * 4
    for trial in frozen:
        _assert_started_now(trial, before, after)
    assert [t.system_attrs.get(OWNER) for t in frozen] == [process_identity()] * 2 + [
        None,
        process_identity(),
    ]
    # Optuna's cache knows the trial: Optuna writes its parameter and tells its value
    trial = optuna.trial.Trial(handle.study, third)
    x = trial.suggest_float("x", 0.0, 1.0)
    handle.study.tell(trial, x)
    told = handle.study.get_trials(deepcopy=False)[3]
    assert (told._trial_id, told.state, told.params, told.value) == (
        third,
        State.COMPLETE,
        {"x": x},
        x,
    )
    assert [t.number for t in handle.study.get_trials(deepcopy=False)] == [0, 1, 2, 3]


@pytest.mark.parametrize("storage", STORAGES)
def test_claimed_and_recovered_trials_keep_optunas_clock(tmp_path, request, storage, far_from_utc):
    """A ticket's start and a dead trial's end are local times, as Optuna's are (not UTC)."""
    handle = open_study(rh.load_config(_study_file(tmp_path, request, storage)))
    top_up(handle, limit=1)
    before = datetime.datetime.now()
    trial_id = pop_ticket(handle)
    after = datetime.datetime.now()
    _assert_started_now(handle.storage.get_trial(trial_id), before, after)
    dead = {**process_identity(), "pid": _dead_pid()}
    with rdb_storage(handle.storage).engine.begin() as connection:
        _queue._put_attrs(connection, trial_id, {OWNER: dead})
    assert recover(handle) == 1
    failed = handle.storage.get_trial(trial_id)
    assert (failed.state, failed.system_attrs[ENDED]) == (State.FAIL, "crashed")
    assert before - datetime.timedelta(seconds=1) <= failed.datetime_complete
    assert failed.datetime_complete <= datetime.datetime.now() + datetime.timedelta(seconds=1)


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _create_at_once(path, barrier, results, k):
    try:
        handle = open_study(rh.load_config(path), create=False)
        handle.storage.get_all_trials(handle.study_id)  # the cache reads the study: SQL creation
        barrier.wait(timeout=120)
        results.put(("ok", os.getpid(), [new_trial(handle) for _ in range(k)]))
    except BaseException as err:  # report every failure to the parent
        results.put(("error", os.getpid(), repr(err)))


@pytest.mark.slow  # four processes (and a PostgreSQL server): a few seconds on a busy machine
@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_processes_creating_trials_at_once_number_them_consecutively(tmp_path, request, storage):
    path = _study_file(tmp_path, request, storage)
    rdb_storage(
        open_study(rh.load_config(path)).storage
    ).engine.dispose()  # no connection crosses fork
    context = multiprocessing.get_context("fork")
    n, k = 4, 6
    barrier, results = context.Barrier(n), context.Queue()
    with warnings.catch_warnings():  # fork with threads alive (Python >= 3.12)
        warnings.simplefilter("ignore", DeprecationWarning)
        procs = [
            context.Process(target=_create_at_once, args=(path, barrier, results, k))
            for _ in range(n)
        ]
        for proc in procs:
            proc.start()
    outcomes = [results.get(timeout=300) for _ in range(n)]
    for proc in procs:
        proc.join(timeout=60)
    assert [kind for kind, _, _ in outcomes] == ["ok"] * n, outcomes
    creator = {trial_id: pid for _, pid, ids in outcomes for trial_id in ids}
    assert len(creator) == n * k
    trials = open_study(rh.load_config(path)).study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n * k))
    by_id = sorted(trials, key=lambda t: t._trial_id)
    assert [t.number for t in by_id] == list(range(n * k))  # numbers follow commit order
    assert all(t.system_attrs[OWNER]["pid"] == creator[t._trial_id] for t in trials)
