"""jacobian / hessian / vjp / jvp / linearize against torch.autograd.functional, dense loops, gradcheck."""

import pytest
import torch
from torch.autograd.functional import hessian as ag_hessian, jacobian as ag_jacobian

import research_ext.functional as rf
from tests.helpers import (
    ATOL_FINITE_DIFFERENCES,
    ATOL_FLOAT64,
    RTOL_FINITE_DIFFERENCES,
    RTOL_FLOAT64,
)

TOL = {"rtol": RTOL_FLOAT64, "atol": ATOL_FLOAT64}
FINITE_DIFFERENCES = {"rtol": RTOL_FINITE_DIFFERENCES, "atol": ATOL_FINITE_DIFFERENCES}
D = torch.float64


def _gen():
    return torch.Generator().manual_seed(7)


# A zoo of R^n -> R^m maps: wide, tall, square, scalar output, matrix input.
def _zoo():
    g = _gen()
    a = torch.randn(7, 3, generator=g, dtype=D)
    b = torch.randn(2, 9, generator=g, dtype=D)
    c = torch.randn(5, 5, generator=g, dtype=D)
    return {
        "tall (3->7)": (
            lambda x: torch.tanh(a @ x) * x.sum(),
            torch.randn(3, generator=g, dtype=D),
        ),
        "wide (9->2)": (lambda x: torch.sin(b @ x.exp()), torch.randn(9, generator=g, dtype=D)),
        "square (5->5)": (lambda x: c @ x + x**3, torch.randn(5, generator=g, dtype=D)),
        "scalar (4->1)": (lambda x: (x.sigmoid() ** 2).sum(), torch.randn(4, generator=g, dtype=D)),
        "matrix in": (lambda x: (x @ x.T).tanh(), torch.randn(2, 3, generator=g, dtype=D)),
    }


ZOO = _zoo()


def _dense_jacobian(f, x, eps=1e-6):
    """Central differences, one input entry at a time (the double loop over i, j)."""
    y = f(x)
    jac = torch.zeros(*y.shape, *x.shape, dtype=D)
    flat = jac.reshape(y.numel(), x.numel())
    for j in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=D)
        e[j] = eps
        e = e.reshape(x.shape)
        col = (f(x + e) - f(x - e)) / (2 * eps)
        for i in range(y.numel()):
            flat[i, j] = col.reshape(-1)[i]
    return jac


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, "auto"])
def test_jacobian_matches_autograd_functional(name, mode, chunk_size):
    f, x = ZOO[name]
    ours = rf.jacobian(f, mode=mode, chunk_size=chunk_size)(x)
    torch.testing.assert_close(ours, ag_jacobian(f, x), **TOL)


@pytest.mark.parametrize("name", list(ZOO))
def test_jacobian_matches_finite_differences(name):
    f, x = ZOO[name]
    torch.testing.assert_close(rf.jacobian(f)(x), _dense_jacobian(f, x), **FINITE_DIFFERENCES)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_jacobian_pytrees_and_argnums(mode, chunk_size):
    g = _gen()
    x = torch.randn(2, generator=g, dtype=D)
    y = torch.randn(3, 2, generator=g, dtype=D)
    w = torch.randn(4, generator=g, dtype=D)

    def f(x, params, scale):
        return {
            "a": x.sin() * params["y"].sum() * scale,
            "b": (x * params["y"]).cos(),
            "c": params["w"].exp(),
        }

    params = {"y": y, "w": w}
    ours = rf.jacobian(f, argnums=(0, 1), mode=mode, chunk_size=chunk_size)(x, params, 2.0)
    ref = torch.func.jacrev(f, argnums=(0, 1))(x, params, 2.0)
    for key in ref:
        torch.testing.assert_close(ours[key][0], ref[key][0], **TOL)
        for leaf in ("y", "w"):
            torch.testing.assert_close(ours[key][1][leaf], ref[key][1][leaf], **TOL)


