"""The shared tensor core: devices, seeding, pytrees, numpy bridge, linear operators, checks.

Everything two subpackages need lives here once. It imports torch, numpy, scipy and tqdm only,
never a subpackage and never an optional dependency; each name loads its module on first use.

Example:
    >>> import research_ext.core as rcore
    >>> rcore.resolve_device("cpu")
    device(type='cpu')
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers; at run time names load on first use
    from research_ext.core._bridge import from_numpy, to_numpy
    from research_ext.core._device import resolve_device, resolve_dtype
    from research_ext.core._linear_operator import (
        DenseOperator,
        DiagonalOperator,
        IdentityOperator,
        LinearOperator,
    )
    from research_ext.core._optional import require
    from research_ext.core._params import call_with_params, module_buffers, module_params
    from research_ext.core._progress import is_interactive, progress
    from research_ext.core._pytree import (
        TreeSpec,
        ravel_pytree,
        tree_flatten,
        tree_leaves,
        tree_map,
        tree_unflatten,
    )
    from research_ext.core._random import make_generator, seed_everything
    from research_ext.core._validation import (
        check_dtype_floating,
        check_in_range,
        check_int,
        check_one_of,
        check_positive,
        check_probability,
        check_type,
        format_message,
    )

# Each name loads its module on first use (PEP 562), so a subpackage that needs only the checks,
# optional imports or progress bars (hpo) does not pay for importing torch.
_LAZY = {
    "DenseOperator": "_linear_operator",
    "DiagonalOperator": "_linear_operator",
    "IdentityOperator": "_linear_operator",
    "LinearOperator": "_linear_operator",
    "TreeSpec": "_pytree",
    "call_with_params": "_params",
    "check_dtype_floating": "_validation",
    "check_in_range": "_validation",
    "check_int": "_validation",
    "check_one_of": "_validation",
    "check_positive": "_validation",
    "check_probability": "_validation",
    "check_type": "_validation",
    "format_message": "_validation",
    "from_numpy": "_bridge",
    "make_generator": "_random",
    "module_buffers": "_params",
    "module_params": "_params",
    "is_interactive": "_progress",
    "progress": "_progress",
    "ravel_pytree": "_pytree",
    "require": "_optional",
    "resolve_device": "_device",
    "resolve_dtype": "_device",
    "seed_everything": "_random",
    "to_numpy": "_bridge",
    "tree_flatten": "_pytree",
    "tree_leaves": "_pytree",
    "tree_map": "_pytree",
    "tree_unflatten": "_pytree",
}


__all__ = [
    "DenseOperator",
    "DiagonalOperator",
    "IdentityOperator",
    "LinearOperator",
    "TreeSpec",
    "call_with_params",
    "check_dtype_floating",
    "check_in_range",
    "check_int",
    "check_one_of",
    "check_positive",
    "check_probability",
    "check_type",
    "format_message",
    "from_numpy",
    "is_interactive",
    "make_generator",
    "module_buffers",
    "module_params",
    "progress",
    "ravel_pytree",
    "require",
    "resolve_device",
    "resolve_dtype",
    "seed_everything",
    "to_numpy",
    "tree_flatten",
    "tree_leaves",
    "tree_map",
    "tree_unflatten",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
