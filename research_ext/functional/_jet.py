"""Taylor mode: ``jet`` pushes a truncated power series through ``f`` in one pass.

Inside ``f`` each input is a :class:`_Jet`, a storage-less tensor subclass holding ``K + 1``
Taylor coefficients. It implements ``__torch_function__``, so ``torch.sin(x)``, ``x.sin()``,
``torch.Tensor.sin(x)``, ``x @ w``, ``F.linear``, ``nn.Module`` calls and the like dispatch to
the rules of
:mod:`._taylor_rules` (cost :math:`O(K^2)` tensor operations per primitive). A primitive with no
rule falls back to nested forward-mode derivatives of that one primitive along the series
(cost :math:`O(2^K)` evaluations of it) and says so with a ``UserWarning``; with
``fallback=False`` it raises ``NotImplementedError`` instead.
"""

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from research_ext.core import check_int, tree_flatten, tree_map, tree_unflatten
from research_ext.functional import _taylor_rules as rules
from research_ext.functional._arguments import check_callable, forward_ad_ready

__all__ = ["derivatives", "jet"]

Series = list[torch.Tensor]
_LINEAR_PROPERTIES = frozenset("T mT H mH real imag".split())


class _Jet(torch.Tensor):
    r"""A truncated Taylor series of tensors, :math:`x(t) = \sum_{k \le K} c_k t^k`.

    A tensor subclass without storage (a wrapper with the primal's shape, dtype and device), so
    that C-level tensor methods called unbound (``torch.Tensor.sin(x)``) accept it too; every
    torch function, method and property reaches :meth:`__torch_function__`, which routes it to a
    rule, to the metadata of the primal, or to the fallback.
    """

    coeffs: Series
    fallback: bool

    @staticmethod
    def __new__(cls, coeffs: Series, fallback: bool) -> "_Jet":
        primal = coeffs[0]
        jet = torch.Tensor._make_wrapper_subclass(
            cls, primal.shape, dtype=primal.dtype, device=primal.device
        )
        jet.coeffs = coeffs
        jet.fallback = fallback
        return jet

    def __init__(self, coeffs: Series, fallback: bool) -> None:
        pass

    @classmethod
    def __torch_function__(
        cls,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        getset = getattr(func, "__self__", None) if _is_getter(func) else None
        if getset is not None:  # a property: shape, dtype, ..., or a linear one (real, T, ...)
            name = getset.__name__
            jet = args[0]
            if name in _LINEAR_PROPERTIES:
                return _Jet([func(c) for c in jet.coeffs], jet.fallback)
            return func(jet.coeffs[0])
        return _dispatch(func, args, kwargs or {})

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        # Reached only by code that bypasses __torch_function__ (torch internals running with
        # torch functions disabled): the aten operator has no rule, so take the fallback.
        return _dispatch(func, args, kwargs or {})

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"_Jet(order={len(self.coeffs) - 1}, shape={tuple(self.coeffs[0].shape)})"

    def __bool__(self) -> bool:
        raise TypeError(
            "jet: `f` must not branch on a traced value (bool() of a jet); its Taylor series "
            "would depend on the branch taken"
        )

    def __len__(self) -> int:
        return len(self.coeffs[0])

    def __float__(self) -> float:
        raise TypeError("jet: `f` must not convert a traced value to a Python number (float())")


def _is_getter(func: Any) -> bool:
    return getattr(func, "__name__", None) == "__get__"


def _order(args: Any) -> tuple[int, bool]:
    for leaf in tree_flatten(list(args))[0]:
        if isinstance(leaf, _Jet):
            return len(leaf.coeffs), leaf.fallback
    raise AssertionError("no jet among the arguments")  # pragma: no cover


def _series(x: Any, n: int, like: torch.Tensor | None = None) -> Series:
    if isinstance(x, _Jet):
        return x.coeffs
    if not isinstance(x, torch.Tensor):  # a Python number takes the jet's dtype, not int64
        x = torch.as_tensor(
            x,
            dtype=None if like is None else like.dtype,
            device=None if like is None else like.device,
        )
    return [x] + [torch.zeros_like(x)] * (n - 1)


def _is_const(x: Any) -> bool:
    return not isinstance(x, _Jet)


def _add(a: Any, b: Any, alpha: Any = 1) -> Series:
    n = len(a.coeffs if isinstance(a, _Jet) else b.coeffs)
    if _is_const(b):
        return [a.coeffs[0] + alpha * b] + a.coeffs[1:]
    if _is_const(a):
        return [a + alpha * b.coeffs[0]] + [alpha * c for c in b.coeffs[1:]]
    return [x + alpha * y for x, y in zip(_series(a, n), _series(b, n), strict=False)]


def _bilinear(op: Callable[..., Any], a: Any, b: Any, *rest: Any, **kw: Any) -> Series:
    if _is_const(b):
        return [op(c, b, *rest, **kw) for c in a.coeffs]
    if _is_const(a):
        return [op(a, c, *rest, **kw) for c in b.coeffs]
    return rules.cauchy(a.coeffs, b.coeffs, lambda x, y: op(x, y, *rest, **kw))


def _div(a: Any, b: Any) -> Series:
    if _is_const(b):
        return [c / b for c in a.coeffs]
    return rules.divide(_series(a, len(b.coeffs), b.coeffs[0]), b.coeffs)


def _pow(a: Any, p: Any) -> Series:
    if isinstance(p, _Jet):  # a**p = exp(p log a)
        return rules.exp(rules.cauchy(p.coeffs, rules.log(_series(a, len(p.coeffs), p.coeffs[0]))))
    return rules.power(a.coeffs, p)


def _linear(x: Any, weight: Any, bias: Any = None) -> Series:
    y = _bilinear(lambda u, w: F.linear(u, w), x, weight)
    if bias is not None:
        y = [c + b for c, b in zip(y, _series(bias, len(y)), strict=False)]
    return y


def _cat(op: Callable[..., Any], tensors: Sequence[Any], *args: Any, **kw: Any) -> Series:
    n = _order(tensors)[0]
    parts = [_series(t, n) for t in tensors]
    return [op([p[k] for p in parts], *args, **kw) for k in range(n)]


def _where(condition: Any, a: Any, b: Any) -> Series:
    cond = condition.coeffs[0] if isinstance(condition, _Jet) else condition
    n = _order((a, b))[0]
    return [torch.where(cond, x, y) for x, y in zip(_series(a, n), _series(b, n), strict=False)]


def _logsumexp(x: Any, dim: Any, keepdim: bool = False) -> Any:
    shift = torch.amax(x.coeffs[0], dim=dim, keepdim=True)
    total = torch.sum(torch.exp(x - shift), dim=dim, keepdim=True)
    out = torch.log(total) + shift
    return out if keepdim else torch.squeeze(out, dim)


def _log_softmax(x: Any, dim: Any, *args: Any, **kw: Any) -> Any:
    return x - _logsumexp(x, dim, keepdim=True)


def _mse_loss(a: Any, b: Any, *args: Any, reduction: str = "mean", **kw: Any) -> Any:
    diff = a - b
    sq = diff * diff
    reduce: dict[str, Callable[[Any], Any]] = {
        "mean": torch.mean,
        "sum": torch.sum,
        "none": lambda s: s,
    }
    return reduce[reduction](sq)


def _norm(x: Any, p: Any = 2, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    if p not in (2, "fro", None, 2.0):
        return NotImplemented
    return torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim))


