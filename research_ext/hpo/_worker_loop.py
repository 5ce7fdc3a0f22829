"""The worker's loop: take a trial, run the objective with a heartbeat, tell the result.

Every process that runs trials runs :func:`work`: the ``run`` that owns a study (with
``owner=True``: it creates trials and issues tickets), the workers it starts, and workers joined
by hand with ``research-ext tune worker`` (:func:`worker`, the entry point of a worker process).

Signals: SIGTERM or Ctrl-C inside the objective ends the trial at once, marks it ``terminated`` /
``interrupted`` (a FAIL whose ``research_ext:ended`` says why, never an objective failure) and
re-queues it with the same parameters; outside the objective they only stop the loop after the
current bookkeeping, so the storage is never left half-written. An objective calling
``sys.exit`` fails its trial (the exit code recorded) instead of ending the process.

A worker started by ``run`` stops when that run dies (its ``owner_pid``); a joined worker is
independent: with no ticket for ``patience`` seconds it creates trials itself.
"""

import dataclasses
import logging
import math
import os
import pathlib
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from research_ext.errors import StudyFailedError
from research_ext.hpo._config import StudyConfig
from research_ext.hpo._liveness import OWNER_ENV, BackgroundLoop, OwnerWatch, process_identity
from research_ext.hpo._objective import (
    DP_SGD_ATTR,
    Reporter,
    injected_arguments,
    objective_for_trial,
    split_result,
)
from research_ext.hpo._queue import (
    admitted,
    announce_idle,
    new_trial,
    next_trial,
    pop_ticket,
    recover,
    requeue,
    trial_dir,
)
from research_ext.hpo._seeding import reseed, sample_index, trial_seed
from research_ext.hpo._space import sample_params
from research_ext.hpo._study import (
    ENDED,
    HEARTBEAT,
    OWNER,
    StudyHandle,
    counts,
    n_done,
    open_study,
    rdb_storage,
    resolve_config,
)

__all__ = ["Terminated", "WorkResult", "apply_overrides", "run_trial", "work", "worker"]

logger = logging.getLogger("research_ext.hpo")


class Terminated(BaseException):  # noqa: N818 - mirrors KeyboardInterrupt, not an error
    """Raised inside the objective when the worker receives SIGTERM."""


@dataclasses.dataclass
class WorkResult:
    """What one call of :func:`work` did."""

    ran: int = 0
    failures: int = 0
    stopped: str | None = None  # "interrupted" or "terminated" when a signal ended the loop


class SignalGuard:
    def __init__(self) -> None:
        self.in_objective = False
        self.stop: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.stop is None
        if first:
            self.stop = "terminated" if signum == signal.SIGTERM else "interrupted"
        if self.in_objective and first:
            self.in_objective = False
            if signum == signal.SIGTERM:
                raise Terminated()
            raise KeyboardInterrupt()


class _Heartbeat(BackgroundLoop):
    """Records a running trial's heartbeat every ``interval`` seconds from a daemon thread."""

    def __init__(self, handle: StudyHandle, trial_id: int) -> None:
        super().__init__(active=handle.spec.kind != "memory")
        self.handle, self.trial_id = handle, trial_id

    def _loop(self) -> None:
        rdb = rdb_storage(self.handle.storage)
        while True:
            try:
                if rdb is not None:
                    rdb.record_heartbeat(self.trial_id)
                else:
                    self.handle.storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())
            except Exception as err:  # a storage hiccup must not kill a healthy trial
                logger.warning("heartbeat of trial id %s failed: %r", self.trial_id, err)
            if self.stop.wait(self.handle.config.heartbeat_interval):
                return


def _kwargs(
    handle: StudyHandle, fn: Callable[..., Any], trial: Any, trial_id: int
) -> dict[str, Any]:
    kwargs = dict(handle.config.args)
    wanted = injected_arguments(fn)
    if "reporter" in wanted:
        kwargs["reporter"] = Reporter(trial, handle.config)
    if "trial_dir" in wanted:
        directory = trial_dir(handle, handle.storage.get_trial(trial_id))
        directory.mkdir(parents=True, exist_ok=True)
        kwargs["trial_dir"] = directory
    if "trial" in wanted:
        kwargs["trial"] = trial
    return kwargs


