"""research_ext.core on every available device: linear operators and the numpy bridge.

Each operator of the ``LinearOperator`` family (and their sums, scalings, products, adjoints
and transposes) is built on the ``device`` fixture's device; products must stay there and equal
the dense float64/complex128 matrix's on the CPU. The numpy bridge round-trips from the device.
"""

from collections.abc import Callable

import numpy as np
import pytest
import torch

import research_ext.core as rcore
from tests.devices.common import assert_matches, assert_on, randn

N = 5


def _dense(dtype: torch.dtype, seed: int) -> torch.Tensor:
    return randn((N, N), dtype, seed)


def _hermitian(dtype: torch.dtype) -> torch.Tensor:
    a = randn((N, N), dtype, seed=3)
    return a + a.mH


# name -> factory(device, dtype) -> (operator on device, its dense matrix on the CPU)
Factory = Callable[[torch.device, torch.dtype], tuple[rcore.LinearOperator, torch.Tensor]]


def _dense_op(device, dtype):
    a = _dense(dtype, 1)
    return rcore.DenseOperator(a.to(device)), a


def _hermitian_op(device, dtype):
    a = _hermitian(dtype)
    return rcore.DenseOperator(a.to(device), is_hermitian=True), a


def _diagonal_op(device, dtype):
    d = randn((N,), dtype, seed=2)
    return rcore.DiagonalOperator(d.to(device)), torch.diag(d)


def _identity_op(device, dtype):
    return rcore.IdentityOperator(N, dtype=dtype, device=device), torch.eye(N, dtype=dtype)


def _composed_op(device, dtype):
    (a, da), (d, dd), (i, di) = (
        _dense_op(device, dtype),
        _diagonal_op(device, dtype),
        _identity_op(device, dtype),
    )
    op = (a + 2.5 * d) @ (i - d / 3.0) - (-a.H)
    return op, (da + 2.5 * dd) @ (di - dd / 3.0) + da.mH


FACTORIES: dict[str, Factory] = {
    "dense": _dense_op,
    "hermitian": _hermitian_op,
    "diagonal": _diagonal_op,
    "identity": _identity_op,
    "composed": _composed_op,
}
DTYPES = [torch.float64, torch.complex128]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "complex128"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_linear_operator_products_on_device(device, name, dtype):
    op, dense = FACTORIES[name](device, dtype)
    assert op.device.type == device.type and op.dtype == dtype
    v, m = randn((N,), dtype, seed=10), randn((N, 3), dtype, seed=11)
    got = {
        "matvec": op.matvec(v.to(device)),
        "matmat": op.matmat(m.to(device)),
        "rmatvec": op.rmatvec(v.to(device)),
        "rmatmat": op.rmatmat(m.to(device)),
        "matmul": op @ m.to(device),
        "dense": op.to_dense(),
        "adjoint": op.H.to_dense(),
        "transpose": op.T.to_dense(),
        "adjoint_matvec": op.H.matvec(v.to(device)),
    }
    want = {
        "matvec": dense @ v,
        "matmat": dense @ m,
        "rmatvec": dense.mH @ v,
        "rmatmat": dense.mH @ m,
        "matmul": dense @ m,
        "dense": dense,
        "adjoint": dense.mH,
        "transpose": dense.mT,
        "adjoint_matvec": dense.mH @ v,
    }
    assert_on(got, device)
    assert_matches(got, want)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_scipy_view_of_a_device_operator(device, name):
    op, dense = FACTORIES[name](device, torch.float64)
    view, a = op.to_scipy(), dense.numpy()
    v, m = randn((N,), seed=10).numpy(), randn((N, 3), seed=11).numpy()
    got = [view.matvec(v), view.matmat(m), view.rmatvec(v), view.rmatmat(m)]
    assert all(isinstance(x, np.ndarray) for x in got)
    assert_matches(got, [a @ v, a @ m, a.T @ v, a.T @ m])


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex64, torch.int64, torch.bool]
)
def test_numpy_round_trip_from_device(device, dtype):
    t = (randn((3, 4), torch.complex128 if dtype.is_complex else torch.float64, seed=4) * 3).to(
        dtype
    )
    array = rcore.to_numpy(t.to(device))
    assert isinstance(array, np.ndarray) and array.shape == (3, 4)
    back = rcore.from_numpy(array, device=device)
    assert back.device.type == device.type and back.dtype == dtype
    assert torch.equal(back.cpu(), t)
    # A gradient-tracking device tensor converts too (detached, copied to the host).
    leaf = torch.ones(2, device=device, requires_grad=True)
    assert np.array_equal(rcore.to_numpy(leaf * 2), np.full(2, 2.0, dtype=np.float32))
    converted = rcore.from_numpy(array, device=device, dtype=torch.complex128)
    assert converted.device.type == device.type and converted.dtype == torch.complex128
