"""The custom import-linter contract (tools/import_contracts.py) catches an eager import."""

import sys
import textwrap

import grimp
import pytest

from tools.import_contracts import LazyImportContract


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    (root / "heavy").mkdir(parents=True)
    (root / "light").mkdir()
    for sub in ("", "heavy", "light"):
        (root / sub / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        del sys.modules[name]


def _check(root, source):
    (root / "light" / "mod.py").write_text(textwrap.dedent(source))
    graph = grimp.build_graph("pkg", cache_dir=None)
    contract = LazyImportContract(
        name="light imports heavy lazily",
        session_options={},
        contract_options={"source_modules": ["pkg.light"], "lazy_modules": ["pkg.heavy"]},
    )
    return contract.check(graph, verbose=False)


def test_an_import_inside_a_function_keeps_the_contract(package):
    check = _check(package, "def f():\n    import pkg.heavy\n    return pkg.heavy\n")
    assert check.kept, check.metadata


@pytest.mark.parametrize(
    "source",
    [
        "import pkg.heavy\n",
        "from pkg import heavy\n",
        "if True:\n    from pkg.heavy import __name__ as n\n",
        "class C:\n    import pkg.heavy\n",
        "try:\n    import pkg.heavy\nexcept ImportError:\n    pass\n",
    ],
)
def test_an_import_that_runs_at_import_time_breaks_it(package, source):
    check = _check(package, source)
    assert not check.kept
    assert check.metadata["eager"] and "pkg.light.mod -> pkg.heavy" in check.metadata["eager"][0]