def test_jacobian_negative_argnums_and_aux():
    x, y = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    jac, aux = rf.jacobian(lambda x, y: ((x * y).sin(), y.sum()), argnums=-1, has_aux=True)(x, y)
    torch.testing.assert_close(jac, torch.diag(x * (x * y).cos()), **TOL)
    torch.testing.assert_close(aux, y.sum())


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_holomorphic_jacobian_matches_closed_form(mode, chunk_size):
    z = torch.randn(3, dtype=torch.complex128, generator=_gen())
    jac = rf.jacobian(
        lambda z: z**2 * torch.exp(z), mode=mode, chunk_size=chunk_size, holomorphic=True
    )(z)
    torch.testing.assert_close(jac, torch.diag((2 * z + z**2) * torch.exp(z)), **TOL)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_real_view_jacobian_of_non_holomorphic_function(mode):
    z = torch.randn(2, dtype=torch.complex128, generator=_gen())

    def real_f(v):  # the same map on (re, im) pairs
        zz = torch.complex(v[..., 0], v[..., 1])
        w = zz.conj() * zz.abs()
        return torch.stack((w.real, w.imag), -1)

    ours = rf.jacobian(lambda z: z.conj() * z.abs(), mode=mode)(z)
    ref = ag_jacobian(real_f, torch.view_as_real(z))
    assert ours.shape == (2, 2, 2, 2)
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("name", ["scalar (4->1)", "square (5->5)", "matrix in"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_hessian_matches_autograd_functional(name, chunk_size):
    f, x = ZOO[name]
    scalar = lambda x: f(x).sum()  # noqa: E731
    torch.testing.assert_close(
        rf.hessian(scalar, chunk_size=chunk_size)(x), ag_hessian(scalar, x), **TOL
    )


def test_hessian_of_vector_output_and_aux():
    x = torch.randn(3, dtype=D, generator=_gen())
    hess, aux = rf.hessian(lambda x: (x**3, x.sum()), has_aux=True)(x)
    ref = torch.zeros(3, 3, 3, dtype=D)
    for i in range(3):
        ref[i, i, i] = 6 * x[i]
    torch.testing.assert_close(hess, ref, **TOL)
    torch.testing.assert_close(aux, x.sum())


def test_jacobian_is_differentiable_gradcheck():
    x = torch.randn(3, dtype=D, generator=_gen(), requires_grad=True)
    f, _ = ZOO["tall (3->7)"]
    for mode in ("fwd", "rev"):
        jac = rf.jacobian(f, mode=mode)
        assert torch.autograd.gradcheck(jac, (x,))
        assert torch.autograd.gradgradcheck(jac, (x,))


def test_vjp_jvp_linearize_match_torch_func():
    g = _gen()
    x, u = torch.randn(3, generator=g, dtype=D), torch.randn(7, generator=g, dtype=D)
    t = torch.randn(3, generator=g, dtype=D)
    f, _ = ZOO["tall (3->7)"]
    jac = ag_jacobian(f, x)
    out, vjp_fn = rf.vjp(f, x)
    torch.testing.assert_close(out, f(x))
    torch.testing.assert_close(vjp_fn(u)[0], u @ jac, **TOL)
    torch.testing.assert_close(vjp_fn(2 * u)[0], 2 * u @ jac, **TOL)  # reusable
    out, tangent = rf.jvp(f, (x,), (t,))
    torch.testing.assert_close(tangent, jac @ t, **TOL)
    out, jvp_fn = rf.linearize(f, x)
    torch.testing.assert_close(jvp_fn(t), jac @ t, **TOL)
    torch.testing.assert_close(jvp_fn(2 * t), 2 * jac @ t, **TOL)


def test_vjp_jvp_linearize_has_aux_and_pytrees():
    x = {"a": torch.randn(2, dtype=D), "b": torch.randn(3, dtype=D)}
    t = {"a": torch.ones(2, dtype=D), "b": torch.zeros(3, dtype=D)}

    def f(p):
        return p["a"].sin() * p["b"].sum(), p["b"].sum()

    out, vjp_fn, aux = rf.vjp(f, x, has_aux=True)
    torch.testing.assert_close(aux, x["b"].sum())
    grads = vjp_fn(torch.ones(2, dtype=D))[0]
    torch.testing.assert_close(
        grads["b"], torch.full((3,), x["a"].sin().sum().item(), dtype=D), **TOL
    )
    _, tangent, aux = rf.jvp(f, (x,), (t,), has_aux=True)
    torch.testing.assert_close(tangent, x["a"].cos() * x["b"].sum(), **TOL)
    out, jvp_fn, aux = rf.linearize(f, x, has_aux=True)
    torch.testing.assert_close(jvp_fn(t), tangent, **TOL)


def test_linearize_complex_non_holomorphic():
    z = torch.randn(3, dtype=torch.complex128, generator=_gen())
    t = torch.randn(3, dtype=torch.complex128, generator=torch.Generator().manual_seed(3))
    for f in (lambda z: z**2, lambda z: z.conj() * z.abs()):
        _, jvp_fn = rf.linearize(f, z)
        torch.testing.assert_close(jvp_fn(t), torch.func.jvp(f, (z,), (t,))[1], **TOL)
