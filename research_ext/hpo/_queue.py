"""The ticket queue and crash recovery: exactly ``n_trials`` finished, however many processes.

``run`` tops the study up with *tickets* (empty WAITING trials) for the workers that wait, and
creates its own trials directly; workers pop tickets (an atomic WAITING -> RUNNING transition),
and a joined worker that gets none for a while creates trials too. Whoever created or claimed a
trial, it runs only if :func:`admitted`: fewer than ``n_trials`` live trials precede it, so racing
processes never finish more than ``n_trials`` (the refused trial is failed as ``surplus``).

A trial that dies (its process killed, its heartbeat stale, SIGTERM, Ctrl-C) is failed once and
replaced by a WAITING copy with the same parameters and checkpoint directory, which keeps the
count unchanged; a trial whose objective raised is replaced by a fresh ticket.
"""

import datetime
import functools
import json
import pathlib
import time
import uuid
import warnings
from typing import Any

from research_ext.hpo._liveness import is_alive, process_identity
from research_ext.hpo._storage import resolve_storage
from research_ext.hpo._storage_faults import retried_sql
from research_ext.hpo._study import (
    ENDED,
    HEARTBEAT,
    IDLE,
    OWNER,
    REPLACES,
    RETRY_OF,
    RETRY_REASON,
    TICKET,
    TRIAL_DIR,
    WRITE,
    StudyHandle,
    counts,
    n_done,
    rdb_storage,
)

__all__ = [
    "admitted",
    "announce_idle",
    "new_trial",
    "next_trial",
    "on_stale",
    "pop_ticket",
    "recover",
    "requeue",
    "top_up",
    "trial_dir",
]


def top_up(handle: StudyHandle, limit: int | None = None) -> int:
    """Add empty tickets toward finished + running + waiting = ``n_trials``; return how many.

    ``limit`` caps the waiting tickets: Optuna re-reads every unfinished trial on each access, so
    a short queue keeps the per-trial cost flat. Only one process (``run``) tops a study up.
    """
    import optuna

    c = counts(handle)
    need = handle.n_trials - n_done(c) - c["RUNNING"] - c["WAITING"]
    if limit is not None:
        need = min(need, limit - c["WAITING"])
    for _ in range(max(need, 0)):
        handle.study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING,
                system_attrs={TICKET: True, WRITE: uuid.uuid4().hex},
            )
        )
    return max(need, 0)


def requeue(study: Any, frozen: Any, reason: str, *, same_params: bool = True) -> None:
    """Add the WAITING replacement of failed trial ``frozen``.

    With ``same_params`` (a trial that died or was stopped) the copy re-runs it: same parameters
    and directory, ``research_ext:retry_of`` names it. Otherwise (the objective raised) the new
    trial samples fresh parameters and ``research_ext:replaces`` names the failed trial: it is a
    replacement, not the same trial again.
    """
    import optuna

    system_attrs: dict[str, Any] = {TICKET: True, RETRY_REASON: reason, WRITE: uuid.uuid4().hex}
    if same_params:
        system_attrs[RETRY_OF] = frozen.number
        system_attrs[TRIAL_DIR] = frozen.system_attrs.get(TRIAL_DIR, _trial_dir_name(frozen.number))
    else:
        system_attrs[REPLACES] = frozen.number
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=dict(frozen.params) if same_params else None,
            distributions=dict(frozen.distributions) if same_params else None,
            system_attrs=system_attrs,
        )
    )


def _trial_dir_name(number: int) -> str:
    return f"trial-{number:05d}"


def trial_dir(handle: StudyHandle, frozen: Any) -> pathlib.Path:
    """The per-trial checkpoint directory (a retried trial inherits its predecessor's)."""
    name = frozen.system_attrs.get(TRIAL_DIR, _trial_dir_name(frozen.number))
    return handle.config.trials_dir / name


_STALE = [0]  # trials this process failed as stale through Optuna's heartbeat callback


