"""Hypothesis properties of the spectral ops: adjoint identities, round trips, Parseval."""

import torch
from hypothesis import given, strategies as st

import research_ext.complex as rxc
from tests.complex.spectral_utils import randn
from tests.helpers import (
    ATOL_CHIRP_Z_FLOAT64,
    ATOL_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    ATOL_STFT_ROUND_TRIP_FLOAT64,
    RTOL_CHIRP_Z_ADJOINT_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)

S = rxc.signal


def _adjoint_gap(op, x, seed=9):
    """|Re<y, A x> - Re<A^H y, x>| / scale, with A^H y the autograd vector-Jacobian product."""
    x = x.clone().requires_grad_()
    ax = op(x)
    y = randn(tuple(ax.shape), ax.dtype, seed)
    (ahy,) = torch.autograd.grad(ax, x, y)
    lhs = torch.vdot(y.flatten(), ax.flatten()).real if ax.is_complex() else (y * ax).sum()
    rhs = torch.vdot(ahy.flatten(), x.flatten()).real if x.is_complex() else (ahy * x).sum()
    lhs, rhs = lhs.detach(), rhs.detach()
    return float(abs(lhs - rhs)) / max(1.0, float(abs(lhs)))


@given(n=st.integers(4, 64), m=st.integers(1, 20), mode=st.sampled_from(["full", "same", "valid"]))
def test_convolution_adjoint_and_commutativity(n, m, mode):
    x, h = randn((n,), torch.float64, 1), randn((m,), torch.float64, 2)
    gap = _adjoint_gap(lambda t: S.fftconvolve(t, h, mode=mode), x)
    assert gap <= RTOL_REORDERED_FLOAT64
    assert torch.allclose(
        S.fftconvolve(x, h), S.fftconvolve(h, x), atol=ATOL_REORDERED_UNIT_FLOAT64
    )
    assert torch.allclose(S.convolve(x, h, method="direct"), S.fftconvolve(x, h), atol=ATOL_FLOAT64)


@given(n=st.integers(2, 64), N=st.one_of(st.none(), st.integers(2, 80)))
def test_hilbert_properties(n, N):
    x = randn((n,), torch.float64)
    z = S.hilbert(x, N=N)
    length = n if N is None else N
    padded = torch.cat([x, x.new_zeros(max(0, length - n))])[:length]
    assert torch.allclose(z.real, padded, atol=ATOL_FLOAT64)
    assert _adjoint_gap(lambda t: S.hilbert(t, N=N), x) <= RTOL_REORDERED_FLOAT64


@given(
    nperseg=st.integers(8, 64),
    hop_div=st.sampled_from([2, 4]),
    n=st.integers(70, 300),
)
def test_stft_istft_round_trip(nperseg, hop_div, n):
    x = randn((2, n), torch.float64)
    noverlap = nperseg - nperseg // hop_div
    _, _, z = S.stft(x, nperseg=nperseg, noverlap=noverlap)
    _, y = S.istft(z, nperseg=nperseg, noverlap=noverlap)
    assert torch.allclose(y[..., :n], x, atol=ATOL_STFT_ROUND_TRIP_FLOAT64)


@given(n=st.integers(16, 400))
def test_periodogram_parseval(n):
    """Boxcar two-sided density at fs = 1 sums to n times the mean power (Parseval)."""
    x = randn((n,), torch.float64)
    f, p = S.periodogram(x, fs=1.0, detrend=False, return_onesided=False)
    assert torch.allclose(p.sum() / n, x.square().mean(), rtol=RTOL_REORDERED_FLOAT64)


@given(n=st.integers(2, 50), m=st.integers(1, 50))
def test_czt_is_dft_on_the_unit_circle_and_linear(n, m):
    x = randn((n,), torch.complex128)
    assert torch.allclose(S.czt(x, m=n), torch.fft.fft(x), atol=ATOL_CHIRP_Z_FLOAT64)
    assert (
        _adjoint_gap(lambda t: S.czt(t, m=m, a=1.01, w=1.001 * complex(0.995, -0.0998)), x)
        <= RTOL_CHIRP_Z_ADJOINT_FLOAT64
    )


@given(n=st.integers(4, 60), num=st.integers(2, 90))
def test_resample_adjoint(n, num):
    x = randn((n,), torch.float64)
    assert _adjoint_gap(lambda t: S.resample(t, num), x) <= RTOL_REORDERED_FLOAT64
