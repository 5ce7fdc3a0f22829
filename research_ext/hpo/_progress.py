"""What a run or a worker says while it works: a bar on a terminal, one line per trial otherwise.

On a terminal (or in a notebook) ``run`` shows a progress bar whose rate counts only the trials
finished by this run over this run's time, so a resumed study does not report thousands of trials
per second. When the output is not a terminal (``make demo > log``, a batch job) every trial the
study finishes during the run is one line on stderr, e.g.::

    trial 7 complete: loss=0.0123 (3.2 s) | 8/20 finished, 0.31 trial/s this run, best 0.0123

``verbose`` logs these lines on a terminal too (above the bar). A worker joined with
``research-ext tune worker`` logs the trials it ran and, at its end, what it ran in all.
"""

import logging
import math
import sys
import time
from typing import Any

from research_ext.core import is_interactive, progress
from research_ext.hpo._storage_faults import retried_sql
from research_ext.hpo._study import ENDED, StudyHandle, counts, n_done, rdb_storage

__all__ = ["RunProgress", "trial_line"]

_FINISHED = ("COMPLETE", "PRUNED", "FAIL")

logger = logging.getLogger("research_ext.hpo")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_line(handle: StudyHandle, trial: Any) -> str:
    """One line for a finished trial: number, state, value(s) or last report, duration.

    Example (a complete trial of a one-objective study named ``loss``)::

        trial 7 complete: loss=0.0123 (3.2 s)
    """
    state = trial.state.name.lower()
    ended = trial.system_attrs.get(ENDED)
    label = f"{state} ({ended})" if ended else state
    if trial.values is not None:
        values = ", ".join(
            f"{m}={_number(v)}" for m, v in zip(handle.config.metrics, trial.values, strict=True)
        )
    elif trial.intermediate_values:
        step = max(trial.intermediate_values)
        values = f"at step {step}, last report {_number(trial.intermediate_values[step])}"
    elif "error" in trial.user_attrs:
        values = str(trial.user_attrs["error"])[:120]
    else:
        values = ""
    duration = trial.duration
    took = "" if duration is None else f" ({duration.total_seconds():.1f} s)"
    return f"trial {trial.number} {label}{': ' if values else ''}{values}{took}"


def _best(handle: StudyHandle) -> str:
    if handle.config.is_multi_objective:
        return ""
    try:
        return f"best {handle.study.best_value:.4g}"
    except ValueError:
        return ""


