"""Sparse Jacobians and Hessians: pattern detection, then one batched pass of compressed products.

``jacobian_sparsity`` finds the pattern; ``color_jacobian`` / ``color_hessian`` (in
``_coloring.py``) turn it into a :class:`ColoringPlan`; ``sparse_jacobian`` / ``sparse_hessian``
return callables that evaluate ``num_colors`` JVPs, VJPs or HVPs at once (``torch.func.vmap``) and
gather the entries into a torch sparse tensor. Memory is ``O(num_colors * (m + n) + nnz)``, never
the dense ``m x n``.
"""

import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any, final

import torch

from research_ext.core import check_int, check_one_of, format_message
from research_ext.functional._coloring import ColoringPlan, color_hessian, color_jacobian

__all__ = [
    "SparseHessian",
    "SparseJacobian",
    "hessian_sparsity",
    "jacobian_sparsity",
    "sparse_hessian",
    "sparse_jacobian",
]

Function = Callable[[torch.Tensor], torch.Tensor]


def _forward_mode_ready() -> None:
    """Load torch's JVP decompositions once, silencing the ``torch.jit.script`` deprecation.

    torch's first forward-mode product imports ``torch._decomp.decompositions_for_jvp``, which
    calls the deprecated ``torch.jit.script`` at import time (torch 2.13); under
    ``-W error`` that import fails on every call. Importing it here once keeps user code clean.
    """
    if "torch._decomp.decompositions_for_jvp" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        importlib.import_module("torch._decomp.decompositions_for_jvp")


def _flat(f: Function, x: torch.Tensor) -> Function:
    shape = x.shape
    return lambda flat: f(flat.reshape(shape)).reshape(-1)


