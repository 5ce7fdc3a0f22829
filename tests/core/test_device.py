import pytest
import torch

from research_ext.core import resolve_device, resolve_dtype
from research_ext.errors import DeviceUnavailableError


def test_auto_picks_best_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@pytest.mark.parametrize("spec", ["cpu", torch.device("cpu")])
def test_cpu(spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_unavailable_cuda(spec):
    with pytest.raises(
        DeviceUnavailableError, match=r"resolve_device: `device` 'cuda(:\d)?' is not available"
    ):
        resolve_device(spec)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the no-MPS error")
def test_unavailable_mps():
    with pytest.raises(DeviceUnavailableError, match="'mps' is not available"):
        resolve_device("mps")


def test_unknown_device_string():
    with pytest.raises(
        ValueError, match=r"resolve_device: `device` must be 'auto', 'cpu', .*got device='gpu0'"
    ):
        resolve_device("gpu0")


def test_wrong_type():
    with pytest.raises(TypeError, match=r"`device` must be .*got device=3"):
        resolve_device(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("float64", torch.float64),
        ("double", torch.float64),
        ("torch.float32", torch.float32),
        (torch.complex64, torch.complex64),
        ("complex128", torch.complex128),
    ],
)
def test_dtype_names(spec, expected):
    assert resolve_dtype(spec) is expected


def test_dtype_default():
    assert resolve_dtype(None) is torch.get_default_dtype()
    assert resolve_dtype(None, default=torch.float64) is torch.float64


def test_dtype_errors():
    with pytest.raises(
        ValueError, match=r"resolve_dtype: `dtype` must be one of .*got dtype='float128'"
    ):
        resolve_dtype("float128")
    with pytest.raises(
        TypeError, match=r"`dtype` must be a torch.dtype, a name or None, got dtype=1"
    ):
        resolve_dtype(1)  # type: ignore[arg-type]
