"""Every code block in the README and the documentation runs (or, for shell, names real things).

The conventions are in tests/docs_blocks.py. The site itself is built strictly by `make docs`
(part of `make test`); these tests check what the build cannot: that the examples work.
"""

import functools
import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests import docs_blocks

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_gen"))
import reference  # noqa: E402

PAGES = sorted(
    [ROOT / "README.md"]
    + [p for p in DOCS.rglob("*.md") if "_gen" not in p.parts]
    + [ROOT / "CHANGELOG.md"]
)
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]
# Pages whose examples run studies or train models (each > a few seconds on 2 loaded cores).
SLOW_PAGES = {
    "README.md",
    "docs/getting-started.md",
    "docs/guides/hpo.md",
    "docs/guides/privacy.md",
    "docs/guides/functional.md",
    "docs/tuning/objective.md",
    "docs/tuning/optuna-tools.md",
    "docs/tuning/postgresql.md",
    "docs/coming-from.md",
}
SHOWN_ONLY = {  # commands a page shows for the reader's machine, not ours to check
    "echo",
    "cd",
    "git",
    "psql",
    "createdb",
    "createuser",
    "sudo",
    "apt-get",
    "export",
    "ssh",
    "open",
    "xdg-open",
    "ls",
    "cat",
    "rm",
}


def _python_pages(slow: bool) -> list[pathlib.Path]:
    out = []
    for path, page_id in zip(PAGES, PAGE_IDS, strict=True):
        page_blocks = docs_blocks.blocks(path.read_text(encoding="utf-8"))
        if any(b.lang in ("python", "py") and b.title is None for b in page_blocks):
            if (page_id in SLOW_PAGES) == slow:
                out.append(path)
    return out


