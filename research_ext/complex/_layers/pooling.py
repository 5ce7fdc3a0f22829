r"""Complex pooling and upsampling.

Max pooling picks, in each window, the entry of largest magnitude :math:`|z|` and returns that
complex entry (phase kept); average pooling, adaptive average pooling and interpolation are linear,
so they act on the real and imaginary parts alike. Channel-first layouts as in :mod:`torch.nn`.
"""

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from research_ext.complex._layers.checks import require_complex, split_apply

__all__ = [
    "ComplexAdaptiveAvgPool1d",
    "ComplexAdaptiveAvgPool2d",
    "ComplexAdaptiveAvgPool3d",
    "ComplexAdaptiveMaxPool1d",
    "ComplexAdaptiveMaxPool2d",
    "ComplexAdaptiveMaxPool3d",
    "ComplexAvgPool1d",
    "ComplexAvgPool2d",
    "ComplexAvgPool3d",
    "ComplexMaxPool1d",
    "ComplexMaxPool2d",
    "ComplexMaxPool3d",
    "ComplexUpsample",
]


def _gather_by_index(x: Tensor, indices: Tensor, spatial: int) -> Tensor:
    # Pool indices address the flattened spatial dims of each (batch, channel) plane.
    flat = x.flatten(x.ndim - spatial)
    picked = flat.gather(-1, indices.flatten(indices.ndim - spatial))
    return picked.view(indices.shape)


class _MagnitudePool(nn.Module):
    _spatial = 0

    def _run(self, x: Tensor) -> Any:
        raise NotImplementedError

    def forward(self, input: Tensor) -> Tensor:
        """Pool by magnitude and return the winning complex entries."""
        name = type(self).__name__
        x = require_complex(name, input)
        if x.ndim not in (self._spatial + 1, self._spatial + 2):
            raise ValueError(
                f"{name}: `input` must have {self._spatial + 1} or {self._spatial + 2} "
                f"dimensions, got input.shape={tuple(x.shape)}"
            )
        _, indices = self._run(x.abs())
        return _gather_by_index(x, indices, self._spatial)


def _max_pool_class(n: int) -> type:
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]

    class ComplexMaxPool(_MagnitudePool):
        __doc__ = rf"""Magnitude max pooling over {n}-d windows: the entry with the largest :math:`|z|` wins.

        Args:
            kernel_size: window size (int or {n}-tuple).
            stride: window stride (default: ``kernel_size``).
            padding: implicit zero padding.
            dilation: spacing between window elements.
            ceil_mode: use ceil instead of floor for the output shape.

        Shape: input ``(N, C, *spatial)`` or ``(C, *spatial)`` with {n} spatial dims; output as
        :class:`torch.nn.MaxPool{n}d`.

        Raises:
            TypeError: for real input.
            ValueError: for a wrong input rank.

        Example:
            >>> import torch
            >>> import research_ext.complex as rxc
            >>> z = torch.tensor([[[1 + 0j, 0 - 3j] + [0.5 + 0j] * {2**n - 2}]]).reshape(1, 1, *[2] * {n})
            >>> rxc.nn.ComplexMaxPool{n}d(2)(z).flatten()
            tensor([0.-3.j])
        """
        _spatial = n

        def __init__(
            self,
            kernel_size: Any,
            stride: Any = None,
            padding: Any = 0,
            dilation: Any = 1,
            ceil_mode: bool = False,
        ) -> None:
            super().__init__()
            self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
            self.dilation, self.ceil_mode = dilation, ceil_mode

        def _run(self, x: Tensor) -> Any:
            return pool(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                ceil_mode=self.ceil_mode,
                return_indices=True,
            )

    ComplexMaxPool.__name__ = ComplexMaxPool.__qualname__ = f"ComplexMaxPool{n}d"
    return ComplexMaxPool


def _adaptive_max_pool_class(n: int) -> type:
    pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[n]

    class ComplexAdaptiveMaxPool(_MagnitudePool):
        __doc__ = rf"""Adaptive magnitude max pooling to a fixed {n}-d output size.

        Args:
            output_size: target spatial size (int or {n}-tuple).

        Shape: input ``(N, C, *spatial)`` or ``(C, *spatial)``; output ends in ``output_size``.

        Raises:
            TypeError: for real input.
            ValueError: for a wrong input rank.

        Example:
            >>> import torch
            >>> import research_ext.complex as rxc
            >>> z = torch.zeros(1, 1, *[4] * {n}, dtype=torch.complex64)
            >>> z.view(-1)[3] = 2 - 2j
            >>> rxc.nn.ComplexAdaptiveMaxPool{n}d(1)(z).flatten()
            tensor([2.-2.j])
        """
        _spatial = n

        def __init__(self, output_size: Any) -> None:
            super().__init__()
            self.output_size = output_size

        def _run(self, x: Tensor) -> Any:
            return pool(x, self.output_size, return_indices=True)

    ComplexAdaptiveMaxPool.__name__ = f"ComplexAdaptiveMaxPool{n}d"
    ComplexAdaptiveMaxPool.__qualname__ = ComplexAdaptiveMaxPool.__name__
    return ComplexAdaptiveMaxPool