def _constraints(handle: StudyHandle, named: dict[str, float]) -> dict[str, float]:
    config = handle.config
    bounds = list(config.constraints)
    if config.epsilon_budget is not None and config.epsilon_metric is not None:
        bounds.append((config.epsilon_metric, config.epsilon_budget))
    out = {}
    for metric, bound in bounds:
        if metric not in named:
            raise KeyError(
                f"constraint on `{metric}` needs the objective to return or report it; "
                f"got metrics {sorted(named)}"
            )
        out[metric] = named[metric] - bound
    return out


def _tell(study: Any, trial: Any, values: list[float] | None = None, state: Any = None) -> None:
    """``study.tell`` without reading the finished trial back: one storage read less a trial.

    ``Study.tell`` returns a copy of the told trial, which costs an RDB storage a read of the
    whole trial (about a millisecond); the outcome is the same through the function that
    ``Study.tell`` and ``Study.optimize`` share (where this Optuna has it).
    """
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:  # pragma: no cover - another Optuna layout: the public call
        study.tell(trial, values, state=state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)


def run_trial(handle: StudyHandle, trial_id: int, guard: SignalGuard) -> str:
    """Run the objective on RUNNING trial ``trial_id`` and tell the outcome; return the outcome.

    A trial that :func:`admitted` refuses (more processes created or claimed trials than the
    study needs) is failed as ``surplus`` without running.

    Outcomes: ``"complete"``, ``"pruned"``, ``"error"``, ``"interrupted"``, ``"terminated"``,
    ``"surplus"``.
    """
    import optuna

    storage, study, config = handle.storage, handle.study, handle.config
    if rdb_storage(storage) is None:  # RDB claims record the owner in the same transaction
        storage.set_trial_system_attr(trial_id, OWNER, process_identity())
    if not admitted(handle, trial_id):  # other processes already hold n_trials live trials
        storage.set_trial_system_attr(trial_id, ENDED, "surplus")
        storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        return "surplus"
    if config.seed is not None:  # the trial's draws depend on the study seed and the trial only
        reseed(study.sampler, trial_seed(config.seed, sample_index(handle, trial_id)))
    trial = optuna.trial.Trial(study, trial_id)
    fn = objective_for_trial(config.entry, config.base_dir, config.args)
    kwargs = _kwargs(handle, fn, trial, trial_id)
    reporter = kwargs.get("reporter")
    outcome = "complete"
    error: Exception | None = None
    values: tuple[float, ...] = ()
    extra: dict[str, float] = {}
    with _Heartbeat(handle, trial_id):
        try:
            params = sample_params(trial, config.space)
            guard.in_objective = True
            try:
                result = fn(params, **kwargs)
            finally:
                guard.in_objective = False
            values, extra = split_result(result, config.metrics)
        except optuna.TrialPruned:
            outcome = "pruned"
        except KeyboardInterrupt:
            outcome = "interrupted"
        except Terminated:
            outcome = "terminated"
        except SystemExit as err:  # the objective's exit ends its trial, never this process
            outcome = "error"
            error = RuntimeError(f"the objective called sys.exit({err.code!r})")
            logger.warning("trial %d failed: %s", trial.number, error)
        except Exception as err:
            outcome, error = "error", err
            logger.warning("trial %d failed:\n%s", trial.number, traceback.format_exc())
    metrics = dict(reporter.metrics) if isinstance(reporter, Reporter) else {}
    metrics.update(extra)
    if outcome == "complete":
        try:
            named = {**metrics, **dict(zip(config.metrics, values, strict=True))}
            for key, value in _constraints(handle, named).items():
                trial.set_constraint(key, value)
        except KeyError as err:
            outcome, error = "error", err
            logger.warning("trial %d failed: %s", trial.number, err.args[0])
    for key, value in metrics.items():
        if math.isfinite(value):
            trial.set_user_attr(key, value)
    if isinstance(reporter, Reporter) and reporter.mechanism is not None:
        trial.set_user_attr(DP_SGD_ATTR, list(reporter.mechanism))
    if isinstance(reporter, Reporter) and reporter.intermediate and config.is_multi_objective:
        trial.set_user_attr(
            "intermediate_values", {str(k): v for k, v in reporter.intermediate.items()}
        )
    if outcome == "complete":
        _tell(study, trial, list(values))
    elif outcome == "pruned":
        _tell(study, trial, state=optuna.trial.TrialState.PRUNED)
    else:
        storage.set_trial_system_attr(trial_id, ENDED, outcome)
        if error is not None:
            trial.set_user_attr("error", repr(error)[:1000])
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        # A dead or stopped trial resumes with its parameters; a failing one is re-sampled.
        requeue(study, storage.get_trial(trial_id), outcome, same_params=outcome != "error")
    return outcome


