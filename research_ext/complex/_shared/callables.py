"""User callables in scipy's argument slots (``detrend=``, ``window=``), on any device.

scipy hands such a callable numpy arrays; we hand it tensors, so a torch-written callable keeps
the data on its device and its gradient. One written for numpy (``scipy.signal.detrend``, say)
still works: on the CPU numpy reads a tensor directly, and on another device, where it cannot,
the call is repeated on a CPU copy. The result comes back as a tensor on the input's device.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["call_user"]


def call_user(user: Callable[[Any], Any], x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``user(x)`` as a ``dtype`` tensor on ``x``'s device (numpy-written callables included)."""
    try:
        out = user(x)
    except (TypeError, RuntimeError):
        if x.device.type == "cpu":
            raise
        out = user(x.cpu())  # numpy cannot read device memory: give it a host copy
    if isinstance(out, torch.Tensor):
        return out.to(device=x.device, dtype=dtype)
    return torch.as_tensor(np.asarray(out), dtype=dtype, device=x.device)
