"""Clipping invariants (hypothesis) and Poisson batch sizes."""

import math

import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from research_ext.privacy import clip_per_sample, epsilon, poisson_loader
from research_ext.privacy._clipping import clip_factors, layer_thresholds

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)


@st.composite
def per_sample(draw):
    batch = draw(st.integers(1, 6))
    names = draw(
        st.lists(st.sampled_from(["a.w", "a.b", "b.w", "c.w"]), min_size=1, max_size=4, unique=True)
    )
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(batch, *draw(shapes), generator=g, dtype=torch.float64) * scale
        for n in names
    }


def _norms(grads, names=None):
    names = names or list(grads)
    return torch.cat([grads[n].flatten(1) for n in names], 1).norm(dim=1)


@given(per_sample(), st.floats(1e-3, 1e3))
def test_flat_clipped_norms_are_bounded_and_small_ones_unchanged(grads, c):
    clipped = clip_per_sample(grads, c)
    assert (_norms(clipped) <= c * (1 + 1e-6)).all()
    below = _norms(grads) < c
    for n in grads:
        assert torch.equal(clipped[n][below], grads[n][below])


@given(per_sample(), st.floats(1e-3, 1e3))
def test_per_layer_bounds(grads, c):
    clipped = clip_per_sample(grads, c, clipping="per_layer")
    layers = sorted({n.split(".")[0] for n in grads})
    for layer in layers:
        names = [n for n in grads if n.split(".")[0] == layer]
        assert (_norms(clipped, names) <= c / math.sqrt(len(layers)) * (1 + 1e-6)).all()
    assert (_norms(clipped) <= c * (1 + 1e-6)).all()


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=8), st.floats(1e-3, 1e3))
def test_factors_are_in_unit_interval(sq, c):
    norms = {"x": torch.tensor(sq, dtype=torch.float64)}
    f = clip_factors(norms, layer_thresholds("t", c, ["x"], "flat"), "flat")["x"]
    assert ((f > 0) & (f <= 1)).all()


@settings(max_examples=6)
@given(st.floats(0.5, 4.0), st.floats(1e-3, 0.2), st.integers(1, 200))
def test_rdp_epsilon_monotone_in_steps_and_noise(sigma, q, steps):
    e = epsilon(sigma, q, steps, 1e-5, accountant="rdp")
    assert epsilon(sigma, q, steps + 50, 1e-5, accountant="rdp") >= e
    assert epsilon(sigma * 1.5, q, steps, 1e-5, accountant="rdp") <= e


def test_poisson_batch_sizes_follow_binomial():
    n, q, draws = 200, 0.1, 400
    loader = poisson_loader(
        (torch.zeros(n, 1), torch.zeros(n)),
        q,
        generator=torch.Generator().manual_seed(0),
        steps=draws,
    )
    sizes = torch.tensor([int(x.shape[0]) for x, _ in loader])
    # Kolmogorov-Smirnov-style check on the discrete CDF plus the first two moments.
    assert abs(sizes.double().mean().item() - n * q) < 4 * math.sqrt(n * q * (1 - q) / draws)
    var = sizes.double().var().item()
    assert 0.7 < var / (n * q * (1 - q)) < 1.3
    observed = torch.bincount(sizes, minlength=n + 1).double()
    lo, hi = int(n * q - 12), int(n * q + 12)
    expected = torch.tensor([stats.binom.pmf(k, n, q) for k in range(lo, hi)]) * draws
    chi2 = (((observed[lo:hi] - expected) ** 2) / expected).sum().item()
    assert stats.chi2.sf(chi2, hi - lo - 1) > 1e-3


def test_poisson_empty_batches_keep_shapes_and_resume():
    data = torch.utils.data.TensorDataset(torch.zeros(5, 3, 2), torch.zeros(5))

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return data[i]

    for dataset in (data, Plain()):
        loader = poisson_loader(dataset, 1e-9, generator=torch.Generator().manual_seed(0), steps=2)
        for x, y in loader:
            assert x.shape == (0, 3, 2) and y.shape == (0,)
    loader = poisson_loader(data, 0.5, generator=torch.Generator().manual_seed(1), steps=3)
    state = loader.state_dict()
    first = [x.shape[0] for x, _ in loader]
    loader.load_state_dict(state)
    assert [x.shape[0] for x, _ in loader] == first