_SPECIAL: dict[str, Callable[..., Any]] = {
    "add": _add,
    "__add__": _add,
    "__radd__": lambda a, b: _add(b, a),
    "sub": lambda a, b, alpha=1: _add(a, b, -alpha),
    "subtract": lambda a, b, alpha=1: _add(a, b, -alpha),
    "__sub__": lambda a, b: _add(a, b, -1),
    "__rsub__": lambda a, b: _add(b, a, -1),
    "rsub": lambda a, b, alpha=1: _add(b, a, -alpha),
    "mul": lambda a, b: _bilinear(torch.mul, a, b),
    "multiply": lambda a, b: _bilinear(torch.mul, a, b),
    "__mul__": lambda a, b: _bilinear(torch.mul, a, b),
    "__rmul__": lambda a, b: _bilinear(torch.mul, b, a),
    "matmul": lambda a, b: _bilinear(torch.matmul, a, b),
    "__matmul__": lambda a, b: _bilinear(torch.matmul, a, b),
    "__rmatmul__": lambda a, b: _bilinear(torch.matmul, b, a),
    "mm": lambda a, b: _bilinear(torch.mm, a, b),
    "bmm": lambda a, b: _bilinear(torch.bmm, a, b),
    "dot": lambda a, b: _bilinear(torch.dot, a, b),
    "inner": lambda a, b: _bilinear(torch.inner, a, b),
    "outer": lambda a, b: _bilinear(torch.outer, a, b),
    "mv": lambda a, b: _bilinear(torch.mv, a, b),
    "div": lambda a, b: _div(a, b),
    "divide": lambda a, b: _div(a, b),
    "true_divide": lambda a, b: _div(a, b),
    "__truediv__": _div,
    "__rtruediv__": lambda a, b: _div(b, a),
    "__rdiv__": lambda a, b: _div(b, a),
    "pow": _pow,
    "__pow__": _pow,
    "float_power": _pow,
    "__rpow__": lambda a, b: _pow(b, a),
    "linear": _linear,
    "cat": lambda t, *a, **k: _cat(torch.cat, t, *a, **k),
    "concat": lambda t, *a, **k: _cat(torch.cat, t, *a, **k),
    "concatenate": lambda t, *a, **k: _cat(torch.cat, t, *a, **k),
    "stack": lambda t, *a, **k: _cat(torch.stack, t, *a, **k),
    "where": _where,
    "softplus": lambda a, beta=1.0, threshold=20.0: rules.softplus(a.coeffs, beta, threshold),
}
# Composites: rewritten in terms of primitives that have rules (return jets, not series).
_COMPOSITE: dict[str, Callable[..., Any]] = {
    "logsumexp": _logsumexp,
    "log_softmax": _log_softmax,
    "softmax": lambda x, dim, *a, **k: torch.exp(_log_softmax(x, dim)),
    "mse_loss": _mse_loss,
    "norm": _norm,
    "linalg_vector_norm": lambda x, ord=2, dim=None, keepdim=False, **k: _norm(
        x, ord, dim, keepdim
    ),
}


