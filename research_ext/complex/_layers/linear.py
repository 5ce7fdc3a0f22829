r"""Complex linear and convolution layers: torch's native complex kernels, complex initialisation.

``torch.nn.Linear`` and ``torch.nn.Conv*d`` already run on complex64/complex128 weights; these
subclasses only pick a complex dtype by default (the complex partner of
``torch.get_default_dtype()``), draw the weight with :func:`complex_kaiming_` (``gain=1``:
:math:`E|w|^2 = 1/\mathrm{fan\_in}`, so :math:`E|y|^2 \approx E|z|^2`) and start the bias at 0,
and reject real input with a clear message. The forward pass *is* torch's, so there is no
overhead to measure beyond the call itself (see ``benchmarks/bench_complex_layers.py``).

References:
    Trabelsi et al., "Deep Complex Networks", ICLR 2018.
"""

from typing import Any

import torch
from torch import Tensor, nn

from research_ext.complex._layers.checks import complex_dtype_for, require_complex
from research_ext.complex._layers.init import complex_kaiming_

__all__ = ["ComplexConv1d", "ComplexConv2d", "ComplexConv3d", "ComplexLinear"]


def _reset(module: nn.Module) -> None:
    complex_kaiming_(module.weight, gain=1.0)  # type: ignore[arg-type]
    if module.bias is not None:
        with torch.no_grad():
            module.bias.zero_()  # type: ignore[operator]


class ComplexLinear(nn.Linear):
    r"""Complex affine map :math:`y = z W^{T} + b` with complex :math:`W` and :math:`b`.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive complex bias.
        dtype: complex64 or complex128 (a real dtype picks its complex partner; default from
            ``torch.get_default_dtype()``).
        device: where the parameters live.

    Shape: input ``(*, in_features)`` complex; output ``(*, out_features)``.

    Raises:
        TypeError: for real input.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> layer = rxc.nn.ComplexLinear(3, 2, dtype=torch.complex128)
        >>> z = torch.randn(5, 3, dtype=torch.complex128)
        >>> torch.allclose(layer(z), z @ layer.weight.T + layer.bias)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        cdtype = complex_dtype_for("ComplexLinear", dtype)
        super().__init__(in_features, out_features, bias, device=device, dtype=cdtype)

    def reset_parameters(self) -> None:
        """Complex He weight with ``gain=1`` and a zero bias."""
        _reset(self)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the complex affine map."""
        return super().forward(require_complex("ComplexLinear", input))


def _conv_doc(n: int) -> str:
    return rf"""Complex {n}-d convolution (cross-correlation) with complex weight and bias.

    :math:`y = W \star z + b` with torch's native complex kernel; arguments as for
    :class:`torch.nn.Conv{n}d` (``padding_mode="zeros"``, ``"reflect"``, ``"replicate"`` or
    ``"circular"``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (int or {n}-tuple).
        stride: stride.
        padding: padding (int, tuple, ``"same"`` or ``"valid"``).
        dilation: kernel dilation.
        groups: blocked connections.
        bias: learn a complex bias.
        padding_mode: how to pad.
        dtype: complex64 or complex128 (a real dtype picks its complex partner).
        device: where the parameters live.

    Shape: as :class:`torch.nn.Conv{n}d`, complex dtype.

    Raises:
        TypeError: for real input.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> conv = rxc.nn.ComplexConv{n}d(2, 3, 3, padding=1)
        >>> conv(torch.randn(4, 2, *[5] * {n}, dtype=torch.complex64)).shape[:3]
        torch.Size([4, 3, 5])
    """


class _ComplexConvMixin:
    """Complex dtype, complex initialisation and a real-input check for ``nn.Conv*d``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        cdtype = complex_dtype_for(type(self).__name__, dtype)
        super().__init__(  # type: ignore[call-arg]
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=cdtype,
        )

    def reset_parameters(self) -> None:
        """Complex He weight with ``gain=1`` and a zero bias."""
        _reset(self)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        """Apply the convolution."""
        return super().forward(require_complex(type(self).__name__, input))  # type: ignore[misc]


class ComplexConv1d(_ComplexConvMixin, nn.Conv1d):
    __doc__ = _conv_doc(1)


class ComplexConv2d(_ComplexConvMixin, nn.Conv2d):
    __doc__ = _conv_doc(2)


class ComplexConv3d(_ComplexConvMixin, nn.Conv3d):
    __doc__ = _conv_doc(3)
