"""Every LinearOperator operation compared against explicit dense matrices in float64."""

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from hypothesis import given, strategies as st

from research_ext.core import DenseOperator, DiagonalOperator, IdentityOperator, LinearOperator
from tests.helpers import (
    ATOL_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_ARPACK_EIGENVALUES_FLOAT64,
    RTOL_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)

F64 = torch.float64


def _random(shape, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.randn(*shape, generator=g, dtype=torch.float64)
        imag = torch.randn(*shape, generator=g, dtype=torch.float64)
        return torch.complex(real, imag).to(dtype)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _operators(dtype):
    """(operator, dense matrix) pairs covering every concrete class and every composition."""
    a = _random((4, 4), 0, dtype)
    b = _random((4, 4), 1, dtype)
    r = _random((4, 3), 2, dtype)
    d = _random((4,), 3, dtype)
    sym = a + a.mH
    A, B, R, D = DenseOperator(a), DenseOperator(b), DenseOperator(r), DiagonalOperator(d)
    eye = IdentityOperator(4, dtype=dtype)
    return {
        "dense": (A, a),
        "rectangular": (R, r),
        "hermitian": (DenseOperator(sym, is_hermitian=True), sym),
        "diagonal": (D, torch.diag(d)),
        "identity": (eye, torch.eye(4, dtype=dtype)),
        "sum": (A + B, a + b),
        "difference": (A - D, a - torch.diag(d)),
        "negation": (-A, -a),
        "scaled": (2.5 * A, 2.5 * a),
        "scaled_right": (A * -0.5, -0.5 * a),
        "divided": (A / 4, a / 4),
        "product": (A @ R, a @ r),
        "adjoint": (R.H, r.mH),
        "transpose": (R.T, r.mT),
        "adjoint_of_product": ((A @ R).H, (a @ r).mH),
        "nested": (
            (A + eye) @ (B - 2 * D),
            (a + torch.eye(4, dtype=dtype)) @ (b - 2 * torch.diag(d)),
        ),
    }


CASES = list(_operators(F64))


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("name", CASES)
class TestAgainstDense:
    def test_matvec_and_matmul_vector(self, name, dtype):
        op, dense = _operators(dtype)[name]
        v = _random((op.shape[1],), 10, dtype)
        _close(op.matvec(v), dense @ v)
        _close(op @ v, dense @ v)

    def test_matmat_and_matmul_matrix(self, name, dtype):
        op, dense = _operators(dtype)[name]
        x = _random((op.shape[1], 5), 11, dtype)
        _close(op.matmat(x), dense @ x)
        _close(op @ x, dense @ x)

    def test_adjoint_products(self, name, dtype):
        op, dense = _operators(dtype)[name]
        w = _random((op.shape[0],), 12, dtype)
        x = _random((op.shape[0], 3), 13, dtype)
        _close(op.rmatvec(w), dense.mH @ w)
        _close(op.rmatmat(x), dense.mH @ x)
        _close(op.H.to_dense(), dense.mH)
        _close(op.T.to_dense(), dense.mT)

    def test_left_multiplication(self, name, dtype):
        op, dense = _operators(dtype)[name]
        w = _random((op.shape[0],), 14, dtype)
        rows = _random((2, op.shape[0]), 15, dtype)
        _close(w @ op, w @ dense)
        _close(rows @ op, rows @ dense)

    def test_to_dense_shape_dtype(self, name, dtype):
        op, dense = _operators(dtype)[name]
        assert op.shape == tuple(dense.shape)
        assert op.dtype == dense.dtype
        _close(op.to_dense(), dense)

    def test_to_scipy_products(self, name, dtype):
        op, dense = _operators(dtype)[name]
        sp = op.to_scipy()
        dn = dense.resolve_conj().numpy()
        x = np.asarray(_random((op.shape[1], 2), 16, dtype).numpy())
        np.testing.assert_allclose(
            sp.matvec(x[:, 0]),
            dn @ x[:, 0],
            rtol=RTOL_REORDERED_FLOAT64,
            atol=ATOL_REORDERED_UNIT_FLOAT64,
        )
        np.testing.assert_allclose(
            sp.matmat(x), dn @ x, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_UNIT_FLOAT64
        )
        y = np.asarray(_random((op.shape[0],), 17, dtype).numpy())
        np.testing.assert_allclose(
            sp.rmatvec(y),
            dn.conj().T @ y,
            rtol=RTOL_REORDERED_FLOAT64,
            atol=ATOL_REORDERED_UNIT_FLOAT64,
        )


@pytest.mark.parametrize("n,k", [(20, 3), (50, 5)])
def test_to_scipy_eigsh_agrees_with_eigh(n, k):
    m = _random((n, n), n)
    sym = m @ m.T + torch.diag(torch.arange(n, dtype=F64))
    op = DenseOperator(sym, is_hermitian=True)
    top = scipy.sparse.linalg.eigsh(op.to_scipy(), k=k, which="LA", return_eigenvectors=False)
    exact = np.linalg.eigh(sym.numpy())[0]
    np.testing.assert_allclose(np.sort(top), exact[-k:], rtol=RTOL_ARPACK_EIGENVALUES_FLOAT64)


def test_eigsh_on_composed_operator():
    a = _random((30, 30), 5)
    op = DenseOperator(a).T @ DenseOperator(a) + 3 * IdentityOperator(30, dtype=F64)
    top = scipy.sparse.linalg.eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    exact = np.linalg.eigh((a.T @ a).numpy() + 3 * np.eye(30))[0]
    np.testing.assert_allclose(np.sort(top), exact[-2:], rtol=RTOL_ARPACK_EIGENVALUES_FLOAT64)


@given(
    m=st.integers(1, 6),
    n=st.integers(1, 6),
    alpha=st.floats(-3, 3),
    beta=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_linearity_property(m, n, alpha, beta, seed):
    a = _random((m, n), seed)
    op = DenseOperator(a) * 2.0 - DenseOperator(a)
    x, y = _random((n,), seed + 1), _random((n,), seed + 2)
    _close(op @ (alpha * x + beta * y), alpha * (op @ x) + beta * (op @ y))


@given(m=st.integers(1, 6), n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_adjoint_identity_property(m, n, seed):
    a = _random((m, n), seed, torch.complex128)
    op = DenseOperator(a) @ (IdentityOperator(n, dtype=torch.complex128) * 1.5)
    v = _random((n,), seed + 1, torch.complex128)
    w = _random((m,), seed + 2, torch.complex128)
    lhs = torch.vdot(w, op @ v)
    rhs = torch.vdot(op.H @ w, v)
    _close(lhs, rhs)


def test_custom_subclass_gets_everything_from_matmat():
    class Shift(LinearOperator):
        is_hermitian = False

        @property
        def shape(self):
            return (3, 3)

        @property
        def dtype(self):
            return F64

        @property
        def device(self):
            return torch.device("cpu")

        def _matmat(self, matrix):
            return torch.roll(matrix, 1, dims=0)

    op = Shift()
    dense = torch.roll(torch.eye(3, dtype=F64), 1, dims=0)
    _close(op.to_dense(), dense)
    _close((op @ op) @ torch.arange(3.0, dtype=F64), dense @ dense @ torch.arange(3.0, dtype=F64))
    with pytest.raises(NotImplementedError, match="Shift: the adjoint product is not implemented"):
        op.rmatvec(torch.ones(3, dtype=F64))


class TestErrors:
    def test_matvec_shape(self):
        op = DenseOperator(torch.ones(2, 3))
        with pytest.raises(
            ValueError, match=r"DenseOperator.matvec: .*expected \(3,\), got \(2,\)"
        ):
            op.matvec(torch.ones(2))

    def test_matmat_shape(self):
        op = DenseOperator(torch.ones(2, 3))
        with pytest.raises(ValueError, match=r"expected \(3, k\), got \(4, 1\)"):
            op.matmat(torch.ones(4, 1))

    def test_matmul_three_dims(self):
        with pytest.raises(ValueError, match="operand must be 1-D or 2-D"):
            DenseOperator(torch.ones(2, 2)) @ torch.ones(2, 2, 2)

    def test_non_tensor_operand(self):
        with pytest.raises(TypeError, match="must be a torch.Tensor"):
            DenseOperator(torch.ones(2, 2)).matvec([1.0, 2.0])

    def test_sum_shapes(self):
        with pytest.raises(ValueError, match=r"shapes must match, got \(2, 2\) and \(3, 3\)"):
            DenseOperator(torch.ones(2, 2)) + IdentityOperator(3)

    def test_product_shapes(self):
        with pytest.raises(ValueError, match=r"inner dimensions must match"):
            DenseOperator(torch.ones(2, 3)) @ IdentityOperator(2)

    def test_dense_needs_matrix(self):
        with pytest.raises(
            ValueError, match=r"DenseOperator: `matrix` must be a 2-D tensor, got shape \(3,\)"
        ):
            DenseOperator(torch.ones(3))

    def test_diagonal_needs_vector(self):
        with pytest.raises(ValueError, match="`diagonal` must be a 1-D tensor"):
            DiagonalOperator(torch.ones(3, 3))

    def test_identity_size(self):
        with pytest.raises(
            ValueError, match=r"IdentityOperator: `n` must be a positive int, got n=0"
        ):
            IdentityOperator(0)
        with pytest.raises(TypeError, match=r"`n` must be a positive int, got n=2.0"):
            IdentityOperator(2.0)  # type: ignore[arg-type]

    def test_scalar_multiplication_rejects_tensors(self):
        with pytest.raises(TypeError):
            DenseOperator(torch.ones(2, 2)) * "x"  # type: ignore[operator]

    def test_repr(self):
        assert (
            repr(IdentityOperator(2))
            == "IdentityOperator(shape=(2, 2), dtype=torch.float32, device=cpu)"
        )
