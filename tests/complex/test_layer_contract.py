"""Every layer in rxc.nn: dtype preserved, batching, gradients reach every parameter, gradcheck."""

import inspect

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import research_ext.complex as rxc
from tests.helpers import (
    ATOL_GRADCHECK,
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_GRADCHECK,
    RTOL_REORDERED_FLOAT64,
)

nn = rxc.nn

# name -> (factory(dtype) -> module, input shape, batch-independent in train mode)
LAYERS = {
    "CReLU": (lambda dt: nn.CReLU(), (3, 4, 5), True),
    "ZReLU": (lambda dt: nn.ZReLU(), (3, 4, 5), True),
    "ModReLU": (lambda dt: nn.ModReLU(4, bias=-0.1, dtype=dt), (3, 4, 5), True),
    "Cardioid": (lambda dt: nn.Cardioid(), (3, 4, 5), True),
    "CGELU": (lambda dt: nn.CGELU(), (3, 4, 5), True),
    "CTanh": (lambda dt: nn.CTanh(), (3, 4, 5), True),
    "ComplexBatchNorm1d": (lambda dt: nn.ComplexBatchNorm1d(4, dtype=dt), (6, 4, 5), False),
    "ComplexBatchNorm2d": (lambda dt: nn.ComplexBatchNorm2d(4, dtype=dt), (4, 4, 3, 3), False),
    "ComplexBatchNorm3d": (lambda dt: nn.ComplexBatchNorm3d(2, dtype=dt), (3, 2, 2, 2, 2), False),
    "ComplexLayerNorm": (lambda dt: nn.ComplexLayerNorm((4, 5), dtype=dt), (3, 4, 5), True),
    "ComplexGroupNorm": (lambda dt: nn.ComplexGroupNorm(2, 4, dtype=dt), (3, 4, 5), True),
    "ComplexDropout": (lambda dt: nn.ComplexDropout(0.3), (3, 4, 5), False),
    "ComplexDropout1d": (lambda dt: nn.ComplexDropout1d(0.3), (3, 4, 5), False),
    "ComplexDropout2d": (lambda dt: nn.ComplexDropout2d(0.3), (3, 4, 3, 3), False),
    "ComplexDropout3d": (lambda dt: nn.ComplexDropout3d(0.3), (3, 4, 2, 2, 2), False),
    "ComplexMaxPool1d": (lambda dt: nn.ComplexMaxPool1d(2), (2, 3, 6), True),
    "ComplexMaxPool2d": (lambda dt: nn.ComplexMaxPool2d(2, stride=1), (2, 3, 3, 3), True),
    "ComplexMaxPool3d": (lambda dt: nn.ComplexMaxPool3d(2), (2, 2, 2, 4, 2), True),
    "ComplexAdaptiveMaxPool1d": (lambda dt: nn.ComplexAdaptiveMaxPool1d(3), (2, 3, 7), True),
    "ComplexAdaptiveMaxPool2d": (
        lambda dt: nn.ComplexAdaptiveMaxPool2d((2, 1)),
        (2, 3, 4, 3),
        True,
    ),
    "ComplexAdaptiveMaxPool3d": (lambda dt: nn.ComplexAdaptiveMaxPool3d(1), (2, 2, 2, 3, 2), True),
    "ComplexAvgPool1d": (lambda dt: nn.ComplexAvgPool1d(2), (2, 3, 6), True),
    "ComplexAvgPool2d": (lambda dt: nn.ComplexAvgPool2d(2, padding=1), (2, 3, 3, 3), True),
    "ComplexAvgPool3d": (lambda dt: nn.ComplexAvgPool3d(2), (2, 2, 2, 4, 2), True),
    "ComplexAdaptiveAvgPool1d": (lambda dt: nn.ComplexAdaptiveAvgPool1d(3), (2, 3, 7), True),
    "ComplexAdaptiveAvgPool2d": (lambda dt: nn.ComplexAdaptiveAvgPool2d(2), (2, 3, 5, 3), True),
    "ComplexAdaptiveAvgPool3d": (lambda dt: nn.ComplexAdaptiveAvgPool3d(1), (2, 2, 2, 3, 2), True),
    "ComplexUpsample": (
        lambda dt: nn.ComplexUpsample(scale_factor=2, mode="bilinear"),
        (2, 3, 3, 2),
        True,
    ),
    "ComplexSoftmax": (lambda dt: nn.ComplexSoftmax(dim=-1, mode="magnitude"), (3, 4, 5), True),
    "ComplexLinear": (lambda dt: nn.ComplexLinear(5, 3, dtype=dt), (3, 4, 5), True),
    "ComplexConv1d": (lambda dt: nn.ComplexConv1d(4, 3, 3, padding=1, dtype=dt), (2, 4, 6), True),
    "ComplexConv2d": (lambda dt: nn.ComplexConv2d(2, 3, 2, dtype=dt), (2, 2, 3, 3), True),
    "ComplexConv3d": (lambda dt: nn.ComplexConv3d(2, 2, 2, dtype=dt), (2, 2, 2, 3, 2), True),
    "SpectralConv1d": (lambda dt: nn.SpectralConv1d(4, 3, 3, dtype=dt), (2, 4, 6), True),
    "SpectralConv2d": (lambda dt: nn.SpectralConv2d(2, 3, (2, 3), dtype=dt), (2, 2, 4, 5), True),
    "SpectralConv3d": (lambda dt: nn.SpectralConv3d(2, 2, 2, dtype=dt), (2, 2, 3, 3, 4), True),
    "FNOBlock": (lambda dt: nn.FNOBlock(3, (2,), dtype=dt), (2, 3, 5), True),
}


