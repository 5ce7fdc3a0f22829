"""The study file: TOML parsed with the stdlib, validated in full before anything touches storage.

Every error is a :class:`research_ext.errors.ConfigError` naming the dotted key, the value given,
what is allowed and, where the file shows it, the line.
"""

import dataclasses
import decimal
import math
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from research_ext.core import format_message

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from research_ext.errors import ConfigError
from research_ext.hpo._objective import load_objective
from research_ext.hpo._samplers import PRUNERS, SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS, component
from research_ext.hpo._space import ParamSpec

__all__ = ["StudyConfig", "load_config"]

_FN = "load_config"

_KEYS: dict[str, tuple[str, ...]] = {
    "": ("study", "objective", "space", "constraints", "privacy"),
    "study": (
        "name",
        "direction",
        "directions",
        "metrics",
        "sampler",
        "pruner",
        "storage",
        "n_trials",
        "timeout",
        "seed",
        "max_failures",
        "heartbeat_interval",
        "grace_period",
        "trials_dir",
    ),
    "objective": ("entry", "args"),
    "privacy": ("epsilon_metric", "epsilon_budget", "delta"),
    "param": ("type", "low", "high", "log", "step", "choices", "when"),
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated study file: what to optimize, over which space, stored where.

    Build one with :func:`load_config`; derive variants with ``dataclasses.replace``.

    Attributes:
        name: the study's name in its storage.
        directions: ``"maximize"``/``"minimize"`` per objective.
        metrics: a name per objective (the keys an objective returning a dict uses).
        sampler: Optuna sampler class name; ``sampler_kwargs`` its keyword arguments.
        pruner: Optuna pruner class name or ``None``; ``pruner_kwargs`` its keyword arguments.
        storage: storage URL or path as written (resolved by ``resolve_storage``), or ``None``
            for the default SQLite file ``<study file stem>.db`` next to the study file.
        n_trials: the number of finished (complete or pruned) trials the study aims for.
        timeout: seconds after which a run starts no new trial, or ``None``.
        seed: study seed: each trial's sampler draws are seeded from (seed, the trial's
            sample index), the same on every worker and host; ``None`` for unseeded.
        max_failures: a run stops after this many objective failures.
        heartbeat_interval: seconds between heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a trial is declared dead.
        trials_dir: parent of the per-trial checkpoint directories.
        entry: the objective, ``path/to/file.py:fn`` or ``package.module:fn``.
        args: fixed keyword arguments passed to the objective.
        space: the search space, parents before the parameters conditional on them.
        constraints: ``(metric, bound)`` pairs; a trial is feasible when ``metric <= bound``.
        epsilon_metric: the metric holding a private trial's epsilon (``[privacy]``).
        epsilon_budget: per-trial epsilon budget: a trial is pruned once it passes it.
        delta: the delta of each private trial, for the study's privacy cost.
        base_dir: the directory relative paths in the file are resolved against.
        path: the study file, or ``None`` for a config built in memory.
    """

    name: str
    directions: tuple[str, ...]
    metrics: tuple[str, ...]
    sampler: str
    sampler_kwargs: Mapping[str, Any]
    pruner: str | None
    pruner_kwargs: Mapping[str, Any]
    storage: str | None
    n_trials: int
    timeout: float | None
    seed: int | None
    max_failures: int
    heartbeat_interval: int
    grace_period: int
    trials_dir: pathlib.Path
    entry: str
    args: Mapping[str, Any]
    space: tuple[ParamSpec, ...]
    constraints: tuple[tuple[str, float], ...]
    epsilon_metric: str | None
    epsilon_budget: float | None
    delta: float | None
    base_dir: pathlib.Path
    path: pathlib.Path | None = None

    @property
    def is_multi_objective(self) -> bool:
        """Whether the study has more than one objective."""
        return len(self.directions) > 1


class _Checker:
    """Validation helpers that know the file's text, to point errors at a line."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = _key_lines(text)

    def where(self, key: str) -> str:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            line = self.lines.get(tuple(parts[:n]))
            if line is not None:
                return f"{self.source}, line {line}"
        return self.source

    def fail(self, key: str, rule: str, value: Any, hint: str | None = None) -> ConfigError:
        where = f"in {self.where(key)}"
        return ConfigError(
            format_message(_FN, key, rule, value, f"{hint}; {where}" if hint else where)
        )

    def keys(self, table: Mapping[str, Any], prefix: str, kind: str) -> None:
        allowed = _KEYS[kind]
        for key in table:
            if key not in allowed:
                full = f"{prefix}.{key}" if prefix else key
                raise self.fail(full, f"one of the keys {', '.join(allowed)}", key, "unknown key")

    def typed(self, table: Mapping[str, Any], key: str, prefix: str, types: Any, what: str) -> Any:
        value = table[key]
        bad_bool = isinstance(value, bool) and bool not in _as_tuple(types)
        if not isinstance(value, types) or bad_bool:
            raise self.fail(f"{prefix}.{key}", what, value)
        return value

    def positive_int(self, table: Mapping[str, Any], key: str, prefix: str, default: Any) -> Any:
        if key not in table:
            return default
        value = self.typed(table, key, prefix, int, "a positive int")
        if value < 1:
            raise self.fail(f"{prefix}.{key}", "a positive int", value)
        return value

    def number(self, table: Mapping[str, Any], key: str, prefix: str, positive: bool) -> float:
        rule = "a finite number > 0" if positive else "a finite number"
        value = self.typed(table, key, prefix, (int, float), rule)
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(f"{prefix}.{key}", rule, value)
        return value


