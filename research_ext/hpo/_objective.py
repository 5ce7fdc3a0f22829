"""The user's objective: loading it from an entry point, and the reporter it may ask for.

An objective is ``fn(params, **fixed_args)`` returning a number, a sequence of numbers (one per
objective) or a dict of named metrics. If its signature names ``reporter``, ``trial_dir`` or
``trial``, it receives a :class:`Reporter`, its per-trial directory, or the Optuna trial.
"""

import hashlib
import importlib
import importlib.util
import inspect
import math
import pathlib
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from research_ext.core import format_message

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from research_ext.hpo._config import StudyConfig

__all__ = ["Reporter", "load_objective", "objective_for_trial", "split_result"]

INJECTED = ("reporter", "trial_dir", "trial")
#: Trial user attribute holding ``[noise_multiplier, sample_rate, steps]`` of a private trial.
DP_SGD_ATTR = "dp_sgd_mechanism"
_CACHE: dict[tuple[str, str], Callable[..., Any]] = {}
# (objective, argument names) whose signature check passed: binding depends on the names only,
# and inspecting the signature again for every trial costs about half a millisecond
_CHECKED: set[tuple[int, tuple[str, ...]]] = set()  # (id of a cached objective, names)


def load_objective(
    entry: str, base_dir: str | pathlib.Path, args: Mapping[str, Any] | None = None
) -> Callable[..., Any]:
    """Import the objective named by ``entry`` and check it accepts ``args``.

    Args:
        entry: ``"path/to/file.py:fn"`` (relative to ``base_dir``) or ``"package.module:fn"``.
        base_dir: directory that relative file paths are resolved against.
        args: the fixed keyword arguments the objective will receive.

    Returns:
        The objective callable.

    Raises:
        ValueError: if the entry is malformed, the file or module is missing, or ``fn`` is absent.
        TypeError: if ``fn`` is not callable or does not accept ``params`` and ``args``.

    Example:
        >>> load_objective("math:sqrt", ".")(4.0)
        2.0
    """
    fn_name = "load_objective"
    module_part, sep, attr = entry.rpartition(":")
    if not sep or not module_part or not attr.isidentifier():
        raise ValueError(
            format_message(fn_name, "entry", "'path/file.py:fn' or 'package.module:fn'", entry)
        )
    key = (str(pathlib.Path(base_dir).resolve()), entry)
    if key not in _CACHE:
        module = _import(module_part, pathlib.Path(base_dir), entry)
        if not hasattr(module, attr):
            raise ValueError(
                format_message(fn_name, "entry", f"a name defined in {module_part}", entry)
            )
        _CACHE[key] = getattr(module, attr)
    fn = _CACHE[key]
    if not callable(fn):
        raise TypeError(format_message(fn_name, "entry", "a callable", entry))
    names = tuple(sorted(args or {}))
    if (id(fn), names) not in _CHECKED:
        _check_signature(fn, entry, dict(args or {}))
        _CHECKED.add((id(fn), names))
    return fn


def objective_for_trial(
    entry: str, base_dir: str | pathlib.Path, args: Mapping[str, Any] | None = None
) -> Callable[..., Any]:
    """:func:`load_objective`, or (if it no longer loads) a stand-in that raises why when called.

    A study file is validated when it loads; an objective that stops importing afterwards (its
    file edited, a package gone) must fail its trials with the reason recorded, not the process.
    """
    try:
        return load_objective(entry, base_dir, args)
    except (ValueError, TypeError) as err:
        reason = err

        def unloadable(params: Any, **kwargs: Any) -> Any:
            raise reason.with_traceback(None) from None

        return unloadable


def _import(module_part: str, base_dir: pathlib.Path, entry: str) -> Any:
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = (base_dir / module_part).resolve()
        if not path.is_file():
            raise ValueError(
                format_message("load_objective", "entry", "a path to an existing file", entry)
            )
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        name = f"_research_ext_objective_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise ValueError(
                format_message(
                    "load_objective",
                    "entry",
                    "a file that imports",
                    entry,
                    f"importing {module_part} raised {_one_line(err, path)}",
                )
            ) from err
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(module_part)
    except ImportError as err:
        raise ValueError(
            format_message("load_objective", "entry", "an importable module", entry, str(err))
        ) from err
    except Exception as err:
        raise ValueError(
            format_message(
                "load_objective",
                "entry",
                "a module that imports",
                entry,
                f"importing {module_part} raised {_one_line(err, None)}",
            )
        ) from err


def _one_line(err: BaseException, path: pathlib.Path | None) -> str:
    """``Type: message (file.py, line N)``: where in the user's file an import failed."""
    where = ""
    frames: list[traceback.FrameSummary] = list(traceback.extract_tb(err.__traceback__))
    if path is not None:
        frames = [f for f in frames if pathlib.Path(f.filename) == path] or frames
    if isinstance(err, SyntaxError) and err.lineno is not None:
        where = f" ({pathlib.Path(err.filename or '?').name}, line {err.lineno})"
    elif frames:
        where = f" ({pathlib.Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    message = " ".join(str(err).split()) if not isinstance(err, SyntaxError) else err.msg
    return f"{type(err).__name__}: {message}{where}"


