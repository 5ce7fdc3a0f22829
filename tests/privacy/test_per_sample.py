import pytest
import torch
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import add_gaussian_noise, clip_per_sample, per_sample_grads
from research_ext.privacy._engines import make_engine
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64


def test_shapes_dtypes_and_empty_batch(dtype):
    model = nn.Linear(3, 2).to(dtype)
    grads = per_sample_grads(
        model, nn.MSELoss(), (torch.randn(4, 3, dtype=dtype), torch.randn(4, 2, dtype=dtype))
    )
    assert grads["weight"].shape == (4, 2, 3) and grads["weight"].dtype == dtype
    empty = per_sample_grads(
        model, nn.MSELoss(), (torch.zeros(0, 3, dtype=dtype), torch.zeros(0, 2, dtype=dtype))
    )
    assert empty["bias"].shape == (0, 2)


def test_batch_must_be_a_pair():
    with pytest.raises(
        TypeError, match=r"per_sample_grads: `batch` must be a pair \(inputs, targets\)"
    ):
        per_sample_grads(nn.Linear(2, 1), nn.MSELoss(), torch.zeros(3, 2))


def test_batchnorm_is_unsupported_under_vmap():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with pytest.raises(
        UnsupportedModuleError, match=r"per_sample_grads: torch.func could not compute"
    ):
        per_sample_grads(
            model, nn.CrossEntropyLoss(), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
        )


def test_loss_reductions_agree_across_engines():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    results = []
    for loss_fn in (
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(reduction="sum"),
        lambda out, tgt: nn.functional.cross_entropy(out, tgt, reduction="none"),
    ):
        engine = make_engine(model, loss_fn, "ghost")
        results.append(engine.run((x, y))[next(iter(engine.rules))])
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], results[2])


def test_loss_of_wrong_shape_is_rejected():
    engine = make_engine(nn.Linear(3, 2), lambda out, tgt: out, "ghost")
    with pytest.raises(
        ValueError, match=r"loss_fn: must return a scalar or per-example losses of shape \(4,\)"
    ):
        engine.run((torch.randn(4, 3), torch.zeros(4)))


def test_clip_per_sample_errors():
    with pytest.raises(
        ValueError,
        match=r"clip_per_sample: `max_grad_norm` must be a finite number > 0, got max_grad_norm=0",
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, 0)
    with pytest.raises(
        ValueError,
        match=r"clip_per_sample: `clipping` must be one of 'flat', 'per_layer', 'adaptive'",
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, 1.0, clipping="none")
    with pytest.raises(
        TypeError, match=r"`max_grad_norm` must be a float unless clipping='per_layer'"
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, {"": 1.0})


def test_add_gaussian_noise_is_reproducible_and_validates():
    a = add_gaussian_noise(torch.zeros(5), 1.0, generator=torch.Generator().manual_seed(1))
    b = add_gaussian_noise(torch.zeros(5), 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(add_gaussian_noise(torch.ones(3), 0.0), torch.ones(3))
    with pytest.raises(
        ValueError, match=r"add_gaussian_noise: `std` must be a finite number >= 0, got std=-1.0"
    ):
        add_gaussian_noise(torch.ones(3), -1.0)


class NoisyGeneric(nn.Module):
    """A layer without a dedicated rule that draws dropout masks inside its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 6) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.dropout(x @ self.weight, 0.4)
        return nn.functional.dropout1d(h.unsqueeze(-1), 0.3, training=True).squeeze(-1)


class AttentionBiasKV(nn.Module):
    """MultiheadAttention with add_bias_kv (no dedicated rule) and dropout on its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.5, add_bias_kv=True, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        return self.head(self.drop(self.attn(h, h, h)[0]).mean(1))


def _dropout_model(name):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 3))
        x = torch.randn(6, 6, generator=g, dtype=torch.float64)
    elif name == "generic":
        model = nn.Sequential(nn.Linear(6, 6), NoisyGeneric(), nn.Linear(6, 3))
        x = torch.randn(6, 6, generator=g, dtype=torch.float64)
    elif name == "lstm":
        from tests.privacy.zoo import Recurrent

        rnn = nn.LSTM(4, 5, num_layers=3, dropout=0.5, batch_first=True, bidirectional=True)
        model = Recurrent(rnn)
        x = torch.randint(1, 30, (6, 5), generator=g)
    elif name == "attention":
        model = AttentionBiasKV()
        model.attn = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
        x = torch.randint(0, 20, (6, 5), generator=g)
    elif name == "transformer":
        model = nn.Sequential(
            nn.Embedding(20, 8),
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True),
            nn.Flatten(),
            nn.Linear(40, 3),
        )
        x = torch.randint(0, 20, (6, 5), generator=g)
    elif name == "dp_attention_fallback":
        from tests.privacy.zoo import OpacusAttention

        model = OpacusAttention()  # auto merges it into one per-layer vmap unit at step one
        model.attn.dropout.p = 0.5
        x = torch.randint(0, 30, (6, 5), generator=g)
    else:
        model = AttentionBiasKV()
        x = torch.randint(0, 20, (6, 5), generator=g)
    return model.double().train(), x, torch.randint(0, 3, (6,), generator=g)


_DROPOUT_CASES = [
    (name, mode)
    for name in ("mlp", "generic", "attention", "transformer", "attention_bias_kv", "lstm")
    for mode in ("auto", "ghost", "materialized", "vmap")
] + [("dp_attention_fallback", "auto"), ("dp_attention_fallback", "vmap")]


@pytest.mark.parametrize(("name", "mode"), _DROPOUT_CASES)
def test_dropout_masks_of_the_forward_pass_in_every_mode(name, mode):
    # Clipping off and no noise: the DP update is minus the mean of the per-sample gradients,
    # which must be the batch gradient under the same seed (the same dropout masks).
    from research_ext.privacy import DPSGD

    model, x, y = _dropout_model(name)
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(11)
    model.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()
    batch_grad = [p.grad.clone() for p in model.parameters()]
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1e12,
        delta=1e-5,
        sample_rate=1.0,
        dataset_size=6,
        noise_multiplier=0.0,
        grad_sample_mode=mode,
    )
    torch.manual_seed(11)
    dp.step((x, y))
    for b, p, g in zip(before, model.parameters(), batch_grad, strict=True):
        torch.testing.assert_close(b - p.detach(), g, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)


def test_recurrent_dropout_masks_agree_across_modes():
    rnn = nn.LSTM(4, 5, num_layers=3, dropout=0.5, batch_first=True)
    from tests.privacy.zoo import Recurrent

    torch.manual_seed(0)
    model = Recurrent(rnn).double()
    x, y = torch.randint(1, 30, (5, 6)), torch.randint(0, 3, (5,))
    results = []
    for mode in ("ghost", "materialized", "vmap"):
        engine = make_engine(model, nn.CrossEntropyLoss(), mode)
        torch.manual_seed(3)
        sq = engine.run((x, y))
        results.append(engine.clipped_sum({k: torch.ones_like(v) for k, v in sq.items()}))
    for other in results[1:]:
        for n, g in results[0].items():
            torch.testing.assert_close(other[n], g, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)
