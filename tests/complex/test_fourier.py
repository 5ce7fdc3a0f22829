"""SpectralConv against an explicit DFT -> truncate -> multiply -> inverse DFT reference."""

import numpy as np
import pytest
import torch

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_DROPPED_MODE_FLOAT64,
    ATOL_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    ATOL_SPECTRAL_FLOAT32,
    RTOL_FLOAT64,
    RTOL_REORDERED_FLOAT64,
    RTOL_SPECTRAL_FLOAT32,
)

nn = rxc.nn
SPECTRAL = {1: nn.SpectralConv1d, 2: nn.SpectralConv2d, 3: nn.SpectralConv3d}


def _dft_matrix(n, inverse=False):
    k = np.arange(n)
    sign = 1 if inverse else -1
    m = np.exp(sign * 2j * np.pi * np.outer(k, k) / n)
    return m / n if inverse else m


def _apply_along(x, mats, first_axis=2):
    for j, mat in enumerate(mats):
        x = np.moveaxis(
            np.tensordot(mat, np.moveaxis(x, first_axis + j, 0), axes=1), 0, first_axis + j
        )
    return x


def _reference(x, weight, n_modes, real_data):
    """Explicit reference in numpy complex128, looping over kept frequency tuples."""
    spatial = x.shape[2:]
    d = len(spatial)
    spectrum = _apply_along(x.astype(np.complex128), [_dft_matrix(n) for n in spatial])
    out = np.zeros((x.shape[0], weight.shape[1], *spatial), dtype=np.complex128)
    ranges = []
    for j, m in enumerate(n_modes):
        half = real_data and j == d - 1
        ranges.append(range(0, m) if half else range(-(m - 1), m))
    for freqs in np.ndindex(*[len(r) for r in ranges]):
        signed = [ranges[j][i] for j, i in enumerate(freqs)]
        w_idx = tuple(f if (f >= 0) else 2 * n_modes[j] - 1 + f for j, f in enumerate(signed))
        k = tuple(f % spatial[j] for j, f in enumerate(signed))
        mixed = np.einsum("bi,io->bo", spectrum[(..., *k)], weight[(..., *w_idx)])
        if real_data:
            last = signed[-1]
            nyquist = spatial[-1] % 2 == 0 and last == spatial[-1] // 2
            mixed = mixed * (1 if last == 0 or nyquist else 2)
        out[(..., *k)] = mixed
    y = _apply_along(out, [_dft_matrix(n, inverse=True) for n in spatial])
    return y.real if real_data else y


CASES = [
    (1, (16,), (5,)),
    (1, (9,), (5,)),
    (1, (8,), (5,)),  # keeps the Nyquist bin of the rfft
    (2, (8, 10), (3, 4)),
    (2, (7, 6), (4, 2)),
    (3, (6, 5, 8), (2, 3, 3)),
]


GRID = [
    (d, grid, modes, dtype)
    for d, grid, modes in CASES
    for dtype in (torch.float64, torch.complex128)
    # complex data keep 2m - 1 bins along every dim, real data only m rfft bins along the last
    if not dtype.is_complex or all(2 * m - 1 <= n for m, n in zip(modes, grid, strict=True))
]


@pytest.mark.parametrize(("d", "grid", "modes", "dtype"), GRID)
def test_spectral_conv_matches_explicit_dft(d, grid, modes, dtype):
    layer = SPECTRAL[d](3, 2, modes, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, *grid, dtype=dtype, generator=g)
    out = layer(x).detach()
    assert out.dtype == dtype and out.shape == (4, 2, *grid)
    ref = _reference(x.numpy(), layer.weight.detach().numpy(), modes, not dtype.is_complex)
    np.testing.assert_allclose(out.numpy(), ref, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)