def _check_signature(fn: Callable[..., Any], entry: str, args: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        injected = {name: None for name in INJECTED if name in signature.parameters}
        signature.bind(None, **args, **injected)
    except TypeError as err:
        raise TypeError(
            format_message(
                "load_objective",
                "entry",
                "a function taking (params, **args)",
                entry,
                f"with args={sorted(args)}: {err}",
            )
        ) from err


def injected_arguments(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names among ``reporter``, ``trial_dir``, ``trial`` that ``fn``'s signature asks for."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name in INJECTED if name in parameters)


class Reporter:
    """What an objective uses to report progress: intermediate values and side metrics.

    ``report(value, step)`` feeds the study's pruner (single-objective studies) and raises
    ``optuna.TrialPruned`` when the pruner stops the trial. ``report_metric(name, value)`` records
    a side metric such as epsilon; when ``name`` is the study's ``[privacy] epsilon_metric`` and
    the value passes ``epsilon_budget``, the trial is pruned at once (a budget is a hard
    constraint, and epsilon only grows with training).

    Args:
        trial: the running Optuna trial.
        config: the study's configuration.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> reporter = Reporter(study.ask(), None)
        >>> reporter.report_metric("epsilon", 1.5, step=1)
        >>> reporter.metrics
        {'epsilon': 1.5}
    """

    def __init__(self, trial: "optuna.Trial", config: "StudyConfig | None") -> None:
        self.trial = trial
        self.config = config
        self.metrics: dict[str, float] = {}
        self.intermediate: dict[int, float] = {}
        self.mechanism: tuple[float, float, int] | None = None

    @property
    def number(self) -> int:
        """The trial's number in the study."""
        return self.trial.number

    @property
    def epsilon_budget(self) -> float | None:
        """The study's per-trial epsilon budget (``[privacy] epsilon_budget``), or None.

        A private objective can look ahead with it: when the next epoch's epsilon (known before
        training it, from the accountant) would pass the budget, it stops without spending it.
        """
        return None if self.config is None else self.config.epsilon_budget

    def report(self, value: float, step: int) -> None:
        """Report the objective's intermediate ``value`` at ``step``; may prune the trial.

        Raises:
            optuna.TrialPruned: when the study's pruner decides to stop this trial.
        """
        import optuna

        self.intermediate[int(step)] = float(value)
        if self.config is not None and self.config.is_multi_objective:
            return  # Optuna's pruners and Trial.report are single-objective only.
        self.trial.report(float(value), int(step))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the study's pruner at step {step}")

    def report_dp_sgd(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Record the DP-SGD mechanism this trial has run so far (replacing an earlier record).

        With every private trial's ``(noise_multiplier, sample_rate, steps)`` on record, the
        study's privacy cost composes the trials' Rényi-DP curves instead of adding epsilons
        (:func:`research_ext.hpo.search_privacy_cost`).

        Args:
            noise_multiplier: sigma of the run's Gaussian noise (over the clipping norm).
            sample_rate: the Poisson sampling rate q.
            steps: noisy steps taken so far.
        """
        self.mechanism = (float(noise_multiplier), float(sample_rate), int(steps))

    def report_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record side metric ``name`` (e.g. epsilon); prune if it passes the epsilon budget.

        Raises:
            optuna.TrialPruned: if ``name`` is the privacy metric and ``value`` exceeds the budget.
        """
        import optuna

        self.metrics[name] = float(value)
        config = self.config
        if (
            config is not None
            and config.epsilon_budget is not None
            and name == config.epsilon_metric
            and value > config.epsilon_budget
        ):
            at = "" if step is None else f" at step {step}"
            raise optuna.TrialPruned(
                f"{name}={value:.4g} passed the budget {config.epsilon_budget:g}{at}"
            )


def split_result(result: Any, metrics: Sequence[str]) -> tuple[tuple[float, ...], dict[str, float]]:
    """Turn an objective's return value into (objective values, extra named metrics).

    Raises:
        TypeError: if ``result`` is neither a number, a sequence of ``len(metrics)`` numbers nor a
            dict containing every metric.
    """
    rule = (
        f"a number, a sequence of {len(metrics)} numbers or a dict with keys "
        f"{', '.join(repr(m) for m in metrics)}"
    )
    extra: dict[str, float] = {}
    if isinstance(result, Mapping):
        missing = [m for m in metrics if m not in result]
        if missing:
            raise TypeError(format_message("objective", "return value", rule, result))
        values = [result[m] for m in metrics]
        extra = {k: v for k, v in result.items() if k not in metrics}
    elif isinstance(result, int | float) and not isinstance(result, bool):
        values = [result]
    elif isinstance(result, Sequence) and not isinstance(result, str):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(metrics) or not all(_is_number(v) for v in values):
        raise TypeError(format_message("objective", "return value", rule, result))
    for key, value in extra.items():
        if not _is_number(value):
            raise TypeError(
                format_message("objective", f"return value[{key!r}]", "a number", value)
            )
    return tuple(float(v) for v in values), {k: float(v) for k, v in extra.items()}


def _is_number(value: Any) -> bool:
    # a number, a numpy scalar or a 0-d array/tensor; never a string that happens to parse
    if isinstance(value, bool | str | bytes | bytearray) or not hasattr(type(value), "__float__"):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return not math.isnan(number)
