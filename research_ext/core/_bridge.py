"""numpy/scipy bridge: zero-copy where torch and numpy can share memory, a copy otherwise.

Sharing works for CPU tensors with no autograd history and a dtype numpy has (it fails for
bfloat16). Anything else (GPU, ``requires_grad``, conjugate or negative views) is copied.
"""

from typing import Any

import numpy as np
import torch

from research_ext.core._device import resolve_device
from research_ext.core._validation import format_message

__all__ = ["from_numpy", "to_numpy"]


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Return ``tensor`` as a numpy array, sharing memory when possible.

    Args:
        tensor: any tensor; GPU tensors and tensors that require grad are copied to host.

    Returns:
        An ``np.ndarray`` of the same shape (bfloat16 becomes float32).

    Raises:
        TypeError: if ``tensor`` is not a tensor.

    Example:
        >>> t = torch.arange(3.0)
        >>> a = to_numpy(t)
        >>> a[0] = 7.0
        >>> t[0].item()
        7.0
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            format_message("to_numpy", "tensor", "a torch.Tensor", type(tensor).__name__)
        )
    t = tensor.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.resolve_conj().resolve_neg().numpy()


def from_numpy(
    array: Any, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Return ``array`` as a tensor, sharing memory for a CPU result with no dtype change.

    Args:
        array: an ``np.ndarray`` or anything ``np.asarray`` accepts.
        device: target device; ``None`` keeps the CPU (zero-copy).
        dtype: target dtype; ``None`` keeps the array's.

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if the array's dtype has no torch equivalent (e.g. strings, objects).

    Example:
        >>> a = np.zeros(2)
        >>> t = from_numpy(a)
        >>> t[1] = 5.0
        >>> float(a[1])
        5.0
    """
    arr = np.asarray(array)
    if not arr.flags.writeable:
        arr = arr.copy()
    if any(stride < 0 for stride in arr.strides):
        arr = np.ascontiguousarray(arr)
    try:
        tensor = torch.from_numpy(arr)
    except TypeError as err:
        raise TypeError(
            format_message("from_numpy", "array.dtype", "a numeric numpy dtype", str(arr.dtype))
        ) from err
    if device is not None or dtype is not None:
        target = resolve_device(device) if device is not None else tensor.device
        tensor = tensor.to(device=target, dtype=dtype or tensor.dtype)
    return tensor
