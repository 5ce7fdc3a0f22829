"""Pages generated from the code at build time, so they cannot drift from it.

* the study-file reference, from the validator in ``research_ext/hpo/_config.py``: the key list
  is its ``_KEYS`` table, each default is what ``config_from_dict`` produces for a file that
  leaves the key out, each description is ``StudyConfig``'s own attribute documentation, and each
  documented example is fed back through the validator (it must pass) next to a value of the
  wrong type (it must be refused, naming the key);
* one API page per public module, one entry per name in its ``__all__``;
* one page per error class in ``research_ext.errors.__all__``, with where it is raised;
* the notebooks, executed at a small size (cached by content) so they render with outputs.

Imported by ``docs/_gen/gen_pages.py`` (the mkdocs-gen-files script) and by ``tests/test_docs.py``.
"""

import ast
import dataclasses
import functools
import hashlib
import inspect
import os
import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Public modules and the API page each gets.
PUBLIC_MODULES = (
    "research_ext.core",
    "research_ext.errors",
    "research_ext.functional",
    "research_ext.complex",
    "research_ext.complex.fft",
    "research_ext.complex.signal",
    "research_ext.complex.nn",
    "research_ext.privacy",
    "research_ext.privacy.accounting",
    "research_ext.privacy.audit",
    "research_ext.hpo",
)


class ReferenceDriftError(RuntimeError):
    """The hand-written part of a generated page no longer matches the code."""


# --------------------------------------------------------------------------------------------
# Study-file reference
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """What the validator cannot say about a key by itself: its TOML type and an example.

    ``attr`` names the ``StudyConfig`` attribute the key fills (its description and default come
    from there); ``wrong`` is a value of the wrong type that the validator must refuse.
    """

    type: str
    example: Any
    attr: str | None = None
    wrong: Any = "not-a-valid-value"
    note: str = ""


