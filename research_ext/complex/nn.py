"""Complex-valued layers: activations, whitening norms, dropout, pooling, Fourier layers.

Every layer is dtype-generic (complex64 and complex128; layers with parameters take ``dtype=``
and default to the complex partner of ``torch.get_default_dtype()``) and device-agnostic.
Initialisers live in ``research_ext.complex.nn.init``.

Example:
    >>> import torch
    >>> import research_ext.complex as rxc
    >>> net = torch.nn.Sequential(
    ...     rxc.nn.ComplexLinear(8, 16), rxc.nn.ComplexLayerNorm(16), rxc.nn.ModReLU(16, dim=-1)
    ... )
    >>> net(torch.randn(4, 8, dtype=torch.complex64)).dtype
    torch.complex64
"""

from research_ext.complex._layers import init
from research_ext.complex._layers.activations import CGELU, Cardioid, CReLU, CTanh, ModReLU, ZReLU
from research_ext.complex._layers.attention import (
    ComplexSoftmax,
    complex_scaled_dot_product_attention,
    complex_softmax,
)
from research_ext.complex._layers.dropout import (
    ComplexDropout,
    ComplexDropout1d,
    ComplexDropout2d,
    ComplexDropout3d,
)
from research_ext.complex._layers.fourier import (
    FNOBlock,
    SpectralConv1d,
    SpectralConv2d,
    SpectralConv3d,
)
from research_ext.complex._layers.linear import (
    ComplexConv1d,
    ComplexConv2d,
    ComplexConv3d,
    ComplexLinear,
)
from research_ext.complex._layers.normalization import (
    ComplexBatchNorm1d,
    ComplexBatchNorm2d,
    ComplexBatchNorm3d,
    ComplexGroupNorm,
    ComplexLayerNorm,
)
from research_ext.complex._layers.pooling import (
    ComplexAdaptiveAvgPool1d,
    ComplexAdaptiveAvgPool2d,
    ComplexAdaptiveAvgPool3d,
    ComplexAdaptiveMaxPool1d,
    ComplexAdaptiveMaxPool2d,
    ComplexAdaptiveMaxPool3d,
    ComplexAvgPool1d,
    ComplexAvgPool2d,
    ComplexAvgPool3d,
    ComplexMaxPool1d,
    ComplexMaxPool2d,
    ComplexMaxPool3d,
    ComplexUpsample,
)

__all__ = [
    "CGELU",
    "CReLU",
    "CTanh",
    "Cardioid",
    "ComplexAdaptiveAvgPool1d",
    "ComplexAdaptiveAvgPool2d",
    "ComplexAdaptiveAvgPool3d",
    "ComplexAdaptiveMaxPool1d",
    "ComplexAdaptiveMaxPool2d",
    "ComplexAdaptiveMaxPool3d",
    "ComplexAvgPool1d",
    "ComplexAvgPool2d",
    "ComplexAvgPool3d",
    "ComplexBatchNorm1d",
    "ComplexBatchNorm2d",
    "ComplexBatchNorm3d",
    "ComplexConv1d",
    "ComplexConv2d",
    "ComplexConv3d",
    "ComplexDropout",
    "ComplexDropout1d",
    "ComplexDropout2d",
    "ComplexDropout3d",
    "ComplexGroupNorm",
    "ComplexLayerNorm",
    "ComplexLinear",
    "ComplexMaxPool1d",
    "ComplexMaxPool2d",
    "ComplexMaxPool3d",
    "ComplexSoftmax",
    "ComplexUpsample",
    "FNOBlock",
    "ModReLU",
    "SpectralConv1d",
    "SpectralConv2d",
    "SpectralConv3d",
    "ZReLU",
    "complex_scaled_dot_product_attention",
    "complex_softmax",
    "init",
]
