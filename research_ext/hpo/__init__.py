"""Optuna studies from a declarative study file, run from Python or the ``research-ext`` CLI.

A study file (TOML) names the objective, the search space, the sampler and pruner, and where the
study lives (SQLite next to the file by default, PostgreSQL for many machines). ``run`` drives the
study to exactly ``n_trials`` finished trials, crash-safe and with any number of worker processes;
``status``, ``trials_table``, ``pareto_front``, ``importance`` / ``importance_table`` and
``report`` look at it; ``export_best`` and ``export_tensorboard`` write it out.

Example:
    >>> import research_ext.hpo as rh
    >>> rh.resolve_storage("study.db", base_dir="/tmp").kind
    'sqlite'
"""

from research_ext.core import require

require("optuna", extra="hpo")

from research_ext.errors import StudyFailedError  # noqa: E402
from research_ext.hpo._config import StudyConfig, load_config  # noqa: E402
from research_ext.hpo._inspect import (  # noqa: E402
    StudyStatus,
    best_params,
    export_best,
    format_rows,
    importance,
    importance_table,
    pareto_front,
    status,
    trials_table,
)
from research_ext.hpo._objective import Reporter  # noqa: E402
from research_ext.hpo._owner_loop import run  # noqa: E402
from research_ext.hpo._report import SearchPrivacyCost, report, search_privacy_cost  # noqa: E402
from research_ext.hpo._space import ParamSpec, sample_params  # noqa: E402
from research_ext.hpo._storage import StorageSpec, resolve_storage  # noqa: E402
from research_ext.hpo._study import StudyHandle, open_study  # noqa: E402
from research_ext.hpo._tensorboard import export_tensorboard  # noqa: E402
from research_ext.hpo._worker_loop import worker  # noqa: E402

__all__ = [
    "ParamSpec",
    "Reporter",
    "SearchPrivacyCost",
    "StorageSpec",
    "StudyConfig",
    "StudyFailedError",
    "StudyHandle",
    "StudyStatus",
    "best_params",
    "export_best",
    "export_tensorboard",
    "format_rows",
    "importance",
    "importance_table",
    "load_config",
    "open_study",
    "pareto_front",
    "report",
    "resolve_storage",
    "run",
    "sample_params",
    "search_privacy_cost",
    "status",
    "trials_table",
    "worker",
]