def _as_tuple(types: Any) -> tuple[Any, ...]:
    return types if isinstance(types, tuple) else (types,)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Best-effort map from dotted key to the line it is written on (tables and assignments)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            key = table + _split_key(assign.group(1))
            lines.setdefault(key, number)
            inline = line[assign.end() :]
            for inner in re.finditer(r"([A-Za-z0-9_\-]+)\s*=", inline):
                lines.setdefault((*key, inner.group(1)), number)
    return lines


def load_config(
    path: str | pathlib.Path,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    name: str | None = None,
    validate_objective: bool = True,
) -> StudyConfig:
    r"""Read and validate a study file; nothing is created anywhere.

    The file has four tables: ``[study]`` (name, ``direction`` or ``directions``, ``metrics``,
    ``sampler``/``pruner`` as a name or ``{type = NAME, kwarg = ...}``, ``storage``, ``n_trials``,
    ``timeout``, ``seed``, ...), ``[objective]`` (``entry = "file.py:fn"`` and fixed ``args``),
    ``[space.NAME]`` per parameter (``type`` float/int/categorical, ``low``, ``high``, ``log``,
    ``step``, ``choices``, ``when``) and optionally ``[constraints]`` (``metric = bound``) and
    ``[privacy]`` (``epsilon_budget``, ``delta``, ``epsilon_metric``).

    Args:
        path: the TOML study file.
        n_trials: overrides ``study.n_trials``.
        storage: overrides ``study.storage`` (relative paths resolve against the current directory).
        name: overrides ``study.name``.
        validate_objective: import the objective and check its signature (default ``True``).

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: naming the key, the value, what is allowed and the line.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "obj.py").write_text("def f(params):\n    return params['x'] ** 2\n")
        >>> _ = (d / "s.toml").write_text('''
        ... [study]
        ... direction = "minimize"
        ... n_trials = 5
        ... [objective]
        ... entry = "obj.py:f"
        ... [space.x]
        ... type = "float"
        ... low = -1.0
        ... high = 1.0
        ... ''')
        >>> config = load_config(d / "s.toml")
        >>> config.name, config.n_trials, config.space[0].name
        ('s', 5, 'x')
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            format_message(_FN, "path", "a readable TOML file", str(path), str(err))
        ) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{_FN}: {path.name} is not valid TOML: {err}") from err
    config = config_from_dict(
        data,
        base_dir=path.resolve().parent,
        default_name=path.stem,
        text=text,
        source=path.name,
        validate_objective=validate_objective,
    )
    config = dataclasses.replace(config, path=path.resolve())
    overrides: dict[str, Any] = {}
    if n_trials is not None:
        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            raise ConfigError(format_message(_FN, "n_trials", "a positive int", n_trials))
        overrides["n_trials"] = n_trials
    if storage is not None:
        overrides["storage"] = str(storage)
    if name is not None:
        overrides["name"] = name
    return dataclasses.replace(config, **overrides)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    base_dir: pathlib.Path,
    default_name: str = "study",
    text: str = "",
    source: str = "<config>",
    validate_objective: bool = True,
) -> StudyConfig:
    """Validate an already-parsed study file (see :func:`load_config`)."""
    c = _Checker(text, source)
    c.keys(data, "", "")
    for table in ("study", "objective", "space"):
        if table not in data:
            raise c.fail(table, "a table", None, f"the study file needs a [{table}] table")
    for table in _KEYS[""]:
        if table in data and not isinstance(data[table], dict):
            raise c.fail(table, "a table", data[table])
    study, objective = data["study"], data["objective"]
    c.keys(study, "study", "study")
    c.keys(objective, "objective", "objective")

    name = c.typed(study, "name", "study", str, "a non-empty string") if "name" in study else None
    if name is not None and not name.strip():
        raise c.fail("study.name", "a non-empty string", name)
    directions = _directions(c, study)
    metrics = _metrics(c, study, len(directions))
    sampler, sampler_kwargs = component(c, study, "sampler", SAMPLERS, "tpe")
    pruner, pruner_kwargs = component(c, study, "pruner", PRUNERS, None)
    if len(directions) > 1 and pruner is not None and pruner != "NopPruner":
        raise c.fail(
            "study.pruner",
            "absent for a multi-objective study",
            pruner,
            "Optuna's pruners need a single objective; use [privacy] epsilon_budget or "
            "[constraints] instead",
        )
    if len(directions) > 1 and sampler in SINGLE_OBJECTIVE_SAMPLERS:
        raise c.fail("study.sampler", "a multi-objective sampler", sampler)
    if "n_trials" not in study:
        raise c.fail("study.n_trials", "a positive int", None, "the key is required")
    n_trials = c.positive_int(study, "n_trials", "study", None)
    timeout = c.number(study, "timeout", "study", positive=True) if "timeout" in study else None
    seed = None
    if "seed" in study:
        seed = c.typed(study, "seed", "study", int, "an int in [0, 2**31 - 1]")
        if not 0 <= seed < 2**31:
            raise c.fail("study.seed", "an int in [0, 2**31 - 1]", seed)
    storage = (
        c.typed(study, "storage", "study", str, "a URL or path") if "storage" in study else None
    )
    trials_dir = base_dir / f"{name or default_name}.trials"
    if "trials_dir" in study:
        trials_dir = base_dir / c.typed(study, "trials_dir", "study", str, "a path")

    if "entry" not in objective:
        raise c.fail("objective.entry", "'path/file.py:fn' or 'package.module:fn'", None)
    entry = c.typed(objective, "entry", "objective", str, "'path/file.py:fn' or 'module:fn'")
    args = objective.get("args", {})
    if not isinstance(args, dict):
        raise c.fail("objective.args", "a table of fixed keyword arguments", args)
    if validate_objective:
        try:
            load_objective(entry, base_dir, args)
        except (ValueError, TypeError) as err:
            raise c.fail("objective.entry", "an importable objective", entry, str(err)) from err

    space = _space(c, data["space"])
    constraints = tuple(
        (key, float(c.number(data.get("constraints", {}), key, "constraints", positive=False)))
        for key in data.get("constraints", {})
    )
    epsilon_metric, epsilon_budget, delta = _privacy(c, data.get("privacy"))
    return StudyConfig(
        name=name or default_name,
        directions=directions,
        metrics=metrics,
        sampler=sampler or "TPESampler",
        sampler_kwargs=sampler_kwargs,
        pruner=pruner,
        pruner_kwargs=pruner_kwargs,
        storage=storage,
        n_trials=n_trials,
        timeout=timeout,
        seed=seed,
        max_failures=c.positive_int(study, "max_failures", "study", 5),
        heartbeat_interval=c.positive_int(study, "heartbeat_interval", "study", 2),
        grace_period=c.positive_int(study, "grace_period", "study", 20),
        trials_dir=trials_dir,
        entry=entry,
        args=dict(args),
        space=space,
        constraints=constraints,
        epsilon_metric=epsilon_metric,
        epsilon_budget=epsilon_budget,
        delta=delta,
        base_dir=base_dir,
    )


def _directions(c: _Checker, study: Mapping[str, Any]) -> tuple[str, ...]:
    if "direction" in study and "directions" in study:
        raise c.fail("study.directions", "given without `study.direction`", study["directions"])
    rule = "'maximize' or 'minimize'"
    if "directions" in study:
        values = study["directions"]
        if not isinstance(values, list) or not values:
            raise c.fail("study.directions", f"a non-empty list of {rule}", values)
        for value in values:
            if value not in ("maximize", "minimize"):
                raise c.fail("study.directions", f"a list of {rule}", values)
        return tuple(values)
    value = study.get("direction", "minimize")
    if value not in ("maximize", "minimize"):
        raise c.fail("study.direction", rule, value)
    return (value,)


def _metrics(c: _Checker, study: Mapping[str, Any], n: int) -> tuple[str, ...]:
    if "metrics" not in study:
        return ("value",) if n == 1 else tuple(f"value_{i}" for i in range(n))
    values = study["metrics"]
    rule = f"a list of {n} distinct names (one per direction)"
    if (
        not isinstance(values, list)
        or len(values) != n
        or len(set(values)) != n
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise c.fail("study.metrics", rule, values)
    return tuple(values)


def _space(c: _Checker, table: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    if not table:
        raise c.fail("space", "a table with at least one [space.NAME] parameter", table)
    specs: dict[str, ParamSpec] = {}
    for name, raw in table.items():
        key = f"space.{name}"
        if not isinstance(raw, dict):
            raise c.fail(key, "a table with `type` and its bounds or choices", raw)
        c.keys(raw, key, "param")
        specs[name] = _param(c, key, name, raw)
    for spec in specs.values():
        for parent, values in spec.when:
            if parent not in specs or parent == spec.name:
                raise c.fail(f"space.{spec.name}.when", "a table naming other parameters", parent)
            parent_spec = specs[parent]
            for value in values:
                if not parent_spec.contains(value):
                    raise c.fail(
                        f"space.{spec.name}.when.{parent}",
                        f"values that `{parent}` can take",
                        value,
                    )
    return _dependency_order(c, specs)


def _param(c: _Checker, key: str, name: str, raw: Mapping[str, Any]) -> ParamSpec:
    kind = raw.get("type")
    if kind not in ("float", "int", "categorical"):
        raise c.fail(f"{key}.type", "'float', 'int' or 'categorical'", kind)
    when = _when(c, key, raw.get("when", {}))
    if kind == "categorical":
        for extra in ("low", "high", "log", "step"):
            if extra in raw:
                raise c.fail(f"{key}.{extra}", "absent for a categorical", raw[extra])
        choices: Any = raw.get("choices")
        ok = isinstance(choices, list) and choices and len(set(map(repr, choices))) == len(choices)
        if not ok or not all(isinstance(v, bool | int | float | str) for v in choices):
            raise c.fail(f"{key}.choices", "a non-empty list of distinct scalars", choices)
        return ParamSpec(name, kind, choices=tuple(choices), when=when)
    if "choices" in raw:
        raise c.fail(f"{key}.choices", f"absent for a {kind}", raw["choices"])
    number = int if kind == "int" else (int, float)
    what = "an int" if kind == "int" else "a finite number"
    for bound in ("low", "high"):
        if bound not in raw:
            raise c.fail(f"{key}.{bound}", what, None, "the key is required")
        value = c.typed(raw, bound, key, number, what)
        if not math.isfinite(value):
            raise c.fail(f"{key}.{bound}", what, value)
    low, high = raw["low"], raw["high"]
    if low > high:
        raise c.fail(f"{key}.high", f">= low={low}", high)
    log = c.typed(raw, "log", key, bool, "true or false") if "log" in raw else False
    if log and low <= 0:
        raise c.fail(f"{key}.low", "> 0 when `log = true`", low)
    step = None
    if "step" in raw:
        if log:
            raise c.fail(f"{key}.step", "absent when `log = true`", raw["step"])
        step = c.number(raw, "step", key, positive=True)
        if kind == "int" and not isinstance(step, int):
            raise c.fail(f"{key}.step", "a positive int", step)
        span = (decimal.Decimal(str(high)) - decimal.Decimal(str(low))) / decimal.Decimal(str(step))
        if span != span.to_integral_value():
            raise c.fail(f"{key}.step", f"a divisor of high - low = {high - low}", step)
    return ParamSpec(name, kind, low=low, high=high, log=log, step=step, when=when)


def _when(c: _Checker, key: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(raw, dict):
        raise c.fail(f"{key}.when", "a table {parent = value or [values]}", raw)
    out = []
    for parent, values in raw.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise c.fail(f"{key}.when.{parent}", "a value or a non-empty list", values)
        out.append((parent, tuple(values)))
    return tuple(out)


def _dependency_order(c: _Checker, specs: Mapping[str, ParamSpec]) -> tuple[ParamSpec, ...]:
    ordered: list[ParamSpec] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*chain, name))
            raise c.fail(f"space.{name}.when", "free of cycles", cycle)
        state[name] = 1
        for parent, _ in specs[name].when:
            visit(parent, (*chain, name))
        state[name] = 2
        ordered.append(specs[name])

    for name in specs:
        visit(name, ())
    return tuple(ordered)


def _privacy(c: _Checker, raw: Any) -> tuple[str | None, float | None, float | None]:
    if raw is None:
        return None, None, None
    c.keys(raw, "privacy", "privacy")
    metric = "epsilon"
    if "epsilon_metric" in raw:
        metric = c.typed(raw, "epsilon_metric", "privacy", str, "a metric name")
    budget = None
    if "epsilon_budget" in raw:
        budget = float(c.number(raw, "epsilon_budget", "privacy", positive=True))
    delta = None
    if "delta" in raw:
        delta = float(c.number(raw, "delta", "privacy", positive=True))
        if delta >= 1:
            raise c.fail("privacy.delta", "a number in (0, 1)", delta)
    return metric, budget, delta
