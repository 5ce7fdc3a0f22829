"""Per-sample gradients of any model torch.func can trace (vmap over ``functional_call``)."""

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from research_ext.core import (
    call_with_params,
    module_buffers,
    module_params,
    tree_flatten,
    tree_leaves,
    tree_unflatten,
)
from research_ext.errors import UnsupportedModuleError

__all__ = [
    "conv_weight_per_sample",
    "per_sample_grads",
    "quiet_vmap",
    "split_batch",
    "summed_loss",
    "unpack_batch",
]


@contextlib.contextmanager
def quiet_vmap() -> Iterator[None]:
    """Silence torch's "performance drop" notice for ops vmap runs by its slow fallback."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="There is a performance drop", category=UserWarning
        )
        yield


LossFn = Callable[[Any, Any], torch.Tensor]


def _forward_kwargs(fn: str, model: nn.Module | None, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a mapping batch that ``model.forward`` takes as keyword arguments."""
    if model is None:
        return dict(batch)
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(batch)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    kwargs = {k: v for k, v in batch.items() if k in names}
    if not kwargs:
        raise TypeError(
            f"{fn}: a mapping `batch` must name at least one argument of "
            f"{type(model).__name__}.forward {sorted(names)}, got keys {sorted(batch)}"
        )
    return kwargs


def unpack_batch(
    fn: str, batch: Any, model: nn.Module | None = None
) -> tuple[tuple[Any, ...], dict[str, Any], Any, int]:
    """``(args, kwargs, targets, batch_size)`` for ``loss_fn(model(*args, **kwargs), targets)``.

    A batch is a pair ``(inputs, targets)`` with ``inputs`` a tensor, a tuple or list of tensors
    (positional) or a mapping (keyword); or a mapping of named tensors alone, whose entries
    ``model.forward`` names are its keyword inputs and which is handed whole to ``loss_fn`` as
    the targets (targets inside the batch). The batch size is the first dim of the first
    tensor among the inputs.
    """
    args: tuple[Any, ...]
    if isinstance(batch, Mapping):
        args, kwargs, targets = (), _forward_kwargs(fn, model, batch), batch
    elif isinstance(batch, tuple | list) and len(batch) == 2:
        inputs, targets = batch
        if isinstance(inputs, Mapping):
            args, kwargs = (), dict(inputs)
        elif isinstance(inputs, tuple | list):
            args, kwargs = tuple(inputs), {}
        else:
            args, kwargs = (inputs,), {}
    else:
        raise TypeError(
            f"{fn}: `batch` must be a pair (inputs, targets) or a mapping of named tensors, got "
            f"batch of type {type(batch).__name__}"
        )
    first = next(
        (t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.ndim > 0),
        None,
    )
    if first is None:
        raise TypeError(
            f"{fn}: `inputs` must hold a tensor with a batch dim (a tensor, a tuple of tensors "
            f"or a mapping of them), got inputs of types "
            f"{[type(t).__name__ for t in tree_leaves((args, kwargs))]}"
        )
    return args, kwargs, targets, int(first.shape[0])


def split_batch(fn: str, batch: Any) -> tuple[Any, Any, int]:
    """Return ``(inputs, targets, batch_size)`` (see :func:`unpack_batch` for the forms)."""
    args, kwargs, targets, size = unpack_batch(fn, batch)
    return (kwargs if kwargs else args), targets, size


