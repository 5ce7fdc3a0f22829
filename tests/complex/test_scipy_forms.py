"""scipy's argument forms, dtype rules, empty inputs and validation, each against scipy itself."""

import warnings

import numpy as np
import pytest
import scipy.fft as sf
import scipy.signal as ss
import torch

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_CHIRP_Z_OVERSAMPLED_FLOAT64,
    ATOL_FLOAT16,
    ATOL_FLOAT64,
    ATOL_ZERO_FLOAT64,
    ATOL_ZOOM_FFT_FLOAT64,
    RTOL_CHIRP_Z_FLOAT64,
    RTOL_CHIRP_Z_OVERSAMPLED_FLOAT64,
    RTOL_FLOAT16,
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    RTOL_ZOOM_FFT_FLOAT64,
)

F = rxc.fft
S = rxc.signal


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


# --- scipy.fft: integer axes, numpy integers for n/s, float16 ---------------------------------


@pytest.mark.parametrize("name", ["dctn", "idctn", "dstn", "idstn"])
def test_nd_transforms_take_an_integer_axis(name):
    x = np.random.default_rng(0).standard_normal((4, 5))
    ours = getattr(F, name)(torch.from_numpy(x), dim=np.int64(0))
    np.testing.assert_allclose(_np(ours), getattr(sf, name)(x, axes=np.int64(0)), RTOL_FLOAT64)
    ours = getattr(F, name)(torch.from_numpy(x), s=np.int64(3), dim=1)
    np.testing.assert_allclose(_np(ours), getattr(sf, name)(x, s=3, axes=1), RTOL_FLOAT64)


@pytest.mark.parametrize("name", ["dct", "idct", "dst", "idst", "dctn", "idctn"])
def test_numpy_integers_for_n(name):
    x = np.random.default_rng(1).standard_normal(6)
    key = "n" if name in ("dct", "idct", "dst", "idst") else "s"
    size = np.int64(8) if key == "n" else (np.int32(8),)
    ours = getattr(F, name)(torch.from_numpy(x), **{key: size})
    np.testing.assert_allclose(_np(ours), getattr(sf, name)(x, **{key: size}), RTOL_FLOAT64)


@pytest.mark.parametrize("name", ["dct", "idst", "dctn"])
def test_float16_transforms_in_float32_as_scipy(name):
    x = np.random.default_rng(2).standard_normal(8).astype(np.float16)
    ours = getattr(F, name)(torch.from_numpy(x))
    ref = getattr(sf, name)(x)
    assert ours.dtype == torch.float32 and ref.dtype == np.float32
    np.testing.assert_allclose(_np(ours), ref, RTOL_FLOAT32)


# --- czt / zoom_fft accuracy (scipy's test_1D assertions) ------------------------------------


def _czt_checks(x: np.ndarray) -> None:
    t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    n = len(x)
    np.testing.assert_allclose(_np(S.czt(t)), sf.fft(x), rtol=RTOL_CHIRP_Z_FLOAT64)
    np.testing.assert_allclose(
        _np(S.czt(t, 100 * n)), sf.fft(x, 100 * n), rtol=RTOL_CHIRP_Z_OVERSAMPLED_FLOAT64
    )


def _zoom_checks(x: np.ndarray) -> None:
    t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    n = len(x)
    y = sf.fft(x)
    for fn, endpoint in (
        ([0, 2 - 2.0 / n], True),
        ([0, 2], False),
        (2 - 2.0 / n, True),
        (2, False),
    ):
        ours = _np(S.zoom_fft(t, fn, endpoint=endpoint))
        np.testing.assert_allclose(ours, y, rtol=RTOL_ZOOM_FFT_FLOAT64, atol=ATOL_ZOOM_FFT_FLOAT64)
    over = 10
    yover = sf.fft(x, over * n)
    ours = _np(S.zoom_fft(t, [0, 2 - 2.0 / (over * n)], m=over * n, endpoint=True))
    np.testing.assert_allclose(
        ours, yover, rtol=RTOL_CHIRP_Z_OVERSAMPLED_FLOAT64, atol=ATOL_CHIRP_Z_OVERSAMPLED_FLOAT64
    )
    np.testing.assert_allclose(
        _np(S.zoom_fft(t, [0, 2], m=over * n)),
        yover,
        RTOL_CHIRP_Z_OVERSAMPLED_FLOAT64,
        ATOL_CHIRP_Z_OVERSAMPLED_FLOAT64,
    )
    w = np.linspace(0, 2 - 2.0 / n, n)
    ours = _np(S.zoom_fft(t, [w[3], w[6]], m=3 * over + 1, endpoint=True))
    np.testing.assert_allclose(ours, yover[3 * over : 6 * over + 1], rtol=RTOL_CHIRP_Z_FLOAT64)