def _write(line: str, bar: Any) -> None:
    if bar is not None and not bar.disable:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class RunProgress:
    """The progress of one ``run`` (or one worker): bar, per-trial lines, this run's rate.

    Args:
        handle: the open study.
        show_progress: the bar on/off; ``None`` shows it only on a terminal or in a notebook.
        log_trials: one line per finished trial on stderr; ``None`` logs them exactly when the
            output is not a terminal and ``show_progress`` is ``None``.
        interval: seconds between looks at the storage when :meth:`poll` is called often.
        prefix: put before every line (e.g. ``"worker 2: "``).
    """

    def __init__(
        self,
        handle: StudyHandle,
        *,
        show_progress: bool | None = None,
        log_trials: bool | None = None,
        interval: float = 0.5,
        prefix: str = "",
    ) -> None:
        self.handle = handle
        interactive = is_interactive()
        bar_on = interactive if show_progress is None else show_progress
        if log_trials is None:
            log_trials = show_progress is None and not interactive
        self.log_trials = log_trials
        self.interval, self.prefix = interval, prefix
        self.start = time.monotonic()
        self.low = 0  # every trial id below this one was finished at the last look
        self.seen = self._finished_ids()
        self.done_before = n_done(counts(handle))
        self.finished_here = 0
        self.failed_here = 0
        self.last_poll = -math.inf
        self.bar = progress(
            total=handle.n_trials,
            initial=min(self.done_before, handle.n_trials),
            desc=handle.config.name,
            enable=bar_on,
            unit="trial",
        )

    def _finished_ids(self) -> set[int]:
        """Ids of the finished trials, looking only past the oldest unfinished one seen last.

        Trials below ``self.low`` were all finished at the last look, so a long study costs a
        look at its active window, not at every trial, after each trial.
        """
        rdb = rdb_storage(self.handle.storage)
        if rdb is not None:
            import sqlalchemy

            query = sqlalchemy.text(
                "SELECT trial_id, state FROM trials WHERE study_id = :sid AND trial_id >= :low"
            )
            finished: set[int] = set()
            unfinished: list[int] = []
            params = {"sid": self.handle.study_id, "low": self.low}
            rows = retried_sql(rdb, self.handle.spec, lambda c: c.execute(query, params).fetchall())
            for trial_id, state in rows:
                if getattr(state, "name", str(state)) in _FINISHED:
                    finished.add(int(trial_id))
                else:
                    unfinished.append(int(trial_id))
            top = max(finished | set(unfinished), default=self.low - 1)
            self.low = min(unfinished, default=top + 1)
            return finished
        import optuna

        states = tuple(getattr(optuna.trial.TrialState, s) for s in _FINISHED)
        trials = self.handle.storage.get_all_trials(
            self.handle.study_id, deepcopy=False, states=states
        )
        return {int(t._trial_id) for t in trials}

    def rate(self) -> float:
        """Trials finished (complete or pruned) by this run per second of this run."""
        elapsed = time.monotonic() - self.start
        return self.finished_here / elapsed if elapsed > 0 else 0.0

    def _summary(self, done: int) -> str:
        parts = [
            f"{done}/{self.handle.n_trials} finished",
            f"{self.rate():.2g} trial/s this run",
        ]
        best = _best(self.handle)
        return ", ".join(parts + ([best] if best else []))

    def poll(self, force: bool = False) -> None:
        """Log the trials finished since the last look and move the bar.

        Progress never fails a run: a storage error here (a server restarting) skips this look;
        the run's own storage calls ride it out or report it.
        """
        try:
            self._poll(force)
        except Exception as err:
            logger.debug("progress: skipped a look at the study: %r", err)

    def _poll(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_poll < self.interval:
            return
        self.last_poll = now
        if not self.log_trials and self.bar.disable:
            return  # nobody is told: no need to look
        new_ids = self._finished_ids() - self.seen
        self.seen |= new_ids
        trials = sorted((self.handle.storage.get_trial(i) for i in new_ids), key=lambda t: t.number)
        trials = [t for t in trials if t.system_attrs.get(ENDED) != "surplus"]
        for trial in trials:
            if trial.state.name == "FAIL":
                self.failed_here += 1
            else:
                self.finished_here += 1
        done = n_done(counts(self.handle))
        if self.log_trials:
            for trial in trials:
                _write(
                    f"{self.prefix}{trial_line(self.handle, trial)} | {self._summary(done)}",
                    self.bar,
                )
        if not self.bar.disable:
            self.bar.n = min(done, self.handle.n_trials)
            self.bar.set_postfix_str(_best(self.handle), refresh=False)
            self.bar.refresh()

    def own(self, trial_id: int) -> None:
        """Log one trial this process ran (a worker reports its own trials only)."""
        try:
            self._own(trial_id)
        except Exception as err:  # progress never fails a worker
            logger.debug("progress: could not log trial id %s: %r", trial_id, err)

    def _own(self, trial_id: int) -> None:
        self.seen.add(trial_id)
        trial = self.handle.storage.get_trial(trial_id)
        if trial.system_attrs.get(ENDED) == "surplus":
            return
        if trial.state.name == "FAIL":
            self.failed_here += 1
        else:
            self.finished_here += 1
        if self.log_trials:
            done = n_done(counts(self.handle))
            _write(f"{self.prefix}{trial_line(self.handle, trial)} | {self._summary(done)}", None)

    def close(self, poll: bool = True) -> None:
        """Log what is left (unless ``poll`` is false) and the run's total."""
        if poll:
            self.poll(force=True)
        self.bar.close()
        if self.log_trials:
            try:
                done = n_done(counts(self.handle))
            except Exception as err:
                logger.debug("progress: could not count the study's trials: %r", err)
                return
            elapsed = time.monotonic() - self.start
            failed = f", {self.failed_here} failed" if self.failed_here else ""
            print(
                f"{self.prefix}study {self.handle.config.name!r}: {self.finished_here} trials "
                f"finished here{failed} in {elapsed:.1f} s "
                f"({self.rate():.2g} trial/s); {done}/"
                f"{self.handle.n_trials} finished",
                file=sys.stderr,
                flush=True,
            )