def test_float32_and_complex64():
    for dtype in (torch.float32, torch.complex64):
        layer = nn.SpectralConv2d(2, 2, 3, dtype=dtype)
        x = torch.randn(2, 2, 8, 8, dtype=dtype)
        out = layer(x).detach()
        assert out.dtype == dtype
        ref = _reference(
            x.double().numpy() if not dtype.is_complex else x.to(torch.complex128).numpy(),
            layer.weight.detach().to(torch.complex128).numpy(),
            (3, 3),
            not dtype.is_complex,
        )
        np.testing.assert_allclose(
            out.numpy(), ref, rtol=RTOL_SPECTRAL_FLOAT32, atol=ATOL_SPECTRAL_FLOAT32
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_resolution_independence(dtype):
    # A band-limited input sampled on two grids gives the same output function.
    layer = nn.SpectralConv1d(2, 3, 4, dtype=dtype)

    def signal(n):
        t = torch.arange(n, dtype=torch.float64) / n * 2 * torch.pi
        parts = [torch.sin(t) + 0.5 * torch.cos(3 * t), torch.cos(2 * t) - 0.2 * torch.sin(5 * t)]
        x = torch.stack(parts)[None]
        return x.to(dtype) if not dtype.is_complex else (x + 1j * torch.roll(x, 1, 1)).to(dtype)

    coarse, fine = layer(signal(16)).detach(), layer(signal(64)).detach()
    torch.testing.assert_close(
        fine[..., ::4], coarse, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_UNIT_FLOAT64
    )


def test_high_modes_are_dropped():
    layer = nn.SpectralConv1d(1, 1, 3, dtype=torch.float64)
    t = torch.arange(32, dtype=torch.float64) / 32 * 2 * torch.pi
    assert layer(torch.cos(5 * t)[None, None]).abs().max() < ATOL_DROPPED_MODE_FLOAT64


def test_fno_block_is_spectral_plus_pointwise():
    block = nn.FNOBlock(4, (3, 2), dtype=torch.float64)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    expected = torch.nn.functional.gelu(block.spectral(x) + block.pointwise(x))
    torch.testing.assert_close(block(x), expected)
    complex_block = nn.FNOBlock(2, 3, dtype=torch.complex128)
    assert isinstance(complex_block.activation, nn.CGELU)
    identity = nn.FNOBlock(2, 3, activation=torch.nn.Identity(), dtype=torch.float64)
    z = torch.randn(1, 2, 8, dtype=torch.float64)
    torch.testing.assert_close(identity(z), identity.spectral(z) + identity.pointwise(z))


def test_fno_learns_a_fourier_multiplier():
    torch.manual_seed(0)
    # Target operator: the heat semigroup exp(t d^2/dx^2), diagonal in Fourier space.
    n, t = 32, 0.05
    k = torch.fft.rfftfreq(n, 1 / n)
    decay = torch.exp(-t * k**2)  # u_t = u_xx on [0, 2*pi)
    x = torch.randn(64, 1, n, dtype=torch.float64)
    y = torch.fft.irfft(torch.fft.rfft(x) * decay, n)
    layer = nn.SpectralConv1d(1, 1, n // 2 + 1, dtype=torch.float64)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = (layer(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-4 * float(y.pow(2).mean())


def test_fourier_errors():
    layer = nn.SpectralConv1d(2, 3, 5, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"SpectralConv1d: `n_modes` must fit the grid \(at least 8 points along spatial dim 0 for n_modes=5\)",
    ):
        layer(torch.randn(1, 2, 7, dtype=torch.float64))
    complex_layer = nn.SpectralConv2d(2, 3, (2, 5), dtype=torch.complex64)
    with pytest.raises(
        ValueError,
        match=r"SpectralConv2d: `n_modes` must fit the grid \(at least 9 points along spatial dim 1",
    ):
        complex_layer(torch.randn(1, 2, 8, 8, dtype=torch.complex64))
    with pytest.raises(
        ValueError,
        match=r"SpectralConv1d: `input` must have shape \(N, 2, \*\), got input.shape=\(1, 3, 16\)",
    ):
        layer(torch.randn(1, 3, 16, dtype=torch.float64))
    with pytest.raises(
        TypeError,
        match=r"SpectralConv1d: `input` must have the layer's dtype torch.float64, got input.dtype=torch.complex128",
    ):
        layer(torch.randn(1, 2, 16, dtype=torch.complex128))
    with pytest.raises(
        ValueError,
        match=r"SpectralConv2d: `n_modes` must be a positive int or a tuple of 2 ints, got n_modes=\(1, 2, 3\)",
    ):
        nn.SpectralConv2d(1, 1, (1, 2, 3))
    with pytest.raises(
        ValueError, match=r"SpectralConv3d: `n_modes` must be a positive int, got n_modes=0"
    ):
        nn.SpectralConv3d(1, 1, 0)
    with pytest.raises(
        ValueError, match=r"SpectralConv1d: `in_channels` must be a positive int, got in_channels=0"
    ):
        nn.SpectralConv1d(0, 1, 2)
    with pytest.raises(
        ValueError, match=r"FNOBlock: `n_modes` must be 1 to 3 ints, got n_modes=\(1, 1, 1, 1\)"
    ):
        nn.FNOBlock(2, (1, 1, 1, 1))
    with pytest.raises(
        TypeError, match=r"FNOBlock: `input` must have the layer's dtype torch.float64"
    ):
        nn.FNOBlock(2, 3, dtype=torch.float64)(torch.randn(1, 2, 8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_spectral_conv_full_gradcheck(dtype):
    from torch.autograd import gradcheck, gradgradcheck

    layer = nn.SpectralConv1d(2, 2, 3, dtype=dtype)
    weight = layer.weight.detach().clone().requires_grad_(True)
    x = torch.randn(2, 2, 6, dtype=dtype, requires_grad=True)

    def f(inp, w):
        return torch.func.functional_call(layer, {"weight": w}, (inp,))

    assert gradcheck(f, (x, weight))
    assert gradgradcheck(f, (x, weight))
