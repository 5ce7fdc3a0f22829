"""DCT/DST: gradients (gradcheck, gradgradcheck, adjoint identity), properties and errors."""

import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch.autograd import gradcheck, gradgradcheck

import research_ext.complex as rxc
from tests.complex.spectral_utils import randn
from tests.helpers import (
    ATOL_ROUND_TRIP_FLOAT64,
    ATOL_ROUND_TRIP_SCALED_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)


@pytest.mark.parametrize("name", ["dct", "idct", "dst", "idst"])
@pytest.mark.parametrize("type", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_gradgradcheck(name, type, dtype):
    fn = getattr(rxc.fft, name)
    for n in (5, 6):
        x = randn((2, n), dtype).requires_grad_()
        assert gradcheck(lambda t, n=n: fn(t, type=type, norm="ortho", n=n + 1), (x,))
        assert gradgradcheck(lambda t: fn(t, type=type), (x,))


def test_dctn_gradcheck():
    x = randn((3, 4, 5), torch.float64).requires_grad_()
    assert gradcheck(lambda t: rxc.fft.dctn(t, type=2, dim=(0, 2)), (x,))
    assert gradcheck(lambda t: rxc.fft.idstn(t, type=3, s=(6, 2)), (x,))


@pytest.mark.parametrize("kind", ["dct", "dst"])
@pytest.mark.parametrize("type", [1, 2, 3, 4])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_adjoint_identity(kind, type, norm):
    """<A x, y> = <x, A^H y>, with A^H obtained by autograd (the exact VJP)."""
    fn = getattr(rxc.fft, kind)
    for n in (7, 8):
        x = randn((4, n), torch.float64, seed=1).requires_grad_()
        y = randn((4, n), torch.float64, seed=2)
        ax = fn(x, type=type, norm=norm)
        (ahy,) = torch.autograd.grad(ax, x, y)
        lhs, rhs = (ax * y).sum(), (x * ahy).sum()
        assert abs(lhs - rhs) <= RTOL_REORDERED_FLOAT64 * max(1.0, abs(lhs.item()))
        # The transpose is the matching inverse type up to the norm's scaling: orthogonal case.
        if norm == "ortho":
            inv = getattr(rxc.fft, "i" + kind)
            assert torch.allclose(
                ahy, inv(y, type=type, norm="ortho"), atol=ATOL_ROUND_TRIP_FLOAT64
            )


@given(
    n=st.integers(2, 40),
    batch=st.integers(1, 3),
    type=st.integers(1, 4),
    norm=st.sampled_from([None, "ortho", "forward"]),
)
def test_inverse_property(n, batch, type, norm):
    x = randn((batch, n), torch.float64, seed=n)
    for kind in ("dct", "dst"):
        fwd, inv = getattr(rxc.fft, kind), getattr(rxc.fft, "i" + kind)
        assert torch.allclose(
            inv(fwd(x, type, norm=norm), type, norm=norm), x, atol=ATOL_ROUND_TRIP_SCALED_FLOAT64
        )


def test_dtype_and_batch_preserved():
    x = torch.randn(2, 3, 4, 9)
    y = rxc.fft.dct(x, dim=2)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert rxc.fft.dst(x.to(torch.complex64), n=4).shape == (2, 3, 4, 4)


def test_errors():
    x = torch.randn(4)
    with pytest.raises(ValueError, match=r"dct: `type` must be one of 1, 2, 3, 4, got type=5"):
        rxc.fft.dct(x, type=5)
    with pytest.raises(ValueError, match=r"idst: `norm` must be one of None, 'backward', 'ortho'"):
        rxc.fft.idst(x, norm="bad")
    with pytest.raises(ValueError, match=r"dct: `n` must be a positive int, got n=0"):
        rxc.fft.dct(x, n=0)
    with pytest.raises(ValueError, match=r"dct: `n` must be an int >= 2 for type 1"):
        rxc.fft.dct(x, type=1, n=1)
    with pytest.raises(ValueError, match=r"dct: type 1 needs at least 2 points"):
        rxc.fft.dct(torch.randn(1), type=1)
    with pytest.raises(TypeError, match=r"dct: `x` must have dtype float32, float64, complex64"):
        rxc.fft.dct(torch.arange(4))
    with pytest.raises(TypeError, match=r"dst: `x` must be a torch.Tensor"):
        rxc.fft.dst([1.0, 2.0])
    with pytest.raises(ValueError, match=r"dct: `dim` must be in \[-1, 0\] for ndim=1, got dim=3"):
        rxc.fft.dct(x, dim=3)
    with pytest.raises(ValueError, match=r"dctn: `dim` must be unique dims"):
        rxc.fft.dctn(torch.randn(3, 3), dim=(0, 0))
    with pytest.raises(ValueError, match=r"dstn: `s` and `dim` must have the same length"):
        rxc.fft.dstn(torch.randn(3, 3), s=(3,), dim=(0, 1))
    with pytest.raises(TypeError, match=r"dct: `orthogonalize` must be a bool or None"):
        rxc.fft.dct(x, orthogonalize="yes")
    with pytest.raises(ValueError, match=r"next_fast_len: `target` must be a positive int"):
        rxc.fft.next_fast_len(0)


def test_next_fast_len_matches_scipy():
    import scipy.fft as sf

    for target in [*range(1, 400), 1021, 99991, 10**6 + 1, 2**31 - 1]:
        for real in (False, True):
            assert rxc.fft.next_fast_len(target, real) == sf.next_fast_len(target, real)


def test_fft_passthroughs_are_torch():
    x = torch.randn(8, dtype=torch.float64)
    assert rxc.fft.rfft is torch.fft.rfft
    assert torch.allclose(rxc.fft.irfft(rxc.fft.rfft(x), n=8), x)
    assert math.isclose(float(rxc.fft.fftfreq(4)[1]), 0.25)
