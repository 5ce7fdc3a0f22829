"""Argument checks shared by every subpackage, so every message is worded the same way.

The wording is "fn: `arg` must be <rule>, got arg=<value>" (STYLE.md, error messages).
"""

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads with the first tensor checked, not with the checks (hpo uses them)
    import torch

__all__ = [
    "check_dtype_floating",
    "check_in_range",
    "check_int",
    "check_one_of",
    "check_positive",
    "check_probability",
    "check_type",
    "format_message",
]


def format_message(fn: str, name: str, rule: str, value: Any, hint: str | None = None) -> str:
    """Return the house error message ``fn: `name` must be rule, got name=value[; hint]``."""
    message = f"{fn}: `{name}` must be {rule}, got {name}={value!r}"
    return f"{message}; {hint}" if hint else message


def _is_real_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_type(fn: str, name: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """Raise ``TypeError`` unless ``value`` is an instance of ``types``; return it.

    Example:
        >>> check_type("f", "n", 3, int, "an int")
        3
    """
    if not isinstance(value, types):
        raise TypeError(format_message(fn, name, what, value))
    return value


def check_int(
    fn: str, name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Check that ``value`` is an int (not a bool) within ``[minimum, maximum]``; return it.

    Example:
        >>> check_int("f", "k", 5, minimum=1)
        5
    """
    rule = "an int"
    if minimum is not None and maximum is not None:
        rule = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    elif maximum is not None:
        rule = f"an int <= {maximum}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(format_message(fn, name, rule, value))
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(format_message(fn, name, rule, value))
    return value


def check_positive(fn: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number > 0 (>= 0 with ``allow_zero``); return it.

    Example:
        >>> check_positive("clip", "max_grad_norm", 1.0)
        1.0
    """
    rule = "a finite number >= 0" if allow_zero else "a finite number > 0"
    if not _is_real_number(value):
        raise TypeError(format_message(fn, name, rule, value))
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(format_message(fn, name, rule, value))
    return value


def check_in_range(
    fn: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check that a real ``value`` lies in the interval from ``low`` to ``high``; return it.

    Example:
        >>> check_in_range("f", "q", 0.5, 0.0, 1.0, low_inclusive=False)
        0.5
    """
    interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    rule = f"a number in {interval}"
    if not _is_real_number(value):
        raise TypeError(format_message(fn, name, rule, value))
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below) or math.isnan(value):
        raise ValueError(format_message(fn, name, rule, value))
    return value


def check_probability(fn: str, name: str, value: Any, *, allow_one: bool = True) -> float:
    """Check that ``value`` lies in (0, 1] (or (0, 1) when ``allow_one=False``); return it.

    Example:
        >>> check_probability("epsilon", "delta", 1e-5, allow_one=False)
        1e-05
    """
    return check_in_range(fn, name, value, 0.0, 1.0, low_inclusive=False, high_inclusive=allow_one)


def check_one_of(fn: str, name: str, value: Any, allowed: Collection[Any]) -> Any:
    """Check that ``value`` is one of ``allowed``; return it.

    Example:
        >>> check_one_of("jacobian", "mode", "rev", ("auto", "fwd", "rev"))
        'rev'
    """
    try:
        ok = value in allowed
    except TypeError:  # unhashable value against a set
        ok = False
    if not ok:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(format_message(fn, name, f"one of {choices}", value))
    return value


def check_dtype_floating(
    fn: str, name: str, tensor: "torch.Tensor", *, complex_ok: bool = True
) -> None:
    """Raise ``TypeError`` unless ``tensor`` has a floating (or, if allowed, complex) dtype.

    Example:
        >>> import torch
        >>> check_dtype_floating("dct", "x", torch.ones(3))
    """
    ok = tensor.is_floating_point() or (complex_ok and tensor.is_complex())
    if not ok:
        kinds = "a floating or complex dtype" if complex_ok else "a floating dtype"
        raise TypeError(f"{fn}: `{name}` must have {kinds}, got {name}.dtype={tensor.dtype}")