class _SplitPool(nn.Module):
    _spatial = 0

    def _run(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, input: Tensor) -> Tensor:
        """Apply the (linear) pooling to the real and imaginary parts."""
        x = require_complex(type(self).__name__, input)
        return split_apply(self._run, x)


def _avg_pool_class(n: int) -> type:
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]

    class ComplexAvgPool(_SplitPool):
        __doc__ = rf"""Average pooling over {n}-d windows of complex input (real and imaginary parts alike).

        Args:
            kernel_size: window size (int or {n}-tuple).
            stride: window stride (default: ``kernel_size``).
            padding: implicit zero padding.
            ceil_mode: use ceil instead of floor for the output shape.
            count_include_pad: include the zero padding in the average.

        Shape: as :class:`torch.nn.AvgPool{n}d`, complex dtype preserved.

        Raises:
            TypeError: for real input.

        Example:
            >>> import torch
            >>> import research_ext.complex as rxc
            >>> z = torch.full((1, 1, *[2] * {n}), 1 - 1j)
            >>> rxc.nn.ComplexAvgPool{n}d(2)(z).flatten()
            tensor([1.-1.j])
        """
        _spatial = n

        def __init__(
            self,
            kernel_size: Any,
            stride: Any = None,
            padding: Any = 0,
            ceil_mode: bool = False,
            count_include_pad: bool = True,
        ) -> None:
            super().__init__()
            self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
            self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

        def _run(self, x: Tensor) -> Tensor:
            return pool(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                ceil_mode=self.ceil_mode,
                count_include_pad=self.count_include_pad,
            )

    ComplexAvgPool.__name__ = ComplexAvgPool.__qualname__ = f"ComplexAvgPool{n}d"
    return ComplexAvgPool


def _adaptive_avg_pool_class(n: int) -> type:
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[n]

    class ComplexAdaptiveAvgPool(_SplitPool):
        __doc__ = rf"""Adaptive average pooling of complex input to a fixed {n}-d output size.

        Args:
            output_size: target spatial size (int or {n}-tuple).

        Shape: input ``(N, C, *spatial)`` or ``(C, *spatial)``; output ends in ``output_size``.

        Raises:
            TypeError: for real input.

        Example:
            >>> import torch
            >>> import research_ext.complex as rxc
            >>> z = torch.full((2, 3, *[4] * {n}), 2j)
            >>> rxc.nn.ComplexAdaptiveAvgPool{n}d(1)(z).shape == (2, 3) + (1,) * {n}
            True
        """
        _spatial = n

        def __init__(self, output_size: Any) -> None:
            super().__init__()
            self.output_size = output_size

        def _run(self, x: Tensor) -> Tensor:
            return pool(x, self.output_size)

    ComplexAdaptiveAvgPool.__name__ = f"ComplexAdaptiveAvgPool{n}d"
    ComplexAdaptiveAvgPool.__qualname__ = ComplexAdaptiveAvgPool.__name__
    return ComplexAdaptiveAvgPool


ComplexMaxPool1d = _max_pool_class(1)
ComplexMaxPool2d = _max_pool_class(2)
ComplexMaxPool3d = _max_pool_class(3)
ComplexAdaptiveMaxPool1d = _adaptive_max_pool_class(1)
ComplexAdaptiveMaxPool2d = _adaptive_max_pool_class(2)
ComplexAdaptiveMaxPool3d = _adaptive_max_pool_class(3)
ComplexAvgPool1d = _avg_pool_class(1)
ComplexAvgPool2d = _avg_pool_class(2)
ComplexAvgPool3d = _avg_pool_class(3)
ComplexAdaptiveAvgPool1d = _adaptive_avg_pool_class(1)
ComplexAdaptiveAvgPool2d = _adaptive_avg_pool_class(2)
ComplexAdaptiveAvgPool3d = _adaptive_avg_pool_class(3)


class ComplexUpsample(nn.Module):
    r"""Upsample complex input by interpolating its real and imaginary parts.

    Every mode of :func:`torch.nn.functional.interpolate` (``"nearest"``, ``"linear"``,
    ``"bilinear"``, ``"bicubic"``, ``"trilinear"``, ``"nearest-exact"``) is real-linear, so
    interpolating the two parts equals interpolating :math:`z`.

    Args:
        size: output spatial size (int or tuple); give this or ``scale_factor``.
        scale_factor: multiplier for the spatial size.
        mode: interpolation mode, as for :func:`torch.nn.functional.interpolate`.
        align_corners: as for :func:`torch.nn.functional.interpolate`.

    Shape: input ``(N, C, *spatial)`` complex with 1-3 spatial dims; output with upsampled
    spatial dims, same dtype.

    Raises:
        TypeError: for real input.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> up = rxc.nn.ComplexUpsample(scale_factor=2, mode="linear", align_corners=True)
        >>> up(torch.tensor([[[0j, 3 + 3j]]]))
        tensor([[[0.+0.j, 1.+1.j, 2.+2.j, 3.+3.j]]])
    """

    def __init__(
        self,
        size: Any = None,
        scale_factor: Any = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, input: Tensor) -> Tensor:
        """Interpolate the real and imaginary parts."""
        x = require_complex("ComplexUpsample", input)
        return split_apply(
            lambda part: F.interpolate(
                part, self.size, self.scale_factor, self.mode, self.align_corners
            ),
            x,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode!r}"
