r"""Complex dropout: one Bernoulli mask multiplies the real and the imaginary part alike.

Dropping the two parts independently (``nn.Dropout`` on ``view_as_real``) would rotate phases at
random; sharing the mask keeps every surviving entry's phase intact. Survivors are scaled by
:math:`1/(1-p)` so :math:`E[y] = z`.
"""

import torch
from torch import Tensor, nn

from research_ext.complex._layers.checks import require_complex
from research_ext.core import check_in_range

__all__ = ["ComplexDropout", "ComplexDropout1d", "ComplexDropout2d", "ComplexDropout3d"]


def _dropout(name: str, x: Tensor, p: float, training: bool, mask_shape: tuple[int, ...]) -> Tensor:
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0
    keep = torch.empty(mask_shape, dtype=x.real.dtype, device=x.device).bernoulli_(1 - p)
    return x * (keep / (1 - p))


class _AbstractComplexDropout(nn.Module):
    _spatial: int | None = None

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(check_in_range(type(self).__name__, "p", p, 0.0, 1.0))

    def forward(self, input: Tensor) -> Tensor:
        """Zero entries (or whole channels) with probability ``p``; scale the rest by 1/(1-p)."""
        name = type(self).__name__
        x = require_complex(name, input)
        if self._spatial is None:
            return _dropout(name, x, self.p, self.training, tuple(x.shape))
        allowed = (self._spatial + 1, self._spatial + 2)
        if x.ndim not in allowed:
            raise ValueError(
                f"{name}: `input` must have {allowed[0]} or {allowed[1]} dimensions, "
                f"got input.shape={tuple(x.shape)}"
            )
        lead = x.ndim - self._spatial  # (C,) unbatched or (N, C) batched
        mask_shape = tuple(x.shape[:lead]) + (1,) * self._spatial
        return _dropout(name, x, self.p, self.training, mask_shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ComplexDropout(_AbstractComplexDropout):
    r"""Elementwise complex dropout: :math:`y = m\,z/(1-p)`, :math:`m \sim \mathrm{Bernoulli}(1-p)`.

    The same real mask :math:`m` multiplies :math:`\Re z` and :math:`\Im z`.

    Args:
        p: probability of zeroing an entry, in [0, 1].

    Shape: any complex input; output the same.

    Raises:
        TypeError: for real input.
        ValueError: if ``p`` is outside [0, 1].

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> y = rxc.nn.ComplexDropout(0.5)(torch.full((1000,), 1 + 1j))
        >>> bool(((y.real == 0) == (y.imag == 0)).all())  # one mask for both parts
        True
    """


class ComplexDropout1d(_AbstractComplexDropout):
    r"""Channel dropout for ``(N, C, L)`` or ``(C, L)`` complex input: whole channels are zeroed.

    Args:
        p: probability of zeroing a channel, in [0, 1].

    Raises:
        TypeError: for real input.
        ValueError: if ``p`` is outside [0, 1] or the input rank is not 2 or 3.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> y = rxc.nn.ComplexDropout1d(0.5)(torch.ones(8, 4, 5, dtype=torch.complex64))
        >>> bool((y.abs().amin(-1) == y.abs().amax(-1)).all())  # constant per channel
        True
    """

    _spatial = 1


class ComplexDropout2d(_AbstractComplexDropout):
    r"""Channel dropout for ``(N, C, H, W)`` or ``(C, H, W)`` complex input.

    Args:
        p: probability of zeroing a channel, in [0, 1].

    Raises:
        TypeError: for real input.
        ValueError: if ``p`` is outside [0, 1] or the input rank is not 3 or 4.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> rxc.nn.ComplexDropout2d(0.2)(torch.ones(2, 3, 4, 4, dtype=torch.complex64)).shape
        torch.Size([2, 3, 4, 4])
    """

    _spatial = 2


class ComplexDropout3d(_AbstractComplexDropout):
    r"""Channel dropout for ``(N, C, D, H, W)`` or ``(C, D, H, W)`` complex input.

    Args:
        p: probability of zeroing a channel, in [0, 1].

    Raises:
        TypeError: for real input.
        ValueError: if ``p`` is outside [0, 1] or the input rank is not 4 or 5.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> rxc.nn.ComplexDropout3d(0.2)(torch.ones(2, 3, 2, 2, 2, dtype=torch.complex64)).shape
        torch.Size([2, 3, 2, 2, 2])
    """

    _spatial = 3
