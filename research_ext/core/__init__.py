"""The shared tensor core: devices, seeding, pytrees, numpy bridge, linear operators, checks.

Everything two subpackages need lives here once. It imports torch, numpy, scipy and tqdm only,
never a subpackage and never an optional dependency.

Example:
    >>> import research_ext.core as rcore
    >>> rcore.resolve_device("cpu")
    device(type='cpu')
"""

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
from research_ext.core._progress import progress
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
