"""0-d and empty (size-0) tensors through every dense transform, against torch.func."""

import pytest
import torch

import research_ext.functional as rf
from tests.helpers import ATOL_AD_FLOAT64, RTOL_AD_FLOAT64

MODES = ["auto", "fwd", "rev"]
CHUNKS = [None, 1, "auto"]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL_AD_FLOAT64, atol=ATOL_AD_FLOAT64)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("f", "shape"),
    [
        (torch.sin, ()),  # 0-d in, 0-d out
        (lambda x: torch.stack([x, x**2]), ()),  # 0-d in, vector out
        (lambda x: (x**2).sum(), (3,)),  # vector in, 0-d out
    ],
    ids=["0d-0d", "0d-vec", "vec-0d"],
)
def test_jacobian_zero_dim(f, shape, mode, chunk):
    x = torch.linspace(0.3, 0.9, max(1, torch.Size(shape).numel()), dtype=torch.float64)
    x = x.reshape(shape)
    got = rf.jacobian(f, mode=mode, chunk_size=chunk)(x)
    _close(got, torch.func.jacrev(f)(x))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_jacobian_zero_dim_pytree_and_tuple_argnums(chunk):
    def f(x, y):
        return {"a": x * y, "b": torch.sin(x)}

    x, y = torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    for mode in MODES:
        got = rf.jacobian(f, (0, 1), mode=mode, chunk_size=chunk)(x, y)
        _close(got, torch.func.jacrev(f, (0, 1))(x, y))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_hessian_zero_dim(chunk):
    x = torch.tensor(0.5, dtype=torch.float64)
    _close(rf.hessian(torch.sin, chunk_size=chunk)(x), torch.func.hessian(torch.sin)(x))


@pytest.mark.parametrize("mode", MODES)
def test_holomorphic_zero_dim(mode):
    z = torch.tensor(0.5 + 0.25j, dtype=torch.complex128)
    got = rf.jacobian(torch.sin, mode=mode, holomorphic=True)(z)
    # torch.func.jacrev/jacfwd refuse complex inputs; a JVP along 1 gives df/dz
    _close(got, torch.func.jvp(torch.sin, (z,), (torch.ones_like(z),))[1])
    got = rf.jacobian(torch.sin, mode=mode)(z)  # real view: (2, 2)
    _close(got.shape, torch.Size([2, 2]))


EMPTY = [(0, 10), (3, 0), (0,)]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_jacobian_empty(shape, mode, chunk):
    x = torch.zeros(shape, dtype=torch.float64)
    for f in (torch.sin, lambda x: (x**2).sum(), lambda x: torch.cat([x.flatten(), x.sum()[None]])):
        got = rf.jacobian(f, mode=mode, chunk_size=chunk)(x)
        _close(got, torch.func.jacrev(f)(x))


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_hessian_empty(shape, chunk):
    x = torch.zeros(shape, dtype=torch.float64)
    y = torch.tensor([1.5], dtype=torch.float64)

    def f(x, y):
        return (x**3).sum() * y.sum() + y.sum() ** 2

    expected = torch.func.jacrev(torch.func.jacrev(f, (0, 1)), (0, 1))(x, y)
    _close(rf.hessian(f, (0, 1), chunk_size=chunk)(x, y), expected)
    _close(
        rf.hessian(lambda x: (x**3).sum(), chunk_size=chunk)(x),
        torch.zeros(shape + shape, dtype=torch.float64),
    )


