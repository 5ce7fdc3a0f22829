"""Optuna samplers and pruners by name: validated from the study file, built per worker."""

import inspect
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from research_ext.hpo._config import StudyConfig

__all__ = ["PRUNERS", "SAMPLERS", "component", "make_pruner", "make_sampler"]

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsgaii": "NSGAIISampler",
    "nsgaiii": "NSGAIIISampler",
    "qmc": "QMCSampler",
    "bruteforce": "BruteForceSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
    "nop": "NopPruner",
}
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)


def component(
    c: Any, study: Mapping[str, Any], key: str, names: Mapping[str, str], default: str | None
) -> tuple[str | None, dict[str, Any]]:
    """Validate ``study[key]`` (a name or ``{type = NAME, kwarg = ...}``): (class name, kwargs)."""
    import optuna

    module = optuna.samplers if key == "sampler" else optuna.pruners
    raw = study.get(key, default)
    if raw is None:
        return None, {}
    kwargs: dict[str, Any] = {}
    if isinstance(raw, dict):
        kwargs = {k: v for k, v in raw.items() if k != "type"}
        raw = raw.get("type")
    allowed = f"one of {', '.join(repr(n) for n in names)} (or the Optuna class name)"
    if not isinstance(raw, str):
        raise c.fail(f"study.{key}", allowed, raw)
    cls_name = names.get(raw.lower(), raw)
    if cls_name not in names.values():
        raise c.fail(f"study.{key}", allowed, raw)
    cls = getattr(module, cls_name)
    parameters = inspect.signature(cls).parameters
    for kwarg in kwargs:
        if kwarg not in parameters or kwarg == "seed":
            known = ", ".join(p for p in parameters if p != "seed")
            hint = (
                "set the seed with `study.seed`" if kwarg == "seed" else f"{cls_name} takes {known}"
            )
            raise c.fail(f"study.{key}.{kwarg}", f"a keyword of {cls_name}", kwarg, hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise c.fail(f"study.{key}", f"valid {cls_name} arguments", kwargs, str(err)) from err
    return cls_name, kwargs


def make_sampler(config: "StudyConfig", worker: int = 0) -> Any:
    """Build the configured sampler; worker ``k`` is seeded with ``seed + k``."""
    import optuna

    cls = getattr(optuna.samplers, config.sampler)
    kwargs = dict(config.sampler_kwargs)
    if config.seed is not None and "seed" in inspect.signature(cls).parameters:
        kwargs["seed"] = config.seed + worker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def make_pruner(config: "StudyConfig") -> Any:
    """Build the configured pruner (Optuna's ``NopPruner`` when none is set)."""
    import optuna

    cls = getattr(optuna.pruners, config.pruner or "NopPruner")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**config.pruner_kwargs)