def _check_input(fn: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(format_message(fn, "x", "a torch.Tensor", type(x).__name__))
    if not x.is_floating_point():
        raise TypeError(f"{fn}: `x` must have a floating dtype, got x.dtype={x.dtype}")
    return x


def _to_pattern(
    rows: list[torch.Tensor], cols: list[torch.Tensor], shape: tuple[int, int]
) -> torch.Tensor:
    """A coalesced boolean sparse COO tensor with the given (possibly repeated) entries."""
    r, c = torch.cat(rows), torch.cat(cols)
    linear = torch.unique(r * shape[1] + c)  # sorted, so the result is coalesced row-major
    indices = torch.stack([linear // shape[1], linear % shape[1]])
    values = torch.ones(linear.numel(), dtype=torch.bool, device=linear.device)
    return torch.sparse_coo_tensor(
        indices, values, shape, is_coalesced=True, check_invariants=False
    )


# Hits of the detection passes are kept on the device as boolean blocks and located by one
# nonzero() (a host-device sync: its output size is data-dependent) once this many are stored.
_FLUSH_ELEMENTS = 2**24


class _Hits:
    """Boolean ``(chunk, m)`` hit blocks, located (``nonzero``, one sync) in bulk, not per chunk."""

    def __init__(self) -> None:
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.stored = 0
        self.rows: list[torch.Tensor] = []
        self.cols: list[torch.Tensor] = []

    def add(self, hits: torch.Tensor, idx: torch.Tensor) -> None:
        self.blocks.append((hits, idx))
        self.stored += hits.numel()
        if self.stored >= _FLUSH_ELEMENTS:
            self.flush()

    def flush(self) -> None:
        if not self.blocks:
            return
        hits = torch.cat([h for h, _ in self.blocks])
        idx = torch.cat([i for _, i in self.blocks])
        hit_c, hit_r = torch.nonzero(hits, as_tuple=True)
        self.rows.append(hit_r)
        self.cols.append(idx[hit_c])
        self.blocks, self.stored = [], 0

    def pattern(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        self.flush()
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _to_pattern(self.rows or [empty], self.cols or [empty], shape)


def jacobian_sparsity(
    f: Function,
    x: torch.Tensor,
    *,
    method: str = "nan",
    chunk_size: int = 256,
    num_probes: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detect the sparsity pattern of the Jacobian of ``f`` at (around) ``x``.

    ``method="nan"`` propagates index sets through the computation using IEEE arithmetic: input
    ``j`` is set to NaN and every output that turns NaN depends on it (NaN spreads through every
    arithmetic op, even ``0 * NaN``, so the pattern is a superset of the Jacobian's nonzeros).
    Ops that drop NaN (comparisons feeding ``torch.where``, ``nan_to_num``, ``argmax`` indexing)
    can hide a dependency; use ``method="probe"`` for such functions. ``method="probe"`` takes the
    union of the nonzeros of the dense Jacobian at ``num_probes`` random perturbations of ``x``
    (exact unless an entry vanishes at every probe). Both evaluate ``f`` (or JVPs) on ``chunk_size``
    inputs at a time with ``torch.func.vmap``; the pattern is computed once and reused. Host-device
    syncs: none per chunk; the hits stay on the device and are located by one ``nonzero`` per
    2^24 stored hit flags (once for most problems), plus, for ``"nan"``, one NaN check of ``f(x)``
    before the passes.

    Args:
        f: a function of one tensor returning one tensor, vmappable (no ``.item()``, no
            data-dependent Python branching).
        x: a floating tensor of any shape; the Jacobian is ``(f(x).numel(), x.numel())``.
        method: ``"nan"`` or ``"probe"``.
        chunk_size: inputs (columns) per vmapped evaluation.
        num_probes: random points for ``"probe"``.
        generator: random source for ``"probe"``.

    Returns:
        A coalesced sparse COO tensor of dtype ``bool`` and shape ``(m, n)``.

    Raises:
        TypeError: if ``x`` is not a floating tensor.
        ValueError: if ``f(x)`` already contains NaN (``"nan"``), or an option is invalid.

    Example:
        >>> f = lambda u: u[1:] - u[:-1]
        >>> jacobian_sparsity(f, torch.zeros(4)).to_dense().int().tolist()
        [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    fn = "jacobian_sparsity"
    x = _check_input(fn, x)
    check_one_of(fn, "method", method, ("nan", "probe"))
    check_int(fn, "chunk_size", chunk_size, minimum=1)
    check_int(fn, "num_probes", num_probes, minimum=1)
    g = _flat(f, x)
    flat = x.detach().reshape(-1)
    n = flat.numel()
    base = g(flat)
    m = base.numel()
    hits = _Hits()
    if method == "nan":
        # One host sync per call, before the passes (none inside the loop).
        if torch.isnan(base).any():
            raise ValueError(f"{fn}: `f(x)` must be NaN-free for method='nan', got NaN outputs")
        for start in range(0, n, chunk_size):
            idx = torch.arange(start, min(start + chunk_size, n), device=flat.device)
            inputs = flat.expand(idx.numel(), n).clone()
            inputs[torch.arange(idx.numel(), device=flat.device), idx] = float("nan")
            hits.add(torch.isnan(torch.func.vmap(g)(inputs)), idx)
        return hits.pattern((m, n), flat.device)
    _forward_mode_ready()
    scale = flat.abs().amax().clamp_min(1.0)
    for _ in range(num_probes):
        # Drawn where the generator lives (a CPU generator works for data on any device).
        drawn_on = flat.device if generator is None else generator.device
        noise = torch.randn(n, generator=generator, dtype=flat.dtype, device=drawn_on)
        noise = noise.to(flat.device)
        point = flat + 1e-2 * scale * noise
        jvp = torch.func.vmap(lambda t, p=point: torch.func.jvp(g, (p,), (t,))[1])
        for start in range(0, n, chunk_size):
            idx = torch.arange(start, min(start + chunk_size, n), device=flat.device)
            block = torch.zeros((idx.numel(), n), dtype=flat.dtype, device=flat.device)
            block[torch.arange(idx.numel(), device=flat.device), idx] = 1
            hits.add(jvp(block) != 0, idx)
    return hits.pattern((m, n), flat.device)


def hessian_sparsity(f: Function, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Detect the sparsity pattern of the Hessian of a scalar ``f`` at (around) ``x``.

    The Jacobian pattern of ``grad f`` by :func:`jacobian_sparsity` (NaN propagation runs through
    the backward pass too), symmetrized.

    Args:
        f: a scalar-valued function of one tensor (vmappable and differentiable).
        x: a floating tensor; the Hessian is ``(x.numel(), x.numel())``.
        **kwargs: passed to :func:`jacobian_sparsity`.

    Returns:
        A coalesced boolean sparse COO tensor of shape ``(n, n)``.

    Raises:
        TypeError, ValueError: as :func:`jacobian_sparsity`.

    Example:
        >>> f = lambda u: (u[1:] * u[:-1]).sum()
        >>> hessian_sparsity(f, torch.ones(3)).to_dense().int().tolist()
        [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    """
    x = _check_input("hessian_sparsity", x)
    grad = torch.func.grad(lambda flat: f(flat.reshape(x.shape)))
    pattern = jacobian_sparsity(grad, x.reshape(-1), **kwargs)
    rows, cols = pattern.indices()
    n = x.numel()
    return _to_pattern([rows, cols], [cols, rows], (n, n))


def _resolve_plan(
    fn: str, sparsity: Any, build: Callable[[torch.Tensor], ColoringPlan]
) -> ColoringPlan | None:
    if sparsity is None or isinstance(sparsity, ColoringPlan):
        return sparsity
    if isinstance(sparsity, torch.Tensor):
        return build(sparsity)
    raise TypeError(
        format_message(fn, "sparsity", "a pattern tensor, a ColoringPlan or None", type(sparsity))
    )


@final
class SparseJacobian:
    """``x -> J(x)`` as a sparse tensor, by compressed JVPs/VJPs; see :func:`sparse_jacobian`."""

    def __init__(self, f: Function, plan: ColoringPlan | None, mode: str, layout: str) -> None:
        self.f, self.plan, self.mode, self.layout = f, plan, mode, layout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(f(x).numel(), x.numel())`` Jacobian at ``x`` as a sparse tensor."""
        fn = "sparse_jacobian"
        x = _check_input(fn, x)
        g, flat = _flat(self.f, x), x.reshape(-1)
        if self.plan is None:
            self.plan = color_jacobian(jacobian_sparsity(self.f, x), mode=self.mode)
        plan = self.plan
        if plan.kind == "star":
            raise ValueError(f"{fn}: `sparsity` is a star (Hessian) plan; use color_jacobian")
        seeds = plan.seeds(flat.device, flat.dtype)
        if plan.kind == "column":
            _forward_mode_ready()
            if plan.shape[1] != flat.numel():
                raise ValueError(_shape_error(fn, plan, "inputs", flat.numel()))
            compressed = torch.func.vmap(lambda t: torch.func.jvp(g, (flat,), (t,))[1])(seeds)
            if compressed.shape[1] != plan.shape[0]:
                raise ValueError(_shape_error(fn, plan, "outputs", compressed.shape[1]))
        else:
            out, vjp = torch.func.vjp(g, flat)[:2]
            if plan.shape != (out.numel(), flat.numel()):
                raise ValueError(
                    _shape_error(fn, plan, "(outputs, inputs)", (out.numel(), flat.numel()))
                )
            (compressed,) = torch.func.vmap(vjp)(seeds)
        return plan.recover(compressed, self.layout)


def _shape_error(fn: str, plan: ColoringPlan, what: str, got: Any) -> str:
    return f"{fn}: `sparsity` pattern of shape {plan.shape} does not match the function's {what}, got {got}"


@final
class SparseHessian:
    """``x -> H(x)`` as a sparse tensor, by compressed HVPs; see :func:`sparse_hessian`."""

    def __init__(self, f: Function, plan: ColoringPlan | None, layout: str) -> None:
        self.f, self.plan, self.layout = f, plan, layout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(x.numel(), x.numel())`` Hessian at ``x`` as a sparse tensor."""
        fn = "sparse_hessian"
        x = _check_input(fn, x)
        flat = x.reshape(-1)
        if self.plan is None:
            self.plan = color_hessian(hessian_sparsity(self.f, x))
        plan = self.plan
        if plan.kind != "star":
            raise ValueError(
                f"{fn}: `sparsity` must be a star plan from color_hessian, got kind={plan.kind!r}"
            )
        if plan.shape != (flat.numel(), flat.numel()):
            raise ValueError(
                _shape_error(fn, plan, "(inputs, inputs)", (flat.numel(), flat.numel()))
            )
        _forward_mode_ready()
        grad = torch.func.grad(lambda v: self.f(v.reshape(x.shape)))
        hvp = torch.func.vmap(lambda t: torch.func.jvp(grad, (flat,), (t,))[1])
        return plan.recover(hvp(plan.seeds(flat.device, flat.dtype)), self.layout)


def sparse_jacobian(
    f: Function,
    sparsity: torch.Tensor | ColoringPlan | None = None,
    *,
    mode: str = "auto",
    layout: str = "coo",
) -> SparseJacobian:
    """Return ``x -> J_f(x)`` as a torch sparse tensor, from one batch of compressed products.

    With a column coloring (``c`` colors), ``B = J S`` costs ``c`` JVPs, evaluated together by
    ``vmap(jvp)``, and ``J_ij = B[i, color_j]``; a row coloring uses ``c`` VJPs on ``J^T``. A band
    of width ``w`` needs ``w`` products whatever ``n`` is, where dense ``jacrev`` needs ``m``.

    Args:
        f: a vmappable function of one tensor returning one tensor.
        sparsity: the ``(m, n)`` pattern (dense or sparse tensor, e.g. from
            :func:`jacobian_sparsity`), a :class:`ColoringPlan` from :func:`color_jacobian` to
            reuse, or ``None`` to detect and color at the first call (then kept).
        mode: coloring mode when a pattern is given: ``"auto"``, ``"column"`` or ``"row"``.
        layout: ``"coo"`` or ``"csr"`` output.

    Returns:
        A callable :class:`SparseJacobian`; its ``plan`` attribute holds the coloring.

    Raises:
        TypeError: if ``sparsity`` is of an unsupported type (or, at call time, ``x`` is not a
            floating tensor).
        ValueError: if an option is unknown, or (at call time) the pattern's shape does not
            match ``(f(x).numel(), x.numel())``.

    Example:
        >>> f = lambda u: u[1:] ** 2 - u[:-1]
        >>> jac = sparse_jacobian(f, jacobian_sparsity(f, torch.zeros(4)))
        >>> jac(torch.tensor([1.0, 2.0, 3.0, 4.0])).to_dense().tolist()
        [[-1.0, 4.0, 0.0, 0.0], [0.0, -1.0, 6.0, 0.0], [0.0, 0.0, -1.0, 8.0]]

    References:
        Curtis, Powell, Reid, 1974; Gebremedhin, Manne, Pothen, SIAM Review 2005.
    """
    fn = "sparse_jacobian"
    check_one_of(fn, "mode", mode, ("auto", "column", "row"))
    check_one_of(fn, "layout", layout, ("coo", "csr"))
    plan = _resolve_plan(fn, sparsity, lambda s: color_jacobian(s, mode=mode))
    return SparseJacobian(f, plan, mode, layout)


def sparse_hessian(
    f: Function,
    sparsity: torch.Tensor | ColoringPlan | None = None,
    *,
    layout: str = "coo",
) -> SparseHessian:
    """Return ``x -> H_f(x)`` for a scalar ``f`` as a torch sparse tensor, from compressed HVPs.

    A star coloring (:func:`color_hessian`) with ``c`` colors gives ``B = H S`` from ``c``
    forward-over-reverse HVPs in one vmapped pass; each entry is read directly from ``B``
    (Coleman-Moré direct recovery), exploiting symmetry.

    Args:
        f: a vmappable, twice-differentiable scalar function of one tensor.
        sparsity: the ``(n, n)`` pattern, a star :class:`ColoringPlan`, or ``None`` (detected and
            colored at the first call, then kept).
        layout: ``"coo"`` or ``"csr"`` output.

    Returns:
        A callable :class:`SparseHessian`; its ``plan`` attribute holds the coloring.

    Raises:
        TypeError: if ``sparsity`` is of an unsupported type.
        ValueError: if ``layout`` is unknown, or (at call time) the plan is not a star plan or
            its shape does not match ``(x.numel(), x.numel())``.

    Example:
        >>> f = lambda u: (u[1:] * u[:-1]).sum() + (u**3).sum()
        >>> hess = sparse_hessian(f)
        >>> hess(torch.tensor([1.0, 2.0, 3.0])).to_dense().tolist()
        [[6.0, 1.0, 0.0], [1.0, 12.0, 1.0], [0.0, 1.0, 18.0]]

    References:
        Coleman, Moré, Mathematical Programming 1984; Gebremedhin, Manne, Pothen, 2005.
    """
    fn = "sparse_hessian"
    check_one_of(fn, "layout", layout, ("coo", "csr"))
    plan = _resolve_plan(fn, sparsity, color_hessian)
    return SparseHessian(f, plan, layout)
