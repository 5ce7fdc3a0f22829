r"""Initialisers for complex weights (Trabelsi et al., section 3.6).

A complex weight :math:`w = |w|\,e^{i\theta}` with Rayleigh magnitude (scale :math:`\sigma`) and
uniform phase has :math:`E[w] = 0` and :math:`E|w|^2 = 2\sigma^2`. The criteria pick
:math:`\sigma` so that :math:`E|w|^2` equals the real He or Glorot variance:

* :func:`complex_kaiming_`: :math:`E|w|^2 = \mathrm{gain}^2/\mathrm{fan}` (``gain=sqrt(2)``
  gives Trabelsi's He criterion :math:`2/\mathrm{fan\_in}`);
* :func:`complex_xavier_`: :math:`E|w|^2 = 2\,\mathrm{gain}^2/(\mathrm{fan\_in} + \mathrm{fan\_out})`;
* :func:`complex_unitary_`: rows (or columns) of the flattened weight orthonormal over
  :math:`\mathbb C`, times ``gain``.

Fans follow torch: for a weight of shape ``(out, in, *kernel)``,
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

References:
    Trabelsi et al., "Deep Complex Networks", ICLR 2018.
"""

import math

import torch
from torch import Tensor

from research_ext.complex._layers.checks import real_dtype_for, require_complex
from research_ext.core import check_one_of, check_positive, format_message

__all__ = ["complex_kaiming_", "complex_rayleigh_", "complex_unitary_", "complex_xavier_"]


