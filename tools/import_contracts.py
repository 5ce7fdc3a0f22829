"""Custom import-linter contracts for research_ext (registered in pyproject.toml).

``lazy``: every direct import from ``source_modules`` to ``lazy_modules`` must sit inside a function
body, so importing the source never imports the target. ``hpo`` uses it for ``privacy``: a study
that never asks for privacy-aware tuning must not pay for torch or opacus at start-up. grimp's
graph knows the line of each import but not its scope, so the scope is read from the source.
"""

import ast
import importlib.util
from typing import Any

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def _module_level_lines(module: str) -> frozenset[int]:
    """Line numbers of the import statements of ``module`` that run when it is imported."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return frozenset()
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    lines: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # runs only when called
            if isinstance(child, ast.Import | ast.ImportFrom):
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
            visit(child)

    visit(tree)
    return frozenset(lines)


def _expand(graph: ImportGraph, names: set[Any]) -> set[str]:
    modules: set[str] = set()
    for name in names:
        modules.add(name.name)
        modules.update(graph.find_descendants(name.name))
    return modules


class LazyImportContract(Contract):
    """Imports from ``source_modules`` to ``lazy_modules`` only inside functions."""

    type_name = "lazy"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    lazy_modules = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        """Kept when no direct import between the two sets runs at import time."""
        sources = _expand(graph, set(self.source_modules))
        targets = _expand(graph, set(self.lazy_modules))
        eager: list[str] = []
        scopes: dict[str, frozenset[int]] = {}
        for importer in sorted(sources):
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & targets):
                at_import = scopes.setdefault(importer, _module_level_lines(importer))
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    if detail["line_number"] in at_import:
                        eager.append(
                            f"{importer} -> {imported} (l.{detail['line_number']}: "
                            f"{detail['line_contents']})"
                        )
        return ContractCheck(kept=not eager, metadata={"eager": eager})

    def render_broken_contract(self, check: ContractCheck) -> None:
        """Print each eager import with its line."""
        output.print_error(
            "These imports run at import time; move them into the function using them:"
        )
        output.new_line()
        for line in check.metadata["eager"]:
            output.print_error(f"-   {line}", bold=False)
        output.new_line()
