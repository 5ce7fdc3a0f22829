"""vjp, jvp and linearize with torch.func semantics and argument checks that name the argument.

The arithmetic is torch.func's; what this module adds is validation (integer inputs, non-tensor
outputs, ``has_aux`` with a non-pair output, mismatched tangents each raise a message naming the
argument) and a :func:`linearize` whose ``jvp_fn`` replays the recorded graph instead of
re-running ``f``.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch.func import jvp as _jvp, vjp as _vjp

from research_ext.core import tree_flatten, tree_map
from research_ext.functional._arguments import (
    check_callable,
    check_diff_inputs,
    check_outputs,
    forward_ad_ready,
    split_aux,
)

__all__ = ["jvp", "linearize", "vjp"]


def _checked(name: str, f: Callable[..., Any], has_aux: bool) -> Callable[..., Any]:
    """``f`` with its output validated (and aux split off) on every call."""

    def wrapped(*args: Any) -> Any:
        out, aux = split_aux(name, f(*args), has_aux)
        check_outputs(name, tree_flatten(out)[0])
        return (out, aux) if has_aux else out

    return wrapped


def check_primals(name: str, primals: Any, arg: str = "primals") -> tuple[Any, ...]:
    if not isinstance(primals, tuple):
        raise TypeError(
            f"{name}: `{arg}` must be a tuple of the positional arguments of f, got {arg} of "
            f"type {type(primals).__name__}"
        )
    check_diff_inputs(name, primals, tuple(range(len(primals))))
    return primals


def check_tangents(
    name: str, primals: tuple[Any, ...], tangents: Any, flat: tuple[list[Any], Any] | None = None
) -> list[Any]:
    """Check ``tangents`` against ``primals`` (``flat``: their flattening, if known); return leaves."""
    if not isinstance(tangents, tuple):
        raise TypeError(
            f"{name}: `tangents` must be a tuple with one entry per primal, got tangents of "
            f"type {type(tangents).__name__}"
        )
    p_leaves, p_spec = tree_flatten(primals) if flat is None else flat
    t_leaves, t_spec = tree_flatten(tangents)
    if p_spec != t_spec:
        raise ValueError(
            f"{name}: `tangents` must have the pytree structure of `primals`, got {t_spec} "
            f"for primals {p_spec}"
        )
    for p, t in zip(p_leaves, t_leaves, strict=False):
        if not isinstance(t, torch.Tensor) or t.shape != p.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"{name}: every tangent must have its primal's shape, got {shape} for a "
                f"primal of shape {tuple(p.shape)}"
            )
    return t_leaves


def vjp(f: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    r"""Vector-Jacobian product: ``(f(*primals), vjp_fn)`` with ``vjp_fn(v)`` = :math:`v^\top J`.

    ``vjp_fn`` takes a cotangent shaped like the output and returns a tuple with one entry per
    primal; it may be called many times (the graph is kept). Semantics of ``torch.func.vjp``.

    Args:
        f: function of tensors (pytrees) returning a tensor or pytree of tensors.
        *primals: the point, floating or complex tensors (or pytrees of them).
        has_aux: ``f`` returns ``(output, aux)``; then ``(output, vjp_fn, aux)`` is returned.

    Returns:
        ``(output, vjp_fn)`` or ``(output, vjp_fn, aux)``.

    Raises:
        TypeError: ``f`` not callable, integer or non-tensor primals, non-tensor outputs,
            ``has_aux=True`` with a non-pair output.

    Example:
        >>> import research_ext.functional as rf
        >>> out, vjp_fn = rf.vjp(torch.sin, torch.tensor([0.0, 1.0]))
        >>> vjp_fn(torch.ones(2))[0]  # cos(x)
        tensor([1.0000, 0.5403])
    """
    check_callable("vjp", f)
    check_diff_inputs("vjp", primals, tuple(range(len(primals))))
    return _vjp(_checked("vjp", f, has_aux), *primals, has_aux=has_aux)


def jvp(
    f: Callable[..., Any],
    primals: tuple[Any, ...],
    tangents: tuple[Any, ...],
    *,
    has_aux: bool = False,
) -> tuple[Any, ...]:
    r"""Jacobian-vector product (forward mode): ``(f(*primals), J t)``.

    Semantics of ``torch.func.jvp``: ``primals`` and ``tangents`` are tuples of the same pytree
    structure and shapes; the tangent output has the structure of the output.

    Args:
        f: function of tensors (pytrees) returning a tensor or pytree of tensors.
        primals: tuple of the positional arguments of ``f``.
        tangents: tuple of the same structure, the direction :math:`t`.
        has_aux: ``f`` returns ``(output, aux)``; then ``(output, jvp_out, aux)`` is returned.

    Returns:
        ``(output, jvp_out)`` or ``(output, jvp_out, aux)``.

    Raises:
        TypeError: ``primals``/``tangents`` not tuples, integer primals, non-tensor outputs.
        ValueError: ``tangents`` whose structure or shapes differ from ``primals``.

    Example:
        >>> import research_ext.functional as rf
        >>> rf.jvp(torch.exp, (torch.tensor([0.0]),), (torch.tensor([2.0]),))
        (tensor([1.]), tensor([2.]))
    """
    check_callable("jvp", f)
    primals = check_primals("jvp", primals)
    check_tangents("jvp", primals, tangents)
    forward_ad_ready()
    return _jvp(_checked("jvp", f, has_aux), primals, tangents, has_aux=has_aux)


def linearize(f: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    r"""Evaluate ``f`` once and return ``(output, jvp_fn)`` with ``jvp_fn(*t)`` = :math:`J t`.

    ``jvp_fn`` reuses the graph recorded at ``primals`` (it differentiates the vector-Jacobian
    product :math:`u \mapsto J^\top u`, which is linear in :math:`u`, so its own VJP is
    :math:`t \mapsto J t`); ``f`` is not evaluated again however many tangents are pushed.
    Where ``f`` has no reverse-mode derivative, or no double-backward formula (torch raises),
    ``jvp_fn`` takes forward mode instead (``torch.func.jvp``, evaluating ``f`` per call).
    This holds for complex (also non-holomorphic) functions too, since both transposes use
    the same real inner product.

    Args:
        f: function of tensors (pytrees) returning a tensor or pytree of tensors.
        *primals: the point of linearization.
        has_aux: ``f`` returns ``(output, aux)``; then ``(output, jvp_fn, aux)`` is returned.

    Returns:
        ``(output, jvp_fn)`` (or with ``aux``); ``jvp_fn`` takes one tangent per primal and
        returns a tangent shaped like the output.

    Raises:
        TypeError: as :func:`vjp`.

    Example:
        >>> import research_ext.functional as rf
        >>> out, jvp_fn = rf.linearize(lambda x: x**3, torch.tensor([2.0]))
        >>> jvp_fn(torch.tensor([1.0]))  # 3 x^2
        tensor([12.])
    """
    check_callable("linearize", f)
    check_diff_inputs("linearize", primals, tuple(range(len(primals))))
    checked = _checked("linearize", f, has_aux)

    def forward(tangents: tuple[Any, ...]) -> Any:
        forward_ad_ready()
        return _jvp(checked, primals, tangents, has_aux=has_aux)

    try:
        res: Any = _vjp(checked, *primals, has_aux=has_aux)
        out, vjp_fn = res[0], res[1]
        zeros = tree_map(torch.zeros_like, out)
        transpose: Any = _vjp(vjp_fn, zeros)[1]
    except RuntimeError as err:  # no reverse-mode derivative: forward mode, re-running f
        res = _or_raise(err, lambda: forward(tuple(tree_map(torch.zeros_like, primals))))
        out, transpose = res[0], None

    def jvp_fn(*tangents: Any) -> Any:
        check_tangents("linearize", primals, tangents)
        if transpose is not None:
            try:
                return transpose(tangents)[0]
            except RuntimeError as err:  # no double-backward formula: forward mode
                return _or_raise(err, lambda: forward(tangents)[1])
        return forward(tangents)[1]

    return (out, jvp_fn, res[2]) if has_aux else (out, jvp_fn)


def _or_raise(err: RuntimeError, alternative: Callable[[], Any]) -> Any:
    """``alternative()``, or ``err`` again if that fails too."""
    try:
        return alternative()
    except Exception:
        raise err from None
