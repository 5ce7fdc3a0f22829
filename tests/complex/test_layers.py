"""Layer behaviour against explicit formulas computed here in numpy / plain torch."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_MATRIX_SQRT_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    ATOL_WHITENED_COVARIANCE,
    ATOL_WHITENED_POWER,
    RTOL_MATRIX_SQRT_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)

nn = rxc.nn
C128 = torch.complex128
TOL = {"rtol": RTOL_REORDERED_FLOAT64, "atol": ATOL_REORDERED_UNIT_FLOAT64}


def _randn(*shape, dtype=C128, seed=0, loc=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g) + loc


# --- activations ------------------------------------------------------------------------------


def _gelu_np(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


ACTIVATION_REFERENCES = {
    "CReLU": (nn.CReLU(), lambda z: np.maximum(z.real, 0) + 1j * np.maximum(z.imag, 0)),
    "ZReLU": (nn.ZReLU(), lambda z: np.where((z.real >= 0) & (z.imag >= 0), z, 0)),
    "Cardioid": (nn.Cardioid(), lambda z: 0.5 * (1 + np.cos(np.angle(z))) * z),
    "CGELU": (nn.CGELU(), lambda z: _gelu_np(z.real) + 1j * _gelu_np(z.imag)),
    "CTanh": (nn.CTanh(), lambda z: np.tanh(z.real) + 1j * np.tanh(z.imag)),
    "ModReLU": (
        nn.ModReLU(bias=-0.7, dtype=C128),
        lambda z: np.maximum(np.abs(z) - 0.7, 0) * np.exp(1j * np.angle(z)),
    ),
}


@pytest.mark.parametrize("name", sorted(ACTIVATION_REFERENCES))
def test_activation_matches_formula(name):
    layer, ref = ACTIVATION_REFERENCES[name]
    z = _randn(7, 9)
    np.testing.assert_allclose(
        layer(z).detach().numpy(),
        ref(z.numpy()),
        rtol=RTOL_REORDERED_FLOAT64,
        atol=ATOL_REORDERED_UNIT_FLOAT64,
    )


def test_cgelu_tanh_approximation():
    z = _randn(20)
    out = nn.CGELU("tanh")(z)
    torch.testing.assert_close(out.real, torch.nn.functional.gelu(z.real, approximate="tanh"))


def test_modrelu_per_channel_bias():
    act = nn.ModReLU(3, dim=1, bias=0.0)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([-10.0, 0.0, 10.0]))
    z = _randn(2, 3, 4).to(torch.complex64)
    out = act(z)
    assert torch.all(out[:, 0] == 0)
    torch.testing.assert_close(out[:, 1], z[:, 1])
    torch.testing.assert_close(out[:, 2].abs(), z[:, 2].abs() + 10)
    torch.testing.assert_close(out[:, 2].angle(), z[:, 2].angle())
    last = nn.ModReLU(4, dim=-1)(_randn(5, 4))
    assert last.shape == (5, 4)


def test_cardioid_at_zero_is_zero():
    assert nn.Cardioid()(torch.zeros(3, dtype=C128)).abs().sum() == 0


def test_activation_errors():
    with pytest.raises(ValueError, match=r"CGELU: `approximate` must be one of 'none', 'tanh'"):
        nn.CGELU("erf")
    with pytest.raises(ValueError, match=r"ModReLU: `input` must have 3 features along dim=1"):
        nn.ModReLU(3)(_randn(2, 4))
    with pytest.raises(ValueError, match=r"ModReLU: `num_features` must be a positive int"):
        nn.ModReLU(0)
    with pytest.raises(TypeError, match=r"ModReLU: `dtype` must be a floating or complex"):
        nn.ModReLU(dtype=torch.int64)


# --- whitening normalization ------------------------------------------------------------------


def _correlated(shape, seed=0):
    # Real and imaginary parts strongly correlated, unequal scales, non-zero mean.
    g = torch.Generator().manual_seed(seed)
    a, b = (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )
    return torch.complex(3 * a + 1.0, 2 * a + 0.5 * b - 2.0)


def _covariance(z, dims):
    zr, zi = z.real, z.imag
    mr, mi = zr.mean(dims, keepdim=True), zi.mean(dims, keepdim=True)
    cr, ci = zr - mr, zi - mi
    return (
        (cr * cr).mean(dims),
        (ci * ci).mean(dims),
        (cr * ci).mean(dims),
        zr.mean(dims),
        zi.mean(dims),
    )


@pytest.mark.parametrize(
    ("layer", "shape", "dims"),
    [
        (nn.ComplexBatchNorm1d(3, affine=False, dtype=C128), (256, 3), (0,)),
        (nn.ComplexBatchNorm1d(3, affine=False, dtype=C128), (64, 3, 8), (0, 2)),
        (nn.ComplexBatchNorm2d(3, affine=False, dtype=C128), (16, 3, 4, 4), (0, 2, 3)),
        (nn.ComplexBatchNorm3d(3, affine=False, dtype=C128), (8, 3, 2, 4, 4), (0, 2, 3, 4)),
        (nn.ComplexLayerNorm((3, 50), elementwise_affine=False, dtype=C128), (4, 3, 50), (1, 2)),
    ],
)
def test_whitening_gives_identity_covariance(layer, shape, dims):
    y = layer(_correlated(shape))
    vrr, vii, vri, mr, mi = _covariance(y, dims)
    eps_shift = (
        ATOL_WHITENED_COVARIANCE  # eps=1e-5 on a variance of ~1e1 perturbs the result by ~1e-6
    )
    torch.testing.assert_close(vrr, torch.ones_like(vrr), rtol=0, atol=eps_shift)
    torch.testing.assert_close(vii, torch.ones_like(vii), rtol=0, atol=eps_shift)
    torch.testing.assert_close(vri, torch.zeros_like(vri), rtol=0, atol=eps_shift)
    torch.testing.assert_close(mr, torch.zeros_like(mr), rtol=0, atol=ATOL_CANCELLING_FLOAT64)
    torch.testing.assert_close(mi, torch.zeros_like(mi), rtol=0, atol=ATOL_CANCELLING_FLOAT64)


def test_group_norm_whitens_each_group():
    x = _correlated((4, 6, 40))
    y = nn.ComplexGroupNorm(3, 6, affine=False, dtype=C128)(x).reshape(4, 3, -1)
    vrr, vii, vri, _, _ = _covariance(y, (2,))
    torch.testing.assert_close(vrr, torch.ones_like(vrr), rtol=0, atol=ATOL_WHITENED_COVARIANCE)
    torch.testing.assert_close(vri, torch.zeros_like(vri), rtol=0, atol=ATOL_WHITENED_COVARIANCE)


def _whiten_reference(z):
    """Centre, then multiply by the inverse matrix square root from scipy (float64)."""
    from scipy.linalg import sqrtm

    xy = np.stack([z.real.ravel(), z.imag.ravel()])
    xy = xy - xy.mean(1, keepdims=True)
    cov = xy @ xy.T / xy.shape[1] + 1e-5 * np.eye(2)
    w = np.linalg.inv(sqrtm(cov).real)
    white = w @ xy
    return (white[0] + 1j * white[1]).reshape(z.shape)


def test_batch_norm_matches_scipy_sqrtm_with_affine():
    x = _correlated((32, 2, 5))
    bn = nn.ComplexBatchNorm1d(2, dtype=C128)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([[1.5, 0.3], [0.7, 2.0], [0.2, -0.4]]))
        bn.bias.copy_(torch.tensor([1 + 1j, -2j]))
    y = bn(x).detach().numpy()
    for c in range(2):
        white = _whiten_reference(x[:, c].numpy())
        grr, gii, gri = bn.weight[:, c].detach().numpy()
        beta = bn.bias[c].item()
        ref_r = grr * white.real + gri * white.imag + beta.real
        ref_i = gri * white.real + gii * white.imag + beta.imag
        np.testing.assert_allclose(
            y[:, c],
            ref_r + 1j * ref_i,
            rtol=RTOL_MATRIX_SQRT_FLOAT64,
            atol=ATOL_MATRIX_SQRT_FLOAT64,
        )


def test_layer_norm_matches_scipy_sqrtm():
    x = _correlated((3, 4, 6))
    y = nn.ComplexLayerNorm((4, 6), elementwise_affine=False, dtype=C128)(x).numpy()
    for i in range(3):
        np.testing.assert_allclose(
            y[i],
            _whiten_reference(x[i].numpy()),
            rtol=RTOL_MATRIX_SQRT_FLOAT64,
            atol=ATOL_MATRIX_SQRT_FLOAT64,
        )


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.ComplexBatchNorm1d(8), (512, 8)),
        (nn.ComplexBatchNorm2d(8), (32, 8, 6, 6)),
        (nn.ComplexBatchNorm3d(8), (16, 8, 3, 4, 4)),
        (nn.ComplexLayerNorm(64), (32, 64)),
        (nn.ComplexGroupNorm(4, 8), (32, 8, 16)),
    ],
)
def test_unit_power_at_init(layer, shape):
    x = _correlated(shape).to(torch.complex64)
    with torch.no_grad():
        power = layer(x).abs().pow(2).mean()
    assert abs(float(power) - 1.0) <= 0.05


def test_trabelsi_gamma_init():
    bn = nn.ComplexBatchNorm2d(3)
    torch.testing.assert_close(bn.weight[0], torch.full((3,), 1 / math.sqrt(2)))
    torch.testing.assert_close(bn.weight[1], torch.full((3,), 1 / math.sqrt(2)))
    assert torch.all(bn.weight[2] == 0) and torch.all(bn.bias == 0)


def test_running_statistics_and_eval_mode():
    bn = nn.ComplexBatchNorm1d(2, momentum=0.5, dtype=C128)
    x1, x2 = _correlated((50, 2), seed=1), _correlated((50, 2), seed=2)
    bn(x1)
    bn(x2)
    expected_mean = torch.tensor([0.0, 0.0], dtype=C128)
    expected_cov = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    for x in (x1, x2):
        expected_mean = 0.5 * expected_mean + 0.5 * x.mean(0)
        vrr, vii, vri, _, _ = _covariance(x, (0,))
        expected_cov = 0.5 * expected_cov + 0.5 * torch.stack([vrr, vii, vri]) * 50 / 49
    torch.testing.assert_close(bn.running_mean, expected_mean, **TOL)
    torch.testing.assert_close(bn.running_covar, expected_cov, **TOL)
    assert int(bn.num_batches_tracked) == 2
    bn.eval()
    x3 = _correlated((5, 2), seed=3)
    y = bn(x3)
    bn_fixed = nn.ComplexBatchNorm1d(2, dtype=C128)
    # Eval output is the affine whitening with the running statistics: check on channel 0.
    c = x3[:, 0] - expected_mean[0]
    cov = expected_cov[:, 0].numpy()
    v = np.array([[cov[0] + 1e-5, cov[2]], [cov[2], cov[1] + 1e-5]])
    from scipy.linalg import sqrtm

    w = np.linalg.inv(sqrtm(v).real) / math.sqrt(2)
    ref = w @ np.stack([c.real.numpy(), c.imag.numpy()])
    np.testing.assert_allclose(
        y[:, 0].detach().numpy(), ref[0] + 1j * ref[1], rtol=RTOL_MATRIX_SQRT_FLOAT64
    )
    assert bn_fixed.training


def test_cumulative_average_momentum_none():
    bn = nn.ComplexBatchNorm1d(1, momentum=None, dtype=C128)
    xs = [_correlated((10, 1), seed=s) for s in range(3)]
    for x in xs:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in xs]).mean(0), **TOL)


def test_batch_norm_without_running_stats_uses_batch_in_eval():
    bn = nn.ComplexBatchNorm1d(2, track_running_stats=False, dtype=C128).eval()
    y = bn(_correlated((100, 2))).detach()
    assert abs(float(y.abs().pow(2).mean()) - 1) < ATOL_WHITENED_POWER
    assert bn.running_mean is None


@pytest.mark.parametrize(
    "layer",
    [
        nn.ComplexBatchNorm1d(2, dtype=C128),
        nn.ComplexLayerNorm(3, dtype=C128),
        nn.ComplexGroupNorm(1, 2, dtype=C128),
    ],
    ids=["batch", "layer", "group"],
)
def test_whitening_full_gradcheck_on_tiny_input(layer):
    # Exhaustive (not fast-mode) gradcheck through the 2x2 inverse square root.
    x = _correlated((4, 2, 3)).requires_grad_(True)
    assert gradcheck(layer, (x,))
    assert gradgradcheck(layer, (x,))


def test_normalization_errors():
    with pytest.raises(
        ValueError,
        match=r"ComplexBatchNorm2d: `input` must have shape \(N, 3, \*, \*\), got input.shape=\(2, 4, 5, 5\)",
    ):
        nn.ComplexBatchNorm2d(3)(_randn(2, 4, 5, 5).to(torch.complex64))
    with pytest.raises(
        ValueError, match=r"ComplexBatchNorm1d: `input` must have shape \(N, 3\) or \(N, 3, \*\)"
    ):
        nn.ComplexBatchNorm1d(3)(_randn(2, 3, 4, 5).to(torch.complex64))
    with pytest.raises(
        ValueError, match=r"ComplexBatchNorm1d: `input` must hold more than one value per channel"
    ):
        nn.ComplexBatchNorm1d(3)(_randn(1, 3).to(torch.complex64))
    with pytest.raises(
        ValueError, match=r"ComplexBatchNorm1d: `eps` must be a finite number > 0, got eps=0.0"
    ):
        nn.ComplexBatchNorm1d(3, eps=0.0)
    with pytest.raises(
        ValueError,
        match=r"ComplexGroupNorm: `num_groups` must divide num_channels=6, got num_groups=4",
    ):
        nn.ComplexGroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"ComplexGroupNorm: `input` must have shape \(N, 6, \*\)"):
        nn.ComplexGroupNorm(3, 6)(_randn(2, 4, 3).to(torch.complex64))
    with pytest.raises(
        ValueError, match=r"ComplexLayerNorm: `input` must end in normalized_shape=\(4,\)"
    ):
        nn.ComplexLayerNorm(4)(_randn(2, 5).to(torch.complex64))
    with pytest.raises(
        TypeError,
        match=r"ComplexLayerNorm: `input` must have a complex dtype, got input.dtype=torch.float32",
    ):
        nn.ComplexLayerNorm(4)(torch.ones(2, 4))


# --- dropout ----------------------------------------------------------------------------------


def test_dropout_shares_one_mask_and_is_unbiased():
    torch.manual_seed(0)
    z = _randn(200_000).to(torch.complex64)
    y = nn.ComplexDropout(0.3)(z)
    dropped_r, dropped_i = y.real == 0, y.imag == 0
    assert torch.equal(dropped_r, dropped_i)
    assert abs(float(dropped_r.float().mean()) - 0.3) < 0.01
    kept = ~dropped_r
    torch.testing.assert_close(y[kept], z[kept] / 0.7)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.ComplexDropout1d(0.5), (16, 8, 10)),
        (nn.ComplexDropout2d(0.5), (16, 8, 3, 3)),
        (nn.ComplexDropout3d(0.5), (16, 8, 2, 2, 2)),
        (nn.ComplexDropout2d(0.5), (8, 3, 3)),
    ],
)
def test_channel_dropout_drops_whole_channels(layer, shape):
    torch.manual_seed(1)
    z = torch.ones(shape, dtype=torch.complex64) * (1 + 1j)
    y = layer(z)
    per_channel = y.real.flatten(len(shape) - layer._spatial)  # (..., C, spatial values)
    assert torch.all(per_channel.amin(-1) == per_channel.amax(-1))
    assert set(per_channel[..., 0].unique().tolist()) == {0.0, 2.0}
    torch.testing.assert_close(y.imag, y.real)


def test_dropout_eval_and_edge_probabilities():
    z = _randn(10)
    assert torch.equal(nn.ComplexDropout(0.5).eval()(z), z)
    assert torch.equal(nn.ComplexDropout(0.0)(z), z)
    assert torch.all(nn.ComplexDropout(1.0)(z) == 0)


def test_dropout_errors():
    with pytest.raises(
        ValueError, match=r"ComplexDropout: `p` must be a number in \[0.0, 1.0\], got p=1.5"
    ):
        nn.ComplexDropout(1.5)
    with pytest.raises(
        ValueError,
        match=r"ComplexDropout2d: `input` must have 3 or 4 dimensions, got input.shape=\(2, 3\)",
    ):
        nn.ComplexDropout2d()(_randn(2, 3))


def test_batch_norm_closed_form_backward_with_random_affine():
    # The custom backward (closed form) against finite differences, with a generic Γ and β,
    # for the input, Γ and β at once; and the double backward.
    from torch.func import functional_call

    bn = nn.ComplexBatchNorm2d(2, dtype=C128)
    g = torch.Generator().manual_seed(5)
    weight = (torch.rand(3, 2, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    bias = torch.randn(2, generator=g, dtype=C128).requires_grad_(True)
    x = _correlated((3, 2, 2, 2)).requires_grad_(True)

    def f(inp, w, b):
        return functional_call(bn, {"weight": w, "bias": b}, (inp,))

    assert gradcheck(f, (x, weight, bias))
    assert gradgradcheck(f, (x, weight, bias), fast_mode=True)
