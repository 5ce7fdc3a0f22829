"""Per-sample gradients of any model torch.func can trace (vmap over ``functional_call``)."""

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from research_ext.core import call_with_params, module_buffers, module_params, tree_map
from research_ext.errors import UnsupportedModuleError

__all__ = ["per_sample_grads", "quiet_vmap", "split_batch", "summed_loss"]


@contextlib.contextmanager
def quiet_vmap() -> Iterator[None]:
    """Silence torch's "performance drop" notice for ops vmap runs by its slow fallback."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="There is a performance drop", category=UserWarning
        )
        yield


LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def split_batch(fn: str, batch: Any) -> tuple[Any, Any, int]:
    """Return ``(inputs, targets, batch_size)`` from a ``(inputs, targets)`` pair."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise TypeError(
            f"{fn}: `batch` must be a pair (inputs, targets), got batch of type "
            f"{type(batch).__name__}"
        )
    inputs, targets = batch
    first = inputs[0] if isinstance(inputs, tuple | list) else inputs
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        raise TypeError(f"{fn}: `inputs` must be a tensor (or tuple of tensors) with a batch dim")
    return inputs, targets, int(first.shape[0])


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
    batch: tuple[Any, torch.Tensor],
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
        loss_fn: ``loss_fn(outputs, targets)``, e.g. ``nn.CrossEntropyLoss()``.
        batch: ``(inputs, targets)``; ``inputs`` a tensor or tuple of tensors of shape
            ``(batch, ...)``, ``targets`` of shape ``(batch, ...)``.
        params: parameters to differentiate (default: the model's trainable parameters).
        chunk_size: examples per vmap chunk, to bound memory (default: all at once).

    Returns:
        ``{name: tensor of shape (batch, *param.shape)}``, dtype and device of the parameter.

    Raises:
        TypeError: if ``batch`` is not an ``(inputs, targets)`` pair.
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

    References:
        Horace He, Richard Zou, "functorch: JAX-like composable function transforms for
        PyTorch", 2021 (``torch.func``).
    """
    inputs, targets, batch_size = split_batch("per_sample_grads", batch)
    params = dict(module_params(model, detach=True) if params is None else params)
    if batch_size == 0:
        return {n: p.new_zeros((0, *p.shape)) for n, p in params.items()}
    buffers = module_buffers(model)
    args = tuple(inputs) if isinstance(inputs, list) else inputs
    from research_ext.privacy._dropout import DropoutRecorder, DropoutReplay, MasksNeededError
    from research_ext.privacy._recurrent import unrolled_recurrent  # both import this module

    training = any(m.training for m in model.modules())

    def run(masks: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        def loss_one(
            p: dict[str, torch.Tensor], x: Any, y: torch.Tensor, index: torch.Tensor
        ) -> torch.Tensor:
            x1 = tree_map(lambda t: t.unsqueeze(0), x)
            with DropoutReplay(masks, index, batch_size) if training else nullcontext():
                out = call_with_params(
                    model, p, x1 if isinstance(x1, tuple) else (x1,), buffers=buffers
                )
            return loss_fn(out, y.unsqueeze(0)).sum()

        grad_fn = torch.func.vmap(
            torch.func.grad(loss_one),
            in_dims=(None, 0, 0, 0),
            randomness="different",
            chunk_size=chunk_size,
        )
        index = torch.arange(batch_size, device=targets.device)
        with quiet_vmap(), unrolled_recurrent(model):
            return dict(grad_fn(params, args, targets, index))

    try:
        try:
            return run(None)
        except MasksNeededError:
            # The model draws dropout masks: record those of one batch forward, then replay
            # them, so the gradients are those of an ordinary forward under the same seed.
            recorder = DropoutRecorder()
            with torch.no_grad(), recorder, unrolled_recurrent(model):
                call_with_params(
                    model, params, args if isinstance(args, tuple) else (args,), buffers=buffers
                )
            return run(recorder.masks)
    except RuntimeError as err:
        raise UnsupportedModuleError(
            f"per_sample_grads: torch.func could not compute per-example gradients of "
            f"{type(model).__name__} (inputs of batch size {batch_size}): {err}; whole-model "
            f"vmap runs each example as a batch of one, which ops with per-batch state or "
            f"data-dependent shapes (packed sequences) do not allow; DPSGD's "
            f"grad_sample_mode='auto' computes them with per-layer hooks instead"
        ) from err
