"""Dict-of-tensor helpers for calling an ``nn.Module`` functionally with given parameters."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from research_ext.core._validation import check_type

__all__ = ["call_with_params", "module_buffers", "module_params"]


def module_params(
    model: nn.Module, *, trainable_only: bool = True, detach: bool = False
) -> dict[str, torch.Tensor]:
    """The parameters of ``model`` by qualified name (tied parameters appear once).

    Args:
        model: any ``nn.Module``.
        trainable_only: keep only parameters with ``requires_grad=True``.
        detach: return detached tensors (sharing storage) instead of the parameters.

    Returns:
        ``{name: tensor}`` in registration order.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.

    Example:
        >>> sorted(module_params(nn.Linear(2, 3)))
        ['bias', 'weight']
    """
    check_type("module_params", "model", model, nn.Module, "an nn.Module")
    return {
        name: (p.detach() if detach else p)
        for name, p in model.named_parameters()
        if p.requires_grad or not trainable_only
    }


def module_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of ``model`` (e.g. BatchNorm running statistics) by qualified name.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.

    Example:
        >>> sorted(module_buffers(nn.BatchNorm1d(2)))
        ['num_batches_tracked', 'running_mean', 'running_var']
    """
    check_type("module_buffers", "model", model, nn.Module, "an nn.Module")
    return dict(model.named_buffers())


def call_with_params(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    args: Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> Any:
    """Run ``model(*args, **kwargs)`` with ``params`` (and ``buffers``) substituted.

    A thin wrapper over ``torch.func.functional_call`` that accepts a single non-tuple argument
    and merges parameters with buffers (the model's own buffers if none are given).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> p = {"weight": torch.zeros(1, 2), "bias": torch.ones(1)}
        >>> call_with_params(lin, p, torch.ones(1, 2)).item()
        1.0
    """
    check_type("call_with_params", "model", model, nn.Module, "an nn.Module")
    tensors = dict(module_buffers(model) if buffers is None else buffers)
    tensors.update(params)
    if not isinstance(args, tuple):
        args = (args,)
    return torch.func.functional_call(model, tensors, args, dict(kwargs or {}))
