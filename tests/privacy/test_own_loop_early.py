"""DPOptimizer computes the norms of layers called once inside the user's backward.

The output gradient of such a layer is used as soon as it arrives and then released (as in a
non-private step), with the layer's captured inputs (checked for in-place changes then); the
rules hold one micro-batch at a time, so this happens only while a single forward is pending.
Both paths must give DPSGD.step's update. Captured outputs are released when the forward
returns: the forward holds no more than a non-private one.
"""

import weakref

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from tests.privacy.test_own_loop import _assert_same, _pair as own_loop_pair
from tests.privacy.zoo import make


def _pair(model, mode, clipping):
    """DPSGD on ``model`` and a DPOptimizer that never checks the loss on a copy (equal seeds)."""
    return own_loop_pair(model, check_loss="never", grad_sample_mode=mode, clipping=clipping)


@pytest.mark.parametrize("mode", ["auto", "materialized", "ghost"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_norms_are_taken_in_the_backward_and_gradients_released(name, mode):
    model, x, y = make(name, torch.float64, batch=6)
    dp, opt, twin = _pair(model, mode, "flat")
    F.cross_entropy(twin(x), y).backward()
    (pending,) = opt._pending
    calls = [layer for layer, _ in pending.by_call]
    single = {layer for layer in calls if calls.count(layer) == 1}
    assert single and set(pending.early) == single
    for (layer, _), slot in pending.by_call.items():
        if layer in single:
            # Released: torch's backward was the gradient's last user, and the captured
            # inputs and outputs are dropped with it.
            assert slot == [None]
            assert len(pending.records[layer]) == 0
    opt.step()
    dp.step((x, y))
    _assert_same(model, twin)


@pytest.mark.parametrize("clipping", ["flat", "per_layer"])
@pytest.mark.parametrize("mode", ["auto", "materialized", "ghost"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_two_forwards_then_one_backward_equal_dpsgd_micro_batches(name, mode, clipping):
    model, x, y = make(name, torch.float64, batch=6)
    dp, opt, twin = _pair(model, mode, clipping)
    for _ in range(2):
        dp.step([(x[:4], y[:4]), (x[4:], y[4:])])
        # Both forwards pending when the backward runs: norms are taken at step() instead.
        loss = F.cross_entropy(twin(x[:4]), y[:4]) + F.cross_entropy(twin(x[4:]), y[4:])
        loss.backward()
        assert all(not p.early for p in opt._pending)
        opt.step()
        opt.zero_grad()
    _assert_same(model, twin)


def _outputs_alive_after_forward(model, x, optimizer=None):
    """Names of the layers whose outputs are still held once the forward has returned."""
    refs = {}

    def hook(name):
        def keep(module, args, out):
            outs = (out,) if isinstance(out, torch.Tensor) else out
            for j, o in enumerate(outs):
                if isinstance(o, torch.Tensor):
                    refs[f"{name}[{j}]"] = weakref.ref(o)

        return keep

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    alive = {n for n, r in refs.items() if r() is not None}
    del out
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)  # drops the pending forward
    return alive


@pytest.mark.parametrize("mode", ["auto", "materialized", "ghost"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_the_forward_holds_no_layer_output_a_non_private_forward_frees(name, mode):
    # A norm layer's output, once the activation after it has run, is freed by torch: the
    # captured calls keep only what their rules read (inputs), not the outputs.
    model, x, _ = make(name, torch.float64, batch=6)
    _, opt, twin = _pair(model, mode, "flat")
    plain = _outputs_alive_after_forward(model, x)
    assert _outputs_alive_after_forward(twin, x, opt) == plain


@pytest.mark.parametrize("mode", ["auto", "materialized", "ghost"])
def test_an_output_changed_in_place_after_the_forward_equals_the_change_out_of_place(mode):
    # The rules take each layer's output gradient at the value the layer returned.
    model, x, y = make("cnn", torch.float64, batch=6)
    _, opt, in_place = _pair(model, mode, "flat")
    _, opt_ref, out_of_place = _pair(model, mode, "flat")
    for _ in range(2):
        out = in_place(x)
        out.mul_(2.0)
        F.cross_entropy(out, y).backward()
        F.cross_entropy(out_of_place(x) * 2.0, y).backward()
        for o in (opt, opt_ref):
            o.step()
            o.zero_grad()
    _assert_same(out_of_place, in_place)
