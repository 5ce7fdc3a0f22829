"""What the user-loop path keeps of a forward, and how it replays one.

:class:`research_ext.privacy.DPOptimizer` records each user forward of a logical step
(:class:`PendingForward`: its inputs, captured layer calls, random state and the gradients that
arrive in the user's backward). Where one-backward book-keeping cannot give per-example
gradients, the engine re-runs the forward on those inputs with that random state and
differentiates :class:`OutputGradLoss`, whose gradient equals the user's loss's through the
model's outputs.
"""

import inspect
from typing import Any

import torch
from torch import nn

from research_ext.core import tree_leaves

__all__ = [
    "OutputGradLoss",
    "PendingForward",
    "batch_size_of",
    "bound_inputs",
    "rng_state",
    "set_rng_state",
]


class OutputGradLoss:
    r"""``sum_k w_k <y_k, dL/dy_k>`` over the model's outputs: the replay's loss.

    ``targets`` is ``(grads, indices, scale_batched, scale_scalar)``: the output gradients the
    user's backward produced, the positions of their outputs among the output tensors, and the
    weights of batch-dim and scalar outputs.
    """

    reduction = "sum"

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        grads, indices, scale_batched, scale_scalar = targets
        leaves = [t for t in tree_leaves(outputs) if isinstance(t, torch.Tensor)]
        total = torch.zeros((), dtype=leaves[0].dtype, device=leaves[0].device)
        for g, k in zip(grads, indices, strict=True):
            w = scale_batched if g.ndim > 0 else scale_scalar
            total = total + (leaves[k] * g).sum() * w
        return total


class PendingForward:
    """One user forward of a logical step: its captured calls and the gradients that arrive."""

    def __init__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], records: Any, rng: Any
    ) -> None:
        self.args, self.kwargs, self.records, self.rng = args, kwargs, records, rng
        self.batch_size = batch_size_of(args, kwargs)
        self.by_call: dict[tuple[str, int], list[torch.Tensor | None]] = {}
        self.early: dict[str, torch.Tensor] = {}  # norms of layers done inside the backward
        self.root: list[torch.Tensor | None] = []
        self.reached = False  # a gradient arrived
        self.done = False  # the backward that brought it has finished

    def arrived(self) -> None:
        if not self.reached:
            self.reached = True

            def finish() -> None:
                self.done = True

            # Runs when the backward that reached this forward has finished.
            torch.autograd.Variable._execution_engine.queue_callback(finish)


def batch_size_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for t in tree_leaves((args, kwargs)):
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            return int(t.shape[0])
    raise TypeError(
        f"DPOptimizer: the model's inputs must hold a tensor with a batch dim, got inputs of "
        f"types {[type(t).__name__ for t in tree_leaves((args, kwargs))]}"
    )


def rng_state(model: nn.Module) -> tuple[Any, list[Any]]:
    """Torch's CPU random state and that of every CUDA device holding a parameter of ``model``."""
    if not torch.cuda.is_initialized():  # no CUDA tensor exists yet: nothing to scan
        return torch.get_rng_state(), []
    devices = {p.device for p in model.parameters() if p.device.type == "cuda"}
    return torch.get_rng_state(), [(d, torch.cuda.get_rng_state(d)) for d in devices]


def set_rng_state(state: tuple[Any, list[Any]]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state[0])
    for device, s in state[1]:
        torch.cuda.set_rng_state(s, device)


def bound_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The captured call as batch inputs: positional, keyword, or both bound to keywords."""
    if not kwargs:
        return tuple(args)
    if not args:
        return dict(kwargs)
    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    return dict(bound.arguments)
