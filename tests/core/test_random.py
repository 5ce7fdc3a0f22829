import random

import numpy as np
import pytest
import torch

from research_ext.core import make_generator, seed_everything


def test_seed_everything_seeds_all_global_rngs():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(1).item())
    assert first == second
    seed_everything(8)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != first


def test_returned_generator_is_independent_of_global_state():
    g1 = seed_everything(3)
    torch.rand(100)  # consuming the global stream does not move the returned generator
    g2 = make_generator(3)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_deterministic_flag_restored():
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_make_generator_variants():
    g = torch.Generator().manual_seed(5)
    assert make_generator(g) is g
    assert make_generator(11).initial_seed() == 11
    a, b = make_generator(None), make_generator(None)
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


@pytest.mark.parametrize("bad", [-1, 2**63])
def test_seed_range(bad):
    with pytest.raises(
        ValueError, match=r"seed_everything: `seed` must be an int in \[0, 9223372036854775807\]"
    ):
        seed_everything(bad)


def test_seed_type():
    with pytest.raises(
        TypeError,
        match=r"make_generator: `seed` must be an int, a torch.Generator or None, got seed=1.5",
    ):
        make_generator(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"seed_everything: `seed` must be .*got seed=True"):
        seed_everything(True)
