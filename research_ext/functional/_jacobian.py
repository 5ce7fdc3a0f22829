"""Dense Jacobians and Hessians that pick the cheaper AD mode and chunk in both modes.

Reverse mode costs one vector-Jacobian product per output element, forward mode one
Jacobian-vector product per input element; ``mode="auto"`` compares the two counts (after one
evaluation of ``f`` on the first call) and remembers the choice per input signature. Chunked
evaluation writes each chunk into a preallocated result, so peak memory stays near the size of
the Jacobian itself instead of the 2x that concatenating chunks costs.
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import jvp as _jvp, vjp as _vjp, vmap

from research_ext.core import check_one_of, tree_flatten, tree_unflatten
from research_ext.functional._arguments import (
    check_argnums,
    check_callable,
    check_chunk_size,
    check_diff_inputs,
    check_outputs,
    forward_ad_ready,
    normalize_argnums,
    split_aux,
)

__all__ = ["hessian", "jacobian"]

_MODES = ("auto", "fwd", "rev")
# Forward mode pays for carrying tangents through every op; measured on CPU (benchmarks/) a JVP
# column costs about as much as a VJP row, so auto picks forward mode when inputs are fewer, and
# on a tie (square Jacobians: batched JVPs skip recording a graph, measured ~15% faster there);
# hessian's levels break ties towards reverse mode (forward-over-reverse is slower on CPU).
_FWD_COST = 1.0
# chunk_size="auto": one chunk's working set (basis rows + result rows) stays under half the
# Jacobian and under 64 MiB, and above 1 MiB so tiny problems run in one chunk.
_AUTO_BUDGET_MAX = 64 * 2**20
_AUTO_BUDGET_MIN = 2**20
_AUTO_MIN_ROWS = 256
_CACHE_SIZE = 128


def _signature(args: tuple[Any, ...], argnums: tuple[int, ...]) -> tuple[Any, ...]:
    if all(isinstance(a, torch.Tensor) for a in args):  # fast path: no pytree walk
        return (argnums, tuple((a.shape, a.dtype, a.device) for a in args))
    leaves, spec = tree_flatten(args)
    sig = tuple(
        (tuple(x.shape), x.dtype, x.device.type) if isinstance(x, torch.Tensor) else type(x)
        for x in leaves
    )
    return (argnums, str(spec), sig)


def _auto_chunk(rows: int, n: int, m: int, itemsize: int) -> int:
    jac_bytes = n * m * itemsize
    per_row = max(2 * (n + m) * itemsize, 1)
    budget = max(_AUTO_BUDGET_MIN, min(_AUTO_BUDGET_MAX, jac_bytes // 2))
    # Batches of fewer than ~256 products run markedly slower per product (measured on CPU),
    # so take at least that many while the hard cap allows.
    chunk = max(budget // per_row, min(_AUTO_MIN_ROWS, _AUTO_BUDGET_MAX // per_row))
    return max(1, min(rows, chunk))


def _basis(
    start: int, stop: int, sizes: Sequence[int], like: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Rows ``start:stop`` of the identity, split into tensors shaped like ``like``."""
    total = sum(sizes)
    count = stop - start
    dtype = like[0].dtype
    for t in like[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    # torch has no eye/fill for complex32: build it in complex64 and cast (exact: 0 and 1)
    build = torch.complex64 if dtype == torch.complex32 else dtype
    if start == 0 and count == total:
        eye = torch.eye(total, dtype=build, device=like[0].device)
    else:
        eye = torch.zeros(count, total, dtype=build, device=like[0].device)
        eye.diagonal(offset=start).fill_(1)
    eye = eye.to(dtype)
    if len(like) == 1:
        return (eye.view((count, *like[0].shape)),)
    pieces = torch.split(eye, list(sizes), dim=1)
    return tuple(
        p.reshape((count, *t.shape)).to(t.dtype) for p, t in zip(pieces, like, strict=True)
    )


def _to_real(x: torch.Tensor) -> torch.Tensor:
    # resolve_conj first: a lazy conjugate's imaginary part is a negative view, which vmap
    # cannot batch (torch.conj, Tensor.conj, ... return them); stack, not view_as_real, whose
    # backward needs gradients with even strides
    if not x.is_complex():
        return x
    x = x.resolve_conj()
    return torch.stack((x.real, x.imag), dim=-1)


def _from_real(x: torch.Tensor) -> torch.Tensor:
    # view_as_complex, not torch.complex(re, im): the latter's backward takes .imag of the
    # incoming gradient, a negative view (vmap cannot batch it) when that gradient is a conj
    return torch.view_as_complex(x.contiguous())


class _Problem:
    """``f`` seen as a function of a flat tuple of differentiated leaves."""

    def __init__(
        self,
        name: str,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        argnums: tuple[int, ...],
        is_tuple: bool,
        has_aux: bool,
        holomorphic: bool,
    ) -> None:
        self.name, self.f, self.args, self.argnums = name, f, args, argnums
        self.has_aux, self.holomorphic = has_aux, holomorphic
        diff = tuple(args[i] for i in argnums)
        # in_spec/out_spec None mark a bare tensor (skips pytree work on the common path).
        self.in_spec: Any = None
        if not is_tuple and isinstance(diff[0], torch.Tensor):
            leaves = [diff[0]]
        else:
            leaves, self.in_spec = tree_flatten(diff if is_tuple else diff[0])
        self.is_tuple = is_tuple
        # Without holomorphic=True a complex leaf is differentiated through its real view.
        self.complex_in = [x.is_complex() and not holomorphic for x in leaves]
        self.leaves = tuple(
            _to_real(x) if c else x for x, c in zip(leaves, self.complex_in, strict=False)
        )
        self.out_spec: Any = None

    def __call__(self, *leaves: torch.Tensor) -> Any:
        """The output leaves (a bare tensor when there is one), plus ``aux`` with has_aux."""
        leaves = tuple(
            _from_real(x) if c else x for x, c in zip(leaves, self.complex_in, strict=False)
        )
        diff = leaves[0] if self.in_spec is None else tree_unflatten(list(leaves), self.in_spec)
        diff = diff if self.is_tuple else (diff,)
        args = list(self.args)
        for i, value in zip(self.argnums, diff, strict=False):
            args[i] = value
        out, aux = split_aux(self.name, self.f(*args), self.has_aux)
        if isinstance(out, torch.Tensor):
            out_leaves, self.out_spec = [out], None
        else:
            out_leaves, self.out_spec = tree_flatten(out)
        check_outputs(self.name, out_leaves, holomorphic=self.holomorphic)
        if not self.holomorphic:
            out_leaves = [_to_real(y) for y in out_leaves]
        outs = out_leaves[0] if len(out_leaves) == 1 else tuple(out_leaves)
        return (outs, aux) if self.has_aux else outs

    def vjp(self) -> tuple[tuple[torch.Tensor, ...], Callable[..., Any], Any, bool]:
        """``(output leaves, vjp_fn, aux, single)``; ``single``: vjp_fn takes a bare tensor."""
        res: Any = _vjp(self, *self.leaves, has_aux=self.has_aux)
        single = isinstance(res[0], torch.Tensor)
        outs = (res[0],) if single else res[0]
        return outs, res[1], res[2] if self.has_aux else (), single

    def assemble(self, blocks: list[list[torch.Tensor]]) -> Any:
        """``blocks[j][i]`` is d out_j / d in_i; nest as the output tree of input trees."""
        if self.in_spec is None:
            per_out = [row[0] for row in blocks]
        else:
            per_out = [tree_unflatten(row, self.in_spec) for row in blocks]
        return per_out[0] if self.out_spec is None else tree_unflatten(per_out, self.out_spec)


def _rev(
    problem: _Problem, chunk: int | str | None, state: tuple[Any, ...] | None
) -> tuple[Any, Any]:
    outs, vjp_fn, aux, single = state if state is not None else problem.vjp()
    ins = problem.leaves
    m_sizes = [y.numel() for y in outs]
    n_sizes = [x.numel() for x in ins]
    m = sum(m_sizes)
    if isinstance(chunk, str):
        size = _auto_chunk(m, sum(n_sizes), m, outs[0].element_size())
    else:
        size = m if chunk is None else chunk
    if m == 0:  # no output entries: no products to batch (vmap refuses a batch of size 0)
        flat = [
            torch.zeros(0, ni, dtype=x.dtype, device=x.device)
            for ni, x in zip(n_sizes, ins, strict=True)
        ]
    elif size >= m:
        if m == 1:  # one row: skip vmap's batching overhead
            row = tuple(b[0] for b in _basis(0, 1, m_sizes, outs))
            rows = tuple(g.unsqueeze(0) for g in vjp_fn(row[0] if single else row))
        else:
            basis = _basis(0, m, m_sizes, outs)
            rows = vmap(vjp_fn)(basis[0] if single else basis)
        flat = [r.reshape(m, ni) for r, ni in zip(rows, n_sizes, strict=True)]
    else:
        flat = [
            torch.empty(m, n, dtype=x.dtype, device=x.device)
            for n, x in zip(n_sizes, ins, strict=False)
        ]
        for start in range(0, m, size):
            stop = min(m, start + size)
            basis = _basis(start, stop, m_sizes, outs)
            rows = vmap(vjp_fn)(basis[0] if single else basis)
            for buf, r in zip(flat, rows, strict=False):
                buf[start:stop] = r.reshape(stop - start, buf.shape[1])
    if problem.holomorphic:  # torch's VJP of a holomorphic map gives conj(J)^T v
        flat = [f.conj() for f in flat]
    blocks, offset = [], 0
    for y, mj in zip(outs, m_sizes, strict=False):
        blocks.append(
            [
                f[offset : offset + mj].reshape((*y.shape, *x.shape))
                for f, x in zip(flat, ins, strict=False)
            ]
        )
        offset += mj
    return problem.assemble(blocks), aux


def _fwd(problem: _Problem, chunk: int | str | None, m_hint: int | None) -> tuple[Any, Any]:
    forward_ad_ready()
    ins = problem.leaves
    n_sizes = [x.numel() for x in ins]
    n = sum(n_sizes)

    def column(*tangents: torch.Tensor) -> tuple[Any, Any]:
        res: Any = _jvp(problem, ins, tangents, has_aux=problem.has_aux)
        t_out = (res[1],) if isinstance(res[1], torch.Tensor) else res[1]
        return t_out, res[2] if problem.has_aux else ()

    if isinstance(chunk, str):
        size = _auto_chunk(n, n, m_hint if m_hint is not None else n, ins[0].element_size())
    else:
        size = n if chunk is None else chunk
    batched: Any = vmap(column, out_dims=(0, None))  # type: ignore[arg-type]
    if n == 0:  # no input entries: evaluate once for the output shapes (vmap refuses size 0)
        res: Any = problem(*ins)
        outs, aux = res if problem.has_aux else (res, ())
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        zero = [[y.new_zeros((*y.shape, *x.shape)) for x in ins] for y in outs]
        return problem.assemble(zero), aux
    if size >= n:
        cols, aux = batched(*_basis(0, n, n_sizes, ins))
        blocks = []
        for y in cols:
            out_dims = y.dim() - 1
            row, offset = [], 0
            for x, ni in zip(ins, n_sizes, strict=False):
                block = y[offset : offset + ni].reshape((*x.shape, *y.shape[1:]))
                row.append(
                    block.movedim(tuple(range(x.dim())), tuple(range(out_dims, out_dims + x.dim())))
                )
                offset += ni
            blocks.append(row)
        return problem.assemble(blocks), aux
    bufs: list[torch.Tensor] = []
    shapes: list[torch.Size] = []
    for start in range(0, n, size):
        stop = min(n, start + size)
        cols, aux = batched(*_basis(start, stop, n_sizes, ins))
        if not bufs:
            shapes = [y.shape[1:] for y in cols]
            bufs = [torch.empty(y[0].numel(), n, dtype=y.dtype, device=y.device) for y in cols]
        for buf, y in zip(bufs, cols, strict=False):
            buf[:, start:stop] = y.reshape(stop - start, buf.shape[0]).T
    blocks = []
    for buf, shape in zip(bufs, shapes, strict=False):
        row, offset = [], 0
        for x, ni in zip(ins, n_sizes, strict=False):
            row.append(buf[:, offset : offset + ni].reshape((*shape, *x.shape)))
            offset += ni
        blocks.append(row)
    return problem.assemble(blocks), aux


def jacobian(
    f: Callable[..., Any],
    argnums: int | tuple[int, ...] = 0,
    *,
    mode: str = "auto",
    chunk_size: int | str | None = None,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable[..., Any]:
    r"""Jacobian transform: ``jacobian(f)(*args)`` is :math:`J_{ij} = \partial f_i / \partial x_j`.

    Reverse mode builds :math:`J` row by row from vector-Jacobian products (cost ~ ``m`` VJPs for
    ``m`` outputs), forward mode column by column from Jacobian-vector products (~ ``n`` JVPs for
    ``n`` inputs). ``mode="auto"`` picks forward mode when ``n <= m`` and reverse mode otherwise;
    the decision takes one evaluation of ``f`` on the first call and is cached per input
    signature (shapes, dtypes, devices, pytree structure).

    For an output leaf of shape ``O`` and an input leaf of shape ``I`` the block has shape
    ``(*O, *I)``; pytree outputs give the output tree whose leaves are trees of the
    differentiated arguments (a tuple of them when ``argnums`` is a tuple), as in
    ``torch.func.jacrev``.

    Complex numbers: with ``holomorphic=True`` (complex inputs and outputs) the result is the
    complex derivative :math:`\partial f / \partial z`. Otherwise every complex input or output
    leaf of shape ``S`` is handled through its real view of shape ``(*S, 2)`` (real part, then
    imaginary part), giving the real Jacobian of :math:`\mathbb{R}^{2n} \to \mathbb{R}^{2m}`,
    which is correct for any (also non-holomorphic) function.

    Args:
        f: function of tensors (or pytrees of tensors) returning a tensor or a pytree of tensors
            (with ``has_aux``, a pair ``(output, aux)``).
        argnums: which positional argument(s) to differentiate.
        mode: ``"auto"``, ``"fwd"`` (forward mode) or ``"rev"`` (reverse mode).
        chunk_size: ``None`` (all rows/columns in one batch), a positive int (that many per
            batch, written into one preallocated result), or ``"auto"`` (one chunk's working set
            stays under half the Jacobian's size and 64 MiB, with at least 256 products per
            chunk where that cap allows).
        has_aux: ``f`` returns ``(output, aux)``; the transform returns ``(jacobian, aux)``.
        holomorphic: differentiate a holomorphic function of complex inputs.

    Returns:
        A function with the signature of ``f`` returning the Jacobian (and ``aux``).

    Raises:
        TypeError: ``f`` not callable, ``argnums``/``chunk_size`` of the wrong type, integer or
            non-tensor inputs, non-tensor outputs, ``has_aux=True`` with a non-pair output.
        ValueError: ``mode`` unknown, ``argnums`` out of range, ``holomorphic=True`` on real
            inputs or outputs.

    Example:
        >>> import research_ext.functional as rf
        >>> x = torch.tensor([1.0, 2.0])
        >>> rf.jacobian(lambda x: x**2)(x)
        tensor([[2., 0.],
                [0., 4.]])
        >>> z = torch.tensor([1.0 + 1.0j])
        >>> rf.jacobian(lambda z: z**2, holomorphic=True)(z)  # 2z
        tensor([[2.+2.j]])
    """
    return _transform("jacobian", f, argnums, mode, chunk_size, has_aux, holomorphic)


class _NotLeanError(Exception):
    """The output is not one real floating tensor; take the general path."""


def _decide(
    cache: "OrderedDict[tuple[Any, ...], tuple[str, int]]",
    key: tuple[Any, ...],
    n: int,
    m: int,
    tie: str,
) -> str:
    cost_fwd, cost_rev = _FWD_COST * n, m
    chosen = "fwd" if cost_fwd < cost_rev or (cost_fwd == cost_rev and tie == "fwd") else "rev"
    cache[key] = (chosen, m)
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return chosen


def _lean(
    f: Callable[..., Any],
    args: tuple[Any, ...],
    positions: tuple[int, ...],
    mode: str,
    cache: "OrderedDict[tuple[Any, ...], tuple[str, int]]",
    tie: str,
) -> Any:
    """One real tensor in, one real tensor out, no chunking: torch.func with nothing around it."""
    pos = positions[0]
    x = args[pos]

    def call(x: torch.Tensor) -> torch.Tensor:
        full = list(args)
        full[pos] = x
        out = f(*full)
        if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
            raise _NotLeanError
        return out

    chosen, state = mode, None
    if mode == "auto":
        key = _signature(args, positions)
        if key in cache:
            chosen = cache[key][0]
            cache.move_to_end(key)
        else:
            try:
                state = _vjp(call, x)
            except RuntimeError as err:  # no reverse-mode derivative: forward mode only
                cache[key] = ("fwd", x.numel())
                return _forward_or_raise(err, lambda: _lean_fwd(call, x))
            chosen = _decide(cache, key, x.numel(), state[0].numel(), tie)
    if chosen == "fwd":
        try:
            return _lean_fwd(call, x)
        except NotImplementedError as err:
            if mode != "auto" or not _no_forward_ad(err):
                raise
            # an op without a forward-mode formula: reverse mode, from now on
            key = _signature(args, positions)
            cache[key] = ("rev", cache[key][1])
    res: Any = state if state is not None else _vjp(call, x)
    out, vjp_fn = res[0], res[1]
    m = out.numel()
    if m == 0 or x.numel() == 0:  # an empty Jacobian: nothing to batch
        return out.new_zeros((*out.shape, *x.shape))
    if m == 1:
        rows = vjp_fn(torch.ones_like(out))[0].unsqueeze(0)
    else:
        eye = torch.eye(m, dtype=out.dtype, device=out.device).view((m, *out.shape))
        rows = vmap(vjp_fn)(eye)[0]
    return rows.reshape((*out.shape, *x.shape))


def _lean_fwd(call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    forward_ad_ready()
    n = x.numel()
    if n == 0:  # an empty Jacobian: evaluate once for the output shape
        out = call(x)
        return out.new_zeros((*out.shape, *x.shape))
    eye = torch.eye(n, dtype=x.dtype, device=x.device).view((n, *x.shape))
    cols = vmap(lambda t: _jvp(call, (x,), (t,))[1])(eye)
    out_dims = cols.dim() - 1
    cols = cols.reshape((*x.shape, *cols.shape[1:]))
    return cols.movedim(tuple(range(x.dim())), tuple(range(out_dims, out_dims + x.dim())))


def _forward_or_raise(err: RuntimeError, forward: Callable[[], Any]) -> Any:
    """``forward()`` for mode="auto" where reverse mode failed, else re-raise ``err``.

    Reverse mode fails where an op is not differentiable in reverse mode with respect to an
    argument (batch norm's running statistics) or torch.func cannot trace an autograd.Function.
    """
    try:
        return forward()
    except Exception:
        raise err from None


# How torch says an op has no forward-mode formula: a built-in op ("Trying to use forward AD
# with ..."), an autograd.Function without jvp ("... to use it with forward mode AD"), and the
# wording torch.func's documentation quotes ("forward-mode AD not implemented").
_NO_FORWARD_AD = ("forward AD", "forward mode AD", "forward-mode")


def _no_forward_ad(err: NotImplementedError) -> bool:
    """Whether ``err`` is torch's "no forward-mode formula for this op"."""
    message = str(err)
    return any(phrase in message for phrase in _NO_FORWARD_AD)


def _transform(
    name: str,
    f: Callable[..., Any],
    argnums: Any,
    mode: str,
    chunk_size: Any,
    has_aux: bool,
    holomorphic: bool,
    tie: str = "fwd",
) -> Callable[..., Any]:
    check_callable(name, f)
    argnums_t, is_tuple = check_argnums(name, argnums)
    check_one_of(name, "mode", mode, _MODES)
    chunk_size = check_chunk_size(name, chunk_size)
    cache: OrderedDict[tuple[Any, ...], tuple[str, int]] = OrderedDict()

    lean = not (has_aux or holomorphic or is_tuple) and chunk_size is None

    def jac_fn(*args: Any) -> Any:
        positions = normalize_argnums(name, argnums_t, len(args))
        check_diff_inputs(name, args, positions, holomorphic=holomorphic)
        x = args[positions[0]]
        if lean and isinstance(x, torch.Tensor) and x.is_floating_point():
            try:
                return _lean(f, args, positions, mode, cache, tie)
            except _NotLeanError:  # pytree or complex output: the general path below
                pass
        problem = _Problem(name, f, args, positions, is_tuple, has_aux, holomorphic)
        chosen, m_hint, state = mode, None, None
        if mode == "auto":
            key = _signature(args, positions)
            if key in cache:
                chosen, m_hint = cache[key]
                cache.move_to_end(key)
            else:
                n = sum(x.numel() for x in problem.leaves)
                try:
                    state = problem.vjp()
                except RuntimeError as err:  # no reverse-mode derivative: forward mode only
                    cache[key] = ("fwd", n)
                    result, aux = _forward_or_raise(err, lambda: _fwd(problem, chunk_size, None))
                    return (result, aux) if has_aux else result
                m_hint = sum(y.numel() for y in state[0])
                chosen = _decide(cache, key, n, m_hint, tie)
        if chosen == "rev":
            result, aux = _rev(problem, chunk_size, state)
        else:
            try:
                result, aux = _fwd(problem, chunk_size, m_hint)
            except NotImplementedError as err:
                if mode != "auto" or not _no_forward_ad(err):
                    raise
                # an op without a forward-mode formula: reverse mode, from now on
                cache[_signature(args, positions)] = ("rev", m_hint or 0)
                result, aux = _rev(problem, chunk_size, state)
        return (result, aux) if has_aux else result

    jac_fn.__doc__ = f"Jacobian of {getattr(f, '__name__', 'f')} (mode={mode!r})."
    return jac_fn


def hessian(
    f: Callable[..., Any],
    argnums: int | tuple[int, ...] = 0,
    *,
    chunk_size: int | str | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    r"""Hessian transform: ``hessian(f)(*args)`` is :math:`H_{ij} = \partial^2 f / \partial x_i \partial x_j`.

    The Jacobian of the gradient, each level choosing its mode as :func:`jacobian` does with
    ``mode="auto"``: for a scalar ``f`` of ``n`` inputs the gradient has ``n`` outputs, so both
    levels run in reverse mode (reverse-over-reverse). On CPU that composition is several times
    faster than forward-over-reverse for dense problems; a vector-valued ``f`` with few inputs
    gets forward mode where that is cheaper.

    Args:
        f: function returning a tensor (a scalar for the usual Hessian) or a pytree of tensors.
        argnums: which positional argument(s) to differentiate.
        chunk_size: chunking of the outer Jacobian (see :func:`jacobian`).
        has_aux: ``f`` returns ``(output, aux)``; the transform returns ``(hessian, aux)``.

    Returns:
        A function with the signature of ``f`` returning the Hessian, of shape
        ``(*out_shape, *in_shape, *in_shape)`` per leaf.

    Raises:
        TypeError: as :func:`jacobian`.
        ValueError: as :func:`jacobian`.

    Example:
        >>> import research_ext.functional as rf
        >>> rf.hessian(lambda x: (x**3).sum())(torch.tensor([1.0, 2.0]))  # diag(6x)
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    check_callable("hessian", f)
    # Ties (as many inputs as outputs: the gradient) go to reverse mode: reverse-over-reverse.
    inner = _transform("hessian", f, argnums, "auto", None, has_aux, False, tie="rev")
    return _transform("hessian", inner, argnums, "auto", chunk_size, has_aux, False, tie="rev")
