"""Window functions: a bridge to scipy's window constructors, returned as tensors.

A window is built once on the host (cheap, O(n)) in float64 by ``scipy.signal.get_window`` and
moved to the requested device and dtype; the spectral estimators then use it on-device.

``get_window`` is a bridge, so its argument checks and their errors are scipy's own (a
``ValueError`` whose message starts with scipy's wording, e.g. "Parameter Nx=-1 is not a
positive integer"), not the house formula: code that already handles scipy's errors keeps
working, and scipy's tests of those messages pass.
"""

from typing import Any

import numpy as np
import torch

from research_ext.core import format_message

__all__ = ["get_window", "window_tensor"]


def get_window(
    window: Any,
    Nx: int,
    fftbins: bool = True,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return a window of length ``Nx`` of the given type, as a tensor.

    Torch implementation of `scipy.signal.get_window`: every scipy window name ("hann",
    "hamming", "blackman", "boxcar", "triang", "bartlett", "flattop", "parzen", "bohman",
    "blackmanharris", "nuttall", "barthann", "cosine", "exponential", "tukey", "taylor",
    "lanczos", "kaiser", "kaiser_bessel_derived", "gaussian", "general_gaussian",
    "general_cosine", "general_hamming", "dpss", "chebwin", ...) and parameterized windows given
    as a tuple such as ``("kaiser", 8.0)`` or ``("tukey", 0.25)``. ``fftbins=True`` gives the
    periodic window (for spectral analysis), ``False`` the symmetric one (for filter design).

    Differences from scipy: returns a tensor of ``dtype`` (default float64, scipy's dtype) on
    ``device``; the values are scipy's own (computed in float64 on the host, then cast).


    Args:
        window: the window name, a (name, *params) tuple, or a float (a Kaiser beta, as scipy).
        Nx: number of samples, a positive integer (numpy integers too).
        fftbins: periodic (True) or symmetric (False).
        dtype: floating dtype of the result (default float64).
        device: device of the result.

    Returns:
        1-D tensor of length ``Nx``.

    Raises:
        ValueError: ``Nx`` is not a positive integer, ``fftbins`` is not a bool, or the
            window is unknown or has bad parameters (scipy's own errors).

    Example:
        >>> get_window("hann", 4)
        tensor([0.0000, 0.5000, 1.0000, 0.5000], dtype=torch.float64)
    """
    import scipy.signal

    values = scipy.signal.get_window(window, Nx, fftbins=fftbins)
    return torch.as_tensor(
        np.ascontiguousarray(values, dtype=np.float64),
        dtype=dtype or torch.float64,
        device=device,
    )


def window_tensor(
    fn: str, window: Any, nperseg: int | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Resolve a window spec or an explicit window array into a 1-D tensor of ``nperseg``."""
    if isinstance(window, str | tuple | float) and not isinstance(window, bool):
        if nperseg is None:
            raise ValueError(f"{fn}: `nperseg` must be given for a named window, got None")
        return get_window(window, nperseg, dtype=dtype, device=device)
    w = torch.as_tensor(window, dtype=dtype, device=device)
    if w.ndim != 1:
        raise ValueError(format_message(fn, "window", "1-D", f"shape {tuple(w.shape)}"))
    if nperseg is not None and w.shape[0] != nperseg:
        raise ValueError(
            f"{fn}: `nperseg` must equal the window length, got nperseg={nperseg} and "
            f"len(window)={w.shape[0]}"
        )
    return w
