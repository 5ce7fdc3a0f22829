"""Derivatives with respect to an ``nn.Module``'s parameters, via ``torch.func.functional_call``.

:func:`module_function` turns a module (and optionally a loss) into a pure function of a
parameter dict, which every transform of this package accepts. Buffers are handled so that no
derivative is silently wrong and no state leaks:

* the module's current mode decides the function: in train mode BatchNorm normalizes with the
  batch statistics (so the derivative includes the coupling between samples), in eval mode with
  its running statistics;
* evaluating the function never updates running statistics (train-mode BatchNorm runs with
  ``track_running_stats`` switched off for the call, which gives the same output without the
  in-place update that would otherwise fail under ``vmap`` or corrupt the buffers);
* active dropout (train mode, ``p > 0``) is refused: a randomly masked network has a different
  derivative at every call.
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from research_ext.core import check_type, module_buffers, module_params
from research_ext.functional._jacobian import hessian, jacobian

__all__ = ["module_function", "module_hessian", "module_jacobian"]

_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@contextlib.contextmanager
def _frozen_batch_norm_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm without the running-statistics update, restored afterwards."""
    switched = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


def _check_model(name: str, model: Any) -> nn.Module:
    check_type(name, "model", model, nn.Module, "an nn.Module")
    active = [
        n for n, m in model.named_modules() if isinstance(m, _DROPOUT) and m.training and m.p > 0
    ]
    if active:
        raise ValueError(
            f"{name}: `model` must not have active dropout, got dropout in train mode at "
            f"{active}; call model.eval() (or set p=0) so the function is deterministic"
        )
    return model


def module_function(
    model: nn.Module, loss_fn: Callable[..., torch.Tensor] | None = None
) -> tuple[Callable[..., Any], dict[str, torch.Tensor]]:
    r"""Return ``(fn, params)``: the module as a pure function of its trainable parameters.

    Without ``loss_fn``, ``fn(params, *inputs)`` is ``model(*inputs)``; with it,
    ``fn(params, inputs, targets)`` is ``loss_fn(model(inputs), targets)``, i.e.
    :math:`\theta \mapsto L(f_\theta(x), y)`. ``params`` holds the current trainable parameters
    (detached, sharing storage), so ``rf.jacobian(fn)(params, x)``,
    ``rf.hessian(fn)(params, x, y)`` or ``rf.hvp(lambda p: fn(p, x, y), (params,), (v,))``
    differentiate with respect to them. Buffers are the module's own, read at every call and
    never updated (module notes).

    Args:
        model: any ``nn.Module``; its train/eval mode at call time decides BatchNorm's behaviour.
        loss_fn: optional ``loss_fn(outputs, targets) -> scalar tensor``.

    Returns:
        ``(fn, params)`` with ``params`` a ``{name: tensor}`` dict.

    Raises:
        TypeError: ``model`` not an ``nn.Module``.
        ValueError: ``model`` has dropout active in train mode.

    Example:
        >>> import research_ext.functional as rf
        >>> lin = torch.nn.Linear(2, 1)
        >>> fn, params = rf.module_function(lin)
        >>> jac = rf.jacobian(fn)(params, torch.tensor([[1.0, 2.0]]))
        >>> jac["weight"]  # d(w.x + b)/dw = x
        tensor([[[[1., 2.]]]])
    """
    _check_model("module_function", model)
    params = module_params(model, detach=True)

    def fn(params: dict[str, torch.Tensor], *args: Any) -> Any:
        _check_model("module_function", model)
        tensors = dict(module_buffers(model))
        tensors.update(params)
        with _frozen_batch_norm_stats(model):
            if loss_fn is None:
                return torch.func.functional_call(model, tensors, args)
            inputs, targets = args
            if not isinstance(inputs, tuple):
                inputs = (inputs,)
            return loss_fn(torch.func.functional_call(model, tensors, inputs), targets)

    return fn, params


def module_jacobian(
    model: nn.Module, *inputs: Any, mode: str = "auto", chunk_size: int | str | None = None
) -> Any:
    r"""Jacobian of ``model(*inputs)`` with respect to its trainable parameters.

    :math:`\partial f_\theta(x) / \partial \theta`, one block per parameter, of shape
    ``(*output.shape, *param.shape)``, computed by :func:`jacobian` (same ``mode`` and
    ``chunk_size``).

    Args:
        model: the network (its mode decides BatchNorm's behaviour; active dropout is refused).
        *inputs: the inputs of ``model``.
        mode: ``"auto"``, ``"fwd"`` or ``"rev"``.
        chunk_size: see :func:`jacobian`.

    Returns:
        ``{name: tensor}`` (a pytree of such dicts for pytree outputs).

    Raises:
        TypeError: ``model`` not an ``nn.Module``.
        ValueError: active dropout, unknown ``mode``.

    Example:
        >>> import research_ext.functional as rf
        >>> lin = torch.nn.Linear(3, 2)
        >>> rf.module_jacobian(lin, torch.ones(4, 3))["bias"].shape
        torch.Size([4, 2, 2])
    """
    fn, params = module_function(model)
    return jacobian(fn, mode=mode, chunk_size=chunk_size)(params, *inputs)


def module_hessian(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: Any,
    *,
    chunk_size: int | str | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    r"""Hessian of a loss with respect to the model's parameters, by parameter pairs.

    :math:`\nabla^2_\theta L(f_\theta(x), y)`; the block ``H[a][b]`` has shape
    ``(*params[a].shape, *params[b].shape)``. For a model too large for a dense Hessian use
    :func:`hessian_vector_product` on the function from :func:`module_function`.

    Args:
        model: the network (its mode decides BatchNorm's behaviour; active dropout is refused).
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor``.
        inputs: the model's input (a tensor or a tuple of them).
        targets: whatever ``loss_fn`` takes as targets.
        chunk_size: chunking of the outer Jacobian (see :func:`jacobian`).

    Returns:
        ``{name_a: {name_b: tensor}}``.

    Raises:
        TypeError: ``model`` not an ``nn.Module``.
        ValueError: active dropout.

    Example:
        >>> import research_ext.functional as rf
        >>> lin = torch.nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> loss = lambda out, y: 0.5 * ((out - y) ** 2).sum()
        >>> rf.module_hessian(lin, loss, x, torch.zeros(1, 1))["weight"]["weight"].reshape(2, 2)  # x^T x
        tensor([[1., 2.],
                [2., 4.]])
    """
    fn, params = module_function(model, loss_fn)
    return hessian(fn, chunk_size=chunk_size)(params, inputs, targets)
