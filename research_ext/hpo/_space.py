"""Search-space parameters (float, int, categorical, conditional) and their sampling on a trial.

A parameter may be conditional: ``when = {optimizer = "sgd"}`` makes it active only in trials whose
``optimizer`` took one of the listed values. Inactive parameters are absent from the trial's
parameter dict, so the objective sees exactly the parameters that apply.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["ParamSpec", "sample_params", "space_distributions"]

Scalar = bool | int | float | str


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One search-space parameter, as declared in a study file's ``[space.NAME]`` table.

    A float draws from ``[low, high]`` (log-uniform with ``log``; on the grid
    ``low + k * step`` with ``step``); an int likewise over the integers; a categorical picks one of
    ``choices``. ``when`` maps another parameter's name to the values that activate this one.

    Args:
        name: the parameter's name, the key in the objective's parameter dict.
        type: ``"float"``, ``"int"`` or ``"categorical"``.
        low: lower bound (float/int).
        high: upper bound (float/int), inclusive.
        log: sample on a log scale (float/int; needs ``low > 0``).
        step: grid spacing (float/int; not with ``log``).
        choices: the values of a categorical.
        when: ``{parent: (value, ...)}``; the parameter is active only when every parent took one
            of its listed values.

    Example:
        >>> ParamSpec("lr", "float", low=1e-4, high=1e-1, log=True).contains(0.01)
        True
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Scalar, ...] = ()
    when: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            assert self.low is not None and self.high is not None
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        assert self.low is not None and self.high is not None
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def is_active(self, params: Mapping[str, Any]) -> bool:
        """Whether this parameter applies given the already-sampled ``params``."""
        return all(parent in params and params[parent] in values for parent, values in self.when)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this parameter's space (bounds, grid, choices)."""
        if self.type == "categorical":
            return value in self.choices
        assert self.low is not None and self.high is not None
        if self.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if not isinstance(value, int | float) or not self.low <= value <= self.high:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-8)
        return True


def space_distributions(space: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Map each parameter name to its Optuna distribution (conditional ones included)."""
    return {spec.name: spec.distribution() for spec in space}


def sample_params(trial: "optuna.Trial", space: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Suggest every active parameter of ``space`` on ``trial``; return ``{name: value}``.

    ``space`` must be in dependency order (parents before children), as
    :func:`research_ext.hpo.load_config` returns it. A retried trial already holds its
    predecessor's values, which Optuna returns unchanged.

    Args:
        trial: the running Optuna trial.
        space: the study's parameters, parents first.

    Returns:
        The active parameters and their sampled values.

    Example:
        >>> import optuna
        >>> space = (ParamSpec("opt", "categorical", choices=("sgd", "adam")),
        ...          ParamSpec("momentum", "float", low=0.0, high=0.9, when=(("opt", ("sgd",)),)))
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> params = sample_params(study.ask(), space)
        >>> ("momentum" in params) == (params["opt"] == "sgd")
        True
    """
    params: dict[str, Any] = {}
    for spec in space:
        if not spec.is_active(params):
            continue
        if spec.type == "categorical":
            params[spec.name] = trial.suggest_categorical(spec.name, list(spec.choices))
        elif spec.type == "int":
            assert spec.low is not None and spec.high is not None
            params[spec.name] = trial.suggest_int(
                spec.name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
            )
        else:
            assert spec.low is not None and spec.high is not None
            params[spec.name] = trial.suggest_float(
                spec.name, float(spec.low), float(spec.high), step=spec.step, log=spec.log
            )
    return params