def _layer_classes():
    return sorted(
        name
        for name in nn.__all__
        if inspect.isclass(getattr(nn, name)) and issubclass(getattr(nn, name), torch.nn.Module)
    )


def test_every_layer_is_covered():
    assert sorted(LAYERS) == _layer_classes()


def _input(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_dtype_is_preserved(name, dtype):
    factory, shape, _ = LAYERS[name]
    layer = factory(dtype)
    out = layer(_input(shape, dtype))
    assert out.dtype == dtype
    for p in layer.parameters():
        assert p.dtype in (dtype, torch.empty((), dtype=dtype).real.dtype), (name, p.dtype)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_batching_matches_per_sample(name):
    factory, shape, independent = LAYERS[name]
    layer = factory(torch.complex128)
    if not independent:
        layer.eval()  # batch statistics / random masks couple samples only in training
    x = _input(shape, torch.complex128)
    batched = layer(x)
    single = torch.cat([layer(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(
        batched, single, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_UNIT_FLOAT64
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_reach_every_parameter(name):
    factory, shape, _ = LAYERS[name]
    layer = factory(torch.complex128)
    x = _input(shape, torch.complex128).requires_grad_(True)
    out = layer(x)
    r = _input(out.shape, torch.complex128, seed=1)
    ((out * r).real.sum() + out.abs().pow(2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradcheck_and_gradgradcheck_complex128(name):
    factory, shape, _ = LAYERS[name]
    layer = factory(torch.complex128)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())
    x = _input(shape, torch.complex128).requires_grad_(True)

    def f(inp, *ps):
        torch.manual_seed(0)  # the same dropout mask on every evaluation
        return functional_call(layer, dict(zip(names, ps, strict=True)), (inp,))

    # fast_mode checks random projections of the Jacobian (Chen et al. in torch's docs):
    # exact up to the same tolerance, and cheap enough for every layer.
    assert gradcheck(
        f, (x, *params), eps=1e-6, atol=ATOL_GRADCHECK, rtol=RTOL_GRADCHECK, fast_mode=True
    )
    assert gradgradcheck(
        f, (x, *params), eps=1e-6, atol=ATOL_GRADCHECK, rtol=RTOL_GRADCHECK, fast_mode=True
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_real_input_is_rejected(name):
    factory, shape, _ = LAYERS[name]
    layer = factory(torch.complex64)
    with pytest.raises(TypeError, match=rf"{name}: `input` must have"):
        layer(torch.randn(shape))
