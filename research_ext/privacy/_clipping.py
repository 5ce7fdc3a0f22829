"""Per-sample clipping: flat, per-layer and adaptive (quantile-tracking) clip factors."""

import math
from collections.abc import Mapping

import torch

from research_ext.core import check_one_of, check_positive, format_message

__all__ = [
    "CLIPPINGS",
    "COUNT_SENSITIVITY",
    "centred_unclipped_count",
    "clip_factors",
    "clip_per_sample",
    "layer_thresholds",
    "sensitivity",
]

#: Clipping modes; every engine supports every mode.
CLIPPINGS = ("flat", "per_layer", "adaptive")
#: L2 sensitivity of :func:`centred_unclipped_count` under adding or removing one example.
COUNT_SENSITIVITY = 0.5
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
    r"""L2 sensitivity of the clipped sum: sqrt(sum C_k^2) per layer, else the single C.

    Neighbouring batches differ by one example x (added or removed), so the clipped sums differ
    by exactly that example's clipped gradient. Flat (and adaptive, at the current C):
    :math:`\lVert \mathrm{clip}_C(g_x)\rVert \le C`. Per layer, each block k of
    :math:`g_x` is clipped to :math:`C_k`, so :math:`\lVert \tilde g_x\rVert^2 =
    \sum_k \lVert \tilde g_{x,k}\rVert^2 \le \sum_k C_k^2`. Both bounds are attained by an
    example whose gradient exceeds every threshold. In a distributed run the all-reduced sum is
    the sum over the union of the ranks' batches, so one example still moves it by at most this.
    """
    if clipping == "per_layer":
        return math.sqrt(sum(c * c for c in thresholds.values()))
    return max(thresholds.values()) if thresholds else 0.0


def centred_unclipped_count(
    sq_norms: Mapping[str, torch.Tensor], max_grad_norm: float
) -> torch.Tensor:
    r"""The adaptive-clipping count query :math:`\sum_{i\in B} (b_i - 1/2)`, a 0-dim tensor.

    :math:`b_i = 1[\lVert g_i\rVert \le C]`, the norm over all parameters. Centring each
    indicator (Andrew et al. 2021, section 3.1) makes every example contribute
    :math:`\pm 1/2`, so adding or removing one example moves the sum by exactly 1/2
    (``COUNT_SENSITIVITY``); the plain count :math:`\sum b_i` would move by 1. The caller adds
    :math:`\mathcal N(0, \sigma_b^2)` and recovers the unclipped fraction as
    :math:`(\text{noisy sum}) / (qN) + 1/2`; the release is a Gaussian mechanism with noise
    multiplier :math:`\sigma_b / (1/2) = 2\sigma_b`.
    """
    norms = torch.stack(list(sq_norms.values())).sum(0).clamp_min(0).sqrt()
    return ((norms <= max_grad_norm).to(norms.dtype) - 0.5).sum()


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
