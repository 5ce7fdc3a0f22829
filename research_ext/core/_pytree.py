"""Pytrees (nested lists, tuples, dicts of tensors) over ``torch.utils._pytree``.

torch's pytree module is private API; every subpackage goes through this one module so a change
upstream is absorbed in one place.
"""

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as _torch_pytree

__all__ = ["TreeSpec", "ravel_pytree", "tree_flatten", "tree_leaves", "tree_map", "tree_unflatten"]

TreeSpec = _torch_pytree.TreeSpec


def tree_flatten(tree: Any) -> tuple[list[Any], TreeSpec]:
    """Flatten ``tree`` into its leaves and a spec that rebuilds it.

    Example:
        >>> leaves, spec = tree_flatten({"a": 1, "b": (2, 3)})
        >>> leaves
        [1, 2, 3]
    """
    return _torch_pytree.tree_flatten(tree)


def tree_unflatten(leaves: list[Any], spec: TreeSpec) -> Any:
    """Rebuild the tree described by ``spec`` from ``leaves``.

    Example:
        >>> leaves, spec = tree_flatten([1, (2, 3)])
        >>> tree_unflatten([4, 5, 6], spec)
        [4, (5, 6)]
    """
    return _torch_pytree.tree_unflatten(leaves, spec)


def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree``, in flattening order.

    Example:
        >>> tree_leaves({"x": [1, 2], "y": 3})
        [1, 2, 3]
    """
    return _torch_pytree.tree_leaves(tree)


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leafwise over ``tree`` (and over ``rest``, trees of the same structure).

    Example:
        >>> tree_map(lambda a, b: a + b, {"x": 1}, {"x": 2})
        {'x': 3}
    """
    return _torch_pytree.tree_map(fn, tree, *rest)


def _cast(piece: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A real leaf raveled into a complex vector comes back as its real part.
    if piece.is_complex() and not dtype.is_complex:
        piece = piece.real
    return piece.to(dtype)


def ravel_pytree(tree: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Concatenate the tensor leaves of ``tree`` into one flat vector.

    The vector has the promoted dtype of all leaves (``torch.result_type`` rules) and lives on
    the first leaf's device; ``unravel`` casts each slice back to its leaf's dtype and shape.

    Args:
        tree: a pytree whose leaves are tensors (all on one device).

    Returns:
        ``(flat, unravel)``: ``flat`` of shape ``(sum of leaf numels,)`` and the inverse map.

    Raises:
        TypeError: if a leaf is not a tensor.
        ValueError: if ``unravel`` is given a vector of the wrong size.

    Example:
        >>> flat, unravel = ravel_pytree({"w": torch.ones(2, 2), "b": torch.zeros(3)})
        >>> flat.shape
        torch.Size([7])
        >>> unravel(flat)["w"].shape
        torch.Size([2, 2])
    """
    leaves, spec = tree_flatten(tree)
    for index, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"ravel_pytree: every leaf of `tree` must be a torch.Tensor, "
                f"got leaf {index} of type {type(leaf).__name__}"
            )
    shapes = [leaf.shape for leaf in leaves]
    dtypes = [leaf.dtype for leaf in leaves]
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    if leaves:
        dtype = dtypes[0]
        for other in dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
        flat = torch.cat([leaf.reshape(-1).to(dtype) for leaf in leaves])
    else:
        flat = torch.zeros(0)

    def unravel(vector: torch.Tensor) -> Any:
        if vector.shape != (total,):
            raise ValueError(
                f"ravel_pytree.unravel: `vector` must have shape ({total},), got {tuple(vector.shape)}"
            )
        pieces = torch.split(vector, sizes) if leaves else []
        return tree_unflatten(
            [_cast(p.reshape(s), d) for p, s, d in zip(pieces, shapes, dtypes, strict=True)], spec
        )

    return flat, unravel