def work(
    handle: StudyHandle,
    *,
    deadline: float | None = None,
    wait: bool = False,
    on_trial: Callable[[str, int], None] | None = None,
    poll_interval: float = 0.5,
    owner: bool = False,
    announce: bool = True,
    owner_pid: int | None = None,
    patience: float = 5.0,
) -> WorkResult:
    """Run tickets of ``handle``'s study until none is left (or the deadline, or a signal).

    Args:
        handle: the open study.
        deadline: ``time.monotonic()`` value after which no new trial starts.
        wait: keep polling until the study has ``n_trials`` finished trials (other workers'
            trials may be re-queued); otherwise return as soon as no ticket is waiting.
        on_trial: called with each trial's outcome and trial id once it is told.
        poll_interval: seconds between polls when waiting.
        owner: this process owns the run: it creates the trials (and tickets for other
            workers); other workers only take waiting trials.
        announce: while waiting, tell the owner (so it issues this worker tickets); a worker that
            announced and got no ticket for ``patience`` seconds creates a trial itself (the
            owner may be busy in a long trial, or gone), so a joined worker never waits forever.
        owner_pid: the pid of the ``run`` that started this worker: the worker stops (SIGTERM
            semantics) within a second of that process's death.
        patience: see ``announce``.

    Returns:
        A :class:`WorkResult`.

    Raises:
        StudyFailedError: after ``max_failures`` objective failures in this call.
        KeyboardInterrupt: after Ctrl-C, once the running trial is marked and re-queued.
    """
    result = WorkResult()
    announced, announced_at, recovered = False, -math.inf, -math.inf
    idle_since: float | None = None
    with SignalGuard() as guard, OwnerWatch(owner_pid):
        while guard.stop is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if time.monotonic() - recovered >= 1.0:  # a dead trial waits at most a second more
                recover(handle)
                recovered = time.monotonic()
            trial_id = next_trial(handle) if owner else pop_ticket(handle)
            if (
                trial_id is None
                and announced
                and idle_since is not None
                and time.monotonic() - idle_since >= patience
            ):
                trial_id = new_trial(handle)  # no ticket came: the owner is busy or gone
            if trial_id is None:
                idle_since = time.monotonic() if idle_since is None else idle_since
                if not wait or n_done(counts(handle)) >= handle.n_trials:
                    break
                if announce and time.monotonic() - announced_at > 2.0:
                    announce_idle(handle)
                    announced, announced_at = True, time.monotonic()
                time.sleep(poll_interval)
                continue
            idle_since = None
            if announced:
                announce_idle(handle, idle=False)
                announced = False
            outcome = run_trial(handle, trial_id, guard)
            result.ran += 1
            if on_trial is not None:
                on_trial(outcome, trial_id)
            if outcome in ("interrupted", "terminated"):
                guard.stop = guard.stop or outcome
                break
            if outcome == "error":
                result.failures += 1
                if result.failures >= handle.config.max_failures:
                    raise StudyFailedError(
                        f"run: the objective failed {result.failures} times "
                        f"(study.max_failures={handle.config.max_failures}); see the log above "
                        "and `research-ext tune trials --state fail`"
                    )
        result.stopped = guard.stop
    if result.stopped == "interrupted":
        raise KeyboardInterrupt()
    return result