def _tree(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


_DRIVER = """
import os, pathlib, sys, traceback
for directory, script in zip(sys.argv[1::2], sys.argv[2::2]):
    os.chdir(directory)
    sys.path.insert(0, directory)
    try:
        exec(compile(pathlib.Path(script).read_text(), script, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: {script}", file=sys.stderr)
        sys.exit(1)
    finally:
        sys.path.remove(directory)
"""


def _run_pages(paths: list[pathlib.Path], tmp_path: pathlib.Path) -> None:
    """Run the pages' Python blocks in one fresh interpreter, each page in its own directory."""
    args = []
    for i, path in enumerate(paths):
        source = str(path.relative_to(ROOT))
        workdir = tmp_path / f"page{i}"
        shutil.copytree(
            ROOT / "examples", workdir / "examples", ignore=shutil.ignore_patterns("*.db")
        )
        script = workdir / "page.py"
        script.write_text(docs_blocks.script(docs_blocks.blocks(path.read_text()), source))
        args += [str(workdir), str(script)]
    (tmp_path / "driver.py").write_text(_DRIVER, encoding="utf-8")
    before = _tree(ROOT / "examples")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert _tree(ROOT / "examples") == before, "a page wrote into examples/ of the source tree"


@pytest.mark.slow
def test_python_blocks_run_quick_pages(tmp_path):
    """The pages with quick examples, together in one interpreter (one torch import)."""
    _run_pages(_python_pages(slow=False), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", _python_pages(slow=True), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path):
    _run_pages([path], tmp_path)


def test_file_blocks_are_named_once_per_page():
    for path in PAGES:
        titles = [b.title for b in docs_blocks.blocks(path.read_text()) if b.title]
        assert len(titles) == len(set(titles)), f"{path}: a file is written twice: {titles}"


@pytest.mark.parametrize("path", PAGES, ids=PAGE_IDS)
def test_toml_study_blocks_validate(path):
    from research_ext.errors import ConfigError
    from research_ext.hpo._config import config_from_dict

    for block in docs_blocks.blocks(path.read_text(encoding="utf-8")):
        if block.lang != "toml" or "[study]" not in block.body:
            continue
        data = tomllib.loads(block.body)
        if block.title and block.title.startswith("broken_"):  # shown to be refused
            with pytest.raises(ConfigError):
                config_from_dict(data, base_dir=ROOT, validate_objective=False)
            continue
        config_from_dict(data, base_dir=ROOT, validate_objective=False)


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


@functools.cache
def _help(*argv: str) -> str:
    if pathlib.Path(argv[0]).name == "research-ext":  # in-process: one import, not one per call
        import contextlib
        import io

        from research_ext import cli

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.main([*argv[1:], "--help"])
        assert out.getvalue(), f"`{' '.join(argv)} --help` printed nothing"
        return out.getvalue()
    result = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, f"`{' '.join(argv)} --help` failed: {result.stderr[-2000:]}"
    return result.stdout


def _check_flags(argv: list[str], help_text: str, where: str) -> None:
    for arg in argv:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert re.search(rf"(^|[\s,\[|]){re.escape(flag)}\b", help_text), (
                f"{where}: `{' '.join(argv)}` uses {flag}, which its --help does not list"
            )


def _bin(name: str) -> str:
    local = pathlib.Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _check_subcommands(program: str, argv: list[str], where: str) -> None:
    """Walk ``program SUB SUB ...``: each word must be a subcommand in its parent's --help."""
    path = [_bin(program)]
    words = argv[1:]
    for i, word in enumerate(words):
        if word.startswith("-") or "." in word or "/" in word:
            break
        options = word.split("|")
        text = _help(*path)
        known = [
            o for o in options if re.search(rf"^\s+{re.escape(o)}\b|{{[^}}]*\b{o}\b", text, re.M)
        ]
        if not known:
            break  # a positional argument, not a subcommand
        assert len(known) == len(options), f"{where}: {program} has no subcommand among {options}"
        for option in options[1:]:
            _help(*path, option)
        path.append(options[0])
        if i == len(words) - 1:
            break
    _check_flags(argv, _help(*path), where)


def _check_command(argv: list[str], where: str) -> None:
    program = pathlib.Path(argv[0]).name
    if program in SHOWN_ONLY:
        return
    if program == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        for target in targets:
            assert target in _makefile_targets(), f"{where}: no Makefile target {target!r}"
        return
    if program in ("research-ext", "optuna"):
        _check_subcommands(program, argv, where)
        return
    if program in ("optuna-dashboard", "tensorboard"):
        _check_flags(argv, _help(_bin(program)), where)
        return
    if program in ("python", "python3", "torchrun"):
        scripts = [a for a in argv if a.endswith(".py")]
        if program != "torchrun" and argv[1:2] == ["-m"]:
            _check_flags(argv, _help(sys.executable, "-m", argv[2]), where)
            return
        assert scripts, f"{where}: `{' '.join(argv)}` names no script"
        script = ROOT / scripts[0]
        assert script.is_file(), f"{where}: {scripts[0]} does not exist"
        after = argv[argv.index(scripts[0]) + 1 :]
        _check_flags(after, _help(sys.executable, str(script)), where)
        return
    if program == "pip":
        extras = re.findall(r"research-ext\[([^\]]+)\]", " ".join(argv))
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        for group in extras:
            for extra in group.split(","):
                assert extra.strip() in declared, f"{where}: no extra {extra!r} in pyproject.toml"
        return
    if program == "bash":
        assert (ROOT / argv[1]).is_file(), f"{where}: {argv[1]} does not exist"
        return
    pytest.fail(f"{where}: unknown command {program!r}; check it here or list it in SHOWN_ONLY")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=i, marks=[pytest.mark.slow] if i in SLOW_PAGES else [])
        for p, i in zip(PAGES, PAGE_IDS, strict=True)
    ],
)
def test_shell_blocks_name_real_commands(path):
    for block in docs_blocks.blocks(path.read_text(encoding="utf-8")):
        if block.lang not in ("bash", "sh", "shell"):
            continue
        for argv in docs_blocks.shell_commands(block.body):
            argv = [a.replace(".venv/bin/", "") for a in argv]
            _check_command(argv, f"{path.relative_to(ROOT)}:{block.line}")


def test_study_file_reference_matches_the_validator():
    reference.check_study_keys()
    page = reference.study_file_reference()
    from research_ext.hpo import _config

    for table, keys in _config._KEYS.items():
        for key in keys:
            assert f"| `{key}` |" in page, f"[{table}] {key} missing from the reference"


