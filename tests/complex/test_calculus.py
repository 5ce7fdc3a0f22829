import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_FLOAT64,
    ATOL_WIRTINGER_FINITE_DIFFERENCES,
    RTOL_FLOAT64,
    RTOL_WIRTINGER_FINITE_DIFFERENCES,
)

C128 = torch.complex128
TOL = {"rtol": 0.0, "atol": ATOL_FLOAT64}


def _points(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dtype=C128, generator=g)
    return z + 0.5 * torch.sgn(z)  # keep away from 0, where log/abs/angle are singular


# (f, df/dz, df/dz̄) in closed form.
CLOSED_FORMS = {
    "z**2": (lambda z: z**2, lambda z: 2 * z, lambda z: 0 * z),
    "|z|^2": (lambda z: z.abs() ** 2, lambda z: z.conj(), lambda z: z),
    "conj(z)*z": (lambda z: z.conj() * z, lambda z: z.conj(), lambda z: z),
    "exp": (torch.exp, torch.exp, lambda z: 0 * z),
    "log": (torch.log, lambda z: 1 / z, lambda z: 0 * z),
    "abs": (torch.abs, lambda z: z.conj() / (2 * z.abs()), lambda z: z / (2 * z.abs())),
    "angle": (torch.angle, lambda z: -1j / (2 * z), lambda z: 1j / (2 * z.conj())),
    "conj": (torch.conj, lambda z: 0 * z, lambda z: torch.ones_like(z)),
    "Re": (lambda z: z.real, lambda z: 0.5 + 0 * z, lambda z: 0.5 + 0 * z),
    "z*conj(z)**2": (
        lambda z: z * z.conj() ** 2,
        lambda z: z.conj() ** 2,
        lambda z: 2 * z * z.conj(),
    ),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_wirtinger_matches_closed_form(name):
    f, d_dz, d_dzbar = CLOSED_FORMS[name]
    z = _points()
    got_dz, got_dzbar = rxc.wirtinger(f)(z)
    torch.testing.assert_close(got_dz, d_dz(z).to(C128), **TOL)
    torch.testing.assert_close(got_dzbar, d_dzbar(z).to(C128), **TOL)


def _finite_difference(f, z, h=1e-6):
    """Central differences in x and y, combined into the Wirtinger pair."""
    fz = lambda w: f(w).to(C128)  # noqa: E731
    dx = (fz(z + h) - fz(z - h)) / (2 * h)
    dy = (fz(z + 1j * h) - fz(z - 1j * h)) / (2 * h)
    return (dx - 1j * dy) / 2, (dx + 1j * dy) / 2


@pytest.mark.parametrize(
    "f",
    [
        lambda z: torch.sin(z) * z.conj(),
        lambda z: torch.tanh(z.real) + 1j * z.imag**3,
        lambda z: (z.abs() + 1).log() * torch.exp(1j * z.angle()),
    ],
)
def test_wirtinger_matches_finite_differences(f):
    z = _points(8, seed=1)
    d_dz, d_dzbar = rxc.wirtinger(f)(z)
    ref_dz, ref_dzbar = _finite_difference(f, z)
    torch.testing.assert_close(
        d_dz, ref_dz, rtol=RTOL_WIRTINGER_FINITE_DIFFERENCES, atol=ATOL_WIRTINGER_FINITE_DIFFERENCES
    )
    torch.testing.assert_close(
        d_dzbar,
        ref_dzbar,
        rtol=RTOL_WIRTINGER_FINITE_DIFFERENCES,
        atol=ATOL_WIRTINGER_FINITE_DIFFERENCES,
    )


def test_torch_convention_table():
    # The module docstring's table: grad(g=1) = conj(df/dz) + df/dz̄, at z = 1 + 2i.
    z0 = torch.tensor(1 + 2j, dtype=C128)
    for f, _, _ in CLOSED_FORMS.values():
        z = z0.clone().requires_grad_(True)
        out = f(z)
        (g,) = torch.autograd.grad(out, z, torch.ones_like(out))
        d_dz, d_dzbar = rxc.wirtinger(f)(z0)
        torch.testing.assert_close(g, d_dz.conj() + d_dzbar, **TOL)
    assert complex(rxc.wirtinger(torch.log)(z0)[0].conj()) == pytest.approx(0.2 + 0.4j)


@given(
    coeffs=st.lists(
        st.complex_numbers(max_magnitude=3, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=5,
    )
)
def test_polynomials_are_holomorphic_with_derivative(coeffs):
    c = torch.tensor(coeffs, dtype=C128)
    poly = lambda z: sum(ck * z**k for k, ck in enumerate(c))  # noqa: E731
    z = _points(6, seed=2)
    d_dz, d_dzbar = rxc.wirtinger(poly)(z)
    ref = np.polyval(np.polyder(c.numpy()[::-1]), z.numpy()) if len(coeffs) > 1 else 0 * z.numpy()
    np.testing.assert_allclose(d_dz.numpy(), ref, rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64)
    assert torch.all(d_dzbar.abs() <= ATOL_FLOAT64)
    assert rxc.is_holomorphic(poly, z)


def test_grad_to_wirtinger_recovers_both_derivatives():
    z = _points().requires_grad_(True)
    loss = (z.abs() ** 4 + (z * 3).real).sum()  # |z|^4 + 3 Re z
    loss.backward()
    d_dz, d_dzbar = rxc.grad_to_wirtinger(z.grad)
    zd = z.detach()
    torch.testing.assert_close(d_dzbar, 2 * zd.abs() ** 2 * zd + 1.5, **TOL)
    torch.testing.assert_close(d_dz, 2 * zd.abs() ** 2 * zd.conj() + 1.5, **TOL)


def test_create_graph_gives_second_derivatives():
    z = _points(5)
    first = rxc.wirtinger(lambda w: w**3, create_graph=True)
    second = rxc.wirtinger(lambda w: first(w)[0])(z)
    torch.testing.assert_close(second[0], 6 * z, **TOL)
    torch.testing.assert_close(second[1], torch.zeros_like(z), **TOL)


def test_scalar_output_gives_gradient():
    z = _points(4)
    d_dz, d_dzbar = rxc.wirtinger(lambda w: (w.conj() * w).sum())(z)
    torch.testing.assert_close(d_dzbar, z, **TOL)
    torch.testing.assert_close(d_dz, z.conj(), **TOL)


def test_unused_input_gives_zero():
    z = _points(3)
    d_dz, d_dzbar = rxc.wirtinger(lambda w: torch.tensor(2.0 + 1j, dtype=C128))(z)
    assert torch.equal(d_dz, torch.zeros_like(z)) and torch.equal(d_dzbar, torch.zeros_like(z))


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (torch.exp, True),
        (torch.sin, True),
        (torch.log, True),
        (lambda z: z**2 + 3 * z, True),
        (torch.conj, False),
        (torch.abs, False),
        (lambda z: z.real, False),
        (lambda z: z * z.conj(), False),
    ],
)
def test_is_holomorphic(f, expected):
    assert rxc.is_holomorphic(f, _points()) is expected