def on_stale(study: Any, frozen: Any) -> None:
    """Re-queue a trial that Optuna's heartbeat check failed as stale (its storage callback)."""
    _STALE[0] += 1
    rdb = rdb_storage(study._storage)
    if rdb is not None:  # Optuna failed it already: its attributes are closed to the API
        retried_sql(
            rdb,
            resolve_storage(rdb.url),
            lambda c: _put_attrs(c, frozen._trial_id, {ENDED: "stale heartbeat"}),
            write=True,
        )
    requeue(study, frozen, "stale heartbeat")


def _put_attrs(
    connection: Any, trial_id: int, attrs: dict[str, Any], *, replace: bool = True
) -> None:
    """Set trial system attributes in an open RDB transaction (also on a finished trial).

    One multi-row INSERT, after one DELETE of the keys unless ``replace`` is off (a trial that
    has none of them yet).
    """
    import sqlalchemy

    keys = {f"k{i}": key for i, key in enumerate(attrs)}
    values = {f"v{i}": json.dumps(value) for i, value in enumerate(attrs.values())}
    if replace:
        connection.execute(
            sqlalchemy.text(
                "DELETE FROM trial_system_attributes WHERE trial_id = :tid "
                f"AND key IN ({', '.join(':' + k for k in keys)})"
            ),
            {"tid": trial_id, **keys},
        )
    rows = ", ".join(f"(:tid, :k{i}, :v{i})" for i in range(len(attrs)))
    connection.execute(
        sqlalchemy.text(
            f"INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES {rows}"
        ),
        {"tid": trial_id, **keys, **values},
    )


def _written(connection: Any, token: str, trial_id: int | None = None) -> tuple[int, int] | None:
    """``(trial id, number)`` of the trial whose last write of ours was ``token`` (``WRITE``).

    Only a retried write asks (its earlier run may have committed unacknowledged); without
    ``trial_id`` it scans the attributes table for the token (a random id: unique).
    """
    import sqlalchemy

    where = "" if trial_id is None else " AND a.trial_id = :tid"
    row = connection.execute(
        sqlalchemy.text(
            "SELECT t.trial_id, t.number FROM trials t JOIN trial_system_attributes a "
            f"ON a.trial_id = t.trial_id WHERE a.key = :key AND a.value_json = :token{where}"
        ),
        {"key": WRITE, "token": json.dumps(token), "tid": trial_id},
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def _landed(token: str, trial_id: int) -> Any:
    """``retried_sql``'s ``landed`` for a state change of ``trial_id`` tagged ``token``."""
    return lambda connection: True if _written(connection, token, trial_id) else None


def announce_idle(handle: StudyHandle, idle: bool = True) -> None:
    """Tell the process that owns the run that this worker waits for a trial (or no longer)."""
    me = process_identity()
    key = f"{IDLE}{me['host']}:{me['pid']}"
    handle.storage.set_study_system_attr(handle.study_id, key, time.time() if idle else 0.0)


def _idle_workers(handle: StudyHandle, window: float = 5.0) -> int:
    """Workers that announced they wait for a trial in the last ``window`` s (looked up <= 1/s)."""
    checked, count = handle.idle
    if time.monotonic() - checked < 1.0:
        return count
    now = time.time()
    attrs = handle.storage.get_study_system_attrs(handle.study_id)
    count = sum(1 for k, v in attrs.items() if k.startswith(IDLE) and now - float(v) < window)
    handle.idle = (time.monotonic(), count)
    return count


def next_trial(handle: StudyHandle) -> int | None:
    """The owning run's next trial: a waiting one, else a new RUNNING trial; ``None`` when done.

    Alone, the owner creates each trial directly (as ``Study.ask`` does), one write per trial.
    Workers that joined and wait for a trial get tickets, which the owner leaves to them.
    """
    idle = _idle_workers(handle)
    if idle:
        top_up(handle, limit=idle)
    c = counts(handle)
    if n_done(c) >= handle.n_trials:
        return None
    if c["WAITING"] and not idle:
        trial_id = pop_ticket(handle)
        if trial_id is not None:
            return trial_id
        c = counts(handle)
    return new_trial(handle, c)


def new_trial(handle: StudyHandle, c: dict[str, int] | None = None) -> int | None:
    """A new RUNNING trial of this process, or ``None`` if the study holds enough trials.

    Enough: finished + running + waiting = ``n_trials``. Two processes may both see one missing
    and both create a trial; :func:`admitted` then refuses the later one.
    """
    import optuna

    c = counts(handle) if c is None else c
    if n_done(c) + c["RUNNING"] + c["WAITING"] >= handle.n_trials:
        return None
    rdb = rdb_storage(handle.storage)
    if rdb is not None and rdb.engine.dialect.name in _SQL_CREATE and _cache_ready(handle):
        return _create_sql(handle, rdb)
    template = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        system_attrs={OWNER: process_identity(), WRITE: uuid.uuid4().hex},
    )
    return int(handle.storage.create_new_trial(handle.study_id, template_trial=template))


