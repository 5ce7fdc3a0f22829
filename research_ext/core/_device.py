"""Device and dtype resolution: ``"auto"`` means cuda, then mps, then cpu."""

import torch

from research_ext.core._validation import format_message
from research_ext.errors import DeviceUnavailableError

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device spec into a ``torch.device`` that exists on this machine.

    ``"auto"`` (or ``None``) picks the first available of cuda, mps, cpu.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device``
            or ``None``.

    Returns:
        The resolved ``torch.device``.

    Raises:
        TypeError: if ``device`` is not a string, device or None.
        ValueError: if the string is not a device spec torch understands.
        DeviceUnavailableError: if the device is valid but absent on this machine.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    fn = "resolve_device"
    allowed = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps', a torch.device or None"
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(format_message(fn, "device", allowed, device)) from err
    elif isinstance(device, torch.device):
        resolved = device
    else:
        raise TypeError(format_message(fn, "device", allowed, device))

    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = resolved.index or 0
        if index >= count:
            raise DeviceUnavailableError(
                f"{fn}: `device` {str(resolved)!r} is not available on this machine "
                f"({count} CUDA device(s) found); use 'auto' or 'cpu'"
            )
    elif resolved.type == "mps" and not _mps_available():
        raise DeviceUnavailableError(
            f"{fn}: `device` 'mps' is not available on this machine; use 'auto' or 'cpu'"
        )
    elif resolved.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(format_message(fn, "device", allowed, device))
    return resolved


def resolve_dtype(
    dtype: str | torch.dtype | None, default: torch.dtype | None = None
) -> torch.dtype:
    """Turn a dtype spec (``"float32"``, ``torch.float64``, ``None``) into a ``torch.dtype``.

    Args:
        dtype: a ``torch.dtype``, one of its names (``"float32"``, ``"double"``, ...) or ``None``.
        default: returned when ``dtype`` is ``None``; ``torch.get_default_dtype()`` if not given.

    Returns:
        The ``torch.dtype``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything that is not a string, dtype or None.

    Example:
        >>> resolve_dtype("float64")
        torch.float64
    """
    if dtype is None:
        return default if default is not None else torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = ", ".join(repr(name) for name in _DTYPES)
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name in _DTYPES:
            return _DTYPES[name]
        raise ValueError(format_message("resolve_dtype", "dtype", f"one of {allowed}", dtype))
    raise TypeError(
        format_message("resolve_dtype", "dtype", "a torch.dtype, a name or None", dtype)
    )