def _fans(fn: str, tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(format_message(fn, "tensor", "at least 2-d", tuple(tensor.shape)))
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


@torch.no_grad()
def complex_rayleigh_(
    tensor: Tensor, scale: float = 1.0, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill ``tensor`` with Rayleigh(``scale``) magnitudes and uniform phases, in place.

    :math:`|w| = \sigma\sqrt{-2\log u_1}`, :math:`\theta = 2\pi u_2 - \pi`, :math:`u_i \sim U(0, 1)`;
    then :math:`E|w|^2 = 2\sigma^2`.

    Args:
        tensor: complex tensor (any shape), overwritten.
        scale: Rayleigh scale :math:`\sigma > 0`.
        generator: optional ``torch.Generator`` on ``tensor``'s device.

    Returns:
        ``tensor``.

    Raises:
        TypeError: if ``tensor`` is not complex.
        ValueError: if ``scale`` is not positive.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> w = rxc.nn.init.complex_rayleigh_(torch.empty(200, 200, dtype=torch.complex128), 0.5)
        >>> bool(abs(w.abs().pow(2).mean() - 0.5) < 0.02)  # 2 sigma^2
        True
    """
    require_complex("complex_rayleigh_", tensor, "tensor")
    check_positive("complex_rayleigh_", "scale", scale)
    real = real_dtype_for(tensor.dtype)
    u1 = torch.rand(tensor.shape, dtype=real, device=tensor.device, generator=generator)
    u2 = torch.rand(tensor.shape, dtype=real, device=tensor.device, generator=generator)
    magnitude = scale * torch.sqrt(-2 * torch.log1p(-u1))
    return tensor.copy_(torch.polar(magnitude, 2 * math.pi * u2 - math.pi))


def complex_kaiming_(
    tensor: Tensor,
    gain: float = math.sqrt(2.0),
    mode: str = "fan_in",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Complex He initialisation: :math:`E|w|^2 = \mathrm{gain}^2/\mathrm{fan}`, in place.

    Rayleigh magnitudes with :math:`\sigma = \mathrm{gain}/\sqrt{2\,\mathrm{fan}}`, uniform phases.

    Args:
        tensor: complex weight of shape ``(out, in, *kernel)``, overwritten.
        gain: :math:`\sqrt2` (default) is Trabelsi's He criterion; 1 preserves :math:`E|z|^2`
            through a linear layer.
        mode: ``"fan_in"`` or ``"fan_out"``.
        generator: optional ``torch.Generator`` on ``tensor``'s device.

    Returns:
        ``tensor``.

    Raises:
        TypeError: if ``tensor`` is not complex.
        ValueError: for a bad ``mode``, a non-positive ``gain`` or a tensor with fewer than 2 dims.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> w = rxc.nn.init.complex_kaiming_(torch.empty(300, 100, dtype=torch.complex128))
        >>> bool(abs(w.abs().pow(2).mean() * 100 - 2) < 0.1)
        True
    """
    require_complex("complex_kaiming_", tensor, "tensor")
    check_positive("complex_kaiming_", "gain", gain)
    check_one_of("complex_kaiming_", "mode", mode, ("fan_in", "fan_out"))
    fan_in, fan_out = _fans("complex_kaiming_", tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return complex_rayleigh_(tensor, gain / math.sqrt(2 * fan), generator=generator)


def complex_xavier_(
    tensor: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Complex Glorot initialisation: :math:`E|w|^2 = 2\,\mathrm{gain}^2/(\mathrm{fan\_in}+\mathrm{fan\_out})`.

    Rayleigh magnitudes with :math:`\sigma = \mathrm{gain}/\sqrt{\mathrm{fan\_in}+\mathrm{fan\_out}}`,
    uniform phases; in place.

    Args:
        tensor: complex weight of shape ``(out, in, *kernel)``, overwritten.
        gain: scaling factor.
        generator: optional ``torch.Generator`` on ``tensor``'s device.

    Returns:
        ``tensor``.

    Raises:
        TypeError: if ``tensor`` is not complex.
        ValueError: for a non-positive ``gain`` or a tensor with fewer than 2 dims.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> w = rxc.nn.init.complex_xavier_(torch.empty(300, 100, dtype=torch.complex128))
        >>> bool(abs(w.abs().pow(2).mean() * 400 - 2) < 0.1)
        True
    """
    require_complex("complex_xavier_", tensor, "tensor")
    check_positive("complex_xavier_", "gain", gain)
    fan_in, fan_out = _fans("complex_xavier_", tensor)
    return complex_rayleigh_(tensor, gain / math.sqrt(fan_in + fan_out), generator=generator)


@torch.no_grad()
def complex_unitary_(
    tensor: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill ``tensor`` with a (semi-)unitary matrix times ``gain``, in place.

    The weight is flattened to ``(out, in * prod(kernel))``; a complex Gaussian matrix is
    QR-factorised and :math:`Q` (with the phases of :math:`\mathrm{diag}(R)` folded in, so the
    draw is Haar-distributed) fills it: :math:`W W^H = \mathrm{gain}^2 I` when
    ``out <= in * prod(kernel)``, else :math:`W^H W = \mathrm{gain}^2 I`.

    Args:
        tensor: complex tensor with at least 2 dims, overwritten.
        gain: scaling factor.
        generator: optional ``torch.Generator`` on ``tensor``'s device.

    Returns:
        ``tensor``.

    Raises:
        TypeError: if ``tensor`` is not complex.
        ValueError: for a non-positive ``gain`` or a tensor with fewer than 2 dims.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> w = rxc.nn.init.complex_unitary_(torch.empty(4, 6, dtype=torch.complex128))
        >>> torch.allclose(w @ w.mH, torch.eye(4, dtype=torch.complex128))
        True

    References:
        Mezzadri, "How to generate random matrices from the classical compact groups",
        Notices of the AMS 54, 2007.
    """
    require_complex("complex_unitary_", tensor, "tensor")
    check_positive("complex_unitary_", "gain", gain)
    _fans("complex_unitary_", tensor)
    rows, cols = tensor.shape[0], tensor.numel() // tensor.shape[0]
    tall = (max(rows, cols), min(rows, cols))
    g = torch.randn(tall, dtype=tensor.dtype, device=tensor.device, generator=generator)
    q, r = torch.linalg.qr(g)
    q = q * torch.sgn(torch.diagonal(r))
    if rows < cols:
        q = q.mT
    return tensor.copy_(gain * q.reshape(tensor.shape))
