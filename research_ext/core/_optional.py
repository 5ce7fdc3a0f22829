"""Optional dependencies, imported on demand with an error that names the pip extra."""

import importlib
from types import ModuleType

__all__ = ["require"]


def require(package: str, extra: str) -> ModuleType:
    """Import ``package`` or raise an ``ImportError`` telling how to install it.

    Args:
        package: the importable name, e.g. ``"optuna"``.
        extra: the research-ext extra that installs it, e.g. ``"hpo"``.

    Returns:
        The imported module.

    Raises:
        ImportError: if the package is missing; the message names ``research-ext[extra]``.

    Example:
        >>> require("math", extra="none").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(
            f"`{package}` is required for this feature but could not be imported ({err}); "
            f"install it with `pip install 'research-ext[{extra}]'` (research_ext[{extra}])"
        ) from err
