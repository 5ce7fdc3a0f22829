"""Matrix-free linear operators on torch tensors, with a bridge to ``scipy.sparse.linalg``.

A :class:`LinearOperator` only knows how to multiply: subclasses implement ``_matmat`` on a block
of column vectors (and ``_adjoint_matmat`` when the adjoint is available), and everything else
(``@``, ``.H``/``.T``, sums, scalar multiples, composition, ``to_dense``, ``to_scipy``) is derived.
The curvature operators of ``research_ext.functional`` are built on it; ``to_scipy`` hands any
operator to scipy's solvers (``eigsh``, ``cg``, ``lsqr``), converting only at the boundary.
"""

import abc
import numbers
from typing import TYPE_CHECKING, Any, final

import numpy as np
import torch

from research_ext.core._bridge import from_numpy, to_numpy
from research_ext.core._validation import check_int, format_message

if TYPE_CHECKING:
    import scipy.sparse.linalg

__all__ = ["DenseOperator", "DiagonalOperator", "IdentityOperator", "LinearOperator"]


class LinearOperator(abc.ABC):
    """A linear map ``A: K^n -> K^m`` known only through products ``A @ X``.

    Subclasses define ``shape``, ``dtype``, ``device`` and ``_matmat``; they may override
    ``_matvec`` (for speed) and ``_adjoint_matmat`` (to support ``.H``/``.T`` on a non-Hermitian
    operator). A Hermitian (symmetric) operator sets ``is_hermitian = True`` and gets its adjoint
    for free.

    Example:
        >>> A = DenseOperator(torch.tensor([[2.0, 1.0], [0.0, 3.0]]))
        >>> (A @ torch.ones(2)).tolist()
        [3.0, 3.0]
        >>> ((2 * A + IdentityOperator(2)) @ torch.ones(2)).tolist()
        [7.0, 7.0]
    """

    #: True when ``A == A.H``; the adjoint product then reuses ``_matmat``.
    is_hermitian: bool = False

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: the operator maps vectors of size n to vectors of size m."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """The dtype of the operator's products."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """The device the products are computed on."""

    @abc.abstractmethod
    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        """``A @ matrix`` for ``matrix`` of shape ``(n, k)``, returning ``(m, k)``."""

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self._matmat(vector.unsqueeze(-1)).squeeze(-1)

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        if self.is_hermitian:
            return self._matmat(matrix)
        raise NotImplementedError(
            f"{type(self).__name__}: the adjoint product is not implemented for this operator"
        )

    # Public products -----------------------------------------------------------------------------

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``A @ v`` for ``v`` of shape ``(n,)``; returns shape ``(m,)``.

        Raises:
            ValueError: if ``vector`` is not of shape ``(n,)``.
        """
        self._check_operand("matvec", vector, ndim=1, size=self.shape[1])
        return self._matvec(vector)

    def matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        """``A @ X`` for ``X`` of shape ``(n, k)``; returns shape ``(m, k)``.

        Raises:
            ValueError: if ``matrix`` is not of shape ``(n, k)``.
        """
        self._check_operand("matmat", matrix, ndim=2, size=self.shape[1])
        return self._matmat(matrix)

    def rmatvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``A^H @ v`` for ``v`` of shape ``(m,)``; returns shape ``(n,)``.

        Raises:
            ValueError: if ``vector`` is not of shape ``(m,)``.
            NotImplementedError: if the operator has no adjoint product.
        """
        self._check_operand("rmatvec", vector, ndim=1, size=self.shape[0])
        return self._adjoint_matmat(vector.unsqueeze(-1)).squeeze(-1)

    def rmatmat(self, matrix: torch.Tensor) -> torch.Tensor:
        """``A^H @ X`` for ``X`` of shape ``(m, k)``; returns shape ``(n, k)``.

        Raises:
            ValueError: if ``matrix`` is not of shape ``(m, k)``.
            NotImplementedError: if the operator has no adjoint product.
        """
        self._check_operand("rmatmat", matrix, ndim=2, size=self.shape[0])
        return self._adjoint_matmat(matrix)

    def _check_operand(self, fn: str, x: Any, *, ndim: int, size: int) -> None:
        name = f"{type(self).__name__}.{fn}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(format_message(name, "x", "a torch.Tensor", type(x).__name__))
        if x.ndim != ndim or x.shape[0] != size:
            expected = f"({size},)" if ndim == 1 else f"({size}, k)"
            raise ValueError(
                f"{name}: operand shape mismatch for an operator of shape {self.shape}: "
                f"expected {expected}, got {tuple(x.shape)}"
            )

    # Algebra -------------------------------------------------------------------------------------

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, LinearOperator):
            return _ProductOperator(self, other)
        if isinstance(other, torch.Tensor):
            if other.ndim == 1:
                return self.matvec(other)
            if other.ndim == 2:
                return self.matmat(other)
            raise ValueError(
                f"{type(self).__name__}.__matmul__: operand must be 1-D or 2-D, "
                f"got shape {tuple(other.shape)}"
            )
        return NotImplemented

    def __rmatmul__(self, other: Any) -> Any:
        # x @ A == (A^T x^T)^T: conj(A^H conj(x)) for row vectors and blocks of rows.
        if isinstance(other, torch.Tensor) and other.ndim == 1:
            return self.T @ other
        if isinstance(other, torch.Tensor) and other.ndim == 2:
            return (self.T @ other.mT).mT
        return NotImplemented

    def __add__(self, other: Any) -> "LinearOperator":
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, other)

    def __sub__(self, other: Any) -> "LinearOperator":
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, _ScaledOperator(other, -1.0))

    def __neg__(self) -> "LinearOperator":
        return _ScaledOperator(self, -1.0)

    def __mul__(self, scalar: Any) -> "LinearOperator":
        if isinstance(scalar, numbers.Number) and not isinstance(scalar, bool):
            return _ScaledOperator(self, scalar)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, scalar: Any) -> "LinearOperator":
        if isinstance(scalar, numbers.Number) and not isinstance(scalar, bool):
            return _ScaledOperator(self, 1.0 / scalar)  # type: ignore[operator]
        return NotImplemented

    @property
    def H(self) -> "LinearOperator":  # noqa: N802 - the conventional name of the adjoint
        """The adjoint (conjugate transpose) ``A^H``."""
        return self if self.is_hermitian else _FlippedOperator(self, transpose=False)

    @property
    def T(self) -> "LinearOperator":  # noqa: N802 - the conventional name of the transpose
        """The transpose ``A^T`` (equal to ``A^H`` for real operators)."""
        if self.is_hermitian and not self.dtype.is_complex:
            return self
        return _FlippedOperator(self, transpose=True)

    # Conversions ---------------------------------------------------------------------------------

    def to_dense(self) -> torch.Tensor:
        """The ``(m, n)`` matrix, by multiplying the identity (n products; small operators only)."""
        eye = torch.eye(self.shape[1], dtype=self.dtype, device=self.device)
        return self._matmat(eye)

    def to_scipy(self) -> "scipy.sparse.linalg.LinearOperator":
        """A ``scipy.sparse.linalg.LinearOperator`` view for scipy's solvers.

        Products convert numpy inputs to this operator's device and dtype, multiply in torch and
        convert back; nothing else crosses the boundary.

        Example:
            >>> from scipy.sparse.linalg import eigsh
            >>> A = DiagonalOperator(torch.tensor([1.0, 5.0, 3.0], dtype=torch.float64))
            >>> round(float(eigsh(A.to_scipy(), k=1)[0][0]), 8)
            5.0
        """
        # Imported here: scipy.sparse.linalg costs every importer of research_ext.core ~0.2 s.
        import scipy.sparse.linalg

        np_dtype = to_numpy(torch.zeros((), dtype=self.dtype)).dtype

        def forward(x: np.ndarray) -> np.ndarray:
            t = from_numpy(np.asarray(x), device=self.device, dtype=self.dtype)
            out = self._matvec(t) if t.ndim == 1 else self._matmat(t)
            return to_numpy(out)

        def adjoint(x: np.ndarray) -> np.ndarray:
            t = from_numpy(np.asarray(x), device=self.device, dtype=self.dtype)
            out = self._adjoint_matmat(t if t.ndim == 2 else t.unsqueeze(-1))
            return to_numpy(out if t.ndim == 2 else out.squeeze(-1))

        return scipy.sparse.linalg.LinearOperator(
            shape=self.shape,
            matvec=forward,
            matmat=forward,
            rmatvec=adjoint,
            rmatmat=adjoint,
            dtype=np_dtype,
        )

    def __repr__(self) -> str:
        m, n = self.shape
        return f"{type(self).__name__}(shape=({m}, {n}), dtype={self.dtype}, device={self.device})"


