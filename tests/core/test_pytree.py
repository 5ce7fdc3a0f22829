import pytest
import torch
from hypothesis import given, strategies as st

from research_ext.core import ravel_pytree, tree_flatten, tree_leaves, tree_map, tree_unflatten

DTYPES = [torch.float32, torch.float64, torch.int64, torch.complex64]

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def tensors(draw):
    shape = draw(shapes)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 10).to(dtype)


pytrees = st.recursive(
    tensors(),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), children, max_size=3),
    ),
    max_leaves=6,
)


def _assert_same_tree(a, b):
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    assert sa == sb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y)


@given(pytrees)
def test_ravel_roundtrip(tree):
    flat, unravel = ravel_pytree(tree)
    assert flat.ndim == 1
    assert flat.numel() == sum(leaf.numel() for leaf in tree_leaves(tree))
    _assert_same_tree(unravel(flat), tree)


@given(pytrees)
def test_flatten_unflatten_roundtrip(tree):
    leaves, spec = tree_flatten(tree)
    _assert_same_tree(tree_unflatten(leaves, spec), tree)


def test_ravel_promotes_and_casts_back():
    tree = {"a": torch.tensor([1, 2]), "b": torch.tensor([0.5], dtype=torch.float64)}
    flat, unravel = ravel_pytree(tree)
    assert flat.dtype == torch.float64
    assert flat.tolist() == [1.0, 2.0, 0.5]
    back = unravel(flat * 2)
    assert back["a"].dtype == torch.int64 and back["a"].tolist() == [2, 4]


def test_ravel_is_differentiable():
    w = torch.ones(2, 2, requires_grad=True)
    flat, _ = ravel_pytree({"w": w})
    (flat * torch.arange(4.0)).sum().backward()
    assert w.grad.tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_tree_map_multiple_trees():
    out = tree_map(lambda x, y: x * y, {"a": torch.tensor(2.0)}, {"a": torch.tensor(3.0)})
    assert out["a"].item() == 6.0


def test_ravel_rejects_non_tensor_leaves():
    with pytest.raises(
        TypeError,
        match="ravel_pytree: every leaf of `tree` must be a torch.Tensor, got leaf 1 of type int",
    ):
        ravel_pytree([torch.ones(1), 3])


def test_unravel_checks_size():
    _, unravel = ravel_pytree([torch.ones(2), torch.ones(3)])
    with pytest.raises(ValueError, match=r"`vector` must have shape \(5,\), got \(4,\)"):
        unravel(torch.ones(4))


def test_empty_tree():
    flat, unravel = ravel_pytree([])
    assert flat.numel() == 0
    assert unravel(flat) == []
