"""Pooling, upsampling, softmax/attention, linear layers and initialisers."""

import itertools
import math

import numpy as np
import pytest
import torch

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_ATTENTION_FLOAT64,
    ATOL_PROBABILITIES_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)

nn = rxc.nn
C128 = torch.complex128


def _randn(*shape, dtype=C128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g)


def _windows(n_spatial, size, k):
    """All window start indices of a stride-k, kernel-k pooling grid."""
    return itertools.product(*[range(0, s - k + 1, k) for s in size[-n_spatial:]])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_max_pool_picks_largest_magnitude(n):
    z = _randn(2, 3, *[4] * n)
    out = {1: nn.ComplexMaxPool1d, 2: nn.ComplexMaxPool2d, 3: nn.ComplexMaxPool3d}[n](2)(z)
    zn = z.numpy()
    for start in _windows(n, zn.shape, 2):
        window = zn[(..., *[slice(s, s + 2) for s in start])].reshape(2, 3, -1)
        best = np.take_along_axis(window, np.abs(window).argmax(-1)[..., None], -1)[..., 0]
        np.testing.assert_array_equal(out[(..., *[s // 2 for s in start])].numpy(), best)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_avg_pool_is_window_mean(n):
    z = _randn(2, 3, *[4] * n)
    out = {1: nn.ComplexAvgPool1d, 2: nn.ComplexAvgPool2d, 3: nn.ComplexAvgPool3d}[n](2)(z)
    zn = z.numpy()
    for start in _windows(n, zn.shape, 2):
        window = zn[(..., *[slice(s, s + 2) for s in start])].reshape(2, 3, -1)
        np.testing.assert_allclose(
            out[(..., *[s // 2 for s in start])].numpy(),
            window.mean(-1),
            rtol=RTOL_REORDERED_FLOAT64,
        )


@pytest.mark.parametrize("n", [1, 2, 3])
def test_adaptive_pools_to_one(n):
    z = _randn(2, 3, *[3] * n)
    avg = {
        1: nn.ComplexAdaptiveAvgPool1d,
        2: nn.ComplexAdaptiveAvgPool2d,
        3: nn.ComplexAdaptiveAvgPool3d,
    }
    mx = {
        1: nn.ComplexAdaptiveMaxPool1d,
        2: nn.ComplexAdaptiveMaxPool2d,
        3: nn.ComplexAdaptiveMaxPool3d,
    }
    flat = z.flatten(2).numpy()
    np.testing.assert_allclose(
        avg[n](1)(z).flatten(2)[..., 0].numpy(), flat.mean(-1), rtol=RTOL_REORDERED_FLOAT64
    )
    best = np.take_along_axis(flat, np.abs(flat).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(mx[n](1)(z).flatten(2)[..., 0].numpy(), best)


def test_unbatched_pooling():
    z = _randn(3, 6)
    assert nn.ComplexMaxPool1d(2)(z).shape == (3, 3)
    with pytest.raises(
        ValueError,
        match=r"ComplexMaxPool2d: `input` must have 3 or 4 dimensions, got input.shape=\(6,\)",
    ):
        nn.ComplexMaxPool2d(2)(_randn(6))


def test_upsample_linear_interpolates_complex_line():
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    z = torch.polar(torch.ones_like(t), t)[None, None] * 0 + (2 - 1j) * t[None, None]
    up = nn.ComplexUpsample(size=9, mode="linear", align_corners=True)(z)
    t9 = torch.linspace(0, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(
        up[0, 0],
        (2 - 1j) * t9.to(C128),
        rtol=RTOL_REORDERED_FLOAT64,
        atol=ATOL_REORDERED_UNIT_FLOAT64,
    )


def test_upsample_nearest_2d():
    z = _randn(1, 2, 2, 2)
    up = nn.ComplexUpsample(scale_factor=2)(z)
    torch.testing.assert_close(up, z.repeat_interleave(2, -1).repeat_interleave(2, -2))


def _softmax_np(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("mode", ["magnitude", "real", "split"])
def test_complex_softmax_modes(mode):
    z = _randn(3, 7)
    zn = z.numpy()
    ref = {
        "magnitude": _softmax_np(np.abs(zn)) * np.exp(1j * np.angle(zn)),
        "real": _softmax_np(zn.real) + 0j,
        "split": _softmax_np(zn.real) + 1j * _softmax_np(zn.imag),
    }[mode]
    np.testing.assert_allclose(
        nn.complex_softmax(z, -1, mode).numpy(),
        ref,
        rtol=RTOL_REORDERED_FLOAT64,
        atol=ATOL_PROBABILITIES_FLOAT64,
    )
    np.testing.assert_allclose(
        nn.ComplexSoftmax(0, mode)(z).numpy().T,
        nn.complex_softmax(z.T, -1, mode).numpy(),
        rtol=RTOL_REORDERED_FLOAT64,
    )


def test_attention_matches_explicit_loop():
    q, k, v = _randn(2, 4, 3, seed=1), _randn(2, 5, 3, seed=2), _randn(2, 5, 6, seed=3)
    mask = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(4)) > 0.3
    mask[..., 0] = True
    out = nn.complex_scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qn, kn, vn, mn = q.numpy(), k.numpy(), v.numpy(), mask.numpy()
    for b in range(2):
        for i in range(4):
            scores = np.array([np.vdot(kn[b, j], qn[b, i]).real / math.sqrt(3) for j in range(5)])
            scores[~mn[b, i]] = -np.inf
            ref = _softmax_np(scores) @ vn[b]
            np.testing.assert_allclose(
                out[b, i].numpy(), ref, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_ATTENTION_FLOAT64
            )


def test_attention_errors():
    q = _randn(2, 3)
    with pytest.raises(ValueError, match=r"complex_scaled_dot_product_attention: `key` must match"):
        nn.complex_scaled_dot_product_attention(q, _randn(2, 4), _randn(2, 4))
    with pytest.raises(
        ValueError, match=r"`mode` must be 'real' or 'split' when `attn_mask` is given"
    ):
        nn.complex_scaled_dot_product_attention(
            q, q, q, mode="magnitude", attn_mask=torch.ones(2, 2, dtype=torch.bool)
        )
    with pytest.raises(
        TypeError, match=r"complex_scaled_dot_product_attention: `value` must have a complex dtype"
    ):
        nn.complex_scaled_dot_product_attention(q, q, q.real)
    with pytest.raises(
        ValueError,
        match=r"complex_softmax: `mode` must be one of 'magnitude', 'real', 'split', got mode='max'",
    ):
        nn.complex_softmax(q, mode="max")


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.float64])
def test_linear_and_conv_are_native_and_variance_preserving(dtype):
    layer = nn.ComplexLinear(256, 128, dtype=dtype)
    expected = dtype if dtype.is_complex else C128
    assert layer.weight.dtype == expected and torch.all(layer.bias == 0)
    z = _randn(512, 256, dtype=expected)
    out = layer(z).detach()
    torch.testing.assert_close(out, torch.nn.functional.linear(z, layer.weight, layer.bias))
    ratio = float(out.abs().pow(2).mean() / z.abs().pow(2).mean())
    assert 0.85 < ratio < 1.15
    conv = nn.ComplexConv2d(4, 5, 3, padding=1, dtype=dtype)
    x = _randn(2, 4, 6, 6, dtype=expected)
    torch.testing.assert_close(
        conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    )


def test_default_dtype_follows_torch_default():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert nn.ComplexLinear(2, 2).weight.dtype == C128
        assert nn.ComplexBatchNorm1d(2).weight.dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert nn.ComplexLinear(2, 2).weight.dtype == torch.complex64


def test_linear_rejects_real_input():
    with pytest.raises(
        TypeError,
        match=r"ComplexLinear: `input` must have a complex dtype, got input.dtype=torch.float32",
    ):
        nn.ComplexLinear(3, 2)(torch.ones(3))


# --- initialisers -----------------------------------------------------------------------------


def test_rayleigh_moments_and_phase():
    from scipy import stats

    w = nn.init.complex_rayleigh_(
        torch.empty(100_000, dtype=C128), 0.7, generator=torch.Generator().manual_seed(0)
    )
    ks = stats.kstest(w.abs().numpy(), stats.rayleigh(scale=0.7).cdf)
    assert ks.pvalue > 1e-3
    ks_phase = stats.kstest(w.angle().numpy(), stats.uniform(-math.pi, 2 * math.pi).cdf)
    assert ks_phase.pvalue > 1e-3


@pytest.mark.parametrize("shape", [(64, 32), (32, 16, 3, 3)])
def test_kaiming_and_xavier_variance(shape):
    g = torch.Generator().manual_seed(0)
    fan_in = shape[1] * math.prod(shape[2:])
    fan_out = shape[0] * math.prod(shape[2:])
    w = nn.init.complex_kaiming_(torch.empty(shape, dtype=C128), generator=g)
    assert abs(float(w.abs().pow(2).mean()) * fan_in / 2 - 1) < 0.1
    w = nn.init.complex_kaiming_(
        torch.empty(shape, dtype=C128), gain=1.0, mode="fan_out", generator=g
    )
    assert abs(float(w.abs().pow(2).mean()) * fan_out - 1) < 0.1
    w = nn.init.complex_xavier_(torch.empty(shape, dtype=torch.complex64), generator=g)
    assert abs(float(w.abs().pow(2).mean()) * (fan_in + fan_out) / 2 - 1) < 0.1
    assert w.dtype == torch.complex64


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (3, 2, 2)])
def test_unitary(shape):
    w = nn.init.complex_unitary_(torch.empty(shape, dtype=C128), gain=2.0)
    m = w.reshape(shape[0], -1)
    gram = m @ m.mH if m.shape[0] <= m.shape[1] else m.mH @ m
    torch.testing.assert_close(gram, 4 * torch.eye(gram.shape[0], dtype=C128))


def test_init_is_reproducible_with_generator():
    a = nn.init.complex_xavier_(
        torch.empty(5, 5, dtype=C128), generator=torch.Generator().manual_seed(3)
    )
    b = nn.init.complex_xavier_(
        torch.empty(5, 5, dtype=C128), generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a, b)


def test_init_errors():
    with pytest.raises(
        TypeError,
        match=r"complex_kaiming_: `tensor` must have a complex dtype, got tensor.dtype=torch.float32",
    ):
        nn.init.complex_kaiming_(torch.empty(3, 3))
    with pytest.raises(
        ValueError, match=r"complex_xavier_: `tensor` must be at least 2-d, got tensor=\(3,\)"
    ):
        nn.init.complex_xavier_(torch.empty(3, dtype=C128))
    with pytest.raises(
        ValueError,
        match=r"complex_kaiming_: `mode` must be one of 'fan_in', 'fan_out', got mode='avg'",
    ):
        nn.init.complex_kaiming_(torch.empty(3, 3, dtype=C128), mode="avg")
    with pytest.raises(
        ValueError, match=r"complex_rayleigh_: `scale` must be a finite number > 0, got scale=0.0"
    ):
        nn.init.complex_rayleigh_(torch.empty(3, dtype=C128), 0.0)
