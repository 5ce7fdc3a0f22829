"""Optuna studies from a declarative study file, run from Python or the ``research-ext`` CLI."""

from research_ext.core import require

require("optuna", extra="hpo")

__all__: list[str] = []
