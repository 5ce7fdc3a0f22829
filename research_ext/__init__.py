"""research_ext: PyTorch research extensions.

Four independent subpackages over one shared tensor core:

* :mod:`research_ext.functional`: composable derivatives and curvature operators;
* :mod:`research_ext.complex`: complex-valued layers and scipy-style spectral ops;
* :mod:`research_ext.privacy`: DP-SGD with per-sample clipping and privacy accounting;
* :mod:`research_ext.hpo`: Optuna studies from a declarative config.

Importing ``research_ext`` imports no subpackage and no optional dependency: each subpackage
loads on first attribute access (PEP 562), so ``research_ext.privacy`` costs nothing until used.

Example:
    >>> import research_ext
    >>> isinstance(research_ext.__version__, str)
    True
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = frozenset({"core", "errors", "functional", "complex", "privacy", "hpo", "cli"})

if TYPE_CHECKING:  # pragma: no cover - for IDEs and type checkers only
    from research_ext import core, errors  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])


__all__ = ["__version__"]
