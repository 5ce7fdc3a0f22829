"""PyTorch's OpInfo database as a test source: every transform of ours against torch.func.

For every operator in ``torch.testing._internal.common_methods_invocations.op_db`` that supports
autograd in float64 (complex128 for the holomorphic and real-view complex paths), a few small
samples each, every transform of ``research_ext.functional`` is compared with torch.func on the
same function. One comparison is an *item*: (operator, sample, transform). An item passes when
ours agrees with the reference within ``RTOL_AD_FLOAT64`` / ``ATOL_AD_FLOAT64``; it is skipped
only where torch.func itself fails on the function (the reason is recorded: the reference that
failed and its exception) or where torch.func disagrees with itself (two torch.func routes to
the same quantity differ, e.g. ``jacrev`` against ``jacfwd``); anything else is a failure.

The function of a sample is ``op(input, *args, **kwargs)`` with every floating (or complex) tensor
(or list of tensors) among ``input`` and ``args`` differentiated; tensors in ``kwargs`` are
constants; outputs are the floating/complex tensor leaves of the result after the sample's
``output_process_fn_grad``. Each call of the function reseeds torch's generator, so operators
that draw random numbers (dropout, rrelu, ...) are the same deterministic function on every call.

Documented torch.func limitations (these show up as skip reasons, never as failures):

- operators without a forward-mode formula (``cdist``, ``linalg.lu_solve``'s forward AD asserts,
  ...): ``jacfwd``/``jvp`` raise, so forward-mode items and forward-over-reverse references are
  skipped (ours in ``mode="auto"`` and ``linearize`` switch to the mode that works);
- operators not differentiable in reverse mode with respect to an argument (batch norm's running
  statistics) or ``autograd.Function``s torch.func cannot trace: ``jacrev``/``vjp`` raise;
- missing double-backward formulas (``hardsigmoid``): ``jacrev(jacrev)``/``vjp(grad)`` raise;
- operators that draw random numbers inside ``vmap`` (dropout, rrelu, bernoulli, ...):
  ``vmap(randomness="error")`` refuses them, so vmapped references (``jacrev``) are skipped;
- operators with data-dependent output shapes or ``.item()`` inside (``nonzero``,
  ``masked_select``, ``unique``, some ``linalg`` checks) and missing batching rules (``vmap`` of a
  backward that forms negative views, ``aten::_neg_view``): ``vmap`` cannot batch them;
- non-smooth or degenerate points (``abs``/``relu`` kinks, ``max``/``min`` ties, ``linalg`` ops
  at repeated eigenvalues, ``max_unpool`` with repeated indices, ``std`` of one element,
  ``cholesky``/``eigh`` along non-symmetric tangents): two torch.func routes (``jacrev`` against
  ``jacfwd``, ``jvp`` against the VJP of the VJP, the Hessian with and without ``vmap`` -- e.g.
  ``layer_norm`` at zero variance) give different answers, so the item is skipped as
  "torch.func disagrees with itself";
- non-holomorphic complex operators: the holomorphic references from ``vjp`` and ``jvp``
  disagree ("disagrees with itself"); a real output is never holomorphic, and there the item
  checks that ours raises its documented ``ValueError``;
- sparse layouts: torch.func does not differentiate them, so sparse arguments are constants;
- ``pow(Tensor, Tensor)`` gives a wrong third derivative at ``x = 1`` (nested ``grad`` of
  ``exp(x log x)`` is right): ``test_taylor_rules.py`` compares with that form instead.

Where ours fails with the exception of one of the torch.func routes of the item (the same type
and message up to numbers, e.g. a batch size: ours takes that route, chunked), the item is
skipped with that route's reason.

Run the whole sweep with ``make conformance`` (``python -m tests.functional.opinfo_conformance``);
it prints items compared, passed, failed and skipped by reason. ``test_opinfo_conformance.py``
runs a fixed slice in every ``make test``.
"""

import argparse
import collections
import contextlib
import dataclasses
import math
import multiprocessing
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from tests.helpers import ATOL_AD_FLOAT64, RTOL_AD_FLOAT64