def _dispatch(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = getattr(func, "__name__", repr(func))
    n, fallback = _order((args, kwargs))
    if name.endswith("_") and not name.endswith("__"):
        raise TypeError(
            f"jet: in-place `{name}` cannot update a Taylor series; use the out-of-place "
            f"`{name[:-1]}` inside `f`"
        )
    if name in ("detach", "detach_copy"):  # a constant: derivatives stop here
        return func(*_primal((args, kwargs))[0], **_primal((args, kwargs))[1])
    if name in ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "backward"):
        raise TypeError(f"jet: `f` must not call `{name}` on a traced value inside `f`")
    if name in _COMPOSITE:
        out = _COMPOSITE[name](*args, **kwargs)
        if out is not NotImplemented:
            return out
    elif name in _SPECIAL:
        return _Jet(_SPECIAL[name](*args, **kwargs), fallback)
    elif name in rules.RULES and isinstance(args[0], _Jet):
        return _Jet(rules.RULES[name](args[0].coeffs, *args[1:], **kwargs), fallback)
    elif name in rules.LINEAR and isinstance(args[0], _Jet) and not _has_jet((args[1:], kwargs)):
        return _apply_linear(func, args[0], args[1:], kwargs, fallback)
    elif name in rules.PIECEWISE_CONSTANT:
        return func(*_primal((args, kwargs))[0], **_primal((args, kwargs))[1])
    if not fallback:
        raise NotImplementedError(
            f"jet: no Taylor-mode rule for `{name}`; pass fallback=True to use nested jvp for it"
        )
    warnings.warn(
        f"jet: no Taylor-mode rule for `{name}`; falling back to nested jvp for it "
        f"(cost grows as 2**order)",
        UserWarning,
        stacklevel=3,
    )
    return _nested_jvp(func, args, kwargs, n, fallback)


def _has_jet(tree: Any) -> bool:
    return any(isinstance(x, _Jet) for x in tree_flatten(tree)[0])


def _primal(tree: Any) -> Any:
    return tree_map(lambda x: x.coeffs[0] if isinstance(x, _Jet) else x, tree)


def _apply_linear(func: Any, x: _Jet, rest: Any, kwargs: dict[str, Any], fallback: bool) -> Any:
    outs = [func(c, *rest, **kwargs) for c in x.coeffs]
    if isinstance(outs[0], tuple | list):  # split, chunk, unbind: a sequence of jets
        return type(outs[0])(_Jet(list(parts), fallback) for parts in zip(*outs, strict=False))
    return _Jet(outs, fallback)