def _result_dtype(*dtypes: torch.dtype) -> torch.dtype:
    result = dtypes[0]
    for dtype in dtypes[1:]:
        result = torch.promote_types(result, dtype)
    return result


@final
class DenseOperator(LinearOperator):
    """A :class:`LinearOperator` backed by an explicit ``(m, n)`` matrix.

    Args:
        matrix: a 2-D floating or complex tensor.
        is_hermitian: declare the matrix Hermitian (symmetric) so ``.H`` is free.

    Raises:
        ValueError: if ``matrix`` is not 2-D.

    Example:
        >>> DenseOperator(torch.eye(2)).to_dense().tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, matrix: torch.Tensor, *, is_hermitian: bool = False) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
            shape = (
                tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            )
            raise ValueError(f"DenseOperator: `matrix` must be a 2-D tensor, got shape {shape}")
        self.matrix = matrix
        self.is_hermitian = is_hermitian

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)`` of the matrix."""
        return (self.matrix.shape[0], self.matrix.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The matrix dtype."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """The matrix device."""
        return self.matrix.device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.matrix @ matrix

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.matrix @ vector

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.matrix.mH @ matrix

    def to_dense(self) -> torch.Tensor:
        """The matrix itself."""
        return self.matrix


@final
class DiagonalOperator(LinearOperator):
    """The diagonal operator ``diag(d)``, multiplying elementwise.

    Args:
        diagonal: a 1-D tensor of length n.

    Raises:
        ValueError: if ``diagonal`` is not 1-D.

    Example:
        >>> (DiagonalOperator(torch.tensor([2.0, 3.0])) @ torch.ones(2)).tolist()
        [2.0, 3.0]
    """

    def __init__(self, diagonal: torch.Tensor) -> None:
        if not isinstance(diagonal, torch.Tensor) or diagonal.ndim != 1:
            shape = (
                tuple(diagonal.shape)
                if isinstance(diagonal, torch.Tensor)
                else type(diagonal).__name__
            )
            raise ValueError(
                f"DiagonalOperator: `diagonal` must be a 1-D tensor, got shape {shape}"
            )
        self.diagonal = diagonal
        self.is_hermitian = not diagonal.is_complex()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        n = self.diagonal.shape[0]
        return (n, n)

    @property
    def dtype(self) -> torch.dtype:
        """The diagonal's dtype."""
        return self.diagonal.dtype

    @property
    def device(self) -> torch.device:
        """The diagonal's device."""
        return self.diagonal.device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.diagonal.unsqueeze(-1) * matrix

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.diagonal * vector

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.diagonal.conj().unsqueeze(-1) * matrix


@final
class IdentityOperator(LinearOperator):
    """The ``n x n`` identity.

    Args:
        n: the dimension, a positive int.
        dtype: the dtype of products (default: torch's default dtype).
        device: the device of products (default: cpu).

    Raises:
        TypeError, ValueError: if ``n`` is not a positive int.

    Example:
        >>> (IdentityOperator(3) @ torch.arange(3.0)).tolist()
        [0.0, 1.0, 2.0]
    """

    is_hermitian = True

    def __init__(
        self, n: int, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.n = check_int("IdentityOperator", "n", n, minimum=1)
        self._dtype = dtype or torch.get_default_dtype()
        self._device = torch.device(device)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.n, self.n)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype given at construction."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device given at construction."""
        return self._device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return vector


@final
class _SumOperator(LinearOperator):
    def __init__(self, left: LinearOperator, right: LinearOperator) -> None:
        if left.shape != right.shape:
            raise ValueError(
                f"LinearOperator.__add__: shapes must match, got {left.shape} and {right.shape}"
            )
        self.left, self.right = left, right
        self.is_hermitian = left.is_hermitian and right.is_hermitian

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape

    @property
    def dtype(self) -> torch.dtype:
        return _result_dtype(self.left.dtype, self.right.dtype)

    @property
    def device(self) -> torch.device:
        return self.left.device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.left._matmat(matrix) + self.right._matmat(matrix)

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.left._matvec(vector) + self.right._matvec(vector)

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.left._adjoint_matmat(matrix) + self.right._adjoint_matmat(matrix)


@final
class _ScaledOperator(LinearOperator):
    def __init__(self, operator: LinearOperator, scalar: Any) -> None:
        self.operator, self.scalar = operator, scalar
        real_scalar = not isinstance(scalar, complex) or scalar.imag == 0
        self.is_hermitian = operator.is_hermitian and real_scalar

    @property
    def shape(self) -> tuple[int, int]:
        return self.operator.shape

    @property
    def dtype(self) -> torch.dtype:
        if isinstance(self.scalar, complex):
            return _result_dtype(self.operator.dtype, torch.complex64)
        return self.operator.dtype

    @property
    def device(self) -> torch.device:
        return self.operator.device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.scalar * self.operator._matmat(matrix)

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.scalar * self.operator._matvec(vector)

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.scalar.conjugate() * self.operator._adjoint_matmat(matrix)


@final
class _ProductOperator(LinearOperator):
    def __init__(self, left: LinearOperator, right: LinearOperator) -> None:
        if left.shape[1] != right.shape[0]:
            raise ValueError(
                f"LinearOperator.__matmul__: inner dimensions must match, "
                f"got {left.shape} @ {right.shape}"
            )
        self.left, self.right = left, right

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return _result_dtype(self.left.dtype, self.right.dtype)

    @property
    def device(self) -> torch.device:
        return self.left.device

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.left._matmat(self.right._matmat(matrix))

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.left._matvec(self.right._matvec(vector))

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.right._adjoint_matmat(self.left._adjoint_matmat(matrix))


@final
class _FlippedOperator(LinearOperator):
    # The adjoint A^H, or with ``transpose`` the transpose A^T X = conj(A^H conj(X)); for real
    # operators the conjugations are no-ops. Flipping the same way twice gives ``operator`` back.
    def __init__(self, operator: LinearOperator, *, transpose: bool) -> None:
        self.operator = operator
        self.transpose = transpose

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.operator.shape
        return (n, m)

    @property
    def dtype(self) -> torch.dtype:
        return self.operator.dtype

    @property
    def device(self) -> torch.device:
        return self.operator.device

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return super().H if self.transpose else self.operator

    @property
    def T(self) -> LinearOperator:  # noqa: N802
        return self.operator if self.transpose else super().T

    def _flip(self, product: Any, matrix: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            return product(matrix.conj()).conj()
        return product(matrix)

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self._flip(self.operator._adjoint_matmat, matrix)

    def _adjoint_matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        return self._flip(self.operator._matmat, matrix)
