r"""Hessian-vector products: fresh (``hvp``, ``vhp``) and at a fixed point (reusing the graph).

Measured on CPU (benchmarks/bench_functional_transforms.py) double backward -- the gradient
recorded with ``create_graph=True``, then differentiated along ``v`` -- costs about 2x one
gradient, while forward-over-reverse through torch's forward AD costs 4-5x; so both ``hvp`` and
``vhp`` use double backward (for a twice continuously differentiable ``f`` the Hessian is
symmetric and :math:`Hv = (v^\top H)^\top`). At a fixed point the gradient graph is recorded
once and each product is one more backward pass (about 1.1x a gradient). Inside an outer
torch.func transform (``vmap``, ``grad``, ...) the same products go through torch.func.
"""

from collections.abc import Callable
from typing import Any, final

import torch
from torch.func import grad as _grad, vjp as _vjp, vmap

from research_ext.core import tree_flatten, tree_unflatten
from research_ext.functional._arguments import check_callable
from research_ext.functional._transforms import check_primals, check_tangents

__all__ = ["HessianVectorProduct", "hessian_vector_product", "hvp", "vhp"]


def _in_functorch() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None


def _scalar(name: str, out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{name}: `f` must return a scalar tensor, got an output of type {type(out).__name__}"
        )
    if out.numel() != 1 or out.is_complex() or not out.is_floating_point():
        raise ValueError(
            f"{name}: `f` must return a real scalar tensor (one element), got an output of "
            f"shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    return out.reshape(())


@final
class HessianVectorProduct:
    r"""Products :math:`v \mapsto H v` with the Hessian of a scalar ``f`` at a fixed point.

    Built by :func:`hessian_vector_product`; the gradient graph is recorded once, so each call is
    one backward pass. ``value`` is :math:`f(x)` and ``grad`` is :math:`\nabla f(x)` (the
    structure of ``primals``).
    """

    def __init__(self, f: Callable[..., Any], primals: tuple[Any, ...]):
        name = "hessian_vector_product"
        check_callable(name, f)
        self.primals = check_primals(name, primals)
        leaves, self._spec = tree_flatten(primals)
        self._flat = (leaves, self._spec)
        self._functorch = _in_functorch()
        if self._functorch:
            grad_fn = _grad(lambda *p: _scalar(name, f(*p)), argnums=tuple(range(len(primals))))
            res: Any = _vjp(grad_fn, *primals)
            self.grad, self._vjp_fn = res[0], res[1]
            self.value = _scalar(name, f(*primals))
            return
        with torch.enable_grad():
            self._leaves = [x if x.requires_grad else x.detach().requires_grad_() for x in leaves]
            value = _scalar(name, f(*tree_unflatten(self._leaves, self._spec)))
            grads = torch.autograd.grad(value, self._leaves, create_graph=True, allow_unused=True)
        # A leaf f does not depend on has zero gradient and zero Hessian rows.
        self._grads = [
            g if g is not None else torch.zeros_like(x)
            for g, x in zip(grads, self._leaves, strict=False)
        ]
        self._used = [g is not None and g.requires_grad for g in grads]
        self.value = value.detach()
        self.grad = tree_unflatten([g.detach() for g in self._grads], self._spec)

    def __call__(self, tangents: tuple[Any, ...]) -> tuple[Any, ...]:
        """Return :math:`Hv` for ``tangents`` shaped like ``primals``, or a leading batch dim."""
        batched, t_leaves = _batched_leaves(
            "hessian_vector_product", self.primals, tangents, self._flat
        )
        if self._functorch:
            if batched:
                return vmap(self._vjp_fn)(tangents)
            return self._vjp_fn(tangents)
        pairs = [(g, t) for g, t, u in zip(self._grads, t_leaves, self._used, strict=True) if u]
        hv: Any = [None] * len(t_leaves)
        if pairs:
            gs, ts = zip(*pairs, strict=True)
            create = torch.is_grad_enabled() and any(t.requires_grad for t in ts)

            def backward(cotangents: tuple[torch.Tensor, ...], vmapped: bool) -> tuple[Any, ...]:
                return torch.autograd.grad(
                    gs,
                    self._leaves,
                    cotangents,
                    retain_graph=True,
                    create_graph=create,
                    allow_unused=True,
                    is_grads_batched=vmapped,
                )

            hv = batched_backward(backward, ts) if batched else backward(ts, False)
        out = [
            h if h is not None else torch.zeros_like(t) for h, t in zip(hv, t_leaves, strict=True)
        ]
        return tree_unflatten(out, self._spec)


def batched_backward(
    backward: Callable[[tuple[torch.Tensor, ...], bool], tuple[Any, ...]],
    cotangents: tuple[torch.Tensor, ...],
) -> tuple[Any, ...]:
    """``backward`` over a leading batch dim: one vmapped pass, or one pass per vector.

    torch's ``is_grads_batched`` cannot batch some double-backward formulas (a torch limitation:
    ``group_norm``/``native_group_norm``, ``unfold`` of a 0-d tensor, ... raise inside its
    batching rules although each product alone is fine); then the vectors go one at a time and
    the results are stacked. Errors that are not the batching's own recur in the loop.
    """
    try:
        return backward(cotangents, True)
    except (RuntimeError, IndexError, ValueError):
        k = cotangents[0].shape[0]
        rows = [backward(tuple(c[i] for c in cotangents), False) for i in range(k)]
        return tuple(
            None if parts[0] is None else torch.stack(parts) for parts in zip(*rows, strict=True)
        )


def _batched_leaves(
    name: str, primals: tuple[Any, ...], tangents: Any, flat: tuple[list[Any], Any]
) -> tuple[bool, list[Any]]:
    """Whether ``tangents`` carry a leading batch dim (else check them); return their leaves."""
    if not isinstance(tangents, tuple):
        raise TypeError(
            f"{name}: `tangents` must be a tuple with one entry per primal, got tangents of "
            f"type {type(tangents).__name__}"
        )
    p_leaves, p_spec = flat
    t_leaves, t_spec = tree_flatten(tangents)
    if p_spec == t_spec and all(
        isinstance(t, torch.Tensor) and t.dim() == p.dim() + 1 and t.shape[1:] == p.shape
        for p, t in zip(p_leaves, t_leaves, strict=True)
    ):
        if len({t.shape[0] for t in t_leaves}) == 1:
            return True, t_leaves
    return False, check_tangents(name, primals, tangents, flat)


def hessian_vector_product(f: Callable[..., Any], primals: tuple[Any, ...]) -> HessianVectorProduct:
    r"""Fix a point and return ``hvp_fn`` with ``hvp_fn(v)`` = :math:`\nabla^2 f(x)\, v`.

    The gradient graph is recorded once (``create_graph=True``); every ``hvp_fn(v)`` afterwards
    is one backward pass, about the cost of one gradient. ``hvp_fn(V)`` with a leading batch
    dimension on every tangent leaf (``V`` of shape ``(k, *x.shape)``) returns ``k`` products
    at once (vectorized over the batch; one at a time where torch's ``is_grads_batched`` cannot
    batch the double backward, as for ``group_norm``).

    Args:
        f: scalar function; ``f(*primals)`` must return a real tensor with one element.
        primals: tuple of the positional arguments of ``f`` (tensors or pytrees of tensors).

    Returns:
        A :class:`HessianVectorProduct`: call it with a tuple of tangents shaped like
        ``primals`` (optionally with a leading batch dim); ``.grad`` and ``.value`` hold the
        gradient and the value at ``primals``.

    Raises:
        TypeError: ``primals`` or tangents not tuples, integer primals, non-tensor output.
        ValueError: non-scalar output, tangents whose shapes differ from ``primals``.

    Example:
        >>> import research_ext.functional as rf
        >>> hvp_fn = rf.hessian_vector_product(lambda x: (x**3).sum(), (torch.tensor([1.0, 2.0]),))
        >>> hvp_fn((torch.tensor([1.0, 1.0]),))  # diag(6x) @ 1
        (tensor([ 6., 12.]),)
        >>> hvp_fn((torch.eye(2),))[0]  # a batch of tangents: the Hessian's rows
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    return HessianVectorProduct(f, primals)


def _product(name: str, f: Callable[..., Any], primals: Any, tangents: Any) -> tuple[Any, Any]:
    check_callable(name, f)
    primals = check_primals(name, primals)
    leaves, spec = tree_flatten(primals)
    t_leaves = check_tangents(name, primals, tangents, (leaves, spec))
    if _in_functorch():
        grad_fn = _grad(lambda *p: _scalar(name, f(*p)), argnums=tuple(range(len(primals))))
        res: Any = _vjp(grad_fn, *primals)
        return res[0], res[1](tangents)
    create = torch.is_grad_enabled() and any(x.requires_grad for x in leaves + t_leaves)
    with torch.enable_grad():
        xs = [x if x.requires_grad else x.detach().requires_grad_() for x in leaves]
        value = _scalar(name, f(*tree_unflatten(xs, spec)))
        raw = torch.autograd.grad(value, xs, create_graph=True, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(raw, xs, strict=True)]
        pairs = [(g, t) for g, t in zip(grads, t_leaves, strict=True) if g.requires_grad]
        hv: Any = [None] * len(t_leaves)
        if pairs:
            gs, ts = zip(*pairs, strict=True)
            hv = torch.autograd.grad(gs, xs, ts, create_graph=create, allow_unused=True)
    out = [h if h is not None else torch.zeros_like(t) for h, t in zip(hv, t_leaves, strict=True)]
    if not create:
        grads = [g.detach() for g in grads]
    return tree_unflatten(grads, spec), tree_unflatten(out, spec)


def hvp(
    f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[Any, Any]:
    r"""Hessian-vector product: ``(grad f(x), H v)`` with :math:`H = \nabla^2 f(x)`.

    Computed by double backward (cheapest on CPU, see the module notes); for a twice
    continuously differentiable ``f`` this equals forward-over-reverse ``jvp(grad(f))``.
    For many vectors at one point use :func:`hessian_vector_product`.

    Args:
        f: scalar function; ``f(*primals)`` returns a real tensor with one element.
        primals: tuple of the positional arguments of ``f``.
        tangents: tuple of the same structure and shapes, the vector :math:`v`.

    Returns:
        ``(grad, hvp)``, both tuples shaped like ``primals``.

    Raises:
        TypeError: ``primals``/``tangents`` not tuples, integer primals, non-tensor output.
        ValueError: non-scalar output, tangents whose shapes differ from ``primals``.

    Example:
        >>> import research_ext.functional as rf
        >>> x = torch.tensor([1.0, 2.0])
        >>> rf.hvp(lambda x: (x**3).sum(), (x,), (torch.ones(2),))
        ((tensor([ 3., 12.]),), (tensor([ 6., 12.]),))
    """
    return _product("hvp", f, primals, tangents)


def vhp(
    f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[Any, Any]:
    r"""Vector-Hessian product: ``(grad f(x), v^T H)``, reverse-over-reverse.

    Exactly what double backward computes; equal to :func:`hvp` whenever :math:`H` is
    symmetric. Semantics of ``torch.autograd.functional.vhp`` but returning the gradient.

    Args:
        f: scalar function; ``f(*primals)`` returns a real tensor with one element.
        primals: tuple of the positional arguments of ``f``.
        tangents: tuple of the same structure and shapes, the vector :math:`v`.

    Returns:
        ``(grad, vhp)``, both tuples shaped like ``primals``.

    Raises:
        TypeError: as :func:`hvp`.
        ValueError: as :func:`hvp`.

    Example:
        >>> import research_ext.functional as rf
        >>> f = lambda x, y: (x * y**2).sum()
        >>> g, vh = rf.vhp(f, (torch.tensor(1.0), torch.tensor(2.0)), (torch.tensor(1.0), torch.tensor(0.0)))
        >>> vh  # row x of the Hessian [[0, 2y], [2y, 2x]]
        (tensor(0.), tensor(4.))
    """
    return _product("vhp", f, primals, tangents)
