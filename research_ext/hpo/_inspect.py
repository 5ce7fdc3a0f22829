"""Looking at a study: status, trial tables, best trials, the Pareto front, importance, export."""

import csv
import dataclasses
import io
import json
import pathlib
from collections.abc import Sequence
from typing import Any

from research_ext.core import check_one_of, format_message
from research_ext.hpo._config import StudyConfig, load_config
from research_ext.hpo._study import (
    ENDED,
    REPLACES,
    RETRY_OF,
    RETRY_REASON,
    StudyHandle,
    counts,
    n_done,
    open_study,
    rdb_storage,
    storage_spec,
)

__all__ = [
    "StudyStatus",
    "best_params",
    "export_best",
    "format_rows",
    "importance",
    "importance_table",
    "pareto_front",
    "status",
    "trials_table",
]


def as_handle(study: Any) -> StudyHandle:
    """Accept a handle, a :class:`StudyConfig` or a study file path; open the existing study."""
    if isinstance(study, StudyHandle):
        return study
    if isinstance(study, str | pathlib.Path):
        study = load_config(study, validate_objective=False)
    if isinstance(study, StudyConfig):
        # looking never writes: an archived, read-only database can be shown as it is
        return open_study(study, create=False, spec=storage_spec(study).as_read_only())
    raise TypeError(
        format_message("research_ext.hpo", "study", "a StudyConfig or a study file path", study)
    )


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """A study's progress: trials per state against the target, and the best value so far.

    Attributes:
        name: the study's name.
        storage: the storage URL (or journal path), its password redacted.
        n_trials: target number of finished (complete + pruned) trials.
        states: number of trials per Optuna state.
        finished: complete + pruned.
        best_value: best objective value (single-objective studies), else ``None``.
        best_trial: number of the best trial, else ``None``.
    """

    name: str
    storage: str
    n_trials: int
    states: dict[str, int]
    finished: int
    best_value: float | None
    best_trial: int | None

    @property
    def is_complete(self) -> bool:
        """Whether the study has its ``n_trials`` finished trials and none running."""
        return self.finished >= self.n_trials and self.states.get("RUNNING", 0) == 0

    def __str__(self) -> str:
        states = ", ".join(f"{k.lower()} {v}" for k, v in self.states.items() if v)
        best = (
            ""
            if self.best_value is None
            else f"; best {self.best_value:.6g} (trial {self.best_trial})"
        )
        return (
            f"study {self.name!r} in {self.storage}: {self.finished}/{self.n_trials} finished "
            f"({states or 'no trials'}){best}"
        )


def status(study: Any) -> StudyStatus:
    """Count a study's trials by state; one SQL query on RDB storages (fast on 10k trials).

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.

    Returns:
        A :class:`StudyStatus`.
    """
    handle = as_handle(study)
    c = counts(handle)
    best_value = best_trial = None
    if not handle.config.is_multi_objective and c["COMPLETE"]:
        storage = rdb_storage(handle.storage) or handle.storage
        trial = storage.get_best_trial(handle.study_id)
        best_value, best_trial = float(trial.value), int(trial.number)
    return StudyStatus(
        name=handle.config.name,
        storage=handle.spec.display,
        n_trials=handle.n_trials,
        states=c,
        finished=n_done(c),
        best_value=best_value,
        best_trial=best_trial,
    )


def _state_label(trial: Any) -> str:
    label = trial.state.name.lower()
    ended = trial.system_attrs.get(ENDED)
    return f"{label} ({ended})" if ended else label


def _row(trial: Any, metrics: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"number": trial.number, "state": _state_label(trial)}
    values = trial.values or [None] * len(metrics)
    for name, value in zip(metrics, values, strict=True):
        # a pruned trial has no values; show what it reported (e.g. the epsilon it spent)
        row[name] = trial.user_attrs.get(name) if value is None else value
    for key, value in trial.params.items():
        row[f"params.{key}"] = value
    for key, value in trial.user_attrs.items():
        if key not in row and isinstance(value, int | float | str):
            row[key] = value
    duration = trial.duration
    row["duration_s"] = None if duration is None else round(duration.total_seconds(), 3)
    if RETRY_OF in trial.system_attrs:  # the same parameters, run again
        row["retry_of"] = trial.system_attrs[RETRY_OF]
        row["retry_reason"] = trial.system_attrs.get(RETRY_REASON)
    elif REPLACES in trial.system_attrs:  # fresh parameters in place of a failed trial
        row["replaces"] = trial.system_attrs[REPLACES]
        row["retry_reason"] = trial.system_attrs.get(RETRY_REASON)
    return row


