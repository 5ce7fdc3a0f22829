"""Per-sample clipping: flat, per-layer and adaptive (quantile-tracking) clip factors."""

import math
from collections.abc import Mapping

import torch

from research_ext.core import check_one_of, check_positive, format_message

__all__ = [
    "CLIPPINGS",
    "clip_factors",
    "clip_per_sample",
    "layer_thresholds",
    "sensitivity",
]

#: Clipping modes; every engine supports every mode.
CLIPPINGS = ("flat", "per_layer", "adaptive")
#: Added to norms before dividing, so zero gradients get factor 1 (and never divide by zero).
_TINY = 1e-6


def layer_thresholds(
    fn: str, max_grad_norm: float | Mapping[str, float], groups: list[str], clipping: str
) -> dict[str, float]:
    """Per-group thresholds C_k: a float C splits as C / sqrt(K) per layer, so sum C_k^2 = C^2."""
    if isinstance(max_grad_norm, Mapping):
        if clipping != "per_layer":
            raise TypeError(
                format_message(
                    fn, "max_grad_norm", "a float unless clipping='per_layer'", max_grad_norm
                )
            )
        missing = [g for g in groups if g not in max_grad_norm]
        if missing:
            raise ValueError(
                format_message(
                    fn,
                    "max_grad_norm",
                    "a threshold for every layer group",
                    dict(max_grad_norm),
                    f"missing {missing}",
                )
            )
        return {
            g: float(check_positive(fn, f"max_grad_norm[{g!r}]", max_grad_norm[g])) for g in groups
        }
    c = float(check_positive(fn, "max_grad_norm", max_grad_norm))
    if clipping == "per_layer":
        return {g: c / math.sqrt(len(groups)) for g in groups}
    return {g: c for g in groups}


def sensitivity(thresholds: Mapping[str, float], clipping: str) -> float:
    """L2 sensitivity of the clipped sum: sqrt(sum C_k^2) per layer, else the single C."""
    if clipping == "per_layer":
        return math.sqrt(sum(c * c for c in thresholds.values()))
    return max(thresholds.values()) if thresholds else 0.0


def clip_factors(
    sq_norms: Mapping[str, torch.Tensor], thresholds: Mapping[str, float], clipping: str
) -> dict[str, torch.Tensor]:
    """Per-sample factors ``min(1, C / (||g|| + 1e-6))`` per group (flat: one total norm)."""
    if clipping == "per_layer":
        return {
            k: (thresholds[k] / (s.clamp_min(0).sqrt() + _TINY)).clamp(max=1.0)
            for k, s in sq_norms.items()
        }
    total = torch.stack(list(sq_norms.values())).sum(0)
    c = next(iter(thresholds.values()))
    factor = (c / (total.clamp_min(0).sqrt() + _TINY)).clamp(max=1.0)
    return dict.fromkeys(sq_norms, factor)


def clip_per_sample(
    grads: Mapping[str, torch.Tensor],
    max_grad_norm: float | Mapping[str, float],
    clipping: str = "flat",
) -> dict[str, torch.Tensor]:
    r"""Per-sample gradients clipped to L2 norm at most ``max_grad_norm``.

    Flat (and adaptive, at its current C): :math:`\tilde g_i = g_i \min(1, C / \lVert g_i\rVert)`
    with the norm over all parameters. Per-layer: each layer k (parameters sharing a module
    prefix) is clipped to its own :math:`C_k`; a float C gives :math:`C_k = C/\sqrt{K}`, so the
    whole gradient still has norm at most C. Gradients already below the threshold are returned
    unchanged (factor exactly 1).

    Args:
        grads: ``{name: tensor of shape (batch, *param.shape)}``, e.g. from
            :func:`per_sample_grads`.
        max_grad_norm: C (> 0), or for ``clipping="per_layer"`` a mapping layer -> C_k.
        clipping: ``"flat"`` (default), ``"per_layer"`` or ``"adaptive"``.

    Returns:
        Clipped per-sample gradients, same names, shapes and dtypes.

    Raises:
        ValueError, TypeError: for a non-positive threshold or an unknown mode.

    Example:
        >>> g = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}
        >>> clip_per_sample(g, 1.0)["w"]
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])

    References:
        Abadi et al., "Deep Learning with Differential Privacy", 2016.
        McMahan et al., "A General Approach to Adding Differential Privacy to Iterative Training
        Procedures", 2018 (per-layer clipping).
    """
    fn = "clip_per_sample"
    check_one_of(fn, "clipping", clipping, CLIPPINGS)
    groups = {name: name.rsplit(".", 1)[0] if "." in name else "" for name in grads}
    thresholds = layer_thresholds(fn, max_grad_norm, sorted(set(groups.values())), clipping)
    sq: dict[str, torch.Tensor] = {}
    for name, g in grads.items():
        s = g.reshape(g.shape[0], -1).pow(2).sum(1)
        sq[groups[name]] = sq[groups[name]] + s if groups[name] in sq else s
    if not sq:
        return {}
    factors = clip_factors(sq, thresholds, clipping)
    return {
        name: g * factors[groups[name]].to(g.dtype).reshape(-1, *([1] * (g.ndim - 1)))
        for name, g in grads.items()
    }