def test_czt_and_zoom_fft_reach_scipy_accuracy():
    rng = np.random.RandomState(0)
    for length in rng.randint(8, 200, 20):
        x = rng.random(length)
        _zoom_checks(x)
        _czt_checks(x)
    for n in (95, 96, 97, 98, 99):
        _zoom_checks(np.arange(n, dtype=np.float64))
    _zoom_checks(np.exp(-(np.linspace(-2, 2, 128) ** 2) / 0.01))


# --- windows and spectral estimators: dtype, empty input, callable detrend --------------------


def test_get_window_is_float64_by_default_or_the_dtype_asked():
    w = S.get_window("hann", 16)
    assert w.dtype == torch.float64
    np.testing.assert_array_equal(_np(w), ss.get_window("hann", 16))
    assert S.get_window(("kaiser", 8.0), 16, dtype=torch.float32).dtype == torch.float32
    for bad in (0, -1, 3.0):  # scipy's own errors, as scipy raises them
        with pytest.raises(ValueError, match="^Parameter Nx="):
            S.get_window("hann", bad)


@pytest.mark.parametrize("shape, dim", [((0,), -1), ((3, 0), -1), ((0, 5, 2), -1), ((3, 0), 1)])
@pytest.mark.parametrize("name", ["welch", "periodogram"])
def test_empty_input_gives_empty_results(name, shape, dim):
    f, p = getattr(S, name)(torch.empty(shape, dtype=torch.float64), dim=dim)
    rf, rp = getattr(ss, name)(np.empty(shape), axis=dim)
    assert tuple(f.shape) == rf.shape and tuple(p.shape) == rp.shape


def test_csd_empty_and_broadcast_like_scipy():
    for x, y in [
        (np.empty(0), np.zeros(10)),
        (np.ones(10), np.empty((5, 0))),
        (np.empty((10, 10, 3)), np.zeros((10, 0, 1))),
    ]:
        f, p = S.csd(torch.from_numpy(x), torch.from_numpy(y), dim=1 if x.ndim == 3 else -1)
        rf, rp = ss.csd(x, y, axis=1 if x.ndim == 3 else -1)
        assert tuple(p.shape) == rp.shape and tuple(f.shape) == rf.shape
    x = np.random.default_rng(3).standard_normal((4, 64))
    y = np.random.default_rng(4).standard_normal(64)  # fewer dims: broadcast outside dim
    _, p = S.csd(torch.from_numpy(x), torch.from_numpy(y), nperseg=16)
    np.testing.assert_allclose(_np(p), ss.csd(x, y, nperseg=16)[1], RTOL_FLOAT64, ATOL_FLOAT64)


def test_csd_of_a_signal_with_itself_is_real_as_scipy():
    x = np.zeros(16, np.float32)
    x[[0, 8]] = 1
    t = torch.from_numpy(x)
    f, p = S.csd(t, t, nperseg=8)
    rf, rp = ss.csd(x, x, nperseg=8)
    assert p.dtype == torch.float32 and rp.dtype == np.float32
    np.testing.assert_allclose(_np(p), rp, RTOL_FLOAT32)


def test_callable_detrend_may_work_on_numpy_arrays():
    x = np.arange(40, dtype=np.float64).reshape(2, 2, 10) + 0.04
    f, p = S.welch(torch.from_numpy(x), nperseg=10, detrend=lambda seg: ss.detrend(seg, type="l"))
    assert isinstance(p, torch.Tensor)
    np.testing.assert_allclose(_np(p), np.zeros_like(_np(p)), atol=ATOL_ZERO_FLOAT64)
    # a torch callable keeps the graph
    t = torch.from_numpy(x[0, 0]).requires_grad_()
    _, p = S.welch(t, nperseg=10, detrend=lambda seg: seg - seg.mean(-1, keepdim=True))
    p.sum().backward()
    assert t.grad is not None


