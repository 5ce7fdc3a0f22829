"""Progress bars over ``tqdm.auto``: a widget in notebooks, text in a terminal, silent otherwise."""

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

from research_ext.core._validation import check_int, format_message

__all__ = ["is_interactive", "progress"]

T = TypeVar("T")


def is_interactive() -> bool:
    """Whether a person is watching: a Jupyter kernel, or standard error is a terminal.

    Progress bars are drawn by default only then; logs and CI output get plain lines instead.

    Returns:
        ``True`` inside IPython/Jupyter (``ipykernel`` imported) or when ``sys.stderr`` is a TTY.

    Example:
        >>> from research_ext.core import is_interactive
        >>> isinstance(is_interactive(), bool)
        True
    """
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    enable: bool | None = None,
    **kwargs: Any,
) -> "tqdm[T]":
    """Wrap ``iterable`` in a progress bar (or make a manual one when ``iterable`` is None).

    Args:
        iterable: what to iterate over, or ``None`` for a bar updated by hand (``bar.update(n)``).
        total: number of steps, if ``iterable`` has no ``len``.
        desc: label shown before the bar.
        enable: ``True`` forces the bar on, ``False`` off; ``None`` (default) shows it only in a
            notebook or when stderr is a terminal, so logs and CI stay clean.
        **kwargs: passed to ``tqdm.auto.tqdm``.

    Returns:
        A ``tqdm`` instance; iterate over it, or call ``update``/``set_postfix``/``close``.

    Raises:
        TypeError, ValueError: if ``total`` is not a non-negative int or ``enable`` not a bool.

    Example:
        >>> sum(progress(range(4), enable=False))
        6
    """
    if total is not None:
        check_int("progress", "total", total, minimum=0)
    if enable is not None and not isinstance(enable, bool):
        raise TypeError(format_message("progress", "enable", "True, False or None", enable))
    disable = not (is_interactive() if enable is None else enable)
    return tqdm(iterable, total=total, desc=desc, disable=disable, **kwargs)
