"""No private name crosses a file: a helper used by two modules lives in a module named for it.

A module may import its siblings' private *modules* (``_storage``) but not their private *names*
(``_connect``): a name that another file needs is public within the package. The same holds for
benchmarks (which may time one internal module) and examples.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_module(dotted: str) -> bool:
    parts = dotted.split(".")
    path = ROOT.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("research_ext"):
                continue
            for alias in node.names:
                if not _private(alias.name):
                    continue
                if _is_module(f"{node.module}.{alias.name}"):
                    continue  # a private module of the package, imported by a sibling
                found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    return [f"{path.relative_to(ROOT)}:{item}" for item in found]


def _files(folder: str) -> list[pathlib.Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["research_ext", "benchmarks", "examples"])
def test_no_private_name_is_imported_from_another_file(folder):
    found = [v for path in _files(folder) for v in _violations(path)]
    assert not found, "private names imported across files:\n" + "\n".join(found)
