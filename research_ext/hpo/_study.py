"""A study in its storage: its configuration resolved, opened (or created), its trials counted.

Trial attributes of ours (``research_ext:*``) are named here; the ticket queue and crash recovery
are in ``_queue.py``, process liveness in ``_liveness.py``, the loops in ``_owner_loop.py`` (what
``run`` does) and ``_worker_loop.py`` (what every process running trials does).
"""

import dataclasses
import json
import math
import pathlib
import random
import time
import warnings
from typing import Any

from research_ext.core import check_int, format_message
from research_ext.errors import ConfigError
from research_ext.hpo._config import StudyConfig, load_config
from research_ext.hpo._samplers import make_pruner, make_sampler
from research_ext.hpo._storage import StorageSpec, absolute_storage, resolve_storage
from research_ext.hpo._storage_faults import retried_sql
from research_ext.hpo._storage_open import open_storage

__all__ = ["StudyHandle", "open_study", "resolve_config"]

PREFIX = "research_ext:"


ENDED = PREFIX + "ended"  # why a FAIL trial ended: error, interrupted, terminated, crashed, surplus


OWNER = PREFIX + "worker"  # {"host", "pid", "start"} of the process running a trial


HEARTBEAT = PREFIX + "heartbeat"  # unix time, journal storage only (RDB has its own table)


RETRY_OF = PREFIX + "retry_of"  # number of the trial a WAITING copy replaces


RETRY_REASON = PREFIX + "retry_reason"


REPLACES = PREFIX + "replaces"  # number of the failed trial a fresh (re-sampled) trial replaces


TARGET = PREFIX + "target"  # study attribute: {"n_trials"} of the last run, overrides included


TRIAL_DIR = PREFIX + "trial_dir"


TICKET = PREFIX + "ticket"


# the id of the last transaction of ours that changed the trial's state (create, claim, fail): a
# write retried after its commit landed unacknowledged finds it and is not done a second time
WRITE = PREFIX + "write"


IDLE = PREFIX + "idle:"  # study attribute per worker waiting for a trial: its last look, unix time


@dataclasses.dataclass
class StudyHandle:
    """An open study with its configuration and storage (what the runner and inspectors share)."""

    config: StudyConfig
    spec: StorageSpec
    storage: Any
    study: Any
    study_id: int
    idle: tuple[float, int] = (-math.inf, 0)  # (monotonic time of the last look, idle workers)
    target: int | None = None  # n_trials stored in the study by its last run

    @property
    def n_trials(self) -> int:
        """The number of finished trials the study aims for.

        The target the last ``run`` stored in the study (its ``--n-trials`` override included),
        so every host sees the same; the study file's ``n_trials`` before any run stored one.
        """
        return self.config.n_trials if self.target is None else self.target

    def store_target(self) -> None:
        """Record this configuration's ``n_trials`` in the study (``run`` does, when it starts)."""
        self.storage.set_study_system_attr(
            self.study_id, TARGET, {"n_trials": self.config.n_trials}
        )
        self.target = self.config.n_trials


def _stored_target(storage: Any, study_id: int) -> int | None:
    stored = storage.get_study_system_attrs(study_id).get(TARGET)
    if isinstance(stored, dict) and isinstance(stored.get("n_trials"), int):
        return int(stored["n_trials"])
    return None


def storage_spec(config: StudyConfig) -> StorageSpec:
    """Resolve the config's storage (default: ``<study file stem>.db`` next to the study file)."""
    stem = config.path.stem if config.path is not None else config.name
    return resolve_storage(config.storage, base_dir=config.base_dir, default_stem=stem)


