"""Second-order sections: ``sosfilt`` and its initial states ``sosfilt_zi``."""

from typing import Any

import torch

from research_ext.complex._scipy_signal.recursion import (
    as_coefficients,
    coefficient_dtype,
    filter_last,
    steady_state,
)
from research_ext.complex._shared.arguments import as_floating, normalize_dim
from research_ext.core import format_message

__all__ = ["cascade_last", "checked_sections", "sosfilt", "sosfilt_zi"]


def checked_sections(fn: str, sos: Any, like: torch.Tensor | None) -> torch.Tensor:
    """``sos`` as an (n_sections, 6) tensor in scipy's result dtype, every a0 equal to 1."""
    dtype = coefficient_dtype(sos)
    device = None
    if like is not None:
        dtype, device = torch.promote_types(dtype, like.dtype), like.device
    sections = as_coefficients(sos, dtype, device)
    if sections.ndim != 2 or sections.shape[1] != 6 or sections.shape[0] < 1:
        raise ValueError(
            format_message(fn, "sos", "of shape (n_sections, 6)", f"shape {tuple(sections.shape)}")
        )
    if not bool((sections[:, 3] == 1).all().detach().cpu()):
        raise ValueError(
            format_message(
                fn,
                "sos",
                "sections whose a0 is 1 (sos[:, 3] should be all ones)",
                f"sos[:, 3]={sections[:, 3].tolist()}",
            )
        )
    return sections


def cascade_last(
    sections: torch.Tensor, x: torch.Tensor, zi: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cascade along the last dim; ``zi`` of shape (n_sections, ..., 2) or None."""
    y, finals = x, []
    for i, row in enumerate(sections):
        y, zf = filter_last(row[:3], row[3:], y, None if zi is None else zi[i])
        finals.append(zf)
    return y, None if zi is None else torch.stack(finals)


def sosfilt(
    sos: Any, x: torch.Tensor, dim: int = -1, zi: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Filter ``x`` with a cascade of second-order sections.

    Torch implementation of `scipy.signal.sosfilt`: each row [b0, b1, b2, a0, a1, a2] of ``sos``
    (a0 must be 1, as scipy) is applied in turn with the block solver of :func:`lfilter`.

    Differences from scipy: ``dim`` replaces ``axis``; see :func:`lfilter` (the dtype is that
    of ``sos`` and ``x`` together, as scipy's).

    Args:
        sos: (n_sections, 6) second-order sections.
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        zi: initial states of shape (n_sections, *x.shape with 2 at ``dim``).

    Returns:
        ``y``, or ``(y, zf)`` when ``zi`` is given.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: ``sos`` is not (n, 6), a section's a0 is not 1, or ``zi`` has another shape.

    Example:
        >>> import torch
        >>> sos = [[1.0, 0.0, 0.0, 1.0, -0.5, 0.0]]
        >>> sosfilt(sos, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        tensor([1.0000, 0.5000, 0.2500], dtype=torch.float64)
    """
    fn = "sosfilt"
    x = as_floating(fn, "x", x)
    sections = checked_sections(fn, sos, x)
    x_ = x.to(sections.dtype)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    zl = None
    if zi is not None:
        z = torch.as_tensor(zi, device=x.device).to(sections.dtype)
        expected = (sections.shape[0], *x.shape[:d], 2, *x.shape[d + 1 :])
        if tuple(z.shape) != expected:
            raise ValueError(
                format_message(
                    fn,
                    "zi",
                    f"of shape {expected} (n_sections, then x's shape with 2 at dim {d}; "
                    "Invalid zi shape)",
                    f"shape {tuple(z.shape)}",
                )
            )
        zl = z.movedim(d + 1, -1)
    y, zf = cascade_last(sections, x_.movedim(d, -1), zl)
    y = y.movedim(-1, d)
    return y if zf is None else (y, zf.movedim(-1, d + 1))


def sosfilt_zi(sos: Any) -> torch.Tensor:
    """Initial states of :func:`sosfilt` for the steady state of a unit step input.

    Torch implementation of `scipy.signal.sosfilt_zi`: section k starts in the steady state of
    :func:`lfilter_zi` scaled by the DC gain of the sections before it, so
    ``sosfilt(sos, c * ones, zi=c * zi[:, None]...)`` starts in steady state. The dtype is that of
    ``sos`` (Python numbers: float64), as scipy's.

    Args:
        sos: (n_sections, 6) second-order sections (a0 = 1).

    Returns:
        Tensor of shape (n_sections, 2).

    Raises:
        ValueError: ``sos`` is not (n, 6) or a section's a0 is not 1.

    Example:
        >>> import torch
        >>> zi = sosfilt_zi([[0.5, 0.0, 0.0, 1.0, -0.5, 0.0]])
        >>> y, _ = sosfilt([[0.5, 0.0, 0.0, 1.0, -0.5, 0.0]], torch.ones(3, dtype=torch.float64), zi=zi)
        >>> y
        tensor([1., 1., 1.], dtype=torch.float64)
    """
    sections = checked_sections("sosfilt_zi", sos, None)
    rows, gain = [], sections.new_ones(())
    for row in sections:
        b, a = row[:3], row[3:]
        rows.append(gain * steady_state(b, a))
        gain = gain * b.sum() / a.sum()
    return torch.stack(rows)
