"""The likelihood a loss implies, and targets drawn from the model's predictive distribution.

``nn.MSELoss`` is the negative log-likelihood of a Gaussian and ``nn.CrossEntropyLoss`` that of
a categorical distribution (up to constants); the Fisher operators need that distribution to
take the expectation over targets in closed form or to sample it.
"""

from typing import Any

import torch
from torch import nn

__all__ = ["likelihood_of", "sample_targets"]


def likelihood_of(loss_fn: Any) -> str | None:
    """``"gaussian"``, ``"categorical"`` or ``None`` (unknown) for a loss module or function."""
    if isinstance(loss_fn, nn.MSELoss) or loss_fn is nn.functional.mse_loss:
        return "gaussian"
    if isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is nn.functional.cross_entropy:
        return "categorical"
    return None


def sample_targets(
    likelihood: str,
    out: torch.Tensor,
    samples: int,
    reduction: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``samples`` targets per sample drawn from the predictive distribution at outputs ``out``.

    Returns a tensor of shape ``(samples, *out.shape)`` (Gaussian) or ``(samples, N, ...)``
    class indices (categorical, classes along dim 1 of ``out``).
    """
    # Drawn where the generator lives (a CPU generator gives the same targets on any device).
    drawn_on = out.device if generator is None else generator.device
    if likelihood == "categorical":
        probs = out.softmax(dim=1).movedim(1, -1).reshape(-1, out.shape[1])
        draws = torch.multinomial(probs.to(drawn_on), samples, True, generator=generator)
        return draws.to(out.device).mT.reshape(samples, out.shape[0], *out.shape[2:])
    # The NLL a * ||f - y||^2 (a = 1/C for a mean, 1 for a sum) is a Gaussian of variance 1/2a.
    per_sample = out[0].numel() if reduction == "mean" else 1
    noise = torch.randn(
        (samples, *out.shape), generator=generator, dtype=out.dtype, device=drawn_on
    ).to(out.device)
    return out + noise * (per_sample / 2) ** 0.5