def open_study(
    config: StudyConfig, *, create: bool = True, spec: StorageSpec | None = None
) -> StudyHandle:
    """Create or load the study of ``config`` in its storage.

    Args:
        config: a validated study configuration.
        create: create the study if it does not exist (otherwise it must).
        spec: an already-opened storage's spec (reuses nothing; for tests).

    Returns:
        A :class:`StudyHandle` holding the Optuna study.

    Raises:
        ConfigError: if the study exists with other directions, or does not exist and
            ``create`` is false.
    """
    spec = spec or storage_spec(config)
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return _open_study(config, create, spec)
        except Exception as err:
            if not create or attempt == _CREATE_ATTEMPTS - 1 or not _lost_creation_race(err):
                raise
            # another process is creating the same schema or study: what it made is there soon
            time.sleep(0.05 * (attempt + 1) * (1.0 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


_CREATE_ATTEMPTS = 8


def _lost_creation_race(err: BaseException) -> bool:
    """Whether ``err`` (or what it was raised from) says another process created it first."""
    import sqlalchemy

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.IntegrityError):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and "already exists" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _open_study(config: StudyConfig, create: bool, spec: StorageSpec) -> StudyHandle:
    import optuna

    if not create and spec.path is not None and not spec.path.exists():
        raise ConfigError(
            f"open_study: no study named {config.name!r}: {spec.path} does not exist; "
            "start it with `research-ext tune run`"
        )
    from research_ext.hpo._queue import on_stale  # the queue builds on this module

    raw = open_storage(
        spec,
        heartbeat_interval=config.heartbeat_interval if spec.has_native_heartbeat else None,
        grace_period=config.grace_period if spec.has_native_heartbeat else None,
        on_stale=on_stale,
    )
    storage = optuna.storages.get_storage(raw)
    # every process builds the same sampler: the runner reseeds it for each trial (_seeding.py)
    sampler, pruner = make_sampler(config), make_pruner(config)
    directions = [optuna.study.StudyDirection[d.upper()] for d in config.directions]
    try:
        study_id = storage.get_study_id_from_name(config.name)
    except KeyError:
        if not create:
            raise ConfigError(
                f"open_study: no study named {config.name!r} in {spec.display}; "
                "start it with `research-ext tune run`"
            ) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(
                storage=storage,
                study_name=config.name,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
            if config.metrics != _default_metrics(len(directions)):
                study.set_metric_names(list(config.metrics))
        study_id = storage.get_study_id_from_name(config.name)
        return StudyHandle(config, spec, storage, study, study_id)
    existing = storage.get_study_directions(study_id)
    if list(existing) != directions:
        raise ConfigError(
            f"open_study: study {config.name!r} in {spec.display} has directions "
            f"{[d.name.lower() for d in existing]}, the study file says {list(config.directions)}"
        )
    study = optuna.load_study(
        study_name=config.name, storage=storage, sampler=sampler, pruner=pruner
    )
    handle = StudyHandle(config, spec, storage, study, study_id)
    handle.target = _stored_target(storage, study_id)
    return handle


def _default_metrics(n: int) -> tuple[str, ...]:
    return ("value",) if n == 1 else tuple(f"value_{i}" for i in range(n))


def rdb_storage(storage: Any) -> Any:
    """The underlying ``RDBStorage`` (``get_storage`` wraps it in a cache), or ``None``."""
    import optuna

    inner = getattr(storage, "_backend", storage)
    return inner if isinstance(inner, optuna.storages.RDBStorage) else None


def counts(handle: StudyHandle) -> dict[str, int]:
    """Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``), fast.

    On an RDB storage one ``GROUP BY`` query answers (milliseconds on 10k trials); other storages
    count their in-memory trials.
    """
    result = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    rdb = rdb_storage(handle.storage)
    if rdb is not None:
        import sqlalchemy

        query = sqlalchemy.text(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state"
        )
        rows = retried_sql(
            rdb, handle.spec, lambda c: c.execute(query, {"sid": handle.study_id}).fetchall()
        )
        for state, n in rows:
            result[getattr(state, "name", str(state))] = int(n)
        return result
    for trial in handle.storage.get_all_trials(handle.study_id, deepcopy=False):
        result[trial.state.name] += 1
    return result


def n_done(c: dict[str, int]) -> int:
    """Finished trials that count toward ``n_trials``: complete and pruned."""
    return c["COMPLETE"] + c["PRUNED"]


def dump_json(value: Any) -> str:
    """JSON for the CLI's machine-readable outputs (NaN and infinities as null)."""
    return json.dumps(value, default=str, allow_nan=False)


def resolve_config(
    config: StudyConfig | str | pathlib.Path,
    n_trials: int | None,
    storage: str | None,
    study_name: str | None,
) -> StudyConfig:
    """The study configuration a ``run`` or ``worker`` call means (file loaded, overrides applied)."""
    if isinstance(config, StudyConfig):
        if n_trials is not None:
            check_int("run", "n_trials", n_trials, minimum=1)
            config = dataclasses.replace(config, n_trials=n_trials)
        if storage is not None:
            config = dataclasses.replace(config, storage=absolute_storage(storage))
        if study_name is not None:
            config = dataclasses.replace(config, name=study_name)
        return config
    if not isinstance(config, str | pathlib.Path):
        raise TypeError(
            format_message("run", "config", "a StudyConfig or a study file path", config)
        )
    storage = absolute_storage(storage) if storage is not None else None
    return load_config(config, n_trials=n_trials, storage=storage, name=study_name)
