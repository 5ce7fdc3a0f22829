"""DPOptimizer computes the norms of layers called once inside the user's backward.

The output gradient of such a layer is used as soon as it arrives and then released (as in a
non-private step), with the layer's captured inputs and outputs (checked for in-place changes
then); the rules hold one micro-batch at a time, so this happens only while a single
forward is pending. Both paths must give DPSGD.step's update.
"""

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
