"""Model checks before private training: what breaks per-sample gradients, and automatic fixes.

BatchNorm in training mode normalises with statistics of the whole batch, so one example's output
(and gradient) depends on the others: per-sample gradients are undefined and the sensitivity
analysis of DP-SGD does not hold. ``fix=True`` swaps it for a normalisation computed within each
example, which mixes nothing across the batch (the idea of Opacus's ``ModuleValidator.fix``):

* ``BatchNorm2d(C)``/``BatchNorm3d(C)`` become ``GroupNorm(gcd(32, C), C)`` (Wu & He 2018's
  default group count where it divides C), over groups of channels and all positions;
* ``BatchNorm1d(C)`` becomes ``GroupNorm(1, C)``: each example normalised over all its channels
  (and its length for (N, C, L) inputs), with BatchNorm's per-channel scale and shift, i.e. a
  LayerNorm over the features. Any more groups is wrong on (N, C) inputs, its usual use after a
  Linear layer: there a group of C/G channels has C/G values, and with one channel per group
  (what gcd(32, C) gave for C dividing 32, as Opacus's min(32, C) does for C <= 32) every value
  normalises to zero, so the layer output its bias whatever the input.
* ``BatchNorm1d(1)`` is refused, naming the module: normalising one value per example is
  constant; remove the layer, or use ``GroupNorm(1, 1)`` yourself if the inputs are (N, 1, L).
"""

import copy
import math
from typing import Any

from torch import nn

from research_ext.errors import UnsupportedModuleError

__all__ = ["fingerprint", "raise_if_invalid", "validate"]


def _problems(model: nn.Module) -> list[tuple[str, bool]]:
    """``(message, fatal)`` pairs; fatal ones make per-sample gradients undefined or wrong."""
    found: list[tuple[str, bool]] = []
    owners: dict[int, str] = {}
    for name, module in model.named_modules():
        label = f"`{name or '<root>'}` ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            found.append(
                (
                    f"{label}: BatchNorm mixes examples of a batch, so per-sample "
                    f"gradients are undefined; replace it with GroupNorm (fix=True: "
                    f"GroupNorm(1, C) for BatchNorm1d, a LayerNorm over the channels)",
                    True,
                )
            )
        if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
            found.append(
                (
                    f"{label}: scale_grad_by_freq=True scales by batch-wide counts, so "
                    f"per-sample gradients are undefined",
                    True,
                )
            )
        if isinstance(module, nn.Embedding) and module.max_norm is not None:
            found.append(
                (
                    f"{label}: max_norm renormalizes the weight in place during forward; "
                    f"set max_norm=None",
                    True,
                )
            )
        if getattr(module, "inplace", False) is True:
            found.append(
                (
                    f"{label}: inplace=True overwrites a layer output the hook engine "
                    f"reads gradients at; set inplace=False (fix=True)",
                    True,
                )
            )
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in owners:
                found.append(
                    (
                        f"{label}: parameter `{pname}` is tied to `{owners[id(p)]}`; the "
                        f'"auto" engine runs the layers sharing it as per-layer vmap units '
                        f"and adds their per-sample gradients (whole-model vmap where a layer "
                        f"uses a parameter twice)",
                        False,
                    )
                )
            owners.setdefault(id(p), f"{name}.{pname}" if name else pname)
    return found


def validate(model: nn.Module, fix: bool = False) -> list[str] | nn.Module:
    """List what would make DP-SGD on ``model`` wrong or slow, or return a fixed copy.

    Problems flagged: BatchNorm in training mode (mixes examples; fixed to
    ``GroupNorm(gcd(32, C), C)``, and ``BatchNorm1d`` to ``GroupNorm(1, C)``, which normalises
    each example over its channels, on (N, C) and (N, C, L) inputs alike; see the module
    docstring), embeddings with ``scale_grad_by_freq`` or ``max_norm``,
    in-place activations (fixed to
    ``inplace=False``), and tied parameters (not an error: the ``"auto"`` engine runs the
    layers that share one as per-layer vmap units and adds their per-sample gradients). Non-contiguous or expanded index inputs to embeddings (e.g. expanded
    position ids) are supported by every engine and need no fix; so are ``nn.RNN``, ``nn.GRU``,
    ``nn.LSTM`` and their cells in every layout torch accepts (time or batch first, stacked,
    bidirectional, ``proj_size``, packed sequences; packed sequences not under
    ``grad_sample_mode="vmap"``).

    Args:
        model: the model to check (not modified).
        fix: return a fixed deep copy instead of the list.

    Returns:
        With ``fix=False``, one message per problem (empty when the model is fine); with
        ``fix=True``, a deep copy with BatchNorm replaced and in-place flags cleared.

    Raises:
        UnsupportedModuleError: with ``fix=True``, for ``BatchNorm1d(1)`` (one channel: a
            per-example normalisation of (N, 1) inputs is constant), naming the module.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        >>> len(validate(model))
        2
        >>> fixed = validate(model, fix=True)
        >>> type(fixed[1]).__name__, validate(fixed)
        ('GroupNorm', [])
    """
    if not fix:
        return [message for message, _ in _problems(model)]
    fixed = copy.deepcopy(model)
    _fix(fixed)
    return fixed


def _fix(module: nn.Module, prefix: str = "") -> None:
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            groups = math.gcd(32, channels)
            if isinstance(child, nn.BatchNorm1d):
                if channels == 1:
                    raise UnsupportedModuleError(
                        f"validate: `{path}` (BatchNorm1d) normalises one channel; a "
                        f"per-example replacement would be constant on (N, 1) inputs, so it "
                        f"is not fixed automatically: remove it, or replace it with "
                        f"GroupNorm(1, 1) if its inputs are (N, 1, L)"
                    )
                groups = 1
            replacement = nn.GroupNorm(groups, channels, eps=child.eps, affine=child.affine)
            setattr(
                module,
                name,
                replacement.to(next(child.buffers()).device)
                if list(child.buffers())
                else replacement,
            )
            continue
        if getattr(child, "inplace", False) is True:
            child.inplace = False  # type: ignore[assignment]
        _fix(child, path)


def raise_if_invalid(fn: str, model: nn.Module, *, changed: bool = False) -> None:
    """Raise ``UnsupportedModuleError`` listing the fatal problems of ``model``, if any."""
    fatal = [message for message, is_fatal in _problems(model) if is_fatal]
    if fatal:
        when = " (it changed after DPSGD was built)" if changed else ""
        raise UnsupportedModuleError(
            f"{fn}: the model cannot be trained privately as is{when}: " + "; ".join(fatal)
        )


def fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """What can change after construction, cheaply: train/eval flags, trainable flags, hooks.

    Two calls return equal tuples unless a module switched mode, a parameter was frozen or
    unfrozen, or a hook was registered or removed (hook handles have unique ids).
    """
    parts: list[Any] = []
    for m in model.modules():
        parts += (
            m.training,
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._backward_hooks),
            tuple(m._backward_pre_hooks),
            tuple(p is not None and p.requires_grad for p in m._parameters.values()),
        )
    hooks = nn.modules.module
    parts += (
        tuple(hooks._global_forward_hooks),
        tuple(hooks._global_forward_pre_hooks),
        tuple(hooks._global_backward_hooks),
        tuple(hooks._global_backward_pre_hooks),
    )
    return tuple(parts)