def _now() -> tuple[datetime.datetime, datetime.datetime]:
    """Now as Optuna shows trial times (naive local time) and as its RDB storage writes them."""
    now = datetime.datetime.now().astimezone()
    shown = now.replace(tzinfo=None)
    if not _stores_utc():
        return shown, shown
    return shown, now.astimezone(datetime.timezone.utc).replace(tzinfo=None)


@functools.cache
def _stores_utc() -> bool:
    """Whether Optuna's RDB storage writes trial times in UTC (Optuna 5) or local time (before).

    Asked of Optuna's own table model, which converts what it writes: a time 3 h east of UTC
    comes out 3 h earlier when it writes UTC.
    """
    try:
        import sqlalchemy
        from optuna.storages._rdb import models
    except ImportError:  # pragma: no cover - another Optuna layout: Optuna 5's convention
        return True
    probe = datetime.datetime(2000, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=3)))
    column = models.TrialModel.__table__.c.datetime_start
    key = sqlalchemy.inspect(models.TrialModel).get_property_by_column(column).key
    return getattr(models.TrialModel(datetime_start=probe), key) == datetime.datetime(2000, 1, 1, 9)


# dialects whose INSERT takes its number from a subquery on the same table and returns the row
_SQL_CREATE = ("sqlite", "postgresql")


def _cache_ready(handle: StudyHandle) -> bool:
    """Whether Optuna's trial cache in front of the RDB storage can be told of a new trial.

    A trial created by SQL must be made known to the cache, as ``create_new_trial`` does, or
    the cache refuses the trial's parameters. Not ready (an Optuna whose cache differs, or a
    cache that has not read the study yet): the trial is created through Optuna instead.
    """
    storage = handle.storage
    studies = getattr(storage, "_studies", None)
    if not (hasattr(storage, "_add_trials_to_cache") and hasattr(storage, "_lock")):
        return False
    return isinstance(studies, dict) and handle.study_id in studies


def _create_sql(handle: StudyHandle, rdb: Any) -> int:
    """A new RUNNING trial with this process as its owner, in one transaction of two statements.

    What Optuna's ``create_new_trial`` with an owner in the template does (numbers counted
    under the study's row lock, as Optuna counts them; the owner written in the same commit, so
    a trial never exists without one), without its ORM round trips: several times faster, about
    a millisecond less a trial. MySQL (whose INSERT cannot count its own table) and an Optuna
    whose cache differs get the template through Optuna.
    """
    import optuna
    import sqlalchemy

    owner = process_identity()
    shown, stored = _now()
    lock = sqlalchemy.text("SELECT study_id FROM studies WHERE study_id = :sid FOR UPDATE")
    insert = sqlalchemy.text(
        "INSERT INTO trials (number, study_id, state, datetime_start) "
        "VALUES ((SELECT COUNT(*) FROM trials WHERE study_id = :sid), :sid, 'RUNNING', :now) "
        "RETURNING trial_id, number"
    ).bindparams(sqlalchemy.bindparam("now", type_=sqlalchemy.DateTime()))
    token = uuid.uuid4().hex

    def create(connection: Any) -> tuple[int, int]:
        if connection.dialect.name != "sqlite":  # SQLite runs one writer at a time
            connection.execute(lock, {"sid": handle.study_id})
        trial_id, number = connection.execute(insert, {"sid": handle.study_id, "now": stored}).one()
        _put_attrs(connection, trial_id, {OWNER: owner, WRITE: token}, replace=False)
        return int(trial_id), int(number)

    trial_id, number = retried_sql(
        rdb, handle.spec, create, write=True, landed=lambda c: _written(c, token)
    )
    frozen = optuna.trial.FrozenTrial(
        number=number,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=shown,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={OWNER: owner, WRITE: token},
        intermediate_values={},
        trial_id=trial_id,
    )
    cache = handle.storage
    with cache._lock:
        cache._add_trials_to_cache(handle.study_id, [frozen])
    return trial_id


_LIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def admitted(handle: StudyHandle, trial_id: int) -> bool:
    """Whether trial ``trial_id`` (RUNNING) may run: fewer than ``n_trials`` live trials precede it.

    Live means complete, pruned, running or waiting; precede means a lower trial id. However
    many processes create or claim trials at once, at most ``n_trials`` finish: the last of any
    ``n_trials + 1`` live trials sees the others before it (a trial only ever leaves the live
    states, and ids grow in commit order: SQLite and the journal write one at a time, and on
    PostgreSQL the count first waits for every transaction still writing a trial). A refused
    trial is failed as ``surplus`` without running.
    """
    rdb = rdb_storage(handle.storage)
    if rdb is not None:
        import sqlalchemy

        states = ", ".join(f"'{state}'" for state in _LIVE)
        query = sqlalchemy.text(
            "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND trial_id < :tid "
            f"AND state IN ({states})"
        )

        def count(connection: Any) -> int:
            if connection.dialect.name == "postgresql":
                # waits for writers of trials whose lower ids this count must see
                connection.execute(sqlalchemy.text("LOCK TABLE trials IN SHARE MODE"))
            before = connection.execute(query, {"sid": handle.study_id, "tid": trial_id})
            return int(before.scalar_one())

        return retried_sql(rdb, handle.spec, count, write=True) < handle.n_trials
    before = sum(
        1
        for t in handle.storage.get_all_trials(handle.study_id, deepcopy=False)
        if t._trial_id < trial_id and t.state.name in _LIVE
    )
    return before < handle.n_trials


def pop_ticket(handle: StudyHandle) -> int | None:
    """Atomically take one WAITING trial (WAITING -> RUNNING); its id, or ``None`` if none left.

    On RDB storages the transition is one conditional ``UPDATE ... WHERE state = 'WAITING'``:
    Optuna's read-then-write is not atomic on SQLite (the driver reads outside a transaction),
    so two workers could both take the same trial.
    """
    import optuna

    rdb = rdb_storage(handle.storage)
    if rdb is not None:
        for trial_id in _ids_in_state(handle, rdb, "WAITING"):
            if _claim_sql(handle, rdb, trial_id):
                # let Optuna's trial cache learn the trial it will write parameters to
                handle.storage.get_all_trials(
                    handle.study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
                )
                return trial_id
        return None
    waiting = handle.storage.get_all_trials(
        handle.study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)
    )
    for trial in waiting:
        trial_id = int(trial._trial_id)
        try:
            if handle.storage.set_trial_state_values(
                trial_id, state=optuna.trial.TrialState.RUNNING
            ):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _ids_in_state(handle: StudyHandle, rdb: Any, state: str) -> list[int]:
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT trial_id FROM trials WHERE study_id = :sid AND state = :state ORDER BY trial_id"
    )
    params = {"sid": handle.study_id, "state": state}
    return retried_sql(rdb, handle.spec, lambda c: [int(r[0]) for r in c.execute(query, params)])


