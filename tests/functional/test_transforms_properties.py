"""Hypothesis properties: Hessian symmetry, the jvp/vjp adjoint identity, mode and chunk equivalence."""

import torch
from hypothesis import given, strategies as st

import research_ext.functional as rf
from research_ext.functional._arguments import forward_ad_ready
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_FLOAT64,
    ATOL_HIGHER_ORDER_FLOAT64,
    RTOL_FLOAT64,
    RTOL_HIGHER_ORDER_FLOAT64,
)

D = torch.float64
forward_ad_ready()  # torch's first forward-mode use warns about torch.jit (the references use it)


def _map(seed: int, n: int, m: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g, dtype=D)
    b = torch.randn(n, generator=g, dtype=D)
    x = torch.randn(n, generator=g, dtype=D)

    def f(x):
        return torch.tanh(a @ x) * (x * b).sum() + (a @ x.sin()) ** 2

    return f, x, g


dims = st.integers(min_value=1, max_value=7)
seeds = st.integers(min_value=0, max_value=2**16)


@given(seed=seeds, n=dims)
def test_hessian_is_symmetric(seed, n):
    f, x, _ = _map(seed, n, 3)
    h = rf.hessian(lambda x: f(x).sum())(x)
    torch.testing.assert_close(h, h.T, rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64)


@given(seed=seeds, n=dims, m=dims)
def test_adjoint_identity(seed, n, m):
    f, x, g = _map(seed, n, m)
    v = torch.randn(n, generator=g, dtype=D)
    w = torch.randn(m, generator=g, dtype=D)
    _, jv = rf.jvp(f, (x,), (v,))
    _, vjp_fn = rf.vjp(f, x)
    (jtw,) = vjp_fn(w)
    torch.testing.assert_close(
        torch.dot(jv, w), torch.dot(v, jtw), rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
    )
    _, jvp_fn = rf.linearize(f, x)
    torch.testing.assert_close(jvp_fn(v), jv, rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64)


@given(seed=seeds, n=dims, m=dims, chunk=st.one_of(st.none(), st.integers(1, 8), st.just("auto")))
def test_all_modes_and_chunks_agree(seed, n, m, chunk):
    f, x, _ = _map(seed, n, m)
    ref = rf.jacobian(f, mode="rev")(x)
    for mode in ("auto", "fwd", "rev"):
        torch.testing.assert_close(
            rf.jacobian(f, mode=mode, chunk_size=chunk)(x),
            ref,
            rtol=RTOL_FLOAT64,
            atol=ATOL_FLOAT64,
        )


@given(seed=seeds, n=dims)
def test_hvp_fresh_repeated_and_dense_agree(seed, n):
    f, x, g = _map(seed, n, 2)
    v = torch.randn(n, generator=g, dtype=D)
    scalar = lambda x: f(x).sum()  # noqa: E731
    dense = rf.hessian(scalar)(x)
    torch.testing.assert_close(
        rf.hvp(scalar, (x,), (v,))[1][0], dense @ v, rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
    )
    torch.testing.assert_close(
        rf.hessian_vector_product(scalar, (x,))((v,))[0],
        dense @ v,
        rtol=RTOL_FLOAT64,
        atol=ATOL_CANCELLING_FLOAT64,
    )


@given(seed=seeds, order=st.integers(1, 6))
def test_jet_is_homogeneous_in_the_direction(seed, order):
    # d^k/dt^k f(x + t c v) = c^k d^k/dt^k f(x + t v)
    f, x, g = _map(seed, 3, 2)
    v = torch.randn(3, generator=g, dtype=D)
    zeros = [torch.zeros(3, dtype=D)] * (order - 1)
    _, ys = rf.jet(f, (x,), ([v, *zeros],))
    _, ys2 = rf.jet(f, (x,), ([2 * v, *zeros],))
    for k in range(order):
        torch.testing.assert_close(
            ys2[k],
            2 ** (k + 1) * ys[k],
            rtol=RTOL_HIGHER_ORDER_FLOAT64,
            atol=ATOL_HIGHER_ORDER_FLOAT64,
        )
