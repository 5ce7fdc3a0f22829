"""Argument checks shared by the derivative transforms (one wording for every message)."""

import warnings
from collections.abc import Callable
from typing import Any

import torch

from research_ext.core import format_message, tree_flatten

__all__ = [
    "check_argnums",
    "check_callable",
    "check_chunk_size",
    "check_diff_inputs",
    "check_outputs",
    "forward_ad_ready",
    "normalize_argnums",
    "split_aux",
]


def check_callable(fn: str, f: Any) -> Callable[..., Any]:
    """Raise ``TypeError`` unless ``f`` is callable."""
    if not callable(f):
        raise TypeError(format_message(fn, "f", "callable", f))
    return f


def check_argnums(fn: str, argnums: Any) -> tuple[tuple[int, ...], bool]:
    """Return ``(argnums as a tuple, whether it was given as a tuple)``; type-check it."""
    rule = "an int or a non-empty tuple of ints"
    if isinstance(argnums, int) and not isinstance(argnums, bool):
        return (argnums,), False
    if (
        isinstance(argnums, tuple)
        and argnums
        and all(isinstance(a, int) and not isinstance(a, bool) for a in argnums)
    ):
        if len(set(argnums)) != len(argnums):
            raise ValueError(format_message(fn, "argnums", "a tuple of distinct ints", argnums))
        return argnums, True
    raise TypeError(format_message(fn, "argnums", rule, argnums))


def normalize_argnums(fn: str, argnums: tuple[int, ...], nargs: int) -> tuple[int, ...]:
    """Map negative entries to positions and raise ``ValueError`` for any out of range."""
    out = []
    for a in argnums:
        if not -nargs <= a < nargs:
            rule = (
                f"in [{-nargs}, {nargs - 1}] (f was called with {nargs} positional arguments)"
                if nargs
                else "a valid position, but f was called with no positional arguments"
            )
            raise ValueError(
                format_message(fn, "argnums", rule, argnums[0] if len(argnums) == 1 else argnums)
            )
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise ValueError(format_message(fn, "argnums", "distinct positions", argnums))
    return tuple(out)


def check_diff_inputs(
    fn: str, args: tuple[Any, ...], argnums: tuple[int, ...], *, holomorphic: bool = False
) -> None:
    """Every leaf of a differentiated argument must be a floating or complex tensor."""
    for a in argnums:
        leaves = [args[a]] if isinstance(args[a], torch.Tensor) else tree_flatten(args[a])[0]
        if not leaves:
            raise ValueError(f"{fn}: `args[{a}]` must hold at least one tensor, got {args[a]!r}")
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    f"{fn}: every leaf of a differentiated argument must be a torch.Tensor, "
                    f"got a leaf of type {type(leaf).__name__} in args[{a}]"
                )
            if not (leaf.is_floating_point() or leaf.is_complex()):
                raise TypeError(
                    f"{fn}: `args[{a}]` must have a floating or complex dtype to be "
                    f"differentiated, got args[{a}].dtype={leaf.dtype}"
                )
            if holomorphic and not leaf.is_complex():
                raise ValueError(
                    f"{fn}: `holomorphic=True` needs complex inputs, got "
                    f"args[{a}].dtype={leaf.dtype}; use holomorphic=False for real inputs"
                )


def check_outputs(fn: str, leaves: list[Any], *, holomorphic: bool = False) -> None:
    """Every output leaf must be a floating (or complex) tensor."""
    if not leaves:
        raise TypeError(f"{fn}: `f` must return a tensor or a pytree of tensors, got no tensors")
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"{fn}: `f` must return a tensor or a pytree of tensors, got an output leaf "
                f"of type {type(leaf).__name__}"
            )
        if not (leaf.is_floating_point() or leaf.is_complex()):
            raise TypeError(
                f"{fn}: `f` must return floating or complex tensors, got an output of "
                f"dtype {leaf.dtype}"
            )
        if holomorphic and not leaf.is_complex():
            raise ValueError(
                f"{fn}: `holomorphic=True` needs complex outputs, got an output of dtype "
                f"{leaf.dtype}; a real-valued function of a complex input is never holomorphic "
                "unless constant (use holomorphic=False for its real-view Jacobian)"
            )


def split_aux(fn: str, output: Any, has_aux: bool) -> tuple[Any, Any]:
    """Return ``(output, aux)``; with ``has_aux`` the function must return a pair."""
    if not has_aux:
        return output, ()
    if not (isinstance(output, tuple) and len(output) == 2):
        raise TypeError(
            f"{fn}: `f` must return a tuple (output, aux) when has_aux=True, got "
            f"{type(output).__name__}"
            + (f" of length {len(output)}" if isinstance(output, tuple) else "")
        )
    return output


def check_chunk_size(fn: str, chunk_size: Any) -> int | str | None:
    """``chunk_size`` is None, ``"auto"`` or a positive int."""
    if chunk_size is None or (isinstance(chunk_size, str) and chunk_size == "auto"):
        return chunk_size
    if isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1:
        return chunk_size
    rule = "a positive int, 'auto' or None"
    if isinstance(chunk_size, int) and not isinstance(chunk_size, bool):
        raise ValueError(format_message(fn, "chunk_size", rule, chunk_size))
    raise TypeError(format_message(fn, "chunk_size", rule, chunk_size))


_FORWARD_AD_READY = False


def forward_ad_ready() -> None:
    """Load torch's forward-AD decompositions once, silencing torch's own jit deprecation.

    torch scripts its forward-AD decompositions on first use, which emits a
    ``DeprecationWarning`` about ``torch.jit.script`` from inside torch; callers running with
    warnings as errors would otherwise fail on their first forward-mode derivative.
    """
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        torch.autograd.forward_ad._maybe_load_decompositions()
    _FORWARD_AD_READY = True
