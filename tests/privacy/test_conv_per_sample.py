"""Per-sample convolution weight gradients from one grouped convolution (the batch in the groups).

Materialized convolutions on CPU with 8 or more input channels per group take this path; it must
give the batch-of-one loop's gradients for every stride, dilation, group count and padding
(including "same" with an even kernel, padded unevenly), and the engines built on it the loop's
norms and clipped sums.
"""

import pytest
import torch
from torch import nn

from research_ext.privacy._clipping import clip_factors, layer_thresholds
from research_ext.privacy._engines import make_engine
from research_ext.privacy._per_sample import conv_weight_per_sample
from tests.helpers import ATOL_PER_SAMPLE_FLOAT64
from tests.privacy.zoo import loop_grads

CONVS = {
    "conv1d_stride_dilation": lambda: nn.Conv1d(8, 5, 3, stride=2, dilation=2, padding=2),
    "conv2d_groups": lambda: nn.Conv2d(16, 6, 3, padding=1, groups=2),
    "conv2d_same_even_kernel": lambda: nn.Conv2d(8, 4, (2, 4), padding="same"),
    "conv2d_valid_no_bias": lambda: nn.Conv2d(9, 3, 3, padding="valid", bias=False),
    "conv3d": lambda: nn.Conv3d(8, 2, (3, 2, 1), stride=(1, 2, 1), padding=(1, 0, 0)),
}


def _input(conv: nn.Module, batch: int) -> torch.Tensor:
    spatial = {nn.Conv1d: (11,), nn.Conv2d: (7, 6), nn.Conv3d: (5, 6, 3)}[type(conv)]
    return torch.randn(batch, conv.in_channels, *spatial, dtype=torch.float64)


# torch notes that "same" with an even kernel pads a copy of the input (the case under test).
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", CONVS)
def test_grouped_per_sample_weight_gradients_match_loop(name):
    torch.manual_seed(0)
    conv = CONVS[name]().double()
    x = _input(conv, 4)
    out = conv(x)
    go = torch.randn_like(out)
    ref = []
    for i in range(x.shape[0]):
        (g,) = torch.autograd.grad((conv(x[i : i + 1]) * go[i : i + 1]).sum(), conv.weight)
        ref.append(g)
    got = conv_weight_per_sample(x, go, conv)
    p = conv.out_channels // conv.groups
    assert got.shape == (4, conv.groups, p, conv.weight[0].numel())
    torch.testing.assert_close(
        got.reshape(4, *conv.weight.shape),
        torch.stack(ref),
        rtol=ATOL_PER_SAMPLE_FLOAT64 * 10,
        atol=ATOL_PER_SAMPLE_FLOAT64,
    )


class _WideCNN(nn.Module):
    """A CNN whose second convolution (8 channels per group) takes the grouped path.

    The first (one input channel, kernel 3x3: fewer weight columns than rows) takes im2col with
    the product computed transposed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 6, 3, stride=2, padding=1, groups=2)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c2(torch.relu(self.c1(x))).flatten(1))


@pytest.mark.parametrize("clipping", ["flat", "per_layer"])
@pytest.mark.parametrize("mode", ["auto", "materialized"])
def test_engine_norms_and_clipped_sum_match_loop(mode, clipping):
    torch.manual_seed(0)
    model = _WideCNN().double()
    x = torch.randn(6, 1, 7, 7, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    loss_fn = nn.CrossEntropyLoss()
    ref = loop_grads(model, loss_fn, x, y)
    engine = make_engine(model, loss_fn, mode)
    sq = engine.run((x, y))
    tol = {"rtol": ATOL_PER_SAMPLE_FLOAT64 * 10, "atol": ATOL_PER_SAMPLE_FLOAT64}
    layer_sq = {
        k: sum(g.flatten(1).pow(2).sum(1) for n, g in ref.items() if n.startswith(f"{k}."))
        for k in sq
    }
    for k in sq:
        torch.testing.assert_close(sq[k], layer_sq[k], **tol)
    total = torch.stack(list(layer_sq.values())).sum(0).sqrt()
    c = float(total.median())
    thresholds = layer_thresholds("t", c, sorted(sq), clipping)
    got = engine.clipped_sum(clip_factors(sq, thresholds, clipping))
    for n, g in ref.items():
        layer = n.rsplit(".", 1)[0]
        if clipping == "per_layer":
            factor = torch.clamp(thresholds[layer] / (layer_sq[layer].sqrt() + 1e-6), max=1.0)
        else:
            factor = torch.clamp(c / (total + 1e-6), max=1.0)
        expected = (g * factor.reshape(-1, *[1] * (g.ndim - 1))).sum(0)
        torch.testing.assert_close(got[n], expected, **tol)