def test_complex64_follows_input_dtype():
    z = _points().to(torch.complex64)
    d_dz, d_dzbar = rxc.wirtinger(lambda w: w**2)(z)
    assert d_dz.dtype == d_dzbar.dtype == torch.complex64
    torch.testing.assert_close(d_dz, 2 * z)
    assert math.isclose(float(d_dzbar.abs().max()), 0.0)


def test_errors():
    with pytest.raises(
        TypeError, match=r"wirtinger: `z` must have a complex dtype, got z.dtype=torch.float64"
    ):
        rxc.wirtinger(torch.exp)(torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"wirtinger: `z` must be a complex tensor, got z='list'"):
        rxc.wirtinger(torch.exp)([1j])
    with pytest.raises(
        TypeError,
        match=r"grad_to_wirtinger: `grad` must be a complex tensor, got grad=torch.float32",
    ):
        rxc.grad_to_wirtinger(torch.ones(2))
    with pytest.raises(
        ValueError, match=r"is_holomorphic: `atol` must be a finite number >= 0, got atol=-1.0"
    ):
        rxc.is_holomorphic(torch.exp, _points(), atol=-1.0)
    with pytest.raises(TypeError, match=r"is_holomorphic: `z` must have a complex dtype"):
        rxc.is_holomorphic(torch.exp, torch.ones(2))
