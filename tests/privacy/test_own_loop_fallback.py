"""DPOptimizer: a layer whose rule fails inside the user's forward falls back as in DPSGD.step.

DPSGD.step re-runs its own forward after ``"auto"`` merges a failing layer into its parent; the
user's forward cannot be re-run, so the layer runs its own forward there and the step's
per-sample gradients come from the engine's second pass (with the fallback plan). Other modes
name the layer at ``step()``.
"""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import DPOptimizer
from tests.privacy.test_own_loop import _settings, assert_two_steps_agree


class PerExampleAttention(nn.Module):
    """Attention over each example's own (length, embed) sequence, called unbatched in a loop."""

    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seqs = torch.stack([self.att(s, s, s, need_weights=False)[0] for s in x])
        return self.head(seqs.mean(1))


def _data():
    torch.manual_seed(0)
    return torch.randn(5, 4, 8, dtype=torch.float64), torch.randint(0, 3, (5,))


@pytest.mark.parametrize("check_loss", ["first", "never"])
def test_auto_falls_back_from_a_rule_that_fails_in_the_users_forward(check_loss):
    x, y = _data()
    opt = assert_two_steps_agree(PerExampleAttention().double(), x, y, check_loss=check_loss)
    assert "vmap" in opt.plan["<root>"]  # the attention layer merged into the model


@pytest.mark.parametrize("mode", ["ghost", "materialized"])
def test_other_modes_name_the_failing_layer_at_step_and_change_nothing(mode):
    model = PerExampleAttention().double()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data()
    opt = DPOptimizer(
        model, torch.optim.SGD(model.parameters(), lr=0.5), grad_sample_mode=mode, **_settings()
    )
    F.cross_entropy(model(x), y).backward()  # the user's forward and backward complete
    with pytest.raises(UnsupportedModuleError, match=r"layer `att` \(MultiheadAttention\).*'auto'"):
        opt.step()
    assert opt.steps == 0
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
