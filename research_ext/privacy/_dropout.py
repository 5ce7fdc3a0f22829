"""Dropout masks recorded in the forward pass and replayed when a layer is re-run per example.

Per-sample gradients from a re-run (whole-model ``vmap``, or the per-layer ``vmap`` of layers
without a dedicated rule) must see the masks of the forward pass whose loss they differentiate,
or the clipped sum is the gradient of another network. :class:`DropoutRecorder` intercepts the
dropout functions (``F.dropout``, ``dropout1d/2d/3d``, and ``scaled_dot_product_attention`` with
``dropout_p > 0``, computed then by its math definition) and draws each mask as the functional
dropout of a tensor of ones, which consumes the random stream exactly as the dropout of the
input would; :class:`DropoutReplay` hands each example its slice of the recorded masks inside
``vmap``. Alpha dropout is not intercepted (its masks are not multiplicative), nor are random
ops other than these dropouts.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from research_ext.errors import UnsupportedModuleError

__all__ = ["DropoutRecorder", "DropoutReplay", "MasksNeededError"]

_NAMES = ("dropout", "dropout1d", "dropout2d", "dropout3d", "scaled_dot_product_attention")


class MasksNeededError(Exception):
    """Raised by a replay without recorded masks: the caller records a forward and retries."""


def _dropout_args(args: Any, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    names = ("input", "p", "training", "inplace")
    defaults = {"p": 0.5, "training": True, "inplace": False}
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return tuple(bound.get(n, defaults.get(n)) for n in names)


def _sdpa(
    mode: "_MaskMode",
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` by its definition, with the dropout mask from ``mode``."""
    if enable_gqa:
        reps = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(reps, -3), value.repeat_interleave(reps, -3)
    tq, tk = query.shape[-2], key.shape[-2]
    scores = query @ key.transpose(-2, -1) * (scale or 1 / math.sqrt(query.shape[-1]))
    if is_causal:
        causal = torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask
    return mode.dropout(_ORIGINAL["dropout"], scores.softmax(-1), dropout_p, False) @ value


_ORIGINAL = {name: getattr(F, name) for name in _NAMES}
_ACTIVE: list["_MaskMode"] = []


def _wrapper(name: str) -> Callable[..., Any]:
    original = _ORIGINAL[name]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _ACTIVE:
            return original(*args, **kwargs)
        mode = _ACTIVE[-1]
        if name == "scaled_dot_product_attention":
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            if p > 0:
                return _sdpa(mode, *args, **kwargs)
            return original(*args, **kwargs)
        x, p, training, inplace = _dropout_args(args, kwargs)
        if training and p > 0:
            return mode.dropout(original, x, float(p), bool(inplace))
        return original(*args, **kwargs)

    return wrapper


_WRAPPERS = {name: _wrapper(name) for name in _NAMES}


class _MaskMode:
    """A context in which ``torch.nn.functional``'s dropouts go through :meth:`dropout`.

    The functions are swapped in ``torch.nn.functional``'s namespace (where ``nn.Dropout``,
    ``multi_head_attention_forward`` and user code look them up) while any mode is active.
    """

    def dropout(
        self, func: Callable[..., Any], x: torch.Tensor, p: float, inplace: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    def __enter__(self) -> "_MaskMode":
        if not _ACTIVE:
            for name, wrapper in _WRAPPERS.items():
                setattr(F, name, wrapper)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)
        if not _ACTIVE:
            for name, original in _ORIGINAL.items():
                setattr(F, name, original)


class DropoutRecorder(_MaskMode):
    """Within ``with``: every dropout draws its (scaled) mask as torch would, and keeps it."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []

    def dropout(
        self, func: Callable[..., Any], x: torch.Tensor, p: float, inplace: bool
    ) -> torch.Tensor:
        """Dropout of ``x`` whose mask is recorded."""
        with torch.no_grad():
            mask = func(torch.ones_like(x), p, True)
        self.masks.append(mask)
        return x.mul_(mask) if inplace else x * mask


class DropoutReplay(_MaskMode):
    """Within ``with`` inside ``vmap``: the k-th dropout uses example ``index``'s part of mask k.

    ``masks`` are whole-batch masks from a :class:`DropoutRecorder`; the batch is found as the
    one dimension of a mask that is ``batch_size`` times the per-example call's.
    """

    def __init__(self, masks: list[torch.Tensor] | None, index: torch.Tensor, batch_size: int):
        self.masks, self.index, self.batch_size = masks, index, batch_size
        self.position = 0

    def dropout(
        self, func: Callable[..., Any], x: torch.Tensor, p: float, inplace: bool
    ) -> torch.Tensor:
        """Dropout of ``x`` (one example) with its slice of the recorded mask."""
        if self.masks is None:
            raise MasksNeededError
        if self.position >= len(self.masks):
            raise UnsupportedModuleError(
                "per-sample gradients: the re-run drew more dropout masks than the forward "
                f"pass ({len(self.masks)}); the layer's randomness is not a function of its inputs"
            )
        full = self.masks[self.position]
        self.position += 1
        shape, one = tuple(full.shape), tuple(x.shape)
        dims = [
            d
            for d in range(len(one))
            if len(shape) == len(one)
            and shape[d] == self.batch_size * one[d]
            and shape[:d] + shape[d + 1 :] == one[:d] + one[d + 1 :]
        ]
        if not dims:
            raise UnsupportedModuleError(
                f"per-sample gradients: a dropout mask of shape {shape} has no batch dimension "
                f"matching the per-example shape {one} (batch size {self.batch_size})"
            )
        d = dims[0]
        split = full.reshape(*shape[:d], self.batch_size, one[d], *shape[d + 1 :])
        mask = split.index_select(d, self.index.reshape(1)).reshape(one)
        return x.mul_(mask) if inplace else x * mask
