"""The data a curvature operator reads: one ``(inputs, targets)`` batch or an iterable of them.

A single batch becomes a one-element list; an iterable stays lazy (a one-shot iterator is
materialized, since every product replays it). Inputs may be a tensor, a tuple or list of
positional inputs, or a dict of keyword inputs; the batch size is read from the first tensor.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from research_ext.core import call_with_params, check_one_of, format_message

__all__ = ["Batch", "as_batches", "batch_size", "call_model", "loss_reduction"]

Batch = tuple[Any, torch.Tensor]


def loss_reduction(fn: str, loss_fn: Any, reduction: str | None) -> str:
    """``reduction``, else the loss's own ``reduction`` attribute, else ``"mean"``; checked."""
    if reduction is None:
        reduction = getattr(loss_fn, "reduction", "mean")
    return check_one_of(fn, "reduction", reduction, ("mean", "sum"))


def as_batches(fn: str, data: Any) -> tuple[list[Batch] | Iterable[Batch], bool]:
    """``(batches, single)``: a tensor batch becomes a one-element list; iterables stay lazy."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        if isinstance(data[0], torch.Tensor | tuple | list | dict):
            return [(data[0], data[1])], True
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            format_message(
                fn, "data", "an (inputs, targets) batch or an iterable of batches", type(data)
            )
        )
    if iter(data) is data:  # a one-shot iterator cannot be replayed for every product
        data = list(data)
    return data, False


def batch_size(x: Any) -> int:
    """The leading dimension of the first tensor in the inputs ``x``."""
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    if isinstance(x, tuple | list):
        return batch_size(x[0])
    if isinstance(x, dict):
        return batch_size(next(iter(x.values())))
    raise TypeError(f"curvature operator: cannot infer a batch size from inputs of type {type(x)}")


def call_model(model: nn.Module, params: dict[str, torch.Tensor], x: Any) -> torch.Tensor:
    """``model(x)`` with ``params``; a dict is keyword inputs, a tuple or list positional ones."""
    if isinstance(x, dict):
        return call_with_params(model, params, (), x)
    return call_with_params(model, params, tuple(x) if isinstance(x, list) else x)
