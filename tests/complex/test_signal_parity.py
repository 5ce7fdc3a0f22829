"""scipy.signal parity: hilbert, envelope, convolution, Welch family, STFT, CZT, resampling."""

import itertools

import numpy as np
import pytest
import scipy.signal as ss
import torch

import research_ext.complex as rxc
from tests.complex.spectral_utils import assert_close32, assert_close64, randn
from tests.helpers import (
    ATOL_FFT_ROUTES_FLOAT64,
    RTOL_REORDERED_FLOAT64,
    RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
)

S = rxc.signal


@pytest.mark.parametrize("n", [1, 2, 7, 16, 31, 64])
def test_hilbert(n):
    x = randn((2, 3, n), torch.float64)
    for N, dim in itertools.product((None, 5, 2 * n + 1), (-1, 1)):
        assert_close64(
            S.hilbert(x, N=N, dim=dim),
            ss.hilbert(x.numpy(), N=N, axis=dim),
            RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
        )
    x32 = x.float()
    assert_close32(S.hilbert(x32), ss.hilbert(x.numpy()), ss.hilbert(x32.numpy()))


def test_hilbert2():
    for shape, N in [((9, 12), None), ((8, 12), (10, 15)), ((3, 8, 7), None), ((6, 4), 5)]:
        x = randn(shape, torch.float64)
        assert_close64(
            S.hilbert2(x, N=N), ss.hilbert2(x.numpy(), N=N), RTOL_SCIPY_PARITY_TIGHT_FLOAT64
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_envelope(dtype):
    z = randn((3, 200), dtype)
    for kw in [
        {},
        {"bp_in": (3, 50)},
        {"n_out": 100, "residual": "all"},
        {"n_out": 301, "squared": True},
        {"residual": None},
        {"bp_in": (-20, 30), "n_out": 133},
        {"bp_in": (None, 10), "n_out": 400},
    ]:
        assert_close64(S.envelope(z, **kw), ss.envelope(z.numpy(), **kw))


SHAPES = [((50,), (7,)), ((7,), (50,)), ((64,), (64,)), ((1000,), (31,)), ((13, 9), (4, 5))]


@pytest.mark.parametrize("s1,s2", SHAPES)
@pytest.mark.parametrize("name", ["convolve", "correlate"])
def test_convolve_correlate(s1, s2, name):
    for mode, method, dtype in itertools.product(
        ("full", "same", "valid"),
        ("auto", "direct", "fft", "oa"),
        (torch.float64, torch.complex128),
    ):
        a, b = randn(s1, dtype, 1), randn(s2, torch.float64, 2)
        ref = getattr(ss, name)(
            a.numpy(), b.numpy(), mode=mode, method="fft" if method == "oa" else method
        )
        assert_close64(getattr(S, name)(a, b, mode=mode, method=method), ref)


def test_fftconvolve_oaconvolve_dims_and_broadcast():
    a, b = randn((3, 1, 300), torch.float64, 1), randn((1, 4, 40), torch.float64, 2)
    for mode in ("full", "same", "valid"):
        ref = ss.fftconvolve(a.numpy(), b.numpy(), mode=mode, axes=-1)
        assert_close64(S.fftconvolve(a, b, mode=mode, dim=-1), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
        assert_close64(
            S.oaconvolve(a, b, mode=mode, dim=-1),
            ss.oaconvolve(a.numpy(), b.numpy(), mode=mode, axes=-1),
        )
        assert_close64(S.convolve(a, b, mode=mode, method="direct", dim=-1), ref)
    a2, b2 = randn((200, 3, 150), torch.float64), randn((9, 3, 7), torch.float64)
    ref = ss.oaconvolve(a2.numpy(), b2.numpy(), axes=(0, 2))
    assert_close64(S.oaconvolve(a2, b2, dim=(0, 2)), ref)
    a32 = a.float()
    assert_close32(
        S.fftconvolve(a32, b.float(), dim=-1),
        ss.fftconvolve(a.numpy(), b.numpy(), axes=-1),
        ss.fftconvolve(a32.numpy(), b.float().numpy(), axes=-1),
    )


def test_correlation_lags():
    for n1, n2, mode in itertools.product((1, 4, 7), (1, 3, 8), ("full", "same", "valid")):
        assert (
            S.correlation_lags(n1, n2, mode).tolist() == ss.correlation_lags(n1, n2, mode).tolist()
        )


WELCH_KW = [
    {},
    {"nperseg": 100},
    {"nperseg": 64, "noverlap": 10, "nfft": 100, "detrend": "linear"},
    {"nperseg": 64, "average": "median", "scaling": "spectrum"},
    {"nperseg": 63, "detrend": False, "return_onesided": False},
    {"window": ("kaiser", 8.0), "nperseg": 128, "fs": 3.0},
]


@pytest.mark.parametrize("kw", WELCH_KW)
def test_welch_csd_coherence(kw):
    x, y = randn((3, 1000), torch.float64, 1), randn((1, 1000), torch.float64, 2)
    f, p = S.welch(x, **kw)
    rf, rp = ss.welch(x.numpy(), **kw)
    assert_close64(f, rf)
    assert_close64(p, rp, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
    assert_close64(S.csd(x, y, **kw)[1], ss.csd(x.numpy(), y.numpy(), **kw)[1])
    assert_close64(
        S.welch(x.T, dim=0, **kw)[1],
        ss.welch(x.numpy().T, axis=0, **kw)[1],
        RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
    )
    ckw = {
        k: v
        for k, v in kw.items()
        if k in ("nperseg", "noverlap", "nfft", "detrend", "window", "fs")
    }
    assert_close64(S.coherence(x, y, **ckw)[1], ss.coherence(x.numpy(), y.numpy(), **ckw)[1])


def test_welch_complex_and_float32():
    xc = randn((2, 700), torch.complex128)
    assert_close64(
        S.welch(xc, nperseg=64)[1],
        ss.welch(xc.numpy(), nperseg=64)[1],
        RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
    )
    x = randn((2, 4096), torch.float64)
    x32 = x.float()
    p32 = S.welch(x32, nperseg=256)[1]
    assert p32.dtype == torch.float32
    assert_close32(p32, ss.welch(x.numpy(), nperseg=256)[1], ss.welch(x32.numpy(), nperseg=256)[1])


def test_periodogram():
    x = randn((2, 300), torch.float64)
    for kw in [
        {},
        {"nfft": 400},
        {"nfft": 200},
        {"window": "hann", "scaling": "spectrum"},
        {"detrend": "linear"},
    ]:
        f, p = S.periodogram(x, **kw)
        rf, rp = ss.periodogram(x.numpy(), **kw)
        assert_close64(f, rf)
        assert_close64(p, rp)


@pytest.mark.parametrize("mode", ["psd", "complex", "magnitude", "angle", "phase"])
def test_spectrogram(mode):
    x = randn((2, 1000), torch.float64)
    for kw in [{"nperseg": 64}, {"nperseg": 65, "noverlap": 30, "nfft": 80, "scaling": "spectrum"}]:
        f, t, s = S.spectrogram(x, mode=mode, **kw)
        rf, rt, rs = ss.spectrogram(x.numpy(), mode=mode, **kw)
        assert_close64(f, rf)
        assert_close64(t, rt)
        assert_close64(s, rs)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"nperseg": 64, "boundary": "even"},
        {"nperseg": 64, "boundary": "odd", "scaling": "psd"},
        {"nperseg": 64, "boundary": "constant", "nfft": 80},
        {"nperseg": 65, "noverlap": 20, "boundary": None, "padded": False, "detrend": "constant"},
    ],
)
def test_stft_istft(kw):
    x = randn((3, 1000), torch.float64)
    f, t, z = S.stft(x, **kw)
    rf, rt, rz = ss.stft(x.numpy(), **kw)
    assert_close64(f, rf)
    assert_close64(t, rt)
    assert_close64(z, rz)
    if kw.get("boundary", "zeros") is not None:
        ikw = {k: v for k, v in kw.items() if k in ("nperseg", "noverlap", "nfft", "scaling")}
        tt, xx = S.istft(torch.from_numpy(rz[0]), **ikw)
        rtt, rxx = ss.istft(rz[0], **ikw)
        assert_close64(tt, rtt)
        assert_close64(xx, rxx)
        assert_close64(S.istft(torch.from_numpy(rz), **ikw)[1], ss.istft(rz, **ikw)[1])


