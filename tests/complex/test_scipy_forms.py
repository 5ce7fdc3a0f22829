"""scipy's argument forms, dtype rules, empty inputs and validation, each against scipy itself."""

import numpy as np
import pytest
import scipy.fft as sf
import torch

import research_ext.complex as rxc
from tests.helpers import RTOL_FLOAT32, RTOL_FLOAT64

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
