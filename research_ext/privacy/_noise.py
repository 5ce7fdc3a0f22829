"""Gaussian noise for the clipped sum, from an explicit generator or fresh OS entropy."""

import os

import torch

from research_ext.core import check_positive

__all__ = ["add_gaussian_noise", "add_gaussian_noise_", "secure_generator"]


def secure_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with 63 bits from the operating system's CSPRNG (``os.urandom``).

    Example:
        >>> secure_generator().initial_seed() >= 0
        True
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(os.urandom(8), "little") & (2**63 - 1))
    return generator


def add_gaussian_noise(
    tensor: torch.Tensor, std: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Return ``tensor + N(0, std^2)`` elementwise, drawn from ``generator``.

    :math:`\tilde s = s + \mathcal N(0, \sigma^2 C^2 I)` with ``std`` = sigma * C. The draw happens
    on the generator's device and moves to the tensor's device if they differ; dtype follows the
    tensor. A ``std`` of 0 returns the tensor unchanged (no draw).

    Args:
        tensor: any floating tensor (the clipped gradient sum of one parameter).
        std: the standard deviation (>= 0).
        generator: the ``torch.Generator`` to draw from (default: torch's global one).

    Returns:
        A new tensor of the same shape, dtype and device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = add_gaussian_noise(torch.zeros(100_000), 2.0, generator=g)
        >>> abs(x.std().item() - 2.0) < 0.02
        True
    """
    check_positive("add_gaussian_noise", "std", std, allow_zero=True)
    if std == 0:
        return tensor.clone()
    device = generator.device if generator is not None else tensor.device
    noise = torch.randn(tensor.shape, generator=generator, device=device, dtype=tensor.dtype)
    return tensor + noise.to(tensor.device).mul_(std)


def add_gaussian_noise_(
    tensor: torch.Tensor, std: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """In-place :func:`add_gaussian_noise` (one temporary of the tensor's size); returns it."""
    if std == 0:
        return tensor
    device = generator.device if generator is not None else tensor.device
    noise = torch.randn(tensor.shape, generator=generator, device=device, dtype=tensor.dtype)
    return tensor.add_(noise.to(tensor.device), alpha=std)
