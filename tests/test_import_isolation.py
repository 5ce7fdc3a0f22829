"""Each subpackage imports in a fresh interpreter without pulling in another's heavy dependencies."""

import json

import pytest

from tests.helpers import run_python

HEAVY = ("optuna", "opacus", "sqlalchemy", "matplotlib")

# module -> heavy packages it must not load at import time
RULES = {
    "research_ext": HEAVY,
    # scipy.sparse.linalg is imported by LinearOperator.to_scipy only: every module imports core.
    "research_ext.core": (*HEAVY, "scipy.sparse.linalg"),
    "research_ext.errors": HEAVY,
    "research_ext.cli": HEAVY,
    "research_ext.functional": HEAVY,
    "research_ext.complex": HEAVY,
    "research_ext.privacy": ("optuna", "sqlalchemy", "matplotlib"),
    # hpo -> privacy is allowed inside functions only (the sibling check below enforces it).
    "research_ext.hpo": ("opacus", "matplotlib"),
}
SUBPACKAGES = ("functional", "complex", "privacy", "hpo")


@pytest.mark.parametrize("module", sorted(RULES))
def test_import_does_not_load_heavy_dependencies(module):
    code = (
        f"import sys, json, {module}\n"
        f"print(json.dumps({{'loaded': [m for m in {RULES[module]!r} if m in sys.modules], "
        f"'siblings': sorted(m for m in sys.modules if m.startswith('research_ext.'))}}))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"`import {module}` loaded {report['loaded']}"
    own = module.split(".")[1] if module.count(".") >= 1 else None
    others = {f"research_ext.{s}" for s in SUBPACKAGES if s != own}
    leaked = [m for m in report["siblings"] if ".".join(m.split(".")[:2]) in others]
    assert leaked == [], f"`import {module}` imported other subpackages: {leaked}"


def test_top_level_is_lazy():
    result = run_python(
        "import sys, research_ext\n"
        "print(sorted(m for m in sys.modules if m.startswith('research_ext')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['research_ext']"


def test_lazy_attribute_access_loads_subpackage():
    result = run_python("import research_ext\nprint(research_ext.core.resolve_device('cpu'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu"


def test_unknown_attribute():
    result = run_python("import research_ext\nresearch_ext.nope")
    assert "module 'research_ext' has no attribute 'nope'" in result.stderr


def test_hpo_without_optuna_names_the_extra():
    result = run_python("import sys\nsys.modules['optuna'] = None\nimport research_ext.hpo")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "research-ext[hpo]" in result.stderr