# --- IIR: the missing pieces, dtype rules and validation --------------------------------------

BUTTER = ss.butter(4, 0.2)
SOS = ss.butter(6, 0.15, output="sos")


def _x(shape=(2, 3, 300), seed=5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_sosfiltfilt_and_sosfilt_zi_match_scipy():
    x = _x()
    for kwargs in ({}, {"padtype": "even", "padlen": 20}, {"padtype": None}):
        ours = S.sosfiltfilt(SOS, torch.from_numpy(x), **kwargs)
        np.testing.assert_allclose(_np(ours), ss.sosfiltfilt(SOS, x, **kwargs), RTOL_FLOAT64, 1e-12)
    ours = S.sosfiltfilt(SOS, torch.from_numpy(x.transpose(0, 2, 1).copy()), dim=1)
    ref = ss.sosfiltfilt(SOS, x.transpose(0, 2, 1), axis=1)
    np.testing.assert_allclose(_np(ours), ref, RTOL_FLOAT64, 1e-12)
    np.testing.assert_allclose(_np(S.sosfilt_zi(SOS)), ss.sosfilt_zi(SOS), RTOL_FLOAT64)
    assert S.sosfilt_zi(SOS.astype(np.float32)).dtype == torch.float32


def test_lfiltic_matches_scipy():
    b, a = BUTTER
    y, x = [0.3, -1.0, 2.0, 0.5], [1.0, 0.2]
    np.testing.assert_allclose(_np(S.lfiltic(b, a, y, x)), ss.lfiltic(b, a, y, x), RTOL_FLOAT64)
    np.testing.assert_allclose(_np(S.lfiltic(b, a, y)), ss.lfiltic(b, a, y), RTOL_FLOAT64)
    np.testing.assert_allclose(
        _np(S.lfiltic([2.0, 1.0], [2.0, -0.5], [1.0])), ss.lfiltic([2.0, 1.0], [2.0, -0.5], [1.0])
    )
    f32 = np.float32
    assert S.lfiltic(f32([1, 2]), f32([1, -0.5]), torch.ones(1)).dtype == torch.float32
    with pytest.raises(ValueError):
        S.lfiltic([1, 2], [[1], [2]], [0, 0], [0, 1])


@pytest.mark.parametrize("irlen", [None, 40])
def test_filtfilt_gust_matches_scipy(irlen):
    b, a = BUTTER
    x = _x((2, 400))
    ours = S.filtfilt(b, a, torch.from_numpy(x), method="gust", irlen=irlen)
    ref = ss.filtfilt(b, a, x, method="gust", irlen=irlen)
    np.testing.assert_allclose(_np(ours), ref, RTOL_FLOAT64, 1e-11)
    ours = S.filtfilt(b, a, torch.from_numpy(x.T.copy()), dim=0, method="gust", irlen=irlen)
    np.testing.assert_allclose(
        _np(ours), ss.filtfilt(b, a, x.T, axis=0, method="gust", irlen=irlen), RTOL_FLOAT64, 1e-11
    )


def test_new_iir_pieces_are_differentiable():
    from torch.autograd import gradcheck

    b, a = ss.butter(2, 0.3)
    x = torch.randn(2, 40, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: S.filtfilt(b, a, t, method="gust"), (x,))
    assert gradcheck(lambda t: S.filtfilt(b, a, t, method="gust", irlen=8), (x,))
    assert gradcheck(lambda t: S.sosfiltfilt(ss.butter(4, 0.3, output="sos"), t), (x,))
    y = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: S.lfiltic(b, a, t, t[:2] * 2), (y,))