# Keys per table, as the validator's `_KEYS` names them ("" is the file's top level, "param" a
# [space.NAME] table). A key missing here, or here but not in `_KEYS`, fails the build.
KEY_DOCS: dict[str, dict[str, KeyDoc]] = {
    "": {
        "study": KeyDoc("table", None, note="what to optimize and where it is stored"),
        "objective": KeyDoc("table", None, note="the function that runs one trial"),
        "space": KeyDoc("table of tables", None, note="one `[space.NAME]` per parameter"),
        "constraints": KeyDoc(
            "table of `metric = bound`",
            None,
            attr="constraints",
        ),
        "privacy": KeyDoc("table", None, note="per-trial epsilon budget of a private study"),
    },
    "study": {
        "name": KeyDoc("string", "dp-digits", "name", wrong=3),
        "direction": KeyDoc(
            '`"maximize"` or `"minimize"`',
            "maximize",
            "directions",
            note="single objective; use `directions` for several",
        ),
        "directions": KeyDoc(
            'list of `"maximize"`/`"minimize"`', ["maximize", "minimize"], "directions", wrong=7
        ),
        "metrics": KeyDoc(
            "list of strings, one per direction",
            ["accuracy"],
            "metrics",
            wrong=7,
        ),
        "sampler": KeyDoc(
            "string, or `{type = NAME, kwarg = ...}`",
            {"type": "tpe", "n_startup_trials": 5},
            "sampler",
            wrong=7,
        ),
        "pruner": KeyDoc(
            "string, or `{type = NAME, kwarg = ...}`",
            {"type": "median", "n_warmup_steps": 2},
            "pruner",
            wrong=7,
            note="single-objective studies only",
        ),
        "storage": KeyDoc(
            "string: a URL or a path",
            "postgresql://tuner@db.example.org/studies",
            "storage",
            wrong=7,
        ),
        "n_trials": KeyDoc("positive int", 36, "n_trials", wrong=0),
        "timeout": KeyDoc("number > 0 (seconds)", 3600, "timeout", wrong=-1),
        "seed": KeyDoc("int in [0, 2**31 - 1]", 0, "seed", wrong=-1),
        "max_failures": KeyDoc("positive int", 5, "max_failures", wrong=0),
        "heartbeat_interval": KeyDoc("positive int (seconds)", 2, "heartbeat_interval", wrong=0),
        "grace_period": KeyDoc("positive int (seconds)", 20, "grace_period", wrong=0),
        "trials_dir": KeyDoc("string: a path", "runs/trials", "trials_dir", wrong=7),
    },
    "objective": {
        "entry": KeyDoc(
            "string: `path/to/file.py:fn` or `package.module:fn`",
            "objective.py:objective",
            "entry",
            wrong=7,
            note="relative paths resolve against the study file's directory",
        ),
        "args": KeyDoc(
            "table of fixed keyword arguments", {"epochs": 10, "seed": 0}, "args", wrong=7
        ),
    },
    "privacy": {
        "epsilon_metric": KeyDoc("string: a metric name", "epsilon", "epsilon_metric", wrong=7),
        "epsilon_budget": KeyDoc("number > 0", 8.0, "epsilon_budget", wrong=-1),
        "delta": KeyDoc("number in (0, 1)", 1e-5, "delta", wrong=2),
    },
    "param": {
        "type": KeyDoc(
            '`"float"`, `"int"` or `"categorical"`',
            "float",
            wrong="double",
            note="the parameter's kind: a real interval, an integer range or a list of choices",
        ),
        "low": KeyDoc("number (int for `int`)", 0.001, note="for float and int"),
        "high": KeyDoc("number (int for `int`)", 1.0, note="for float and int"),
        "log": KeyDoc("bool", True, wrong="yes", note="sample on a log scale; needs `low > 0`"),
        "step": KeyDoc(
            "number > 0 dividing `high - low`",
            0.001,
            wrong=-1,
            note="a grid; not with `log = true`",
        ),
        "choices": KeyDoc(
            "list of distinct scalars", ["adam", "sgd"], wrong=[], note="for categorical"
        ),
        "when": KeyDoc(
            "table `{parent = value or [values]}`",
            {"optimizer": "sgd"},
            wrong=7,
            note="the parameter exists only when its parents take these values",
        ),
    },
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _minimal_study() -> dict[str, Any]:
    """The smallest study file the validator accepts (as parsed TOML)."""
    return {
        "study": {"n_trials": 10},
        "objective": {"entry": "objective.py:objective"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    }


def _with(table: str, key: str, value: Any) -> dict[str, Any]:
    """The minimal study with ``key = value`` set in ``table``, kept otherwise consistent."""
    data = _minimal_study()
    if table == "param":
        param: dict[str, Any] = {"type": "float", "low": 0.001, "high": 1.0}
        if key in ("choices",):
            param = {"type": "categorical"}
        if key == "type":
            param = {"low": 0.001, "high": 1.0}
        if key == "when":
            data["space"]["optimizer"] = {"type": "categorical", "choices": ["adam", "sgd"]}
        param[key] = value
        data["space"]["x"] = param
        return data
    if table == "":
        return data
    section = data.setdefault(table, {})
    section[key] = value
    if table == "study" and key == "directions":
        section["metrics"] = ["accuracy", "epsilon"] if value == ["maximize", "minimize"] else None
        if section["metrics"] is None:
            del section["metrics"]
        data["study"]["sampler"] = "nsgaii"
    if table == "study" and key == "pruner":
        data["study"]["direction"] = "minimize"
    return data


def _validate(data: dict[str, Any]) -> Any:
    from research_ext.hpo._config import config_from_dict

    return config_from_dict(
        data, base_dir=ROOT / "docs", default_name="study", validate_objective=False
    )


def _attribute_docs() -> dict[str, str]:
    """``StudyConfig``'s ``Attributes:`` section: name -> description."""
    from research_ext.hpo._config import StudyConfig

    doc = inspect.getdoc(StudyConfig) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current and line.startswith("        "):
            out[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return out


def _required(table: str, key: str) -> bool:
    """Whether the validator refuses a minimal study once ``key`` is removed from it."""
    from research_ext.errors import ConfigError

    data = _minimal_study()
    if table == "param":
        param = {"type": "categorical", "choices": ["a"]} if key == "choices" else None
        data["space"]["x"] = param or {"type": "float", "low": 0.001, "high": 1.0}
        data["space"]["x"].pop(key, None)
    elif table == "":
        data.pop(key, None)
    else:
        data.get(table, {}).pop(key, None)
    try:
        _validate(data)
    except ConfigError:
        return True
    return False


def _default(attr: str | None, key: str, table: str) -> str:
    """What the validator fills in when the key is left out (read off a minimal study)."""
    if _required(table, key):
        return "**required**"
    if table == "param":
        spec = _validate(_minimal_study()).space[0]
        value = getattr(spec, key, None)
        return "none" if value in (None, ()) else f"`{_toml_value(value)}`"
    if table == "" or attr is None:
        return ""
    base = _validate(_minimal_study())
    if table == "privacy":
        base = _validate({**_minimal_study(), "privacy": {}})
    value = getattr(base, attr)
    if attr == "trials_dir":
        return "`<study name>.trials` next to the study file"
    if attr == "storage" and value is None:
        return "an SQLite file `<study file stem>.db` next to the study file"
    if attr == "name":
        return "the study file's stem"
    if attr == "directions":
        return f'`"{value[0]}"`' if key == "direction" else ""
    if attr == "metrics":
        return f"`{list(value)}` (`value_0`, `value_1`, ... for several)"
    if attr in ("sampler", "pruner"):
        return "none" if value is None else f"`{value}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return "none" if value is None else f"`{value}`"


def validator_keys() -> dict[str, tuple[str, ...]]:
    """The validator's table of allowed keys per table (``_KEYS`` in ``hpo/_config.py``).

    Raises:
        ReferenceDriftError: if the validator no longer has that table.
    """
    from research_ext.hpo import _config

    keys = getattr(_config, "_KEYS", None)
    if not isinstance(keys, dict):
        raise ReferenceDriftError(
            "research_ext/hpo/_config.py has no `_KEYS` table of allowed keys any more: point "
            "docs/_gen/reference.py at whatever lists the study file's keys now"
        )
    return keys


def check_study_keys() -> None:
    """Fail when the documented keys and the validator's keys differ, or an example is refused.

    Raises:
        ReferenceDriftError: naming what no longer matches.
    """
    from research_ext.errors import ConfigError

    keys = validator_keys()
    problems = []
    for table, names in keys.items():
        documented = KEY_DOCS.get(table, {})
        for name in names:
            if name not in documented:
                problems.append(f"[{table or 'top level'}] key {name!r} is not documented")
        for name in documented:
            if name not in names:
                problems.append(f"[{table or 'top level'}] key {name!r} is documented but unknown")
    for table in KEY_DOCS:
        if table not in keys:
            problems.append(f"table {table!r} is documented but the validator has no such table")
    attributes = _attribute_docs()
    for table, docs in KEY_DOCS.items():
        for name, doc in docs.items():
            if doc.attr is not None and doc.attr not in attributes:
                problems.append(f"StudyConfig documents no attribute {doc.attr!r} (key {name!r})")
            if table == "":
                continue
            try:
                _validate(_with(table, name, doc.example))
            except ConfigError as err:
                problems.append(f"example {name} = {doc.example!r} is refused: {err}")
            try:
                _validate(_with(table, name, doc.wrong))
            except ConfigError as err:
                if name not in str(err):
                    problems.append(f"wrong value for {name!r} refused without naming it: {err}")
            else:
                problems.append(f"{name} = {doc.wrong!r} (wrong on purpose) was accepted")
    if problems:
        raise ReferenceDriftError(
            "the study-file reference no longer matches research_ext/hpo/_config.py "
            "(update KEY_DOCS in docs/_gen/reference.py):\n  " + "\n  ".join(problems)
        )


def _rows(table: str, attributes: dict[str, str]) -> Iterator[str]:

    yield "| key | type | default | example | what it does |"
    yield "|---|---|---|---|---|"
    for name in validator_keys()[table]:
        doc = KEY_DOCS[table][name]
        what = attributes.get(doc.attr, "") if doc.attr else ""
        parts = (part.rstrip(".") for part in (what, doc.note) if part)
        what = " ".join(part[:1].upper() + part[1:] + "." for part in parts)
        example = "" if doc.example is None else f"`{name} = {_toml_value(doc.example)}`"
        default = _default(doc.attr, name, table)
        cells = (f"`{name}`", doc.type, default, example, what.replace("|", "\\|"))
        yield "| " + " | ".join(cells) + " |"


def study_file_reference() -> str:
    """The Markdown of the study-file reference page (checked by :func:`check_study_keys`)."""
    from research_ext.hpo._samplers import PRUNERS, SAMPLERS

    check_study_keys()
    attributes = _attribute_docs()
    # ``rst`` roles in StudyConfig's docstring read better as code in Markdown.
    attributes = {k: re.sub(r":\w+:`([^`]+)`", r"`\1`", v) for k, v in attributes.items()}
    attributes = {k: v.replace("``", "`") for k, v in attributes.items()}
    parts = [
        "# Study-file reference",
        "",
        "!!! note",
        "    Generated at build time from the validator in `research_ext/hpo/_config.py`: the",
        "    key list is the validator's own, each default is what it fills in when the key is",
        "    left out, and every example below has been run through it. A file with a key not",
        "    listed here is refused with a `ConfigError` naming the key and its line.",
        "",
        "A study file is TOML. `[study]`, `[objective]` and at least one `[space.NAME]` are",
        "required; `[constraints]` and `[privacy]` are optional. Load and validate one with",
        "`research_ext.hpo.load_config(path)` or `research-ext tune status STUDY.toml`.",
        "",
        "## Tables",
        "",
        *_rows("", attributes),
        "",
        "## `[study]`",
        "",
        *_rows("study", attributes),
        "",
        "Samplers by short name (or the Optuna class name): "
        + ", ".join(f"`{k}` ({v})" for k, v in SAMPLERS.items())
        + ". Pruners: "
        + ", ".join(f"`{k}` ({v})" for k, v in PRUNERS.items())
        + ". Keyword arguments of the class go in the inline table, except `seed` (use "
        "`study.seed`).",
        "",
        "## `[objective]`",
        "",
        *_rows("objective", attributes),
        "",
        "## `[space.NAME]`: one table per parameter",
        "",
        *_rows("param", attributes),
        "",
        "## `[constraints]`",
        "",
        "Each key is a metric the objective returns (in its dict) and each value a number: a",
        "trial is feasible when `metric <= bound`, e.g. `latency_ms = 20.0`.",
        "",
        "## `[privacy]`",
        "",
        *_rows("privacy", attributes),
        "",
        "## A complete example",
        "",
        "```toml",
        (ROOT / "examples" / "dp_digits.toml").read_text(encoding="utf-8").rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# API reference and error pages
# --------------------------------------------------------------------------------------------


def _origin(member: Any, name: str) -> str:
    """The public dotted name of a re-exported torch/scipy object (its own module's if none)."""
    import importlib

    for candidate in ("torch.fft", "torch", "torch.nn", "scipy.fft", "scipy.signal", "numpy"):
        try:
            module = importlib.import_module(candidate)
        except ImportError:
            continue
        if getattr(module, name, None) is member:
            return f"{candidate}.{name}"
    return f"{getattr(member, '__module__', '?')}.{getattr(member, '__name__', name)}"


def public_names(module_name: str) -> list[str]:
    """The ``__all__`` of a public module (imported, so it is the list callers see)."""
    import importlib

    module = importlib.import_module(module_name)
    return list(module.__all__)


def api_page(module_name: str) -> str:
    """One section per public name: mkdocstrings renders its docstring and signature."""
    import importlib

    module = importlib.import_module(module_name)
    lines = [f"# `{module_name}`", ""]
    doc = inspect.getdoc(module) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    lines += [first.replace("``", "`"), ""]
    for name in module.__all__:
        member = getattr(module, name)
        if inspect.ismodule(member) and member.__name__ in PUBLIC_MODULES:
            short = member.__name__.removeprefix("research_ext.")
            lines += [
                f"## `{name}`",
                "",
                f"The public namespace `{member.__name__}`: see [its page]({short}.md).",
                "",
            ]
            continue
        if inspect.ismodule(member):  # a namespace inside this module (complex.nn.init)
            lines += [
                f"::: {module_name}.{name}",
                "    options:",
                "      show_root_full_path: false",
                "",
            ]
            continue
        defined_in = getattr(member, "__module__", None) or ""
        if not defined_in.startswith("research_ext"):
            # Re-exported from torch/scipy as they are (the same object): say so and link out.
            lines += [
                f"## `{name}`",
                "",
                f"`{_origin(member, name)}`, re-exported unchanged so that the namespace is "
                "complete (see its own documentation).",
                "",
            ]
            continue
        lines += [
            f"::: {module_name}.{name}",
            "    options:",
            "      show_root_full_path: false",
            "",
        ]
    return "\n".join(lines)


@functools.cache
def _trees() -> tuple[tuple[str, ast.Module], ...]:
    out = []
    for path in sorted((ROOT / "research_ext").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out.append((module, ast.parse(path.read_text(encoding="utf-8"))))
    return tuple(out)


def _public_names() -> dict[tuple[str, str], str]:
    """(defining module, name) -> the public dotted name it is exported as."""
    import importlib

    out: dict[tuple[str, str], str] = {}
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional dependency is missing
            continue
        for name in module.__all__:
            member = getattr(module, name)
            defined_in = getattr(member, "__module__", None)
            if defined_in:
                out.setdefault((defined_in, name), f"{module_name}.{name}")
    return out


def raised_by(class_name: str) -> list[str]:
    """Where research_ext creates a ``class_name``: public names where it can, else the module.

    A function or method is listed by its public name (``research_ext.privacy.DPSGD.step``)
    when it or its class is exported; otherwise its private module is named.
    """
    public = _public_names()
    found = set()
    for module, tree in _trees():
        module = module.removesuffix(".__init__")
        for top in tree.body:
            if isinstance(top, ast.ClassDef):
                units = [
                    (top.name, f".{node.name}", node)
                    for node in top.body
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
            elif isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
                units = [(top.name, "", top)]
            else:
                continue
            for name, method, node in units:
                if not any(
                    isinstance(inner, ast.Call) and _called_name(inner.func) == class_name
                    for inner in ast.walk(node)
                ):
                    continue
                exported = public.get((module, name))
                if exported and method.startswith("._") and method != ".__init__":
                    found.add(f"`{exported}` (in one of its private helpers)")
                elif exported:
                    found.add(f"`{exported}{method.replace('.__init__', '')}`")
                else:
                    found.add(f"internally, in `{module}`")
    return sorted(found, key=lambda s: (s.startswith("internally"), s))


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def error_page(class_name: str) -> str:
    """One page per error class: its docstring, its bases, where it is raised, how to handle it."""
    import research_ext.errors as errors

    cls = getattr(errors, class_name)
    bases = (
        ", ".join(
            f"`{b.__name__}`"
            for b in cls.__mro__[1:]
            if b not in (object, BaseException, Exception)
        )
        or "`Exception`"
    )
    places = raised_by(class_name)
    notes = ROOT / "docs" / "_snippets" / "errors" / f"{class_name}.md"
    if not notes.is_file():
        raise ReferenceDriftError(
            f"research_ext.errors.{class_name} has no page: write docs/_snippets/errors/"
            f"{class_name}.md (when it is raised, how to handle it, an example)"
        )
    lines = [
        f"# `{class_name}`",
        "",
        f"`from research_ext.errors import {class_name}`; subclass of {bases}.",
        "",
        (inspect.getdoc(cls) or "").replace("``", "`"),
        "",
        f"API entry: [`research_ext.errors.{class_name}`](../api/errors.md#research_ext.errors.{class_name}).",
        "",
        notes.read_text(encoding="utf-8").rstrip(),
        "",
        "## Raised by",
        "",
    ]
    if places:
        lines += [f"- {place}" for place in places]
    else:
        lines += ["Not raised by research_ext itself; a base class to catch its subclasses."]
    return "\n".join(lines) + "\n"


def errors_index() -> str:
    """The list of error pages with each class's one-line summary."""
    import research_ext.errors as errors

    lines = [
        "# Errors",
        "",
        "Bad arguments raise the builtin `ValueError` or `TypeError`, with a message naming the",
        "function, the argument, what was given and what is allowed. The classes below mark",
        "conditions a training script or a study runner may want to catch. All derive from",
        "`ResearchExtError`; most also derive from the builtin they refine, so `except",
        "ValueError` keeps working.",
        "",
        "| error | when |",
        "|---|---|",
    ]
    for name in errors.__all__:
        summary = (inspect.getdoc(getattr(errors, name)) or "").split("\n", 1)[0]
        lines.append(f"| [`{name}`]({name}.md) | {summary.replace('``', '`')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "research_ext").rglob("*.py")):
        digest.update(path.read_bytes())
    for path in sorted((ROOT / "examples").glob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def executed_notebook(
    path: pathlib.Path, cache_dir: pathlib.Path, log: Callable[[str], None] = print
) -> bytes:
    """``path`` executed at the small size (``RESEARCH_EXT_NOTEBOOK_SIZE=small``), as JSON bytes.

    Cached under ``cache_dir`` by the notebook's content and the library's and examples'
    sources, so a rebuild after a docs-only change executes nothing. While writing docs,
    ``RESEARCH_EXT_DOCS_NOTEBOOKS=reuse`` takes any earlier run of the notebook from the cache.
    """
    import tempfile

    import nbclient
    import nbformat

    raw = path.read_bytes()
    key = hashlib.sha256(raw + _source_digest().encode()).hexdigest()[:16]
    cached = cache_dir / f"{path.stem}-{key}.ipynb"
    if cached.is_file():
        return cached.read_bytes()
    if os.environ.get("RESEARCH_EXT_DOCS_NOTEBOOKS") == "reuse":  # writing docs: any cached run
        for stale in sorted(cache_dir.glob(f"{path.stem}-*.ipynb")):
            log(f"{path.name}: reusing {stale.name} (RESEARCH_EXT_DOCS_NOTEBOOKS=reuse)")
            return stale.read_bytes()
    log(f"executing {path.name} (small size) for the docs")
    notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
    env = {"RESEARCH_EXT_NOTEBOOK_SIZE": "small", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    saved = {k: os.environ.get(k) for k in (*env, "MPLBACKEND")}
    os.environ.update(env)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend keeps the figures
    try:
        with tempfile.TemporaryDirectory() as workdir:
            client = nbclient.NotebookClient(
                notebook,
                timeout=600,
                kernel_name="python3",
                resources={"metadata": {"path": workdir}},
                extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP-transport notice
            )
            client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise RuntimeError(
                    f"{path.name} raised {output.get('ename')}: {output.get('evalue')}"
                )
    data = nbformat.writes(notebook).encode("utf-8")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f"{path.stem}-*.ipynb"):
        stale.unlink(missing_ok=True)  # another test process may have removed it first
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, cached)  # whole or absent, never a truncated run
    return data
