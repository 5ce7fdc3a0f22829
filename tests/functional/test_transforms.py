"""Argument validation and error text of the derivative transforms; the auto-mode cache."""

import re

import pytest
import torch

import research_ext.functional as rf
from research_ext.functional import _jacobian

D = torch.float64


@pytest.mark.parametrize("chunk_size", [None, 4])  # the lean path and the general one
def test_auto_mode_picks_the_cheaper_mode_and_caches_it(monkeypatch, chunk_size):
    choices = []
    real_decide = _jacobian._decide

    def decide(*args):
        choices.append(real_decide(*args))
        return choices[-1]

    monkeypatch.setattr(_jacobian, "_decide", decide)
    evaluations = []

    def f(x):
        evaluations.append(1)
        return torch.cat([x.sin()] * 10) if x.numel() == 2 else x[:1].exp()

    jac = rf.jacobian(f, chunk_size=chunk_size)
    small, large = torch.ones(2, dtype=D), torch.ones(50, dtype=D)
    torch.testing.assert_close(jac(small), torch.cat([torch.diag(small.cos())] * 10))
    assert choices == ["fwd"]  # 2 inputs -> 20 outputs
    torch.testing.assert_close(jac(large)[0, 0], large[0].exp())
    assert choices == ["fwd", "rev"]  # 50 inputs -> 1 output
    n_eval = len(evaluations)
    jac(small)  # cached: no evaluation spent on deciding
    assert choices == ["fwd", "rev"]
    assert len(evaluations) == n_eval + 1


def test_chunked_jacobian_writes_into_one_buffer():
    x = torch.randn(6, dtype=D)
    jac = rf.jacobian(lambda x: x.exp(), mode="rev", chunk_size=4)(x)
    assert jac.is_contiguous()
    torch.testing.assert_close(jac, torch.diag(x.exp()))


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (
            {"mode": "both"},
            ValueError,
            "jacobian: `mode` must be one of 'auto', 'fwd', 'rev', got mode='both'",
        ),
        (
            {"argnums": "0"},
            TypeError,
            "jacobian: `argnums` must be an int or a non-empty tuple of ints, got argnums='0'",
        ),
        (
            {"argnums": ()},
            TypeError,
            "jacobian: `argnums` must be an int or a non-empty tuple of ints, got argnums=()",
        ),
        (
            {"argnums": (0, 0)},
            ValueError,
            "jacobian: `argnums` must be a tuple of distinct ints, got argnums=(0, 0)",
        ),
        (
            {"chunk_size": 0},
            ValueError,
            "jacobian: `chunk_size` must be a positive int, 'auto' or None, got chunk_size=0",
        ),
        (
            {"chunk_size": 1.5},
            TypeError,
            "jacobian: `chunk_size` must be a positive int, 'auto' or None, got chunk_size=1.5",
        ),
    ],
)
def test_jacobian_construction_errors(kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        rf.jacobian(torch.sin, **kwargs)


def test_not_callable():
    with pytest.raises(TypeError, match=re.escape("jacobian: `f` must be callable, got f=3")):
        rf.jacobian(3)
    with pytest.raises(TypeError, match=re.escape("hessian: `f` must be callable, got f=None")):
        rf.hessian(None)


def test_argnums_out_of_range():
    message = "jacobian: `argnums` must be in [-2, 1] (f was called with 2 positional arguments), got argnums=2"
    with pytest.raises(ValueError, match=re.escape(message)):
        rf.jacobian(lambda x, y: x * y, argnums=2)(torch.ones(1), torch.ones(1))
    message = "hessian: `argnums` must be in [-1, 0] (f was called with 1 positional arguments), got argnums=(0, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        rf.hessian(lambda x: x.sum(), argnums=(0, 3))(torch.ones(1))


def test_integer_and_non_tensor_inputs():
    message = "jacobian: `args[0]` must have a floating or complex dtype to be differentiated, got args[0].dtype=torch.int64"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jacobian(lambda x: x * 2)(torch.arange(3))
    message = "jacobian: every leaf of a differentiated argument must be a torch.Tensor, got a leaf of type float in args[0]"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jacobian(lambda x: x * 2)(1.0)
    message = "vjp: `args[0]` must have a floating or complex dtype to be differentiated, got args[0].dtype=torch.int32"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.vjp(torch.sin, torch.ones(2, dtype=torch.int32))


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_non_tensor_outputs(mode):
    message = "jacobian: `f` must return a tensor or a pytree of tensors, got an output leaf of type float"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jacobian(lambda x: 1.0, mode=mode)(torch.ones(2))
    message = (
        "jacobian: `f` must return floating or complex tensors, got an output of dtype torch.int64"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jacobian(lambda x: x.long(), mode=mode)(torch.ones(2))


def test_holomorphic_on_real_inputs_and_outputs():
    message = "jacobian: `holomorphic=True` needs complex inputs, got args[0].dtype=torch.float32; use holomorphic=False for real inputs"
    with pytest.raises(ValueError, match=re.escape(message)):
        rf.jacobian(torch.sin, holomorphic=True)(torch.ones(2))
    message = (
        "jacobian: `holomorphic=True` needs complex outputs, got an output of dtype torch.float64"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        rf.jacobian(lambda z: z.abs(), holomorphic=True, mode="rev")(
            torch.ones(2, dtype=torch.complex128)
        )


def test_has_aux_with_a_non_pair_output():
    message = "jacobian: `f` must return a tuple (output, aux) when has_aux=True, got Tensor"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jacobian(torch.sin, has_aux=True)(torch.ones(2))
    message = "vjp: `f` must return a tuple (output, aux) when has_aux=True, got tuple of length 3"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.vjp(lambda x: (x, x, x), torch.ones(2), has_aux=True)


def test_jvp_argument_errors():
    message = "jvp: `primals` must be a tuple of the positional arguments of f, got primals of type Tensor"
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jvp(torch.sin, torch.ones(2), (torch.ones(2),))
    message = (
        "jvp: `tangents` must be a tuple with one entry per primal, got tangents of type Tensor"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        rf.jvp(torch.sin, (torch.ones(2),), torch.ones(2))
    message = "jvp: every tangent must have its primal's shape, got (3,) for a primal of shape (2,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        rf.jvp(torch.sin, (torch.ones(2),), (torch.ones(3),))
    with pytest.raises(
        ValueError, match=re.escape("jvp: `tangents` must have the pytree structure of `primals`")
    ):
        rf.jvp(lambda x, y: x * y, (torch.ones(2), torch.ones(2)), (torch.ones(2),))


def test_linearize_tangent_shape_error():
    _, jvp_fn = rf.linearize(torch.sin, torch.ones(2))
    message = (
        "linearize: every tangent must have its primal's shape, got (1,) for a primal of shape (2,)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        jvp_fn(torch.ones(1))


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_dtype_follows_the_input(dtype, mode, chunk_size):
    x = torch.linspace(-1, 1, 3, dtype=dtype)
    jac = rf.jacobian(lambda x: x.sin() * 2, mode=mode, chunk_size=chunk_size)(x)
    assert jac.dtype == dtype
    torch.testing.assert_close(jac, torch.diag(2 * x.cos()))
    assert rf.hessian(lambda x: (x**3).sum())(x).dtype == dtype
    assert rf.hvp(lambda x: (x**3).sum(), (x,), (x,))[1][0].dtype == dtype
    assert rf.derivatives(torch.tanh, 3)(x)[3].dtype == dtype