def test_iir_result_dtypes_follow_scipy():
    x32 = np.ones(30, np.float32)
    t32 = torch.from_numpy(x32)
    b32, a32 = np.float32([1, 2]), np.float32([1, -0.5])
    cases = [
        (S.lfilter(b32, a32, t32), ss.lfilter(b32, a32, x32)),
        (S.lfilter([1.0, 2.0], [1.0, -0.5], t32), ss.lfilter([1.0, 2.0], [1.0, -0.5], x32)),
        (S.lfilter_zi(b32, a32), ss.lfilter_zi(b32, a32)),
        (S.lfilter_zi([1.0, 2.0], [1.0, -0.5]), ss.lfilter_zi([1.0, 2.0], [1.0, -0.5])),
        (S.sosfilt(SOS, t32), ss.sosfilt(SOS, x32)),
        (S.sosfilt(SOS.astype(np.float32), t32), ss.sosfilt(SOS.astype(np.float32), x32)),
        (S.filtfilt(b32, a32, t32), ss.filtfilt(b32, a32, x32)),
        (
            S.resample_poly(t32, 1, 2, window=np.ones(5)),
            ss.resample_poly(x32, 1, 2, window=np.ones(5)),
        ),
    ]
    for ours, ref in cases:
        assert str(ours.dtype).removeprefix("torch.") == str(ref.dtype)


def test_lfilter_zi_shape_is_checked_not_broadcast():
    b, a = BUTTER  # order 4
    x = torch.from_numpy(_x((3, 50)))
    with pytest.raises(ValueError, match=r"lfilter: `zi` must be of shape \(3, 4\)"):
        S.lfilter(b, a, x, zi=torch.zeros(4, dtype=torch.float64))  # scipy: too few dims
    with pytest.raises(ValueError, match=r"lfilter: `zi` must be of shape"):
        S.lfilter(b, a, x, zi=torch.zeros(3, 5, dtype=torch.float64))  # wrong size: no RuntimeError
    y, _ = S.lfilter(b, a, x, zi=torch.zeros(1, 4, dtype=torch.float64))  # size 1 broadcasts
    ref, _ = ss.lfilter(b, a, x.numpy(), zi=np.zeros((1, 4)))
    np.testing.assert_allclose(_np(y), ref, 1e-10)


def test_sosfilt_checks_zi_shape_and_a0():
    x = torch.from_numpy(_x((3, 15, 3)))
    bad = SOS.copy()
    bad[1, 3] = 2.0
    with pytest.raises(ValueError, match=r"sosfilt: `sos` must be sections whose a0 is 1"):
        S.sosfilt(bad, x, dim=1)
    zi = torch.zeros(SOS.shape[0], 3, 3, 2, dtype=torch.float64)  # right: (n, 3, 2, 3)
    with pytest.raises(ValueError, match=r"sosfilt: `zi` must be of shape \(3, 3, 2, 3\)"):
        S.sosfilt(SOS, x, dim=1, zi=zi)
    zi = torch.zeros(SOS.shape[0], 3, 2, 3, dtype=torch.float64)
    y, zf = S.sosfilt(SOS, x, dim=1, zi=zi)
    ry, rzf = ss.sosfilt(SOS, x.numpy(), axis=1, zi=zi.numpy())
    np.testing.assert_allclose(_np(y), ry, 1e-10, 1e-12)
    np.testing.assert_allclose(_np(zf), rzf, 1e-10, 1e-12)


def test_nd_transforms_take_sizes_and_axes_as_numpy_arrays():
    x = np.random.default_rng(6).standard_normal((4, 5, 6))
    s, axes = np.take(x.shape, (0, 2)), np.array([0, 2])
    ours = F.idctn(torch.from_numpy(x), 2, s, axes)
    np.testing.assert_allclose(_np(ours), sf.idctn(x, 2, s, axes), RTOL_FLOAT64)


def test_hilbert_is_the_same_along_any_dim_and_refuses_complex_with_value_error():
    a = torch.arange(18, dtype=torch.float64).reshape(3, 6)
    assert torch.equal(S.hilbert(a.T, dim=0), S.hilbert(a).T)  # scipy checks exact equality
    with pytest.raises(ValueError, match=r"hilbert: `x` must be real"):
        S.hilbert(torch.ones(3, dtype=torch.complex128))  # scipy: ValueError


def test_resample_times_are_float64_and_bad_rates_raise_value_error():
    y, t = S.resample(torch.ones(6, dtype=torch.float64), 3, t=[10, 12])
    ry, rt = ss.resample(np.ones(6), 3, t=[10, 12])
    assert t.dtype == torch.float64 and rt.dtype == np.float64
    np.testing.assert_allclose(_np(t), rt)
    x = torch.arange(16, dtype=torch.float64)
    for up, down in (("yo", 1), (1.3, 2), (2, 1.3), (1, 0)):
        with pytest.raises(ValueError, match=r"resample_poly: `(up|down)` must be a positive int"):
            S.resample_poly(x, up, down)