def test_czt_zoom_fft():
    for n, m in [(8, 8), (17, 5), (5, 17), (64, 100), (1, 3)]:
        x = randn((3, n), torch.float64)
        for kw in [{"m": m}, {"m": m, "w": np.exp(-0.02j), "a": 0.9 * np.exp(0.3j)}]:
            assert_close64(S.czt(x, **kw), ss.czt(x.numpy(), **kw))
        for fn, endpoint in [((0.1, 0.4), True), (0.5, False)]:
            ref = ss.zoom_fft(x.numpy(), fn, m=m, endpoint=endpoint)
            assert_close64(S.zoom_fft(x, fn, m=m, endpoint=endpoint), ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_resample(dtype):
    x = randn((3, 100), dtype)
    for num, window in itertools.product(
        (50, 100, 150, 99, 101, 7), (None, "hann", ("kaiser", 5.0))
    ):
        assert_close64(
            S.resample(x, num, dim=-1, window=window),
            ss.resample(x.numpy(), num, axis=-1, window=window),
        )
    t = torch.arange(100, dtype=torch.float64) * 0.5
    y, t2 = S.resample(x.T, 40, t=t)
    ry, rt2 = ss.resample(x.numpy().T, 40, t=t.numpy())
    assert_close64(y, ry)
    assert_close64(t2, rt2)


def test_resample_poly():
    x = randn((2, 300), torch.float64)
    for (up, down), pad in itertools.product(
        ((3, 2), (2, 3), (1, 4), (5, 1), (7, 11)), ("constant", "mean", "median", "maximum")
    ):
        ref = ss.resample_poly(x.numpy(), up, down, axis=-1, padtype=pad)
        assert_close64(S.resample_poly(x, up, down, dim=-1, padtype=pad), ref)


def test_get_window():
    for spec, n, fftbins in [
        ("hann", 16, True),
        (("kaiser", 8.0), 9, False),
        ("flattop", 5, True),
        (("tukey", 0.3), 20, True),
        ("hann_periodic", 8, True),
    ]:
        w = S.get_window(spec, n, fftbins, dtype=torch.float64)
        assert_close64(w, ss.get_window(spec, n, fftbins=fftbins))


def test_csd_pads_the_shorter_signal():
    x, y = randn((2, 1000), torch.float64, 1), randn((2, 900), torch.float64, 2)
    assert_close64(S.csd(x, y, nperseg=128)[1], ss.csd(x.numpy(), y.numpy(), nperseg=128)[1])


def test_oaconvolve_blocked_paths():
    """Signals long enough for the block (overlap-save) path, 1-D and 2-D with one blocked dim."""
    for s1, s2, dims in [
        ((20000,), (31,), None),
        ((9000,), (1100,), None),
        ((5000, 40), (20, 3), None),
    ]:
        a, b = randn(s1, torch.float64, 1), randn(s2, torch.float64, 2)
        for mode in ("full", "same", "valid"):
            ref = ss.oaconvolve(a.numpy(), b.numpy(), mode=mode)
            assert_close64(S.oaconvolve(a, b, mode=mode, dim=dims), ref)
            assert_close64(
                S.oaconvolve(b, a, mode=mode), ss.oaconvolve(b.numpy(), a.numpy(), mode=mode)
            )
    ac = randn((3, 12000), torch.complex128)
    bc = randn((1, 50), torch.complex128, 3)
    assert_close64(S.oaconvolve(ac, bc, dim=-1), ss.oaconvolve(ac.numpy(), bc.numpy(), axes=-1))
    # The gradient of the block path equals the gradient of the plain FFT path.
    a = randn((12000,), torch.float64).requires_grad_()
    b = randn((40,), torch.float64, 2).requires_grad_()
    w = randn((12039,), torch.float64, 3)
    g_oa = torch.autograd.grad((S.oaconvolve(a, b) * w).sum(), (a, b))
    g_fft = torch.autograd.grad((S.fftconvolve(a, b) * w).sum(), (a, b))
    for x, y in zip(g_oa, g_fft, strict=True):
        assert torch.allclose(x, y, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_FFT_ROUTES_FLOAT64)


FLOAT32_CASES = {
    "hilbert2": (
        lambda m, x: m.hilbert2(x.reshape(20, 50)),
        lambda x: ss.hilbert2(x.reshape(20, 50)),
    ),
    "envelope": (
        lambda m, x: m.envelope(x, residual="all"),
        lambda x: ss.envelope(x, residual="all"),
    ),
    "convolve": (lambda m, x: m.convolve(x, x[:40]), lambda x: ss.convolve(x, x[:40])),
    "correlate": (
        lambda m, x: m.correlate(x, x[:300], mode="same"),
        lambda x: ss.correlate(x, x[:300], mode="same"),
    ),
    "oaconvolve": (lambda m, x: m.oaconvolve(x, x[:9]), lambda x: ss.oaconvolve(x, x[:9])),
    "csd": (
        lambda m, x: m.csd(x, x.flip(-1), nperseg=100)[1],
        lambda x: ss.csd(x, x[::-1], nperseg=100)[1],
    ),
    "coherence": (
        lambda m, x: m.coherence(x, x.flip(-1), nperseg=100)[1],
        lambda x: ss.coherence(x, x[::-1], nperseg=100)[1],
    ),
    "periodogram": (
        lambda m, x: m.periodogram(x, window="hann")[1],
        lambda x: ss.periodogram(x, window="hann")[1],
    ),
    "spectrogram": (
        lambda m, x: m.spectrogram(x, nperseg=64)[2],
        lambda x: ss.spectrogram(x, nperseg=64)[2],
    ),
    "stft": (lambda m, x: m.stft(x, nperseg=64)[2], lambda x: ss.stft(x, nperseg=64)[2]),
    "istft": (
        lambda m, x: m.istft(m.stft(x, nperseg=64)[2], nperseg=64)[1],
        lambda x: ss.istft(ss.stft(x, nperseg=64)[2], nperseg=64)[1],
    ),
    "czt": (
        lambda m, x: m.czt(x[:100], m=60, w=np.exp(-0.03j), a=0.99),
        lambda x: ss.czt(x[:100], m=60, w=np.exp(-0.03j), a=0.99),
    ),
    "zoom_fft": (
        lambda m, x: m.zoom_fft(x[:128], (0.1, 0.3), m=50),
        lambda x: ss.zoom_fft(x[:128], (0.1, 0.3), m=50),
    ),
    "resample": (lambda m, x: m.resample(x, 733), lambda x: ss.resample(x, 733)),
    "resample_poly": (lambda m, x: m.resample_poly(x, 3, 4), lambda x: ss.resample_poly(x, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_within_twice_scipy_error(name):
    ours_fn, ref_fn = FLOAT32_CASES[name]
    x = randn((1000,), torch.float64, 5)
    x32 = x.float()
    ours = ours_fn(S, x32)
    assert ours.dtype in (torch.float32, torch.complex64)
    assert_close32(ours, ref_fn(x.numpy()), ref_fn(x32.numpy()))


@pytest.mark.parametrize(
    "spec",
    [
        "boxcar",
        "triang",
        "blackman",
        "hamming",
        "hann",
        "bartlett",
        "flattop",
        "parzen",
        "bohman",
        "blackmanharris",
        "nuttall",
        "barthann",
        "cosine",
        "exponential",
        "tukey",
        "taylor",
        "lanczos",
        ("kaiser", 4.0),
        ("gaussian", 2.0),
        ("general_gaussian", 1.5, 7.0),
        ("general_cosine", [0.5, 0.3, 0.2]),
        ("general_hamming", 0.7),
        ("dpss", 3.0),
        ("chebwin", 80.0),
        ("exponential", None, 3.0),
        ("tukey", 0.7),
        ("kaiser_bessel_derived", 6.0),
    ],
    ids=str,
)
def test_every_window_name(spec):
    for n, fftbins in ((16, True), (15, False)):
        if spec == ("kaiser_bessel_derived", 6.0) and (n % 2 or fftbins):
            continue  # scipy: even length, symmetric only
        w = S.get_window(spec, n, fftbins, dtype=torch.float64)
        assert_close64(w, ss.get_window(spec, n, fftbins=fftbins))
    assert (
        S.get_window(spec if spec != ("kaiser_bessel_derived", 6.0) else "hann", 8).dtype
        == torch.float64  # scipy's dtype
    )


def test_complex_second_input_and_nd_broadcast():
    a, b = randn((3, 1, 40, 9), torch.complex128, 1), randn((1, 2, 7, 4), torch.complex128, 2)
    for name, mode, method in itertools.product(
        ("convolve", "correlate"), ("full", "same", "valid"), ("direct", "fft", "oa")
    ):
        ours = getattr(S, name)(a, b, mode=mode, method=method, dim=(-2, -1))
        scipy_fn = ss.fftconvolve if name == "convolve" else None
        if scipy_fn is None:  # correlate over axes: convolve with in2 reversed and conjugated
            ref = ss.fftconvolve(
                a.numpy(), np.conj(b.numpy()[..., ::-1, ::-1]), mode=mode, axes=(-2, -1)
            )
        else:
            ref = scipy_fn(a.numpy(), b.numpy(), mode=mode, axes=(-2, -1))
        assert_close64(ours, ref)
    a1, b1 = randn((30,), torch.complex128, 3), randn((8,), torch.complex128, 4)
    for mode in ("full", "same", "valid"):
        assert_close64(
            S.correlate(a1, b1, mode=mode), ss.correlate(a1.numpy(), b1.numpy(), mode=mode)
        )
        assert_close64(
            S.correlate(b1, a1, mode=mode), ss.correlate(b1.numpy(), a1.numpy(), mode=mode)
        )