@pytest.mark.parametrize("shape", EMPTY, ids=str)
def test_hessian_vector_products_empty(shape):
    x, v = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    y = torch.tensor([1.5], dtype=torch.float64)

    def f(x, y):
        return (x**3).sum() * y.sum() + y.sum() ** 2

    t = (v, torch.ones(1, dtype=torch.float64))
    grad = torch.func.grad(f, (0, 1))(x, y)
    hv = torch.func.jvp(torch.func.grad(f, (0, 1)), (x, y), t)[1]
    for fn in (rf.hvp, rf.vhp):
        got = fn(f, (x, y), t)
        _close(got, (grad, hv))
    product = rf.hessian_vector_product(f, (x, y))
    _close(product(t), hv)
    batch = (torch.stack([v, v]), torch.ones(2, 1, dtype=torch.float64))
    _close(product(batch), tuple(torch.stack([h, h]) for h in hv))
    _close(rf.hvp(lambda x: (x**3).sum(), (x,), (v,)), ((x,), (v,)))


def test_auto_mode_falls_back_to_reverse_without_forward_ad():
    # cdist has no forward-mode formula; with fewer inputs than outputs auto would pick fwd
    y = torch.linspace(0, 1, 10, dtype=torch.float64).reshape(5, 2)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)

    def f(x):
        return torch.cdist(x, y)

    expected = torch.func.jacrev(f)(x)
    for chunk in (None, "auto"):
        jac = rf.jacobian(f, chunk_size=chunk)
        _close(jac(x), expected)
        _close(jac(x), expected)  # the cached decision is reverse mode now
    with pytest.raises(NotImplementedError, match="forward AD"):
        rf.jacobian(f, mode="fwd")(x)


@pytest.mark.parametrize("mode", MODES)
def test_real_view_of_conjugate_views(mode):
    # conj() and friends return lazy conjugate / negative views, which vmap cannot batch
    z = torch.tensor([0.5 + 0.25j, -1.0 + 2.0j], dtype=torch.complex128)

    def real_view(w):
        return torch.view_as_real(w.conj().resolve_conj())

    expected = torch.func.jacrev(lambda r: real_view(torch.view_as_complex(r)))(
        torch.view_as_real(z)
    )
    for f in (torch.conj, lambda w: w.conj() * 2, lambda w: w.conj().abs()):
        got = rf.jacobian(f, mode=mode)(z)
        assert got.shape[-2:] == (2, 2)
    _close(rf.jacobian(torch.conj, mode=mode)(z), expected)


def test_auto_mode_uses_forward_mode_where_reverse_mode_fails():
    # batch norm in training mode is not differentiable in reverse mode w.r.t. its running
    # statistics (torch raises), but forward mode handles them
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    mean = torch.zeros(4, dtype=torch.float64)

    def f(x, running_mean):
        var = torch.ones(4, dtype=torch.float64)
        return torch.native_batch_norm(x, None, None, running_mean, var, True, 0.5, 1e-5)[0]

    expected = torch.func.jacfwd(f, (0, 1))(x, mean)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.func.jacrev(f, (0, 1))(x, mean)
    for chunk in (None, "auto"):
        jac = rf.jacobian(f, (0, 1), chunk_size=chunk)
        _close(jac(x, mean), expected)
        _close(jac(x, mean), expected)
    _close(rf.jacobian(lambda m: f(x, m))(mean), expected[1])


def test_linearize_takes_forward_mode_where_reverse_mode_fails():
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    t = torch.linspace(1, 2, 9, dtype=torch.float64)
    # hardsigmoid has no double-backward formula: the transpose of its VJP fails in torch
    f = torch.nn.functional.hardsigmoid
    out, jvp_fn = rf.linearize(f, x)
    _close(jvp_fn(t), torch.func.jvp(f, (x,), (t,))[1])
    # batch norm's running statistics: no reverse-mode derivative at all
    mean = torch.zeros(3, dtype=torch.float64)
    xb = x.reshape(3, 3)

    def g(m):
        var = torch.ones(3, dtype=torch.float64)
        return torch.native_batch_norm(xb, None, None, m, var, True, 0.5, 1e-5)[0]

    out, jvp_fn = rf.linearize(g, mean)
    _close(out, g(mean))
    _close(jvp_fn(mean + 1), torch.func.jvp(g, (mean,), (mean + 1,))[1])