def summed_loss(loss_fn: LossFn, outputs: Any, targets: Any, batch_size: int) -> torch.Tensor:
    """Sum over the batch of the per-example losses ``loss_fn`` defines.

    ``loss_fn`` returns per-example losses of shape ``(batch,)`` or a scalar reduced over the
    batch; a scalar is taken as a mean (torch's default) unless ``loss_fn.reduction == "sum"``.
    """
    loss = loss_fn(outputs, targets)
    if loss.ndim == 0:
        if getattr(loss_fn, "reduction", "mean") == "sum":
            return loss
        return loss * batch_size
    if loss.shape != (batch_size,):
        raise ValueError(
            f"loss_fn: must return a scalar or per-example losses of shape ({batch_size},), "
            f"got shape {tuple(loss.shape)}"
        )
    return loss.sum()


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    r"""Gradient of each example's loss with respect to each trainable parameter.

    :math:`g_i = \nabla_\theta \ell(f_\theta(x_i), y_i)` for every example i of the batch,
    computed with ``torch.func.vmap`` over ``grad`` of ``functional_call`` (one trace, no Python
    loop). Each example is run as a batch of one, so ``loss_fn``'s reduction does not matter.
    Buffers are passed through unchanged. Dropout uses the masks an ordinary forward of the
    batch would draw under the same random state (one extra forward without gradients records
    them when the model draws any), so the per-example gradients sum to the batch gradient.

    Args:
        model: any module whose forward torch.func can trace and that treats examples
            independently (no BatchNorm in training mode; see :func:`validate`).
        loss_fn: ``loss_fn(outputs, targets)``, e.g. ``nn.CrossEntropyLoss()``, or any function
            of the outputs and the targets (or, for a mapping batch, of the whole batch)
            returning per-example losses ``(batch,)`` or their mean.
        batch: ``(inputs, targets)`` with ``inputs`` a tensor, a tuple of tensors (positional
            arguments) or a mapping (keyword arguments, ``model(**inputs)``); or a mapping of
            named tensors, targets inside, whose entries ``model.forward`` names are its
            inputs and which ``loss_fn`` receives whole. Tensors whose first dim is the batch
            size are split per example; anything else is shared.
        params: parameters to differentiate (default: the model's trainable parameters).
        chunk_size: examples per vmap chunk, to bound memory (default: all at once).

    Returns:
        ``{name: tensor of shape (batch, *param.shape)}``, dtype and device of the parameter.

    Raises:
        TypeError: if ``batch`` is neither an ``(inputs, targets)`` pair nor a mapping.
        UnsupportedModuleError: if torch.func cannot trace the model per example.

    Example:
        >>> model = nn.Linear(3, 1)
        >>> x, y = torch.randn(4, 3), torch.randn(4, 1)
        >>> g = per_sample_grads(model, nn.MSELoss(), (x, y))
        >>> g["weight"].shape
        torch.Size([4, 1, 3])
        >>> resid = model(x) - y  # d/dW (w.x + b - y)^2 = 2 (w.x + b - y) x
        >>> torch.allclose(g["weight"], (2 * resid * x)[:, None, :], atol=1e-6)
        True
        >>> def loss(out, batch):  # targets inside a mapping batch
        ...     return (out - batch["y"]).pow(2).sum(1)
        >>> g2 = per_sample_grads(model, loss, {"input": x, "y": y})
        >>> torch.allclose(g2["weight"], g["weight"])
        True

    References:
        Horace He, Richard Zou, "functorch: JAX-like composable function transforms for
        PyTorch", 2021 (``torch.func``).
    """
    args, kwargs, targets, batch_size = unpack_batch("per_sample_grads", batch, model)
    params = dict(module_params(model, detach=True) if params is None else params)
    if batch_size == 0:
        return {n: p.new_zeros((0, *p.shape)) for n, p in params.items()}
    buffers = module_buffers(model)
    # Every tensor with the batch size as its first dim is split per example, the rest shared.
    leaves, spec = tree_flatten((args, kwargs, targets))
    dims = [
        0 if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == batch_size else None
        for t in leaves
    ]
    from research_ext.privacy._dropout import DropoutRecorder, DropoutReplay, MasksNeededError
    from research_ext.privacy._recurrent import unrolled_recurrent  # both import this module

    training = any(m.training for m in model.modules())

    def run(masks: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        def loss_one(
            p: dict[str, torch.Tensor], flat: list[Any], index: torch.Tensor
        ) -> torch.Tensor:
            ones = [t.unsqueeze(0) if d == 0 else t for t, d in zip(flat, dims, strict=True)]
            a, kw, y = tree_unflatten(ones, spec)
            with DropoutReplay(masks, index, batch_size) if training else nullcontext():
                out = call_with_params(model, p, a, kw, buffers=buffers)
            return loss_fn(out, y).sum()

        grad_fn = torch.func.vmap(
            torch.func.grad(loss_one),
            in_dims=(None, dims, 0),
            randomness="different",
            chunk_size=chunk_size,
        )
        first = next(t for t, d in zip(leaves, dims, strict=True) if d == 0)
        index = torch.arange(batch_size, device=first.device)
        with quiet_vmap(), unrolled_recurrent(model):
            return dict(grad_fn(params, leaves, index))

    try:
        try:
            return run(None)
        except MasksNeededError:
            # The model draws dropout masks: record those of one batch forward, then replay
            # them, so the gradients are those of an ordinary forward under the same seed.
            recorder = DropoutRecorder()
            with torch.no_grad(), recorder, unrolled_recurrent(model):
                call_with_params(model, params, args, kwargs, buffers=buffers)
            return run(recorder.masks)
    except RuntimeError as err:
        raise UnsupportedModuleError(
            f"per_sample_grads: torch.func could not compute per-example gradients of "
            f"{type(model).__name__} (inputs of batch size {batch_size}): {err}; whole-model "
            f"vmap runs each example as a batch of one, which ops with per-batch state or "
            f"data-dependent shapes (packed sequences) do not allow; DPSGD's "
            f"grad_sample_mode='auto' computes them with per-layer hooks instead"
        ) from err


def conv_weight_per_sample(x: torch.Tensor, grad_output: torch.Tensor, conv: Any) -> torch.Tensor:
    """Per-sample weight gradients of a zero-padded ``nn.Conv1d/2d/3d`` by one grouped convolution.

    The batch is folded into the channels (``(1, B * C_in, ...)``) and the convolution's weight
    gradient is taken with ``B * groups`` groups, so example ``i``'s gradient is the block of
    rows ``i * C_out:(i + 1) * C_out``: torch's convolution kernel instead of an im2col copy and
    a batched matmul (on CPU about 1.5x faster when each group has 8 or more input channels).

    Args:
        x: The layer's input, shape ``(B, C_in, *spatial)``.
        grad_output: Gradient of the loss with respect to the layer's output,
            shape ``(B, C_out, *spatial_out)``, same dtype and device as ``x``.
        conv: The convolution module (its ``padding_mode`` must be ``"zeros"``).

    Returns:
        Tensor of shape ``(B, groups, C_out // groups, C_in // groups * prod(kernel_size))``
        and ``x``'s dtype: the per-sample gradients in the weight's layout.

    Example:
        >>> conv = nn.Conv2d(8, 4, 3, padding=1)
        >>> x, go = torch.randn(2, 8, 5, 5), torch.randn(2, 4, 5, 5)
        >>> conv_weight_per_sample(x, go, conv).shape
        torch.Size([2, 1, 4, 72])
    """
    from research_ext.privacy._affine import conv_pads  # _affine -> _layers -> this module

    batch, nd = x.shape[0], x.ndim - 2
    pads = conv_pads(conv, nd)
    if any(left != right for left, right in pads):  # "same" with an odd total: pad explicitly
        flat: list[int] = []
        for left, right in reversed(pads):
            flat += [left, right]
        x, padding = torch.nn.functional.pad(x, flat), [0] * nd
    else:
        padding = [left for left, _ in pads]
    weight_shape = (batch * conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size)
    _, grad, _ = torch.ops.aten.convolution_backward(
        grad_output.reshape(1, batch * conv.out_channels, *grad_output.shape[2:]),
        x.reshape(1, batch * conv.in_channels, *x.shape[2:]),
        x.new_empty(weight_shape),
        None,
        list(conv.stride),
        padding,
        list(conv.dilation),
        False,
        [0] * nd,
        batch * conv.groups,
        [False, True, False],
    )
    return grad.reshape(batch, conv.groups, conv.out_channels // conv.groups, -1)
