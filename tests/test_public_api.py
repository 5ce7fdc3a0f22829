"""Every name in every public ``__all__`` imports, carries a docstring and appears once."""

import importlib
import inspect
import pathlib
import sys

import pytest

# The modules with an API page (one list, kept by the docs generator) plus the two without one.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "docs" / "_gen"))
import reference  # noqa: E402

PUBLIC_MODULES = ("research_ext", "research_ext.cli", *reference.PUBLIC_MODULES)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_import_and_are_documented(module_name):
    module = importlib.import_module(module_name)
    assert module.__doc__, f"{module_name} has no module docstring"
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    assert len(names) == len(set(names)), f"{module_name}.__all__ repeats a name"
    assert list(names) == sorted(names, key=lambda n: (n.lower(), n)) or list(names) == sorted(
        names
    ), f"{module_name}.__all__ is not sorted"
    for name in names:
        obj = getattr(module, name)
        if name == "__version__" or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"


def test_core_exports_are_defined_in_private_modules():
    import research_ext.core as core

    for name in core.__all__:
        obj = getattr(core, name)
        origin = getattr(obj, "__module__", "")
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert origin.startswith(("research_ext.core._", "torch")), (name, origin)