def worker(
    config: StudyConfig | str | pathlib.Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    index: int = 0,
    exit_when_idle: bool = False,
    time_left: float | None = None,
    poll_interval: float = 0.5,
    announce: bool = True,
    owner_pid: int | None = None,
    patience: float = 5.0,
    log_trials: bool = False,
) -> int:
    """Join a study started by :func:`run` (on this or another machine) and run its trials.

    Args:
        config: a :class:`StudyConfig` or the path of a study file.
        storage: the shared storage (e.g. ``postgresql://user@host/db``).
        study_name: overrides the study's name.
        n_trials: overrides the study's target number of finished trials (default: the target
            the study's ``run`` stored in it, else the study file's).
        index: this worker's index (names it; sampler seeds depend on the trial, not the worker).
        exit_when_idle: return as soon as no trial is waiting (instead of waiting for the study
            to complete, to pick up re-queued trials).
        time_left: seconds after which no new trial starts.
        poll_interval: seconds between looks for a waiting trial.
        announce: tell the run's owner this worker waits (not needed by workers ``run`` forks);
            with no ticket after ``patience`` seconds the worker creates trials itself.
        owner_pid: the ``run`` process that started this worker (default: the
            ``RESEARCH_EXT_HPO_OWNER`` environment variable, set by ``run``); the worker stops
            within a second of its death. A worker joined by hand has no owner.
        patience: seconds an announced worker waits for a ticket before creating a trial.
        log_trials: log one line on stderr per trial this worker ran, and a total at its end
            (``research-ext tune worker`` does; the workers ``run`` starts leave it to ``run``).

    Returns:
        The number of trials this worker ran.

    Raises:
        ConfigError: if the study does not exist in the storage.
        StudyFailedError: after ``max_failures`` objective failures.
    """
    config = resolve_config(config, n_trials, storage, study_name)
    handle = open_study(config, create=False)
    if n_trials is not None:  # else the target the owner's run stored in the study
        handle.target = n_trials
    deadline = None if time_left is None else time.monotonic() + time_left
    if owner_pid is None and os.environ.get(OWNER_ENV):
        owner_pid = int(os.environ[OWNER_ENV])
    from research_ext.hpo._progress import RunProgress

    log = RunProgress(
        handle, show_progress=False, log_trials=log_trials, prefix=f"worker {index}: "
    )
    try:
        result = work(
            handle,
            deadline=deadline,
            wait=not exit_when_idle,
            poll_interval=poll_interval,
            announce=announce,
            owner_pid=owner_pid,
            patience=patience,
            on_trial=lambda _, trial_id: log.own(trial_id),
        )
    finally:
        log.close(poll=False)
    if result.stopped == "terminated":
        raise Terminated()
    return result.ran


_OVERRIDABLE = ("args", "trials_dir", "max_failures", "heartbeat_interval", "grace_period")


def worker_overrides(config: StudyConfig) -> dict[str, Any]:
    """Fields a worker process must take from this config rather than re-read from the file."""
    return {
        k: str(v) if k == "trials_dir" else v
        for k, v in ((k, getattr(config, k)) for k in _OVERRIDABLE)
    }


def apply_overrides(config: StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """Inverse of :func:`worker_overrides` (used by the worker command)."""
    values = {k: v for k, v in overrides.items() if k in _OVERRIDABLE}
    if "trials_dir" in values:
        values["trials_dir"] = pathlib.Path(values["trials_dir"])
    return dataclasses.replace(config, **values)
