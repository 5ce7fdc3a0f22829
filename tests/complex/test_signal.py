"""scipy.signal ops: gradients (gradcheck/gradgradcheck), warnings and error messages."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import research_ext.complex as rxc
from tests.complex.spectral_utils import randn

S = rxc.signal

REAL_OPS = {  # scipy requires real input for these
    "hilbert": lambda x: S.hilbert(x, N=20),
    "hilbert2": lambda x: S.hilbert2(x.reshape(3, 8)),
}

ANY_OPS = {
    "fftconvolve": lambda x: S.fftconvolve(x, x[:5].flip(0) * 0.5),
    "oaconvolve": lambda x: S.oaconvolve(torch.cat([x, x]), x[:3]),
    "convolve_direct": lambda x: S.convolve(x, x[:4], method="direct"),
    "correlate": lambda x: S.correlate(x, x[:6], mode="same"),
    "csd": lambda x: S.csd(x, x.flip(0), nperseg=8)[1],
    "coherence": lambda x: S.coherence(x, x.flip(0) + 0.3 * x.roll(3), nperseg=8)[1],
    "stft": lambda x: S.stft(x, nperseg=8, return_onesided=not x.is_complex())[2],
    "istft": lambda x: S.istft(
        S.stft(x, nperseg=8, return_onesided=not x.is_complex())[2],
        nperseg=8,
        input_onesided=not x.is_complex(),
    )[1],
    "czt": lambda x: S.czt(x, m=7, w=0.99 * torch.exp(torch.tensor(-0.3j)).item(), a=1.1),
    "zoom_fft": lambda x: S.zoom_fft(x, (0.1, 0.6), m=9),
    "resample": lambda x: S.resample(x, 17),
    "envelope": lambda x: S.envelope(x + 3.0, residual="all", n_out=30),
    "welch": lambda x: S.welch(x, nperseg=8, detrend="linear")[1],
    "welch_median": lambda x: S.welch(x, nperseg=8, average="median")[1],
    "periodogram": lambda x: S.periodogram(x, window="hann")[1],
    "spectrogram": lambda x: S.spectrogram(x, nperseg=8, return_onesided=not x.is_complex())[2],
    "resample_poly": lambda x: S.resample_poly(x, 3, 2, dim=-1),
}


@pytest.mark.parametrize("name", sorted(REAL_OPS))
def test_gradcheck_real(name):
    x = randn((24,), torch.float64).requires_grad_()
    fn = REAL_OPS[name]
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("name", sorted(ANY_OPS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_real_and_complex(name, dtype):
    x = randn((24,), dtype).requires_grad_()
    assert gradcheck(ANY_OPS[name], (x,))
    if name != "welch_median":  # the median's selection is piecewise linear: first order only
        assert gradgradcheck(ANY_OPS[name], (x,))


def test_dtype_and_batch_follow_input():
    x = torch.randn(2, 3, 512)
    assert S.hilbert(x).dtype == torch.complex64
    f, p = S.welch(x, nperseg=64)
    assert p.dtype == torch.float32 and f.dtype == torch.float32 and p.shape == (2, 3, 33)
    assert S.fftconvolve(x, torch.randn(1, 1, 9), dim=-1).shape == (2, 3, 520)
    assert S.stft(x, nperseg=64)[2].dtype == torch.complex64


def test_warnings_like_scipy():
    x = torch.randn(100, dtype=torch.float64)
    with pytest.warns(
        UserWarning, match=r"welch: nperseg=256 is greater than the signal length 100"
    ):
        f, p = S.welch(x)
    assert p.shape == (51,)
    with pytest.warns(
        UserWarning, match=r"stft: input is complex, switching to return_onesided=False"
    ):
        S.stft(x.to(torch.complex128), nperseg=16)
    z = S.stft(x, nperseg=16, window="boxcar", noverlap=0)[2]
    with pytest.warns(UserWarning, match=r"istft: NOLA condition failed"):
        S.istft(z, nperseg=16, window=torch.zeros(16, dtype=torch.float64), noverlap=0)


def test_errors():
    x = torch.randn(64, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"welch: `noverlap` must be less than nperseg=16, got noverlap=16"
    ):
        S.welch(x, nperseg=16, noverlap=16)
    with pytest.raises(ValueError, match=r"welch: `nfft` must be >= nperseg=16, got nfft=8"):
        S.welch(x, nperseg=16, nfft=8)
    with pytest.raises(ValueError, match=r"welch: `average` must be one of 'mean', 'median'"):
        S.welch(x, average="max")
    with pytest.raises(ValueError, match=r"csd: `scaling` must be one of 'density', 'spectrum'"):
        S.csd(x, x, scaling="psd")
    with pytest.raises(ValueError, match=r"welch: `detrend` must be one of 'constant', 'linear'"):
        S.welch(x, detrend="quadratic")
    with pytest.raises(ValueError, match=r"^Invalid window name 'nonexistent'"):  # scipy's error
        S.get_window("nonexistent", 8)
    with pytest.raises(ValueError, match=r"welch: `window` must not be longer than the signal"):
        S.welch(x, window=torch.ones(100, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"welch: `x` must have an integer, bool, float32, float64"):
        S.welch(torch.ones(10, dtype=torch.bfloat16))  # no numpy dtype
    with pytest.raises(ValueError, match=r"hilbert: `x` must be real"):
        S.hilbert(x.to(torch.complex128))
    with pytest.raises(
        ValueError, match=r"convolve: `mode` must be one of 'full', 'valid', 'same'"
    ):
        S.convolve(x, x, mode="middle")
    with pytest.raises(ValueError, match=r"correlate: `method` must be one of 'auto', 'direct'"):
        S.correlate(x, x, method="slow")
    with pytest.raises(
        ValueError, match=r"fftconvolve: `in1` and `in2` must have the same number of dims"
    ):
        S.fftconvolve(x, x[None])
    with pytest.raises(ValueError, match=r"must broadcast along the dims not convolved"):
        S.fftconvolve(torch.randn(2, 8), torch.randn(3, 8), dim=-1)
    with pytest.raises(ValueError, match=r"for mode='valid' one input must be at least as large"):
        S.convolve(torch.randn(5, 3), torch.randn(3, 5), mode="valid")
    with pytest.raises(ValueError, match=r"stft: `boundary` must be one of"):
        S.stft(x, nperseg=8, boundary="wrap")
    with pytest.raises(ValueError, match=r"spectrogram: `mode` must be one of 'psd', 'complex'"):
        S.spectrogram(x, mode="power")
    with pytest.raises(ValueError, match=r"istft: `time_dim` and `freq_dim` must differ"):
        S.istft(torch.zeros(5, 4, dtype=torch.complex128), time_dim=0, freq_dim=0)
    with pytest.raises(ValueError, match=r"envelope: `bp_in` must be a pair with -n//2"):
        S.envelope(x, bp_in=(10, 5))
    with pytest.raises(
        ValueError, match=r"envelope: `residual` must be one of 'lowpass', 'all', None"
    ):
        S.envelope(x, residual="highpass")
    with pytest.raises(ValueError, match=r"resample: `num` must be a positive int, got num=0"):
        S.resample(x, 0)
    with pytest.raises(ValueError, match=r"resample_poly: `up` must be a positive int, got up=0"):
        S.resample_poly(x, 0, 1)
    with pytest.raises(NotImplementedError, match=r"resample_poly: padtype='constant' with cval"):
        S.resample_poly(x, 2, 1, cval=1.5)
    with pytest.raises(ValueError, match=r"resample_poly: `cval` must be None unless padtype"):
        S.resample_poly(x, 2, 1, padtype="edge", cval=1.5)
    with pytest.raises(ValueError, match=r"zoom_fft: `fn` must be a scalar or a pair"):
        S.zoom_fft(x, (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"correlation_lags: `mode` must be one of"):
        S.correlation_lags(3, 2, "centre")
    with pytest.raises(ValueError, match=r"stft: `window` must not be longer than the signal"):
        S.stft(torch.randn(5, dtype=torch.float64), window=torch.ones(16), nperseg=16)


def test_auto_method_never_direct_for_long_kernels():
    from research_ext.complex._scipy_signal.convolve import _choose

    x = torch.zeros(100_000)
    assert _choose(x, torch.zeros(3), (0,)) == "direct"
    assert _choose(x, torch.zeros(31), (0,)) == "fft"  # the FFT path splits into blocks itself
    assert _choose(x, torch.zeros(65535), (0,)) == "fft"
    assert _choose(torch.zeros(20), torch.zeros(20), (0,)) == "direct"  # 400 multiply-adds