def _nested_jvp(func: Any, args: Any, kwargs: dict[str, Any], n: int, fallback: bool) -> Any:
    """Coefficients of t -> func(x(t)) by n - 1 nested forward-mode derivatives in t.

    ``func`` may return a pytree (``frexp``, ``max`` with ``dim``, ...): its floating and complex
    leaves get series, the others (integer indices, exponents) are returned as they are.
    """
    leaves, spec = tree_flatten((args, kwargs))
    ref = next(x for x in leaves if isinstance(x, _Jet)).coeffs[0]

    def at_full(t: torch.Tensor) -> Any:
        inner = [
            sum(c * t**k for k, c in enumerate(x.coeffs)) if isinstance(x, _Jet) else x
            for x in leaves
        ]
        a, kw = tree_unflatten(inner, spec)
        return func(*a, **kw)

    def at(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(y for y in tree_flatten(at_full(t))[0] if _differentiable(y))

    def lift(g: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def h(t: torch.Tensor) -> Any:
            res: Any = torch.func.jvp(g, (t,), (torch.ones_like(t),))
            return (*res[0], res[1][-1])

        return h

    forward_ad_ready()
    t0 = torch.zeros((), dtype=ref.real.dtype, device=ref.device)

    def innermost(t: torch.Tensor) -> Any:
        return (at(t),)

    stack: Callable[[torch.Tensor], Any] = innermost
    for _ in range(n - 1):
        stack = lift(stack)
    try:
        derivs = stack(t0)
        primal_leaves, primal_spec = tree_flatten(at_full(t0))
    except Exception as err:
        raise NotImplementedError(
            f"jet: no Taylor-mode rule for `{getattr(func, '__name__', func)}` and nested jvp "
            f"through it failed: {err}"
        ) from err
    series = iter(
        _Jet([d[i] * (1 / math.factorial(k)) for k, d in enumerate(derivs)], fallback)
        for i in range(len(derivs[0]))
    )
    out = [next(series) if _differentiable(y) else y for y in primal_leaves]
    return tree_unflatten(out, primal_spec)


def _differentiable(y: Any) -> bool:
    return isinstance(y, torch.Tensor) and (y.is_floating_point() or y.is_complex())


def jet(
    f: Callable[..., Any],
    primals: tuple[torch.Tensor, ...],
    series: tuple[Sequence[torch.Tensor], ...],
    *,
    fallback: bool = True,
) -> tuple[Any, Any]:
    r"""Taylor-mode AD: derivatives of :math:`t \mapsto f(x(t))` at 0, all orders in one pass.

    The input path is :math:`x(t) = x_0 + \sum_{k=1}^{K} x_k\, t^k / k!` (``primals`` are the
    :math:`x_0`, ``series`` the derivative coefficients :math:`x_k`, as in ``jax.experimental.jet``),
    and the result holds :math:`y_k = \frac{d^k}{dt^k} f(x(t))\big|_{t=0}` for :math:`k \le K`.
    With :math:`x_1 = v` and higher terms zero, :math:`y_k` is the k-th directional derivative
    :math:`D^k f(x_0)[v, \dots, v]`. Each primitive costs :math:`O(K^2)` tensor operations
    (rules for add, sub, mul, div, matmul/mm/bmm/dot, linear, pow, exp, log, log1p, expm1, sin,
    cos, tan, tanh, sigmoid, sqrt, rsqrt, softplus, special.entr, erf, atan, relu, abs, sum,
    mean, logsumexp, softmax, log_softmax, mse_loss, norm and shape/indexing ops); every other
    torch function or tensor method (also called unbound, ``torch.Tensor.cdouble(x)``) falls
    back to nested jvp with a ``UserWarning``. Each rule agrees with torch's own nested
    derivatives, also at its branch points and domain edges.

    Args:
        f: function of tensors returning a tensor or a pytree of tensors, written with torch
            operations (no in-place updates, no ``.item()`` or branching on values).
        primals: tuple of floating tensors :math:`x_0`.
        series: tuple (one per primal) of sequences of ``K`` tensors shaped like the primal.
        fallback: use nested jvp for primitives without a rule (else raise).

    Returns:
        ``(f(x_0), series_out)``: ``series_out`` mirrors the output, each leaf replaced by the
        list ``[y_1, ..., y_K]``.

    Raises:
        TypeError: ``primals``/``series`` not tuples, non-floating primals, in-place ops or
            Python-number conversions inside ``f``, non-tensor outputs.
        ValueError: series of mismatched lengths or shapes.
        NotImplementedError: a primitive without a rule when ``fallback=False``.

    Example:
        >>> import research_ext.functional as rf
        >>> y, ys = rf.jet(torch.sin, (torch.tensor(0.0),), ([torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0)],))
        >>> torch.stack(ys)  # cos 0, -sin 0, -cos 0
        tensor([ 1.,  0., -1.])

    References:
        Griewank & Walther, "Evaluating Derivatives", 2nd ed., SIAM 2008, ch. 13;
        Bettencourt, Johnson & Duvenaud, "Taylor-mode automatic differentiation for higher-order
        derivatives in JAX", 2019.
    """
    check_callable("jet", f)
    k = _check_series(primals, series)
    jets = [
        _Jet([x] + [s / math.factorial(i + 1) for i, s in enumerate(terms)], fallback)
        for x, terms in zip(primals, series, strict=False)
    ]
    out = f(*jets)
    leaves, spec = tree_flatten(out)
    primal_out, series_out = [], []
    for leaf in leaves:
        if isinstance(leaf, _Jet):
            primal_out.append(leaf.coeffs[0])
            series_out.append([c * math.factorial(i) for i, c in enumerate(leaf.coeffs) if i])
        elif isinstance(leaf, torch.Tensor):  # does not depend on the inputs
            primal_out.append(leaf)
            series_out.append([torch.zeros_like(leaf) for _ in range(k)])
        else:
            raise TypeError(
                f"jet: `f` must return a tensor or a pytree of tensors, got an output leaf of "
                f"type {type(leaf).__name__}"
            )
    return tree_unflatten(primal_out, spec), tree_unflatten(series_out, spec)


def _check_series(primals: Any, series: Any) -> int:
    if not isinstance(primals, tuple) or not primals:
        raise TypeError(
            f"jet: `primals` must be a non-empty tuple of tensors, got primals of type "
            f"{type(primals).__name__}"
        )
    if not isinstance(series, tuple) or len(series) != len(primals):
        raise TypeError(
            f"jet: `series` must be a tuple with one sequence of coefficients per primal "
            f"({len(primals)}), got {type(series).__name__}"
            + (f" of length {len(series)}" if isinstance(series, tuple) else "")
        )
    lengths = set()
    for i, (x, terms) in enumerate(zip(primals, series, strict=False)):
        if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.is_complex()):
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"jet: `primals[{i}]` must be a floating tensor, got {what}")
        if not isinstance(terms, list | tuple):
            raise TypeError(
                f"jet: `series[{i}]` must be a list of tensors, got {type(terms).__name__}"
            )
        for s in terms:
            if not isinstance(s, torch.Tensor) or s.shape != x.shape:
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise ValueError(
                    f"jet: every term of `series[{i}]` must have shape {tuple(x.shape)}, got {shape}"
                )
        lengths.add(len(terms))
    if len(lengths) != 1:
        raise ValueError(
            f"jet: every entry of `series` must have the same length, got lengths {sorted(lengths)}"
        )
    return lengths.pop()


