r"""Softmax variants for complex scores, and scaled dot-product attention on complex tensors.

``torch.softmax`` rejects complex input: a complex score has no order. Three well-defined choices:

=============  ====================================================================  ==============
``mode``       :math:`\mathrm{softmax}(z)_k`                                         output
=============  ====================================================================  ==============
``"magnitude"``  :math:`\sigma(|z|)_k\,e^{i\angle z_k}` (magnitudes normalised, phase kept)  complex
``"real"``       :math:`\sigma(\Re z)_k` (weights from the real part)                  real weights
``"split"``      :math:`\sigma(\Re z)_k + i\,\sigma(\Im z)_k`                          complex
=============  ====================================================================  ==============

with :math:`\sigma` the ordinary softmax along ``dim``. ``"real"`` is the usual choice for attention
(scores :math:`\Re\langle q, k\rangle`: real, positive weights that sum to 1, so attention is a
convex combination of the values); ``"magnitude"`` keeps the phase of each score. All three
return the input's complex dtype (``"real"`` with a zero imaginary part) so the result multiplies
complex values directly.

References:
    Eilers, Jiang, "Building Blocks for a Complex-Valued Transformer Architecture", ICASSP 2023.
"""

import math

import torch
from torch import Tensor, nn

from research_ext.complex._layers.checks import require_complex
from research_ext.core import check_int, check_one_of

__all__ = ["ComplexSoftmax", "complex_scaled_dot_product_attention", "complex_softmax"]

_MODES = ("magnitude", "real", "split")


def complex_softmax(input: Tensor, dim: int = -1, mode: str = "real") -> Tensor:
    r"""Softmax of complex scores along ``dim`` (see the module table for the three modes).

    Args:
        input: complex tensor, any shape.
        dim: dimension to normalise along.
        mode: ``"magnitude"`` (:math:`\sigma(|z|)e^{i\angle z}`), ``"real"``
            (:math:`\sigma(\Re z)`) or ``"split"`` (:math:`\sigma(\Re z) + i\sigma(\Im z)`).

    Returns:
        Tensor of ``input``'s shape and complex dtype.

    Raises:
        TypeError: for real input.
        ValueError: for an unknown ``mode``.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> z = torch.tensor([1j, -2j], dtype=torch.complex128)
        >>> w = rxc.nn.complex_softmax(z, mode="magnitude")
        >>> torch.allclose(w.abs().sum(), torch.tensor(1.0, dtype=torch.float64))
        True
        >>> torch.allclose(w.angle(), z.angle())
        True
    """
    x = require_complex("complex_softmax", input)
    check_one_of("complex_softmax", "mode", mode, _MODES)
    check_int("complex_softmax", "dim", dim)
    if mode == "magnitude":
        return torch.softmax(x.abs(), dim) * torch.sgn(x)
    weights = torch.softmax(x.real, dim)
    if mode == "real":
        return torch.complex(weights, torch.zeros_like(weights))
    return torch.complex(weights, torch.softmax(x.imag, dim))


class ComplexSoftmax(nn.Module):
    r"""Module form of :func:`complex_softmax`.

    Args:
        dim: dimension to normalise along.
        mode: ``"magnitude"``, ``"real"`` or ``"split"``.

    Raises:
        TypeError: for real input.
        ValueError: for an unknown ``mode``.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> rxc.nn.ComplexSoftmax(mode="split")(torch.zeros(2, dtype=torch.complex64))
        tensor([0.5000+0.5000j, 0.5000+0.5000j])
    """

    def __init__(self, dim: int = -1, mode: str = "real") -> None:
        super().__init__()
        self.dim = check_int("ComplexSoftmax", "dim", dim)
        self.mode = check_one_of("ComplexSoftmax", "mode", mode, _MODES)

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``input`` along ``dim``."""
        return complex_softmax(require_complex("ComplexSoftmax", input), self.dim, self.mode)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}"


def complex_scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mode: str = "real",
    attn_mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    r"""Attention over complex tokens: :math:`\mathrm{softmax}(Q K^H s)\,V` with a complex softmax.

    Scores are the Hermitian products :math:`s\,\langle q_i, k_j\rangle = s\sum_d q_{id}\bar k_{jd}`
    (:math:`s = 1/\sqrt{d}` by default), normalised over keys with :func:`complex_softmax`.

    Args:
        query: complex ``(*, L, d)``.
        key: complex ``(*, S, d)``.
        value: complex ``(*, S, d_v)``.
        mode: softmax mode (``"real"`` uses :math:`\Re\langle q, k\rangle`).
        attn_mask: optional boolean ``(*, L, S)`` mask, ``True`` where attention is allowed.
        scale: score scale; default :math:`1/\sqrt{d}`.

    Returns:
        Complex ``(*, L, d_v)``.

    Raises:
        TypeError: if an input is real.
        ValueError: for mismatched feature sizes or an unknown ``mode``.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> q = k = torch.randn(2, 5, 4, dtype=torch.complex64)
        >>> v = torch.ones(2, 5, 3, dtype=torch.complex64)
        >>> out = rxc.nn.complex_scaled_dot_product_attention(q, k, v)
        >>> torch.allclose(out, v[:, :1].expand(2, 5, 3))  # real weights sum to one
        True
    """
    fn = "complex_scaled_dot_product_attention"
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        require_complex(fn, tensor, name)
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"{fn}: `key` must match query's features and value's length, got "
            f"query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}, "
            f"value.shape={tuple(value.shape)}"
        )
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.mH) * s
    if attn_mask is not None:
        if mode == "magnitude":
            raise ValueError(
                f"{fn}: `mode` must be 'real' or 'split' when `attn_mask` is given, got mode={mode!r}"
            )
        # A masked score gets real and imaginary part -inf, so "real" and "split" give it weight 0.
        scores = scores.masked_fill(~attn_mask, complex(float("-inf"), float("-inf")))
    return complex_softmax(scores, -1, mode) @ value
