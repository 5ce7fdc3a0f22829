"""Module helpers: parameters via functional_call, BatchNorm modes, buffers untouched, dropout refused."""

import re

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian as ag_hessian, jacobian as ag_jacobian

import research_ext.functional as rf
from tests.helpers import tolerances

D = torch.float64
TOL = tolerances(torch.float64)


def _net(batch_norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(4))
    layers += [nn.Tanh(), nn.Linear(4, 2)]
    net = nn.Sequential(*layers).to(D)
    if batch_norm:  # non-trivial running statistics
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def _flat_reference(net, x, loss=None, y=None):
    """The same function written by hand on a flat parameter vector (the oracle)."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [p.numel() for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def f(z):
        params = {
            n: c.reshape(s) for n, c, s in zip(names, torch.split(z, sizes), shapes, strict=False)
        }
        out = torch.func.functional_call(net, {**buffers, **params}, (x,))
        return out if loss is None else loss(out, y)

    return f, flat, names, shapes, sizes


@pytest.mark.parametrize("train", [True, False])
def test_module_jacobian_matches_autograd_on_flat_params(train):
    net = _net().train(train)
    x = torch.randn(5, 3, dtype=D)
    before = {n: b.clone() for n, b in net.named_buffers()}
    ours = rf.module_jacobian(net, x)
    f, flat, names, shapes, sizes = _flat_reference(net, x)
    ref = ag_jacobian(f, flat)
    offset = 0
    for name, shape, size in zip(names, shapes, sizes, strict=False):
        torch.testing.assert_close(
            ours[name], ref[..., offset : offset + size].reshape(5, 2, *shape), **TOL
        )
        offset += size
    for n, b in net.named_buffers():  # no running-statistics update, in either mode
        torch.testing.assert_close(b, before[n], rtol=0, atol=0)


def test_train_and_eval_batch_norm_give_different_functions():
    net = _net()
    x = torch.randn(5, 3, dtype=D)
    train_jac = rf.module_jacobian(net.train(), x, mode="rev")["0.weight"]
    eval_jac = rf.module_jacobian(net.eval(), x, mode="rev")["0.weight"]
    assert not torch.allclose(train_jac, eval_jac)
    # In train mode sample 0's output depends on sample 1's features through the batch mean.
    assert train_jac[0, :, :, :].abs().sum() > 0
    assert net[1].track_running_stats  # restored after the call


def test_module_hessian_matches_autograd():
    net = _net(batch_norm=False)
    x, y = torch.randn(6, 3, dtype=D), torch.randint(0, 2, (6,))
    loss = nn.functional.cross_entropy
    ours = rf.module_hessian(net, loss, x, y)
    f, flat, names, shapes, sizes = _flat_reference(net, x, loss, y)
    ref = ag_hessian(f, flat)
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            block = ref[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            torch.testing.assert_close(ours[a][b], block.reshape(*shapes[i], *shapes[j]), **TOL)


def test_module_function_with_hvp_and_jvp():
    net = _net().train()
    x, y = torch.randn(5, 3, dtype=D), torch.randint(0, 2, (5,))
    fn, params = rf.module_function(net, nn.functional.cross_entropy)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    _, hv = rf.hvp(lambda p: fn(p, x, y), (params,), (v,))
    f, flat, *_ = _flat_reference(net, x, nn.functional.cross_entropy, y)
    ref = ag_hessian(f, flat) @ torch.cat([t.reshape(-1) for t in v.values()])
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hv[0].values()]), ref, **TOL)
    hvp_fn = rf.hessian_vector_product(lambda p: fn(p, x, y), (params,))
    torch.testing.assert_close(hvp_fn((v,))[0]["0.weight"], hv[0]["0.weight"], **TOL)


def test_errors():
    with pytest.raises(
        TypeError, match=re.escape("module_function: `model` must be an nn.Module, got model=3")
    ):
        rf.module_function(3)
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "module_function: `model` must not have active dropout, got dropout in train mode at ['1']"
        ),
    ):
        rf.module_jacobian(net, torch.ones(1, 2))
    rf.module_jacobian(net.eval(), torch.ones(1, 2))  # eval mode: dropout is the identity
