"""Seeding and explicit ``torch.Generator`` handling.

Library code never touches global RNG state: functions that draw random numbers take a
``generator=`` argument. :func:`seed_everything` is the one place that seeds the globals, for
scripts and notebooks.
"""

import os
import random

import numpy as np
import torch

from research_ext.core._validation import check_int, format_message

__all__ = ["make_generator", "seed_everything"]


def seed_everything(
    seed: int, *, deterministic: bool = False, device: str | torch.device = "cpu"
) -> torch.Generator:
    """Seed python's, numpy's and torch's global RNGs (all CUDA devices too).

    Args:
        seed: an int in [0, 2**63 - 1].
        deterministic: also ask torch for deterministic algorithms (slower, reproducible), and set
            ``CUBLAS_WORKSPACE_CONFIG`` as CUDA requires.
        device: device of the returned generator.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, to pass explicitly to library functions.

    Raises:
        TypeError, ValueError: if ``seed`` is not an int in range.

    Example:
        >>> g = seed_everything(0)
        >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=seed_everything(0)).item()
        True
    """
    check_int("seed_everything", "seed", seed, minimum=0, maximum=2**63 - 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return make_generator(seed, device=device)


def make_generator(
    seed: int | torch.Generator | None = None, *, device: str | torch.device = "cpu"
) -> torch.Generator:
    """Return a ``torch.Generator``: the one given, a new one seeded with ``seed``, or OS-seeded.

    Args:
        seed: an int seed, an existing generator (returned as is) or ``None`` for a generator
            seeded from the operating system's entropy.
        device: device of a newly created generator.

    Returns:
        A ``torch.Generator``.

    Raises:
        TypeError: if ``seed`` is neither an int, a generator nor None.

    Example:
        >>> make_generator(3).initial_seed()
        3
    """
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
        return generator
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(
            format_message("make_generator", "seed", "an int, a torch.Generator or None", seed)
        )
    check_int("make_generator", "seed", seed, minimum=0, maximum=2**63 - 1)
    generator.manual_seed(seed)
    return generator