def test_reference_check_catches_an_undocumented_key(monkeypatch):
    from research_ext.hpo import _config

    keys = dict(_config._KEYS)
    keys["study"] = (*keys["study"], "brand_new_key")
    monkeypatch.setattr(_config, "_KEYS", keys)
    with pytest.raises(reference.ReferenceDriftError, match="brand_new_key"):
        reference.check_study_keys()


def _public_modules() -> set[str]:
    found = set()
    for path in (ROOT / "research_ext").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        if any(part.startswith("_") and part != "__init__" for part in rel.parts):
            continue
        if "__all__" not in path.read_text(encoding="utf-8"):
            continue
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name in ("research_ext", "research_ext.cli"):
            continue  # the version string and the console entry point
        found.add(name)
    return found


def test_every_public_module_has_an_api_page():
    assert _public_modules() <= set(reference.PUBLIC_MODULES)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for module in reference.PUBLIC_MODULES:
        assert f"api/{module.removeprefix('research_ext.')}.md" in nav


@pytest.mark.parametrize("module", reference.PUBLIC_MODULES)
def test_api_page_lists_every_public_name(module):
    mod = importlib.import_module(module)
    page = reference.api_page(module)
    for name in mod.__all__:
        assert f"{module}.{name}" in page or f"## `{name}`" in page


def test_every_error_class_has_a_page():
    import research_ext.errors as errors

    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in errors.__all__:
        page = reference.error_page(name)
        assert f"research_ext.errors.{name}" in page
        assert f"errors/{name}.md" in nav, f"{name}'s page is not in mkdocs.yml's nav"


def test_raised_by_finds_real_raise_sites():
    places = reference.raised_by("ConfigError")
    assert "`research_ext.hpo.load_config`" in places
    budget = reference.raised_by("PrivacyBudgetExceededError")
    assert any(place.startswith("`research_ext.privacy.DPSGD") for place in budget), budget


def test_every_handwritten_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in DOCS.rglob("*.md"):
        if {"_gen", "_snippets"} & set(path.parts):
            continue
        assert str(path.relative_to(DOCS)) in nav, f"{path} is not in mkdocs.yml's nav"


def test_every_notebook_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"notebooks/{path.name}" in nav


def test_block_extraction_follows_the_conventions():
    text = (
        "```python\nx = 1\n```\n\n"
        '```python title="mod.py"\ndef f(): ...\n```\n\n'
        "- item\n\n    ```bash\n    make demo  # comment\n    ```\n"
    )
    found = docs_blocks.blocks(text)
    assert [(b.lang, b.title) for b in found] == [
        ("python", None),
        ("python", "mod.py"),
        ("bash", None),
    ]
    assert docs_blocks.shell_commands(found[2].body) == [["make", "demo"]]
    assert docs_blocks.shell_commands("A=1 make test && echo ok\n") == [
        ["make", "test"],
        ["echo", "ok"],
    ]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.slow
def test_coming_from_tables_name_real_calls():
    text = (DOCS / "coming-from.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 40
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for cell in cells[:2]:
            name = cell.strip("`")
            try:
                _resolve(name)
            except (ImportError, AttributeError) as err:
                pytest.fail(f"coming-from.md names {name!r}, which does not exist: {err}")


def test_house_docstrings_render_examples_and_keep_indexing_literal():
    import griffe_docstrings

    assert griffe_docstrings._escape_line("X[f, m][0] at `a[0][1]`") == "X[f, m]\\[0] at `a[0][1]`"
    assert griffe_docstrings._escape_line("    >>> x[0][0]") == "    >>> x[0][0]"

    class Doc:
        value = "Summary.\n\nExample:\n    >>> eigsh(A)[0][0]\n    5.0\n"

    class Obj:
        docstring = Doc()

    griffe_docstrings.HouseDocstrings().on_instance(obj=Obj())
    assert "Examples:\n    >>> eigsh(A)[0][0]" in Obj.docstring.value

    Obj.docstring = Doc()
    Obj.docstring.value = "See :meth:`DPSGD.step` and :func:`~rp.epsilon`, :math:`\\sigma`.\n\n    .. math:: a\n              + b\n\n    Next."
    griffe_docstrings.HouseDocstrings().on_instance(obj=Obj())
    assert "See `step` and `rp.epsilon`, `\\sigma`." in Obj.docstring.value
    assert "    ```text\n    a\n    + b\n    ```\n\n    Next." in Obj.docstring.value