def derivatives(
    f: Callable[[torch.Tensor], Any], order: int, *, fallback: bool = True
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    r"""Transform giving ``[f(x), f'(x), ..., f^(order)(x)]`` for scalar or elementwise ``f``.

    One Taylor-mode pass (:func:`jet`) along :math:`x + t` gives every derivative
    :math:`f^{(k)}(x) = \frac{d^k}{dt^k} f(x + t)|_{t=0}`; for an elementwise ``f`` that is the
    k-th derivative at every entry, and for any other ``f`` the k-th directional derivative
    along the all-ones direction. Cost grows as :math:`O(\text{order}^2)`, against the
    exponential growth of nested ``grad``.

    Args:
        f: scalar or elementwise function of one tensor.
        order: highest derivative, an int >= 0.
        fallback: see :func:`jet`.

    Returns:
        A function of ``x`` (floating tensor) returning the list of ``order + 1`` tensors.

    Raises:
        TypeError: ``f`` not callable, ``order`` not an int (and see :func:`jet`).
        ValueError: ``order`` < 0.

    Example:
        >>> import research_ext.functional as rf
        >>> torch.stack(rf.derivatives(lambda x: x**3, 4)(torch.tensor(2.0)))  # 8, 12, 12, 6, 0
        tensor([ 8., 12., 12.,  6.,  0.])
    """
    check_callable("derivatives", f)
    check_int("derivatives", "order", order, minimum=0)

    def all_orders(x: torch.Tensor) -> list[torch.Tensor]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"derivatives: `x` must be a tensor, got x of type {type(x).__name__}")
        if order == 0:
            return [f(x)]
        terms = [torch.ones_like(x)] + [torch.zeros_like(x)] * (order - 1)
        y, ys = jet(f, (x,), (terms,), fallback=fallback)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"derivatives: `f` must return a tensor, got {type(y).__name__}")
        return [y, *ys]

    return all_orders
