"""IIR filters (lfilter, lfilter_zi, sosfilt, filtfilt): scipy parity, gradients, errors."""

import numpy as np
import pytest
import scipy.signal as ss
import torch
from torch.autograd import gradcheck, gradgradcheck

import research_ext.complex as rxc
from tests.complex.spectral_utils import assert_close32, assert_close64, randn
from tests.helpers import RTOL_SCIPY_PARITY_FLOAT64

S = rxc.signal
FILTERS = {
    "butter4": ss.butter(4, 0.2),  # block solver
    "fir": ([1.0, 2.0, 3.0], [1.0]),
    "first_order": ([0.5], [2.0, -0.3]),
    "cheby1_6": ss.cheby1(6, 1, 0.1),  # ill-conditioned direct form: per-sample loop
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_lfilter_parity(name):
    b, a = FILTERS[name]
    n = 400 if name == "cheby1_6" else 3000
    x = randn((2, 3, n), torch.float64)
    assert_close64(S.lfilter(b, a, x), ss.lfilter(b, a, x.numpy()), RTOL_SCIPY_PARITY_FLOAT64)
    assert_close64(
        S.lfilter(b, a, x.transpose(1, 2), dim=1),
        ss.lfilter(b, a, x.numpy().transpose(0, 2, 1), axis=1),
        RTOL_SCIPY_PARITY_FLOAT64,
    )
    order = max(len(a), len(b)) - 1
    zi = randn((2, 3, order), torch.float64, 7)
    y, zf = S.lfilter(b, a, x, zi=zi)
    ry, rzf = ss.lfilter(b, a, x.numpy(), zi=zi.numpy())
    assert_close64(y, ry, RTOL_SCIPY_PARITY_FLOAT64)
    assert_close64(zf, rzf, RTOL_SCIPY_PARITY_FLOAT64)
    xc = randn((2, n), torch.complex128)
    assert_close64(S.lfilter(b, a, xc), ss.lfilter(b, a, xc.numpy()), RTOL_SCIPY_PARITY_FLOAT64)
    if name == "cheby1_6":  # float32 is meaningless for this ill-conditioned direct form
        return
    x32 = x[0].float()
    assert_close32(
        S.lfilter(b, a, x32),
        ss.lfilter(b, a, x[0].numpy()),
        ss.lfilter(np.float32(b), np.float32(a), x32.numpy()),
    )


def test_lfilter_zi_sosfilt_filtfilt():
    x = randn((2, 2000), torch.float64)
    for b, a in (FILTERS["butter4"], FILTERS["fir"]):
        assert_close64(S.lfilter_zi(b, a), ss.lfilter_zi(b, a))
        for padtype in ("odd", "even", "constant", None):
            assert_close64(
                S.filtfilt(b, a, x, padtype=padtype), ss.filtfilt(b, a, x.numpy(), padtype=padtype)
            )
    sos = ss.butter(8, 0.1, output="sos")
    assert_close64(S.sosfilt(sos, x), ss.sosfilt(sos, x.numpy()))
    zi = randn((sos.shape[0], 2, 2), torch.float64, 3)
    y, zf = S.sosfilt(sos, x, zi=zi)
    ry, rzf = ss.sosfilt(sos, x.numpy(), zi=zi.numpy())
    assert_close64(y, ry)
    assert_close64(zf, rzf)


@pytest.mark.parametrize("name", ["butter4", "cheby1_6"])
def test_gradients(name):
    b, a = FILTERS[name]
    x = randn((12,), torch.float64).requires_grad_()
    zi = randn((len(a) - 1,), torch.float64, 2).requires_grad_()
    # All of these are linear in their inputs, so a large finite-difference step is exact and
    # keeps the ill-conditioned filter's rounding amplification out of the numerical Jacobian.
    assert gradcheck(lambda x, zi: S.lfilter(b, a, x, zi=zi)[0], (x, zi), eps=1e-3)
    assert gradgradcheck(lambda x: S.lfilter(b, a, x), (x,), eps=1e-3)
    assert gradcheck(lambda x: S.filtfilt(b, a, x, padlen=6), (x,), eps=1e-3)
    xc = randn((12,), torch.complex128).requires_grad_()
    assert gradcheck(lambda x: S.lfilter(b, a, x), (xc,), eps=1e-3)


def test_errors():
    x = torch.randn(50, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lfilter: `a\[0\]` must be non-zero"):
        S.lfilter([1.0], [0.0, 1.0], x)
    with pytest.raises(ValueError, match=r"lfilter: `b` and `a` must be non-empty"):
        S.lfilter([], [1.0], x)
    with pytest.raises(ValueError, match=r"lfilter: `zi` must be of shape \(2,\)"):
        S.lfilter([1.0, 0.0, 0.0], [1.0], x, zi=torch.zeros(3))
    with pytest.raises(ValueError, match=r"sosfilt: `sos` must be of shape \(n_sections, 6\)"):
        S.sosfilt([[1.0, 2.0]], x)
    with pytest.raises(ValueError, match=r"filtfilt: `padlen` must be less than the signal length"):
        S.filtfilt([1.0], [1.0], x, padlen=60)
    with pytest.raises(ValueError, match=r"filtfilt: `padtype` must be one of 'odd', 'even'"):
        S.filtfilt([1.0], [1.0], x, padtype="wrap")
    with pytest.raises(TypeError, match=r"lfilter: `x` must have an integer, bool, float32"):
        S.lfilter([1.0], [1.0], torch.ones(5, dtype=torch.bfloat16))  # no numpy dtype
    # integer data are filtered in float64 (scipy's dtype for integer data and float taps)
    y = S.lfilter([1.0], [1.0, -0.5], torch.arange(5))
    assert y.dtype == torch.float64