# Samples per operator: from the first _SCAN samples, those with at most _MAX_NUMEL
# differentiated entries, the first _PER_OP of them.
_SCAN = 12
_MAX_NUMEL = 150
_PER_OP = 3
# derivatives / jet: highest order compared with nested torch.func derivatives.
_ORDER = 3


@dataclasses.dataclass
class Result:
    """One compared item."""

    op: str
    sample: int
    transform: str
    status: str  # "pass", "fail" or "skip"
    reason: str = ""


class _RefSkipError(Exception):
    """torch.func fails on the function, or disagrees with itself: skip with this reason."""


def _is_diff_tensor(x: Any, complex_ok: bool) -> bool:
    # sparse layouts are not differentiated: torch.func has no sparse support (a limitation)
    return (
        isinstance(x, torch.Tensor)
        and x.layout == torch.strided
        and (x.is_floating_point() or (complex_ok and x.is_complex()))
    )


def _is_diff(x: Any, complex_ok: bool) -> bool:
    if isinstance(x, list | tuple):
        return bool(x) and all(_is_diff_tensor(t, complex_ok) for t in x)
    return _is_diff_tensor(x, complex_ok)


def _leaves(tree: Any) -> list[torch.Tensor]:
    return [x for x in torch.utils._pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def _numel(tree: Any) -> int:
    return sum(t.numel() for t in _leaves(tree))


class Case:
    """The function of one sample: its differentiated arguments, outputs and helpers."""

    def __init__(self, op: Any, sample: Any, complex_ok: bool):
        self.op, self.sample = op, sample
        self.args = [sample.input, *sample.args]
        self.argnums = tuple(i for i, a in enumerate(self.args) if _is_diff(a, complex_ok))
        self.kwargs = sample.kwargs
        self.process = sample.output_process_fn_grad

    def f(self, *args: Any) -> Any:
        """The op on ``args``, its floating/complex output leaves (a tensor when there is one)."""
        torch.manual_seed(0)
        out = self.process(self.op(*args, **self.kwargs))
        leaves = [
            y
            for y in torch.utils._pytree.tree_leaves(out)
            if isinstance(y, torch.Tensor) and (y.is_floating_point() or y.is_complex())
        ]
        if not leaves:
            raise _RefSkipError("no floating output")
        return leaves[0] if len(leaves) == 1 else tuple(leaves)

    @property
    def primals(self) -> tuple[Any, ...]:
        return tuple(self.args[i] for i in self.argnums)

    def of_diff(self, g: Callable[..., Any]) -> Callable[..., Any]:
        """``g`` as a function of the differentiated arguments only (others fixed)."""

        def h(*diff: Any) -> Any:
            full = list(self.args)
            for i, d in zip(self.argnums, diff, strict=True):
                full[i] = d
            return g(*full)

        return h

    def scalar(self, *args: Any) -> torch.Tensor:
        """A fixed random linear functional of the (real view of the) outputs."""
        out = self.f(*args)
        total = torch.zeros((), dtype=torch.float64)
        for k, y in enumerate(_leaves(out)):
            y = torch.view_as_real(y.resolve_conj()) if y.is_complex() else y
            w = _weights(y.shape, k)
            total = total + (y * w).sum()
        return total


def _weights(shape: Sequence[int], salt: int) -> torch.Tensor:
    # Deterministic, not drawn: the scalar is evaluated inside vmap, which refuses randomness.
    n = math.prod(shape)
    w = torch.cos(1.3 * torch.arange(n, dtype=torch.float64) + salt) + 0.5
    return w.reshape(tuple(shape))


def _like(tree: Any, salt: int) -> Any:
    """A random tree shaped like ``tree`` (real or complex like each leaf)."""
    g = torch.Generator().manual_seed(2000 + salt)

    def one(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        return torch.randn(x.shape, generator=g, dtype=x.dtype)

    return torch.utils._pytree.tree_map(one, tree)


# ------------------------------------------------------------------------------------------
# comparisons


def _close(ours: Any, ref: Any, what: str) -> None:
    o_leaves, o_spec = torch.utils._pytree.tree_flatten(ours)
    r_leaves, r_spec = torch.utils._pytree.tree_flatten(ref)
    if len(o_leaves) != len(r_leaves):
        raise AssertionError(f"{what}: {len(o_leaves)} leaves, torch.func has {len(r_leaves)}")
    for a, b in zip(o_leaves, r_leaves, strict=True):
        # an op may return a lower precision (x.half()): torch's tolerances for that dtype
        wide = not isinstance(a, torch.Tensor) or a.dtype in (torch.float64, torch.complex128)
        torch.testing.assert_close(
            a,
            b,
            rtol=RTOL_AD_FLOAT64 if wide else None,
            atol=ATOL_AD_FLOAT64 if wide else None,
            equal_nan=True,
            msg=lambda m: f"{what}: {m}",
        )


# Errors of the torch.func routes of the item being run: ours failing with one of them is
# torch.func failing (ours takes that route), recorded as a skip.
_ROUTE_ERRORS: list[str] = []


def _ref(candidates: Sequence[tuple[str, Callable[[], Any]]]) -> Any:
    """The first torch.func route that runs; every other that runs must agree with it."""
    results: list[tuple[str, Any]] = []
    errors: list[str] = []
    for name, thunk in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results.append((name, thunk()))
        except _RefSkipError:
            raise
        except _UnneededError:
            continue
        except Exception as err:  # torch.func failing is a reason to skip, recorded
            errors.append(f"torch.func {name} fails: {_brief(err)}")
    _ROUTE_ERRORS.extend(errors)
    if not results:
        raise _RefSkipError(errors[0])
    name0, value = results[0]
    for name, other in results[1:]:
        try:
            _close(other, value, "")
        except AssertionError as err:
            raise _RefSkipError(f"torch.func disagrees with itself ({name0} vs {name})") from err
    return value


def _brief(err: BaseException) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {msg[:90]}"


# ------------------------------------------------------------------------------------------
# the transforms


def _realify(case: Case) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function of real views (complex leaf of shape S <-> real of shape (*S, 2))."""

    def to_real(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_complex():
            return torch.view_as_real(x.resolve_conj())
        return x

    complex_in = [
        [t.is_complex() for t in (p if isinstance(p, list | tuple) else [p])] for p in case.primals
    ]

    def from_real(x: Any, flags: list[bool]) -> Any:
        def one(t: torch.Tensor, c: bool) -> torch.Tensor:
            return torch.complex(t[..., 0], t[..., 1]) if c else t

        if isinstance(x, list | tuple):
            return type(x)(one(t, c) for t, c in zip(x, flags, strict=True))
        return one(x, flags[0])

    def g(*real: Any) -> Any:
        diff = [from_real(r, c) for r, c in zip(real, complex_in, strict=True)]
        out = case.of_diff(case.f)(*diff)
        return torch.utils._pytree.tree_map(to_real, out)

    primals = torch.utils._pytree.tree_map(to_real, case.primals)
    return g, primals


def _eye(n: int, dtype: torch.dtype) -> torch.Tensor:
    wide = torch.complex64 if dtype == torch.complex32 else dtype  # no eye for complex32
    return torch.eye(n, dtype=wide).to(dtype)


class _UnneededError(Exception):
    """A backup reference route, not run because the main one ran."""


def _once(state: dict[str, Any], key: str, thunk: Callable[[], Any]) -> Any:
    if key not in state:
        try:
            state[key] = (True, thunk())
        except Exception as err:
            state[key] = (False, err)
    ok, value = state[key]
    if not ok:
        raise value
    return value


def _vjp_rows(g: Callable[..., Any], real: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """The Jacobian from torch.func.vjp one row at a time (one tensor in and out only)."""
    if state.get("jacrev", (False,))[0]:
        raise _UnneededError
    if len(real) != 1 or not isinstance(real[0], torch.Tensor):
        raise _UnneededError
    x = real[0]
    out, vjp_fn = torch.func.vjp(g, x)
    if not isinstance(out, torch.Tensor):
        raise _UnneededError
    eye = torch.eye(out.numel(), dtype=out.dtype).reshape((out.numel(), *out.shape))
    rows = [vjp_fn(e)[0] for e in eye]
    if not rows:
        return torch.zeros((*out.shape, *x.shape), dtype=x.dtype)
    return torch.stack(rows).reshape((*out.shape, *x.shape))


def _holomorphic_jacobian(
    f: Callable[..., Any], primals: tuple[Any, ...], argnums: Any, how: str
) -> Any:
    """dF/dz from torch.func.vjp (conjugated: torch's VJP gives conj(J)^T u) or torch.func.jvp."""
    pt = torch.utils._pytree
    x_leaves, x_spec = pt.tree_flatten(primals if isinstance(argnums, tuple) else primals[0])
    out = f(*primals)
    y_leaves, y_spec = pt.tree_flatten(out)
    n_sizes = [x.numel() for x in x_leaves]
    m_sizes = [y.numel() for y in y_leaves]
    blocks: list[list[torch.Tensor]] = [[] for _ in y_leaves]
    if how == "fwd":
        for i, x in enumerate(x_leaves):
            eye = _eye(n_sizes[i], x.dtype).reshape((n_sizes[i], *x.shape))

            def column(t: torch.Tensor, i: int = i) -> Any:
                tangents = [torch.zeros_like(v) for v in x_leaves]
                tangents[i] = t
                tree = pt.tree_unflatten(tangents, x_spec)
                t_args = tree if isinstance(argnums, tuple) else (tree,)
                return tuple(pt.tree_leaves(torch.func.jvp(f, primals, t_args)[1]))

            cols = torch.func.vmap(column)(eye)
            for k, y in enumerate(y_leaves):
                block = cols[k].reshape((n_sizes[i], m_sizes[k])).T
                blocks[k].append(block.reshape((*y.shape, *x.shape)))
    else:
        _, vjp_fn = torch.func.vjp(f, *primals)
        for k, y in enumerate(y_leaves):
            eye = _eye(m_sizes[k], y.dtype).reshape((m_sizes[k], *y.shape))

            def row(u: torch.Tensor, k: int = k) -> Any:
                cot = [torch.zeros_like(v) for v in y_leaves]
                cot[k] = u
                return tuple(pt.tree_leaves(vjp_fn(pt.tree_unflatten(cot, y_spec))))

            rows = torch.func.vmap(row)(eye)
            for i, x in enumerate(x_leaves):
                block = rows[i].reshape((m_sizes[k], n_sizes[i])).conj()
                blocks[k].append(block.reshape((*y.shape, *x.shape)))
    per_out = [pt.tree_unflatten(row, x_spec) for row in blocks]
    return pt.tree_unflatten(per_out, y_spec)


def _argnums(case: Case) -> int | tuple[int, ...]:
    n = len(case.argnums)
    return 0 if n == 1 else tuple(range(n))


def _jacobian_items(case: Case, holomorphic: bool) -> Iterable[tuple[str, Callable[[], None]]]:
    import research_ext.functional as rf

    f = case.of_diff(case.f)
    primals = case.primals
    argnums = _argnums(case)
    tf = torch.func
    if holomorphic:  # torch.func.jacrev/jacfwd refuse complex inputs: vmap its vjp/jvp
        refs = {
            "rev": [("vmap(vjp)", lambda: _holomorphic_jacobian(f, primals, argnums, "rev"))],
            "fwd": [("vmap(jvp)", lambda: _holomorphic_jacobian(f, primals, argnums, "fwd"))],
        }
    else:
        g, real = _realify(case)
        state: dict[str, Any] = {}
        refs = {
            "rev": [
                ("jacrev", lambda: _once(state, "jacrev", lambda: tf.jacrev(g, argnums)(*real))),
                # only where jacrev's vmap fails: reverse mode one row at a time
                ("rows of vjp, no vmap", lambda: _vjp_rows(g, real, state)),
            ],
            "fwd": [("jacfwd", lambda: tf.jacfwd(g, argnums)(*real))],
        }
    refs["auto"] = refs["rev"] + refs["fwd"]
    tag = "holomorphic " if holomorphic else ""
    cached: dict[str, Any] = {}
    route_errors: dict[str, list[str]] = {}

    def reference(mode: str) -> Any:
        if mode not in cached:
            start = len(_ROUTE_ERRORS)
            try:
                cached[mode] = (True, _ref(refs[mode]))
            except _RefSkipError as err:
                cached[mode] = (False, err)
            route_errors[mode] = _ROUTE_ERRORS[start:]
        else:  # the routes' errors belong to every item that reuses the reference
            _ROUTE_ERRORS.extend(route_errors[mode])
        ok, value = cached[mode]
        if not ok:
            raise value
        return value

    for mode, chunk in (
        ("auto", None),
        ("rev", None),
        ("fwd", None),
        ("rev", 2),
        ("fwd", 2),
        ("auto", "auto"),
    ):

        def run(mode: str = mode, chunk: Any = chunk) -> None:
            expected = reference(mode)
            ours = rf.jacobian(f, argnums, mode=mode, chunk_size=chunk, holomorphic=holomorphic)(
                *primals
            )
            _close(ours, expected, f"jacobian(mode={mode}, chunk_size={chunk})")

        yield f"{tag}jacobian[{mode},{chunk}]", run


def _real_items(case: Case) -> Iterable[tuple[str, Callable[[], None]]]:
    import research_ext.functional as rf

    tf = torch.func
    f = case.of_diff(case.f)
    primals = case.primals
    argnums = _argnums(case)
    yield from _jacobian_items(case, holomorphic=False)
    tangents = _like(primals, 1)

    def jvp() -> None:
        ref = _ref([("jvp", lambda: tf.jvp(f, primals, tangents))])
        _close(rf.jvp(f, primals, tangents), ref, "jvp")

    def vjp() -> None:
        def routes() -> Any:
            out, fn = tf.vjp(f, *primals)
            return out, fn(_like(out, 3))

        ref = _ref([("vjp", routes)])
        out, fn = rf.vjp(f, *primals)
        _close((out, fn(_like(out, 3))), ref, "vjp")

    def vjp_transpose() -> Any:  # J t as the VJP of u -> J^T u (linear in u), all torch.func
        out, fn = tf.vjp(f, *primals)
        zeros = torch.utils._pytree.tree_map(torch.zeros_like, out)
        return out, tf.vjp(fn, zeros)[1](tangents)[0]

    def linearize() -> None:
        ref = _ref([("jvp", lambda: tf.jvp(f, primals, tangents)), ("vjp of vjp", vjp_transpose)])
        out, fn = rf.linearize(f, *primals)
        _close((out, fn(*tangents)), ref, "linearize")

    yield "jvp", jvp
    yield "vjp", vjp
    yield "linearize", linearize
    s = case.of_diff(case.scalar)
    if any(t.is_complex() for t in _leaves(primals)):
        return

    def hessian(chunk: Any = None) -> None:
        ref = _ref(
            [
                ("jacrev(jacrev)", lambda: tf.jacrev(tf.jacrev(s, argnums), argnums)(*primals)),
                ("jacfwd(jacrev)", lambda: tf.jacfwd(tf.jacrev(s, argnums), argnums)(*primals)),
                ("rows of vjp(grad), no vmap", lambda: _hessian_rows(s, primals, argnums)),
            ]
        )
        _close(rf.hessian(s, argnums, chunk_size=chunk)(*primals), ref, f"hessian({chunk})")

    all_args = tuple(range(len(primals)))

    def grad_vjp(v: Any) -> Any:
        return tf.vjp(tf.grad(s, all_args), *primals)[1](v)

    def grad_jvp(v: Any) -> Any:
        return tf.jvp(tf.grad(s, all_args), primals, v)[1]

    def hvp_ref(v: Any) -> Any:
        return _ref([("vjp(grad)", lambda: grad_vjp(v)), ("jvp(grad)", lambda: grad_jvp(v))])

    def grad_ref() -> Any:
        return _ref([("grad", lambda: tf.grad(s, all_args)(*primals))])

    def hvp() -> None:
        expected = (grad_ref(), hvp_ref(tangents))
        _close(rf.hvp(s, primals, tangents), expected, "hvp")

    def vhp() -> None:
        expected = (grad_ref(), hvp_ref(tangents))
        _close(rf.vhp(s, primals, tangents), expected, "vhp")

    def hvp_fixed() -> None:
        expected = hvp_ref(tangents)
        _close(rf.hessian_vector_product(s, primals)(tangents), expected, "hessian_vector_product")

    def hvp_batched() -> None:
        batch = tuple(
            torch.utils._pytree.tree_map(lambda x: torch.stack([x, 2 * x + 1, -x]), t)
            for t in tangents
        )
        expected = _ref(
            [
                ("vmap(vjp(grad))", lambda: tf.vmap(grad_vjp)(batch)),
                ("stacked vjp(grad)", lambda: _stack_each(grad_vjp, batch, 3)),
            ]
        )
        ours = rf.hessian_vector_product(s, primals)(batch)
        _close(ours, expected, "hessian_vector_product (batched)")

    yield "hessian", hessian
    yield "hessian[chunk=2]", lambda: hessian(2)
    yield "hvp", hvp
    yield "vhp", vhp
    yield "hessian_vector_product", hvp_fixed
    yield "hessian_vector_product[batched]", hvp_batched


def _hessian_rows(s: Callable[..., Any], primals: tuple[Any, ...], argnums: Any) -> Any:
    """The Hessian one row at a time (torch.func.vjp of torch.func.grad, without vmap)."""
    pt = torch.utils._pytree
    if not all(isinstance(p, torch.Tensor) for p in primals):
        raise NotImplementedError("rows of vjp(grad): tensor arguments only")
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    grad_fn = torch.func.grad(s, nums)
    _, vjp_fn = torch.func.vjp(grad_fn, *primals)
    x_leaves, x_spec = pt.tree_flatten(primals)
    blocks: list[list[torch.Tensor]] = []
    for i, x in enumerate(x_leaves):
        rows = []
        for j in range(x.numel()):
            cot = [torch.zeros_like(v) for v in x_leaves]
            cot[i] = torch.zeros(x.numel(), dtype=x.dtype).index_fill(0, torch.tensor(j), 1.0)
            cot[i] = cot[i].reshape(x.shape)
            rows.append(pt.tree_leaves(vjp_fn(pt.tree_unflatten(cot, x_spec))))
        blocks.append(
            [
                torch.stack([r[k] for r in rows]).reshape((*x.shape, *y.shape))
                if rows
                else torch.zeros((*x.shape, *y.shape), dtype=x.dtype)
                for k, y in enumerate(x_leaves)
            ]
        )
    per_in = [pt.tree_unflatten(row, x_spec) for row in blocks]
    if isinstance(argnums, tuple):
        return pt.tree_unflatten(per_in, x_spec)
    return per_in[0][0]


def _stack_each(fn: Callable[[Any], Any], batch: tuple[Any, ...], k: int) -> Any:
    outs = [fn(torch.utils._pytree.tree_map(lambda x, i=i: x[i], batch)) for i in range(k)]
    return torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *outs)


def _taylor_items(case: Case) -> Iterable[tuple[str, Callable[[], None]]]:
    """derivatives / jet of a unary elementwise op against nested torch.func derivatives."""
    import research_ext.functional as rf

    tf = torch.func
    x = case.primals[0]
    f = case.of_diff(case.f)

    def nested_fwd(direction: torch.Tensor) -> list[Any]:
        out = [f]
        for _ in range(_ORDER):
            prev = out[-1]
            out.append(lambda y, p=prev: tf.jvp(p, (y,), (direction,))[1])
        return [g(x) for g in out]

    def nested_rev() -> list[Any]:
        out = [f]
        for _ in range(_ORDER):
            prev = out[-1]
            out.append(lambda y, p=prev: tf.grad(lambda z: p(z).sum())(y))
        return [g(x) for g in out]

    def derivatives() -> None:
        ones = torch.ones_like(x)
        ref = _ref([("nested jvp", lambda: nested_fwd(ones)), ("nested grad", nested_rev)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = rf.derivatives(f, _ORDER)(x)
        _close(ours, ref, "derivatives")

    def jet() -> None:
        v, w, u = _like(x, 5), _like(x, 6), _like(x, 7)

        def path(t: torch.Tensor) -> Any:
            return f(x + t * v + t**2 / 2 * w + t**3 / 6 * u)

        def along(g: Callable[..., Any]) -> Callable[..., Any]:
            return lambda t: tf.jvp(g, (t,), (torch.ones_like(t),))[1]

        def nested_t() -> list[Any]:
            gs = [path]
            for _ in range(_ORDER):
                gs.append(along(gs[-1]))
            t0 = torch.zeros((), dtype=x.dtype)
            return [gs[0](t0), gs[1:] and [g(t0) for g in gs[1:]]]

        ref = _ref([("nested jvp in t", nested_t)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, ys = rf.jet(f, (x,), ([v, w, u],))
        _close([y, list(ys)], ref, "jet")

    yield "derivatives", derivatives
    yield "jet", jet


# ------------------------------------------------------------------------------------------
# the sweep


def ops_by_id(ids: Sequence[str]) -> list[Any]:
    """The OpInfos named (``name`` or ``name.variant``), in the order given."""
    found = {_op_id(op): op for op in _ops(ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise KeyError(f"no such OpInfo (float64/complex128 with autograd): {missing}")
    return [found[i] for i in ids]


def _ops(names: Sequence[str] | None = None) -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db

    ops = [
        op
        for op in op_db
        if op.supports_autograd
        and (
            torch.float64 in op.supported_dtypes("cpu")
            or torch.complex128 in op.supported_dtypes("cpu")
        )
    ]
    if names is not None:
        wanted = set(names)
        ops = [op for op in ops if _op_id(op) in wanted]
    return ops


def _op_id(op: Any) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def _samples(op: Any, dtype: torch.dtype, complex_ok: bool) -> list[Any]:
    torch.manual_seed(0)
    picked: list[Case] = []
    smallest: Case | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = op.sample_inputs("cpu", dtype, requires_grad=False)
        for i, sample in enumerate(gen):
            if i >= _SCAN or len(picked) >= _PER_OP:
                break
            case = Case(op, sample, complex_ok)
            if not case.argnums:
                continue
            size = _numel(case.primals)
            if size <= _MAX_NUMEL:
                picked.append(case)
            elif smallest is None or size < _numel(smallest.primals):
                smallest = case
    # an op whose samples are all larger (sin has one, 20 x 20) is still tested on its smallest
    return picked if picked or smallest is None else [smallest]


def run_op(op: Any, per_op: int = _PER_OP) -> list[Result]:
    """Every item of one operator, on up to ``per_op`` samples per dtype."""
    from torch.testing._internal.opinfo.core import UnaryUfuncInfo

    results: list[Result] = []
    name = _op_id(op)
    groups: list[tuple[str, torch.dtype, Callable[[Case], Iterable]]] = []
    if torch.float64 in op.supported_dtypes("cpu"):
        groups.append(("", torch.float64, _real_items))
        if isinstance(op, UnaryUfuncInfo):
            groups.append(("", torch.float64, _taylor_items))
    if torch.complex128 in op.supported_dtypes("cpu"):
        groups.append(("complex128 ", torch.complex128, _complex_items))
    for prefix, dtype, items in groups:
        try:
            cases = _samples(op, dtype, complex_ok=dtype.is_complex)[:per_op]
        except Exception as err:
            results.append(Result(name, -1, prefix + "samples", "skip", f"samples: {_brief(err)}"))
            continue
        for k, case in enumerate(cases):
            try:
                for transform, check in items(case):
                    results.append(_run_item(name, k, prefix + transform, check))
            except Exception as err:  # the harness itself: report, never hide
                results.append(Result(name, k, prefix + "harness", "fail", _brief(err)))
    return results


def _complex_items(case: Case) -> Iterable[tuple[str, Callable[[], None]]]:
    if not any(t.is_complex() for t in _leaves(case.primals)):
        return
    yield from _jacobian_items(case, holomorphic=False)
    if not all(t.is_complex() for t in _leaves(case.primals)):
        return
    out = case.of_diff(case.f)(*case.primals)
    if all(y.is_complex() for y in _leaves(out)):
        yield from _jacobian_items(case, holomorphic=True)
    else:  # a real output is never holomorphic: ours raises the documented ValueError

        def refuses() -> None:
            import research_ext.functional as rf

            f = case.of_diff(case.f)
            try:
                rf.jacobian(f, _argnums(case), holomorphic=True)(*case.primals)
            except ValueError as err:
                assert "needs complex outputs" in str(err), str(err)
                return
            raise AssertionError("holomorphic=True with a real output did not raise ValueError")

        yield "holomorphic jacobian[real output refused]", refuses


def _run_item(op: str, k: int, transform: str, check: Callable[[], None]) -> Result:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check()
    except _RefSkipError as err:
        return Result(op, k, transform, "skip", str(err))
    except AssertionError as err:
        return Result(op, k, transform, "fail", str(err).strip()[:400])
    except Exception as err:
        mine = _shape_free(_brief(err))[:70]
        same = [e for e in _ROUTE_ERRORS if _shape_free(e.split(" fails: ", 1)[-1])[:70] == mine]
        if same:
            return Result(op, k, transform, "skip", same[0] + " (ours the same)")
        tb = traceback.extract_tb(err.__traceback__)[-1]
        where = f" at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"
        return Result(op, k, transform, "fail", _brief(err) + where)
    finally:
        _ROUTE_ERRORS.clear()
    return Result(op, k, transform, "pass")


def _shape_free(message: str) -> str:
    """An error message with its numbers masked: the same error at another batch size."""
    return re.sub(r"\d+", "#", message)


def _reason_key(reason: str) -> str:
    """Group skip reasons: the route that failed and the exception type (or the disagreement)."""
    if reason.startswith("torch.func disagrees") or ":" not in reason:
        return reason
    head = reason.split(":", 1)[0]
    rest = reason.split(":", 2)[1] if reason.count(":") >= 1 else ""
    return f"{head}:{rest}".strip()


def summarize(results: Sequence[Result], out: Any = sys.stdout) -> dict[str, int]:
    """Print items compared, passed, failed and skipped by reason; return the counts."""
    status = collections.Counter(r.status for r in results)
    compared = status["pass"] + status["fail"]
    print(
        f"items: {len(results)}  compared: {compared}  passed: {status['pass']}  "
        f"failed: {status['fail']}  skipped: {status['skip']}",
        file=out,
    )
    reasons = collections.Counter(_reason_key(r.reason) for r in results if r.status == "skip")
    for reason, count in reasons.most_common():
        print(f"  skipped {count:6d}  {reason}", file=out)
    for r in results:
        if r.status == "fail":
            print(f"FAIL {r.op} [sample {r.sample}] {r.transform}: {r.reason}", file=out)
    return {"items": len(results), "compared": compared, **status}


@contextlib.contextmanager
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _timed_run(op_id: str) -> tuple[str, list[Result], float]:
    torch.set_num_threads(1)
    tic = time.perf_counter()
    found = run_op(ops_by_id([op_id])[0])
    return op_id, found, time.perf_counter() - tic


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (all operators, or those named); exit status 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", help="operator ids (name or name.variant); default all")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th operator from i")
    parser.add_argument("--details", action="store_true", help="also list every skipped item")
    parser.add_argument("--progress", action="store_true", help="one line per operator (stderr)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    i, n = (int(p) for p in args.shard.split("/"))
    ops = _ops(args.ops or None)[i::n]
    start = time.perf_counter()
    results: list[Result] = []
    if args.jobs > 1:
        runs: Iterable[tuple[str, list[Result], float]] = (
            multiprocessing.get_context("spawn")
            .Pool(args.jobs)
            .imap_unordered(_timed_run, [_op_id(op) for op in ops])
        )
    else:
        runs = (_timed_run(_op_id(op)) for op in ops)
    with _one_thread():
        for op_id, found, seconds in runs:
            results.extend(found)
            if args.progress:
                bad = [f"{r.transform}: {r.reason}" for r in found if r.status == "fail"]
                print(
                    f"{op_id}: {len(found)} items, {len(bad)} failed, {seconds:.1f} s"
                    + "".join(f"\n  FAIL {b}" for b in bad),
                    file=sys.stderr,
                    flush=True,
                )
    counts = summarize(results)
    if args.details:
        for r in results:
            if r.status == "skip":
                print(f"SKIP {r.op} [sample {r.sample}] {r.transform}: {r.reason}")
    print(f"operators: {len(ops)}  time: {time.perf_counter() - start:.0f} s")
    return 1 if counts.get("fail", 0) else 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["Case", "Result", "main", "ops_by_id", "run_op", "summarize"]