@pytest.mark.parametrize(
    "padtype",
    ["line", "symmetric", "reflect", "edge", "wrap", "smooth", "antisymmetric", "antireflect"],
)
def test_resample_poly_extends_edges_as_scipy(padtype):
    rng = np.random.default_rng(8)
    for n, up, down in ((3, 7, 3), (20, 3, 2), (101, 2, 5), (7, 1, 7)):
        x = rng.standard_normal((2, n))
        ours = S.resample_poly(torch.from_numpy(x), up, down, dim=1, padtype=padtype)
        ref = ss.resample_poly(x, up, down, axis=1, padtype=padtype)
        np.testing.assert_allclose(_np(ours), ref, RTOL_FLOAT64, 1e-12)


# --- convolution family: dims, float16, non-finite input ---------------------------------------


@pytest.mark.parametrize("name", ["convolve", "correlate", "fftconvolve", "oaconvolve"])
@pytest.mark.parametrize("shapes", [((1,), ()), ((), (1,)), ((1,), (1, 1))])
def test_convolutions_refuse_different_numbers_of_dims_in_scipy_words(name, shapes):
    a, b = (torch.ones(s, dtype=torch.float64) for s in shapes)
    with pytest.raises(ValueError, match="in1 and in2 should have the same dimensionality"):
        getattr(S, name)(a, b)
    with pytest.raises(ValueError):
        getattr(ss, name)(np.ones(shapes[0]), np.ones(shapes[1]))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_convolve_takes_float16_as_scipy(method, mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(100).astype(np.float16)
    h = rng.standard_normal(9).astype(np.float16)
    for other in (np.float16, np.float32, np.complex64):
        expected = ss.convolve(x, h.astype(other), mode=mode, method=method)
        ours = S.convolve(torch.from_numpy(x), torch.from_numpy(h.astype(other)), mode, method)
        assert _np(ours).dtype == expected.dtype
        np.testing.assert_allclose(_np(ours), expected, rtol=RTOL_FLOAT16, atol=ATOL_FLOAT16)
    ours = S.correlate(torch.from_numpy(x), torch.from_numpy(h), mode, method)
    assert ours.dtype == torch.float16
    np.testing.assert_allclose(
        _np(ours),
        ss.correlate(x, h, mode=mode, method=method),
        rtol=RTOL_FLOAT16,
        atol=ATOL_FLOAT16,
    )


@pytest.mark.parametrize("name", ["convolve", "correlate"])
def test_fft_convolution_of_non_finite_input_warns_as_scipy(name):
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(1000))
    h = torch.from_numpy(ss.firwin(200, 0.2))
    for value in (float("nan"), float("inf")):
        bad = x.clone()
        bad[100] = value
        with pytest.warns(RuntimeWarning, match="Use of fft convolution"):
            getattr(S, name)(bad, h, mode="same", method="fft")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(S, name)(bad, h, mode="same", method="direct")
        getattr(S, name)(x, h, mode="same", method="fft")


# --- integer data: computed in float64, scipy's first step --------------------------------