def trials_table(study: Any, *, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per trial: number, state (with why a FAIL ended), objective values, parameters.

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.
        states: keep only these states (``"complete"``, ``"pruned"``, ``"fail"``, ``"running"``,
            ``"waiting"``).

    Returns:
        A list of dicts (``params.NAME`` columns for parameters).
    """
    handle = as_handle(study)
    wanted = None if states is None else {s.upper() for s in states}
    if wanted is not None:
        for state in wanted:
            check_one_of(
                "trials_table",
                "states",
                state,
                ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"),
            )
    trials = handle.storage.get_all_trials(handle.study_id, deepcopy=False)
    metrics = handle.config.metrics
    return [_row(t, metrics) for t in trials if wanted is None or t.state.name in wanted]


def format_rows(rows: list[dict[str, Any]], fmt: str = "table") -> str:
    """Render rows as an aligned text table, CSV or JSON lines (``fmt``: table, csv, json)."""
    check_one_of("format_rows", "fmt", fmt, ("table", "csv", "json"))
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if fmt == "json":
        return json.dumps(rows, default=str, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def best_params(study: Any) -> list[dict[str, Any]]:
    """The best trial (single objective) or the Pareto-optimal trials: number, values, params."""
    handle = as_handle(study)
    if handle.config.is_multi_objective:
        trials = handle.study.best_trials
    else:
        try:
            trials = [handle.study.best_trial]
        except ValueError:
            trials = []
    metrics = handle.config.metrics
    return [
        {
            "number": t.number,
            "values": dict(zip(metrics, t.values, strict=True)),
            "params": dict(t.params),
        }
        for t in trials
    ]


def pareto_front(study: Any) -> list[dict[str, Any]]:
    """The Pareto-optimal complete trials of a study, sorted by the first objective.

    Feasibility counts: with constraints, Optuna's ``best_trials`` keeps only feasible trials.

    Returns:
        Rows as :func:`trials_table` returns them.

    Raises:
        ValueError: if the study has a single objective (its best trial is :func:`best_params`).
    """
    handle = as_handle(study)
    metrics = handle.config.metrics
    if not handle.config.is_multi_objective:
        raise ValueError(
            f"pareto_front: study {handle.config.name!r} has one objective ({metrics[0]}), so "
            "it has no Pareto front; its best trial is `research-ext tune best`"
        )
    rows = [_row(t, metrics) for t in handle.study.best_trials]
    return sorted(rows, key=lambda r: r[metrics[0]])


def importance(
    study: Any, *, evaluator: str = "ped_anova", metric: str | None = None, seed: int = 0
) -> dict[str, float]:
    """Hyperparameter importances by Optuna's PED-ANOVA or fANOVA evaluator, largest first.

    Each parameter is explained on the trials where it exists (see :func:`importance_table`):
    the unconditional parameters on all complete trials (their importances sum to 1), each
    conditional parameter on the trials that have it (its share there).

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.
        evaluator: ``"ped_anova"`` (Watanabe et al. 2023) or ``"fanova"`` (Hutter et al. 2014).
        metric: which objective (by metric name) for a multi-objective study; default the first.
        seed: seed of fANOVA's random forest.

    Returns:
        ``{param: importance}``.

    Raises:
        ValueError: for an unknown evaluator or metric, or fewer than two complete trials.
    """
    rows = importance_table(study, evaluator=evaluator, metric=metric, seed=seed)
    return {r["parameter"]: r["importance"] for r in rows if r["importance"] is not None}


def importance_table(
    study: Any, *, evaluator: str = "ped_anova", metric: str | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Importance rows saying which trials each parameter's importance was computed on.

    Unconditional parameters are ranked together on all complete trials; a conditional parameter
    on the complete trials where it exists, with the parameters those trials all have (so
    fANOVA does not drop it, and PED-ANOVA does not credit it with its parent's effect).

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.
        evaluator: ``"ped_anova"`` or ``"fanova"``.
        metric: which objective for a multi-objective study; default the first.
        seed: seed of fANOVA's random forest.

    Returns:
        Dicts with ``parameter``, ``importance``, ``trials`` (``"k/n"``) and ``computed_on``.

    Raises:
        ValueError: for an unknown evaluator or metric, or fewer than two complete trials.

    Example:
        ``print(rh.format_rows(rh.importance_table("conditional.toml")))`` on the 8-trial
        study of "Writing an objective", where ``momentum`` exists only when
        ``optimizer = "sgd"``: ``optimizer`` is ranked on all complete trials (``trials``
        ``8/8``), ``momentum`` on the ones that have it (``5/8``, ``computed_on`` says so);
        ``research-ext tune importance`` prints the same table.
    """
    import optuna

    from research_ext.hpo._importance import importance_rows

    check_one_of("importance", "evaluator", evaluator, ("ped_anova", "fanova"))
    handle = as_handle(study)
    metrics = handle.config.metrics
    metric = metric or metrics[0]
    check_one_of("importance", "metric", metric, metrics)
    index = metrics.index(metric)
    complete = handle.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        raise ValueError(
            format_message(
                "importance", "study", "a study with >= 2 complete trials", len(complete)
            )
        )
    # the evaluators explain low values: negate maximized objectives
    sign = -1.0 if handle.config.directions[index] == "maximize" else 1.0
    values = [sign * t.values[index] for t in complete]
    return importance_rows(list(complete), values, evaluator=evaluator, seed=seed)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def export_best(study: Any, fmt: str = "toml") -> str:
    """The best parameters as TOML (``[params]``, or ``[[trials]]`` for a Pareto set) or JSON."""
    check_one_of("export_best", "fmt", fmt, ("toml", "json"))
    best = best_params(study)
    if fmt == "json":
        return json.dumps(best[0] if len(best) == 1 else best, indent=1)
    lines: list[str] = []
    for entry in best:
        header = "" if len(best) == 1 else "[[trials]]\n"
        prefix = "" if len(best) == 1 else "trials."
        lines.append(f"{header}number = {entry['number']}")
        lines.append(f"\n[{prefix}values]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry["values"].items()]
        lines.append(f"\n[{prefix}params]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry["params"].items()]
        lines.append("")
    return "\n".join(lines).strip() + "\n"
