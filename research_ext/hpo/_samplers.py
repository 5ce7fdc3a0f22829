"""Optuna samplers and pruners by name: validated from the study file, built per worker.

Options are checked against the component's own signature when the study file loads (a value of
the wrong type would otherwise fail every trial as if the objective were at fault), and a
component whose package is not installed is refused then, naming the package.
"""

import collections.abc
import importlib.util
import inspect
import sys
import types
import typing
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
#: component -> (package it imports when used, how to install it)
REQUIRES = {
    "CmaEsSampler": ("cmaes", "pip install cmaes"),
    "GPSampler": ("torch", "pip install torch"),
    "QMCSampler": ("scipy", "pip install scipy"),
    "WilcoxonPruner": ("scipy", "pip install scipy"),
}


def _is_installed(package: str) -> bool:
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


class _Unknown:
    """Stands for a name an annotation uses that only exists for type checkers."""


class _Namespace(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> Any:
        import builtins

        return getattr(builtins, key, _Unknown)


def _hints(cls: type) -> dict[str, Any]:
    """Each ``__init__`` parameter's annotation, evaluated (names the module lacks -> unknown)."""
    module = sys.modules.get(cls.__module__)
    scope = _Namespace(vars(typing))
    scope.update(vars(collections.abc))
    scope.update(vars(module) if module is not None else {})
    hints = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, {}, scope)  # noqa: S307
            except Exception:
                annotation = _Unknown
        hints[name] = annotation
    return hints


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits an annotation (unknown or unparsed annotations accept it)."""
    if hint is inspect.Parameter.empty or hint is Any or hint is _Unknown:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, list):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return not inner or all(_matches(v, inner[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


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
    if cls_name in REQUIRES and not _is_installed(REQUIRES[cls_name][0]):
        package, install = REQUIRES[cls_name]
        raise c.fail(
            f"study.{key}",
            f"a component whose package is installed ({cls_name} needs `{package}`)",
            raw,
            f"`{package}` is not installed: {install}",
        )
    cls = getattr(module, cls_name)
    parameters = inspect.signature(cls).parameters
    hints = _hints(cls)
    for kwarg, value in kwargs.items():
        if kwarg not in parameters or kwarg == "seed":
            known = ", ".join(p for p in parameters if p != "seed")
            hint = (
                "set the seed with `study.seed`" if kwarg == "seed" else f"{cls_name} takes {known}"
            )
            raise c.fail(f"study.{key}.{kwarg}", f"a keyword of {cls_name}", kwarg, hint)
        if not _matches(value, hints[kwarg]):
            rule = f"{_describe(hints[kwarg])} ({cls_name}'s `{kwarg}`)"
            raise c.fail(f"study.{key}.{kwarg}", rule, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise c.fail(f"study.{key}", f"valid {cls_name} arguments", kwargs, str(err)) from err
    return cls_name, kwargs


def make_sampler(config: "StudyConfig", worker: int = 0) -> Any:
    """Build the configured sampler, seeded with the study seed plus ``worker`` (default 0).

    Runs reseed the sampler before every trial from (study seed, sample index) (see
    ``_seeding.py``), so a trial's draws depend on the trial, never on the worker.
    """
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