_SOS = [[0.2, 0.4, 0.2, 1.0, -0.3, 0.1], [1.0, -1.0, 0.0, 1.0, 0.2, 0.0]]
INTEGER_CALLS = {
    "welch": lambda m, x, y: m.welch(x, nperseg=16)[1],
    "csd": lambda m, x, y: m.csd(x, y, nperseg=16)[1],
    "csd_same": lambda m, x, y: m.csd(x, x, nperseg=16)[1],
    "coherence": lambda m, x, y: m.coherence(x, y, nperseg=16)[1],
    "periodogram": lambda m, x, y: m.periodogram(x, window="hann")[1],
    "spectrogram": lambda m, x, y: m.spectrogram(x, nperseg=16)[2],
    "stft": lambda m, x, y: m.stft(x, nperseg=16)[2],
    "hilbert": lambda m, x, y: m.hilbert(x),
    "envelope": lambda m, x, y: m.envelope(x),
    "czt": lambda m, x, y: m.czt(x, m=9),
    "zoom_fft": lambda m, x, y: m.zoom_fft(x, 0.5, m=9),
    "resample": lambda m, x, y: m.resample(x, 40),
    "resample_poly": lambda m, x, y: m.resample_poly(x, 3, 2),
    "lfilter": lambda m, x, y: m.lfilter([1.0, 0.5], [1.0, -0.5], x),
    "filtfilt": lambda m, x, y: m.filtfilt([1.0, 0.5], [1.0, -0.5], x),
    "sosfilt": lambda m, x, y: m.sosfilt(_SOS, x),
    "sosfiltfilt": lambda m, x, y: m.sosfiltfilt(_SOS, x),
    "fftconvolve": lambda m, x, y: m.fftconvolve(x, y[:5]),
    "oaconvolve": lambda m, x, y: m.oaconvolve(x, y[:5]),
    "convolve": lambda m, x, y: m.convolve(x, y[:5], method="fft"),
    "correlate": lambda m, x, y: m.correlate(x, y[:5], method="direct"),
}


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8])
@pytest.mark.parametrize("name", sorted(INTEGER_CALLS))
def test_signal_functions_take_integer_tensors_in_float64_as_scipy(name, dtype):
    rng = np.random.default_rng(3)
    x, y = (rng.integers(0, 50, 64).astype(dtype) for _ in range(2))
    if dtype == np.uint8 and name in ("filtfilt", "sosfiltfilt"):
        x = x.astype(np.int16)  # scipy's odd edge extension 2 x[0] - x[k] wraps around in uint8
    call = INTEGER_CALLS[name]
    ours = call(S, torch.from_numpy(x), torch.from_numpy(y))
    expected = np.asarray(call(ss, x, y))
    # scipy's dtype: float64 (float32 for 8/16-bit data in the spectral estimators, numpy's
    # promotion with complex64); convolve and correlate give the integer dtype.
    assert _np(ours).dtype == expected.dtype
    rtol = RTOL_FLOAT64 if expected.dtype in (np.float64, np.complex128) else RTOL_FLOAT32
    scale = np.abs(expected).max()
    np.testing.assert_allclose(_np(ours), expected, rtol=rtol, atol=rtol * scale)


def test_integer_convolution_wraps_as_numpy():
    x = np.array([200, 100, 50], dtype=np.uint8)
    y = np.array([3, 2], dtype=np.uint8)
    for method in ("direct", "fft"):
        ours = S.convolve(torch.from_numpy(x), torch.from_numpy(y), method=method)
        np.testing.assert_array_equal(_np(ours), ss.convolve(x, y, method=method))
        assert ours.dtype == torch.uint8


def test_istft_takes_an_integer_spectrum_in_float64():
    z = torch.arange(2 * 9 * 5).reshape(2, 9, 5)
    t, x = S.istft(z, nperseg=16)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x, S.istft(z.to(torch.complex128), nperseg=16)[1])


@pytest.mark.parametrize("name", ["csd", "welch", "stft", "spectrogram"])
def test_segment_length_is_checked_before_the_sampling_frequency_as_scipy(name):
    x = torch.zeros(16, dtype=torch.float64)
    args = (x, x) if name == "csd" else (x,)
    with pytest.raises(ValueError, match=rf"{name}: `nperseg` must be a positive int.*nperseg=0"):
        getattr(S, name)(*args, 0, nperseg=0)
    with pytest.raises(ValueError, match=r"Parameter nperseg=-3"):  # the words scipy users grep
        getattr(S, name)(*args, nperseg=-3)


@pytest.mark.parametrize(
    ("t1", "t2"), [("int64", "uint32"), ("uint64", "int8"), ("int64", "float16"), ("bool", "int16")]
)
def test_convolve_promotes_mixed_integers_as_numpy(t1, t2):
    rng = np.random.default_rng(4)
    x1 = rng.integers(0, 2, 20).astype(t1)
    x2 = rng.integers(0, 2, 7).astype(t2)
    for method in ("direct", "fft"):
        ours = S.convolve(torch.from_numpy(x1), torch.from_numpy(x2), method=method)
        expected = ss.convolve(x1, x2, method=method)
        assert _np(ours).dtype == expected.dtype
        # scipy's FFT runs float16 data in float32 precision (ours: float64 here)
        tol = RTOL_FLOAT32 if "float16" in (t1, t2) else ATOL_FLOAT64
        np.testing.assert_allclose(_np(ours), expected, rtol=max(tol, RTOL_FLOAT64), atol=tol)
