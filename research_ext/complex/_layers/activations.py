r"""Complex activations: split (CReLU, CGELU, CTanh), phase-gated (ZReLU, Cardioid) and ModReLU.

All take a complex tensor of any shape and return one of the same shape and dtype. Real input
raises ``TypeError`` (convert with ``x.to(torch.complex64)``): silently promoting would hide a
missing ``dtype=`` on an earlier layer.

References:
    Trabelsi et al., "Deep Complex Networks", ICLR 2018 (CReLU, ModReLU, ZReLU comparison).
    Arjovsky, Shah, Bengio, "Unitary Evolution Recurrent Neural Networks", ICML 2016 (ModReLU).
    Guberman, "On Complex Valued Convolutional Neural Networks", arXiv:1602.09046, 2016 (ZReLU).
    Virtue, Yu, Lustig, "Better than Real: Complex-valued Neural Nets for MRI Fingerprinting",
    ICIP 2017 (Cardioid).
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from research_ext.complex._layers.checks import complex_dtype_for, real_dtype_for, require_complex
from research_ext.core import check_int, check_one_of

__all__ = ["CGELU", "CReLU", "CTanh", "Cardioid", "ModReLU", "ZReLU"]


class CReLU(nn.Module):
    r"""Split ReLU: :math:`\mathrm{CReLU}(z) = \mathrm{relu}(\Re z) + i\,\mathrm{relu}(\Im z)`.

    Shape: any; dtype complex64 or complex128, preserved.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> rxc.nn.CReLU()(torch.tensor([1 - 2j, -3 + 4j]))
        tensor([1.+0.j, 0.+4.j])
    """

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("CReLU", input)
        return torch.complex(F.relu(x.real), F.relu(x.imag))


class CGELU(nn.Module):
    r"""Split GELU: :math:`\mathrm{gelu}(\Re z) + i\,\mathrm{gelu}(\Im z)`.

    Args:
        approximate: ``"none"`` or ``"tanh"``, as for :func:`torch.nn.functional.gelu`.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> z = torch.tensor([2 - 2j])
        >>> out = rxc.nn.CGELU()(z)
        >>> torch.allclose(out.real, torch.nn.functional.gelu(z.real))
        True
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = check_one_of("CGELU", "approximate", approximate, ("none", "tanh"))

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("CGELU", input)
        a = self.approximate
        return torch.complex(F.gelu(x.real, approximate=a), F.gelu(x.imag, approximate=a))


class CTanh(nn.Module):
    r"""Split tanh: :math:`\tanh(\Re z) + i\tanh(\Im z)` (bounded, unlike the holomorphic tanh).

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> out = rxc.nn.CTanh()(torch.tensor([0.5 - 1j]))
        >>> torch.allclose(out.imag, torch.tanh(torch.tensor(-1.0)))
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("CTanh", input)
        return torch.complex(torch.tanh(x.real), torch.tanh(x.imag))


class ZReLU(nn.Module):
    r"""ZReLU: pass :math:`z` where its phase lies in :math:`[0, \pi/2]`, zero elsewhere.

    :math:`\mathrm{ZReLU}(z) = z\,\mathbb 1[\Re z \ge 0,\ \Im z \ge 0]`.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> rxc.nn.ZReLU()(torch.tensor([1 + 1j, -1 + 1j, 1 - 1j]))
        tensor([1.+1.j, 0.+0.j, 0.+0.j])
    """

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("ZReLU", input)
        keep = (x.real >= 0) & (x.imag >= 0)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


class Cardioid(nn.Module):
    r"""Cardioid: :math:`\tfrac12\,(1 + \cos\angle z)\,z`, a phase-sensitive ReLU analogue.

    On the real axis it reduces to ReLU. :math:`\cos\angle z = \Re z/|z|` (taken as 1 at 0).

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> out = rxc.nn.Cardioid()(torch.tensor([2 + 0j, -2 + 0j, 1j]))
        >>> torch.allclose(out, torch.tensor([2 + 0j, 0j, 0.5j]))
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("Cardioid", input)
        magnitude = x.abs()
        safe = torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
        cos = torch.where(magnitude > 0, x.real / safe, torch.ones_like(magnitude))
        return 0.5 * (1 + cos) * x


class ModReLU(nn.Module):
    r"""ModReLU with a learnable bias: :math:`\mathrm{relu}(|z| + b)\, z/|z|`.

    The phase is kept and the magnitude thresholded; ``b`` is one real number per feature along
    ``dim`` (or a single scalar when ``num_features=1``).

    Args:
        num_features: number of biases; 1 shares one bias across all entries.
        dim: dimension the features run along (``1`` for ``(batch, channels, ...)`` input,
            ``-1`` for ``(..., features)``). Ignored when ``num_features=1``.
        bias: initial value of every bias (the default 0 starts as the identity on magnitudes).
        dtype: the *complex* dtype the layer serves (complex64 or complex128; a real dtype picks
            its complex partner); the bias uses the matching real dtype.
        device: where the bias lives.

    Shape: input ``(*)`` complex, with ``num_features`` entries along ``dim``; output the same.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> act = rxc.nn.ModReLU(bias=-1.0)
        >>> act(torch.tensor([3 + 4j, 0.6 + 0.8j]))  # |z| = 5 -> 4, |z| = 1 -> 0
        tensor([2.4000+3.2000j, 0.0000+0.0000j], grad_fn=<MulBackward0>)
    """

    def __init__(
        self,
        num_features: int = 1,
        *,
        dim: int = 1,
        bias: float = 0.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_features = check_int("ModReLU", "num_features", num_features, minimum=1)
        self.dim = check_int("ModReLU", "dim", dim)
        real = real_dtype_for(complex_dtype_for("ModReLU", dtype))
        self.bias = nn.Parameter(
            torch.full((num_features,), float(bias), dtype=real, device=device)
        )

    def forward(self, input: Tensor) -> Tensor:
        """Apply the activation."""
        x = require_complex("ModReLU", input)
        bias: Tensor = self.bias
        if self.num_features > 1:
            dim = self.dim % x.ndim if x.ndim else 0
            if x.ndim == 0 or x.shape[dim] != self.num_features:
                raise ValueError(
                    f"ModReLU: `input` must have {self.num_features} features along dim="
                    f"{self.dim}, got input.shape={tuple(x.shape)}"
                )
            bias = bias.view(-1, *([1] * (x.ndim - dim - 1)))
        magnitude = x.abs()
        return F.relu(magnitude + bias) * torch.sgn(x)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, dim={self.dim}"
