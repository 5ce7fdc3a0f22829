"""`make demo` installs only the runtime extras; the developer tools come with `make test`."""

import pathlib
import re
import shutil
import subprocess

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEV_TOOLS = ("pytest", "ruff", "mypy", "import-linter", "pre-commit", "hypothesis", "mkdocs")


def _dry_run(target: str, tmp_path: pathlib.Path) -> str:
    assert shutil.which("make"), "make is needed (the README's two commands are make targets)"
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _requirements(extra: str, table: dict[str, list[str]]) -> set[str]:
    """Every requirement an extra brings, following ``research-ext[...]`` self-references."""
    out: set[str] = set()
    for requirement in table[extra]:
        nested = re.match(r"research-ext\[([^\]]+)\]", requirement)
        if nested:
            for inner in nested.group(1).split(","):
                out |= _requirements(inner.strip(), table)
        else:
            out.add(re.split(r"[<>=;\[ ]", requirement, maxsplit=1)[0].lower())
    return out


def test_demo_installs_the_runtime_extras_only(tmp_path):
    commands = _dry_run("demo", tmp_path)
    installs = [line for line in commands.splitlines() if "pip install" in line]
    extras = re.findall(r'-e "\.\[([^\]]+)\]"', "\n".join(installs))
    assert extras, commands
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    brought = set().union(*(_requirements(e.strip(), table) for x in extras for e in x.split(",")))
    assert not brought & set(DEV_TOOLS), f"make demo would install {brought & set(DEV_TOOLS)}"
    assert {"optuna", "opacus", "scikit-learn"} <= brought
    assert "examples/demo.py" in commands


def test_test_and_docs_install_the_developer_tools(tmp_path):
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = _requirements("dev", table)
    assert set(DEV_TOOLS) <= dev
    for target in ("test", "docs", "lint"):
        assert '-e ".[dev]"' in _dry_run(target, tmp_path), target


def test_docs_are_built_strictly_by_make_test(tmp_path):
    commands = _dry_run("test", tmp_path)
    assert re.search(r"mkdocs build --strict", commands)