def _running_owners(handle: StudyHandle) -> list[tuple[int, dict[str, Any] | None, float | None]]:
    """(trial id, owner, last heartbeat or start time) of every RUNNING trial."""
    import optuna

    rdb = rdb_storage(handle.storage)
    if rdb is not None:  # one query instead of loading every unfinished trial
        import sqlalchemy

        query = sqlalchemy.text(
            "SELECT t.trial_id, a.value_json FROM trials t LEFT JOIN trial_system_attributes a "
            "ON a.trial_id = t.trial_id AND a.key = :key "
            "WHERE t.study_id = :sid AND t.state = 'RUNNING'"
        )
        params = {"sid": handle.study_id, "key": OWNER}
        rows = retried_sql(rdb, handle.spec, lambda c: c.execute(query, params).fetchall())
        return [(int(tid), json.loads(value) if value else None, None) for tid, value in rows]
    out = []
    for trial in handle.storage.get_all_trials(
        handle.study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
    ):
        beat = trial.system_attrs.get(HEARTBEAT)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        out.append((int(trial._trial_id), trial.system_attrs.get(OWNER), beat))
    return out


def _claim_sql(handle: StudyHandle, rdb: Any, trial_id: int) -> bool:
    """WAITING -> RUNNING and the owner recorded, in one transaction (one commit per claim)."""
    import sqlalchemy

    now = _now()[1]
    claim = sqlalchemy.text(
        "UPDATE trials SET state = 'RUNNING', datetime_start = :now "
        "WHERE trial_id = :tid AND state = 'WAITING'"
    )
    token = uuid.uuid4().hex

    def take(connection: Any) -> bool:
        if connection.execute(claim, {"now": now, "tid": trial_id}).rowcount != 1:
            return False
        _put_attrs(connection, trial_id, {OWNER: process_identity(), WRITE: token})
        return True

    return retried_sql(rdb, handle.spec, take, write=True, landed=_landed(token, trial_id))


def recover(handle: StudyHandle) -> int:
    """Fail every dead RUNNING trial once and re-queue it with its parameters; return how many.

    A trial is dead when its process on this host is gone (``crashed``: checked first, so the
    outcome never depends on how long a restart took), or its heartbeat is older than the grace
    period (``stale heartbeat``: Optuna's RDB heartbeat; ours on the journal). Each dead trial
    is failed by one atomic RUNNING -> FAIL transition, so however many processes recover at
    once, it is re-queued once.
    """
    import optuna

    recovered = 0
    now = time.time()
    for trial_id, owner, beat in _running_owners(handle):
        alive = is_alive(owner) if owner else None
        reason = "crashed" if alive is False else None
        stale = beat is not None and now - float(beat) > handle.config.grace_period
        if alive is None and handle.spec.kind == "journal" and stale:
            reason = "stale heartbeat"
        if reason is None or not _fail_running(handle, trial_id, reason):
            continue  # alive, or another process recovered it first
        requeue(handle.study, handle.storage.get_trial(trial_id), reason)
        recovered += 1
    if handle.spec.has_native_heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            before = _STALE[0]
            optuna.storages.fail_stale_trials(handle.study)
            recovered += _STALE[0] - before
    return recovered


def _fail_running(handle: StudyHandle, trial_id: int, reason: str) -> bool:
    """RUNNING -> FAIL with ``reason`` recorded, atomically; whether this call made it."""
    import optuna

    rdb = rdb_storage(handle.storage)
    if rdb is not None:  # one conditional UPDATE: Optuna's read-then-write races on SQLite
        import sqlalchemy

        now = _now()[1]
        fail = sqlalchemy.text(
            "UPDATE trials SET state = 'FAIL', datetime_complete = :now "
            "WHERE trial_id = :tid AND state = 'RUNNING'"
        )

        token = uuid.uuid4().hex

        def end(connection: Any) -> bool:
            if connection.execute(fail, {"now": now, "tid": trial_id}).rowcount != 1:
                return False
            _put_attrs(connection, trial_id, {ENDED: reason, WRITE: token})
            return True

        return retried_sql(rdb, handle.spec, end, write=True, landed=_landed(token, trial_id))
    try:
        handle.storage.set_trial_system_attr(trial_id, ENDED, reason)
        return bool(
            handle.storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        )
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
