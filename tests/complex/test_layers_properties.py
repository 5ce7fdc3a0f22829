"""Hypothesis properties of the complex layers: symmetries the maths guarantees."""

import math

import torch
from hypothesis import given, strategies as st

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_FLOAT64,
    ATOL_WHITENING_INVARIANCE_FLOAT64,
    RTOL_FLOAT64,
    RTOL_WHITENING_INVARIANCE_FLOAT64,
)

nn = rxc.nn
C128 = torch.complex128


def _randn(shape, seed):
    return torch.randn(shape, dtype=C128, generator=torch.Generator().manual_seed(seed))


@given(
    grid=st.integers(6, 24),
    modes=st.integers(1, 3),
    shift=st.integers(0, 23),
    complex_data=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_spectral_conv_is_linear_and_shift_equivariant(grid, modes, shift, complex_data, seed):
    dtype = C128 if complex_data else torch.float64
    torch.manual_seed(seed)
    layer = nn.SpectralConv1d(2, 3, modes, dtype=dtype)
    x, y = _randn((2, 2, grid), seed), _randn((2, 2, grid), seed + 1)
    if not complex_data:
        x, y = x.real, y.real
    with torch.no_grad():
        torch.testing.assert_close(
            layer(2 * x - y), 2 * layer(x) - layer(y), rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64
        )
        shifted = layer(torch.roll(x, shift, -1))
        torch.testing.assert_close(
            shifted, torch.roll(layer(x), shift, -1), rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64
        )


@given(
    scale=st.floats(0.1, 10.0),
    shift_re=st.floats(-5, 5),
    shift_im=st.floats(-5, 5),
    theta=st.floats(-math.pi, math.pi),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_invariances(scale, shift_re, shift_im, theta, seed):
    bn = nn.ComplexBatchNorm1d(3, eps=1e-12, dtype=C128)
    x = (
        _randn((40, 3, 4), seed) * torch.tensor([1.0, 3.0, 0.2])[None, :, None]
        + 1j * _randn((40, 3, 4), seed + 1).real
    )
    with torch.no_grad():
        y = bn(x)
        # Shifting and positive scaling leave the whitened output unchanged.
        torch.testing.assert_close(
            bn(scale * x + complex(shift_re, shift_im)),
            y,
            rtol=RTOL_WHITENING_INVARIANCE_FLOAT64,
            atol=ATOL_WHITENING_INVARIANCE_FLOAT64,
        )
        # With the isotropic initial Γ, a global phase rotation commutes with the layer.
        rotation = complex(math.cos(theta), math.sin(theta))
        torch.testing.assert_close(
            bn(rotation * x),
            rotation * y,
            rtol=RTOL_WHITENING_INVARIANCE_FLOAT64,
            atol=ATOL_WHITENING_INVARIANCE_FLOAT64,
        )


@given(
    p=st.floats(0.05, 0.95),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_dropout_mask_is_shared(p, shape, seed):
    torch.manual_seed(seed)
    z = _randn(shape, seed) + (1 + 1j)  # no exact zeros in either part
    y = nn.ComplexDropout(p)(z)
    assert torch.equal(y.real == 0, y.imag == 0)
    kept = y.real != 0
    torch.testing.assert_close(y[kept], z[kept] / (1 - p))


@given(n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_magnitude_softmax_is_a_distribution_with_phases(n, seed):
    z = _randn((3, n), seed)
    w = nn.complex_softmax(z, -1, "magnitude")
    torch.testing.assert_close(w.abs().sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(torch.sgn(w), torch.sgn(z))
