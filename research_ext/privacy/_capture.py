"""What the hook engine captures in a forward: layer calls, and aliases that need a gradient.

:class:`Records` keeps a layer's calls with the version counters of their tensors (an in-place
change after the call is detected, not silently used); :func:`tap_tensor` makes an alias of a
tensor that needs no gradient (a first layer's output once its parameters leave the graph)
whose gradient the backward still computes, so that layer's output gradient arrives.
"""

from typing import Any

import torch

__all__ = [
    "ATTENTION_INPUTS",
    "Records",
    "captured_tensors",
    "needs_tap",
    "tap_attention_inputs",
    "tap_tensor",
]


def captured_tensors(call: tuple[Any, Any, Any]) -> list[torch.Tensor]:
    """The tensors among a captured call's ``(args, kwargs, outputs)``."""
    args, kwargs, outs = call
    found = [*args, *kwargs.values(), *outs]
    return [t for t in found if isinstance(t, torch.Tensor)]


def _versions(call: tuple[Any, Any, Any]) -> tuple[int, ...]:
    """The version counters of a captured call's tensors (in :func:`captured_tensors` order)."""
    return tuple(t._version for t in captured_tensors(call))


class Records(list):  # type: ignore[type-arg]
    """A layer's captured calls, with the version counters of their tensors when captured."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[tuple[int, ...]] = []
        #: Why the layer's rule could not run its forward (``HookEngine.capture``'s keep_going).
        self.failure: str | None = None

    def append(self, call: Any) -> None:
        """Capture one call ``(args, kwargs, outputs)``."""
        super().append(call)
        self.versions.append(_versions(call))

    def modified(self) -> bool:
        """Whether a captured tensor was modified in place since its call."""
        return any(
            _versions(call) != versions for call, versions in zip(self, self.versions, strict=True)
        )

    def release_outputs(self) -> None:
        """Replace the outputs of unmodified calls by shape-only stand-ins (``meta`` tensors).

        For a forward whose output gradients come through tensor hooks: once those hooks are
        registered the outputs' values are never read, and holding them would keep alive what
        a non-private step frees during its forward (a norm layer's output once the next
        activation has run). A hook registered before an in-place change of its tensor receives
        the gradient at the value before the change, so later changes need no check; a call
        already modified keeps its tensors, for :meth:`modified` to report.
        """
        for i, (call, versions) in enumerate(zip(self, self.versions, strict=True)):
            if _versions(call) != versions:
                continue
            args, kwargs, outs = call
            stand_ins = tuple(torch.empty_like(o, device="meta") for o in outs)
            super().__setitem__(i, (args, kwargs, stand_ins))
            self.versions[i] = _versions(self[i])


class _Tap(torch.autograd.Function):
    """An alias of ``x`` that needs a gradient; the gradient stops there (never passed on)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Not a view: in-place changes of the output stay legal for autograd (they show in the
        # shared version counter, which ``Records.modified`` checks).
        return x.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        return None, None


def needs_tap(t: torch.Tensor) -> bool:
    return not t.requires_grad and (t.is_floating_point() or t.is_complex())


def tap_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor whose gradient the backward computes (see :meth:`HookEngine.capture`)."""
    anchor = torch.zeros((), device=t.device, requires_grad=True)
    # torch types Function.apply without annotations.
    tapped: torch.Tensor = _Tap.apply(anchor, t)  # type: ignore[no-untyped-call]
    return tapped


#: The positional and keyword inputs that an attention layer projects.
ATTENTION_INPUTS = ("query", "key", "value")


def tap_attention_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Query, key and value that need no gradient, as aliases that do (the same one if shared)."""
    done: dict[int, torch.Tensor] = {}

    def tapped(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or not needs_tap(t):
            return t
        if id(t) not in done:
            done[id(t)] = tap_tensor(t)
        return done[id(t)]

    n = len(ATTENTION_INPUTS)
    args = (*(tapped(a) for a in args[:n]), *args[n:])
    kwargs = {k: tapped(v) if k in ATTENTION_INPUTS else v for k, v in kwargs.items()}
    return args, kwargs
