"""Per-sample gradients, norms and clipped sums of every engine against a batch-of-one loop."""

import pytest
import torch
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import clip_per_sample, per_sample_grads
from research_ext.privacy._clipping import clip_factors, layer_thresholds
from research_ext.privacy._engines import ENGINES, layer_groups, make_engine
from tests.helpers import ATOL_PER_SAMPLE_FLOAT32, ATOL_PER_SAMPLE_FLOAT64
from tests.privacy.zoo import HOOKS_UNSUPPORTED, VMAP_UNSUPPORTED, ZOO, loop_grads, make

TOL = {torch.float64: ATOL_PER_SAMPLE_FLOAT64, torch.float32: ATOL_PER_SAMPLE_FLOAT32}


def _close(a, b, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol)


@pytest.mark.parametrize("name", ZOO)
def test_per_sample_grads_match_loop(name, dtype):
    model, x, y = make(name, dtype)
    loss_fn = nn.CrossEntropyLoss()
    ref = loop_grads(model, loss_fn, x, y)
    if name in VMAP_UNSUPPORTED:
        with pytest.raises(UnsupportedModuleError, match=r"grad_sample_mode='auto'"):
            per_sample_grads(model, loss_fn, (x, y))
        return
    got = per_sample_grads(model, loss_fn, (x, y))
    assert got.keys() == ref.keys()
    for n in ref:
        assert got[n].dtype == dtype
        _close(got[n], ref[n], dtype)


@pytest.mark.parametrize("clipping", ["flat", "per_layer", "adaptive"])
@pytest.mark.parametrize("mode", ENGINES)
@pytest.mark.parametrize("name", ZOO)
def test_engines_give_the_loop_clipped_sum(name, mode, clipping):
    dtype = torch.float64
    model, x, y = make(name, dtype)
    loss_fn = nn.CrossEntropyLoss()
    ref = loop_grads(model, loss_fn, x, y)
    groups = layer_groups(model)
    # A threshold that clips some examples and not others.
    total = torch.stack([g.flatten(1).pow(2).sum(1) for g in ref.values()]).sum(0).sqrt()
    c = float(total.median())
    if (mode == "vmap" and name in VMAP_UNSUPPORTED) or (
        mode in ("ghost", "materialized") and name in HOOKS_UNSUPPORTED
    ):
        with pytest.raises(UnsupportedModuleError, match=r"grad_sample_mode=.*'auto'"):
            make_engine(model, loss_fn, mode).run((x, y))
        return
    engine = make_engine(model, loss_fn, mode)
    sq = engine.run((x, y))
    ref_sq: dict[str, torch.Tensor] = {}
    for n, g in ref.items():
        ref_sq[groups[n]] = ref_sq.get(groups[n], 0) + g.flatten(1).pow(2).sum(1)
    for k in ref_sq:
        _close(sq[k], ref_sq[k], dtype)
    thresholds = layer_thresholds("t", c, sorted(ref_sq), clipping)
    got = engine.clipped_sum(clip_factors(sq, thresholds, clipping))
    # Oracle: clip each example explicitly, per group or over everything, then sum.
    for n, g in ref.items():
        if clipping == "per_layer":
            own = ref_sq[groups[n]].sqrt()
            factor = torch.clamp(thresholds[groups[n]] / (own + 1e-6), max=1.0)
        else:
            factor = torch.clamp(c / (total + 1e-6), max=1.0)
        expected = (g * factor.reshape(-1, *[1] * (g.ndim - 1))).sum(0)
        _close(got[n], expected, dtype)


@pytest.mark.parametrize("mode", ["ghost", "materialized"])
def test_ghost_norms_equal_materialized_norms(mode):
    model, x, y = make("transformer", torch.float64, batch=4)
    loss_fn = nn.CrossEntropyLoss()
    ghost = make_engine(model, loss_fn, "ghost").run((x, y))
    other = make_engine(model, loss_fn, mode).run((x, y))
    for k in ghost:
        _close(ghost[k], other[k], torch.float64)


def test_clip_per_sample_matches_explicit_clipping():
    model, x, y = make("mlp", torch.float64)
    grads = per_sample_grads(model, nn.CrossEntropyLoss(), (x, y))
    clipped = clip_per_sample(grads, 0.1)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    factor = torch.clamp(0.1 / (flat.norm(dim=1) + 1e-6), max=1.0)
    for n, g in grads.items():
        _close(clipped[n], g * factor.reshape(-1, *[1] * (g.ndim - 1)), torch.float64)


def test_auto_falls_back_per_layer_and_says_so():
    model, x, y = make("dp_attention_bias_kv", torch.float64)
    engine = make_engine(model, nn.CrossEntropyLoss(), "auto")
    assert engine.plan()["attn.seq_bias_k"] == "SequenceBias: vmap (per layer)"
    engine.run((x, y))
    plan = engine.plan()
    # The attention block is one per-layer vmap unit; the layers around it keep their rules.
    assert plan["attn"].startswith("DPMultiheadAttention: vmap (per layer, fallback: `attn.")
    assert "not the batch size 5" in plan["attn"]
    assert plan["emb"] == "Embedding: ghost" and plan["head"] == "Linear: ghost"
    assert not any(k.startswith("attn.") for k in plan)


class InPlaceAfterLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        h.relu_()  # rewrites the output the Linear rule would read gradients at
        return self.head(h)


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized"])
def test_layer_outputs_modified_in_place_are_caught(mode):
    torch.manual_seed(0)
    model = InPlaceAfterLinear().double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    engine = make_engine(model, nn.CrossEntropyLoss(), mode)
    if mode != "auto":
        with pytest.raises(UnsupportedModuleError, match=r"layer `lin` \(Linear\) had its input"):
            engine.run((x, y))
        return
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    sq = engine.run((x, y))
    total = sum(g.flatten(1).pow(2).sum(1) for g in ref.values())
    _close(sum(sq.values()), total, torch.float64)
    assert engine.plan()["<root>"].startswith("InPlaceAfterLinear: vmap (per layer, fallback")


class ResidualAttention(nn.MultiheadAttention):
    """A subclass whose own forward adds a residual around torch's attention."""

    def forward(self, x):  # type: ignore[override]
        return super().forward(x, x, x, need_weights=False)[0] + 0.5 * x


class LastStateLSTM(nn.LSTM):
    """A subclass whose own forward returns only the last layer's final state."""

    def forward(self, x):  # type: ignore[override]
        return super().forward(x)[1][0][-1]


class Subclassed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.attn = ResidualAttention(8, 2, batch_first=True)
        self.rnn = LastStateLSTM(8, 4, num_layers=2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.attn(self.emb(x))))


@pytest.mark.parametrize("mode", ENGINES)
def test_subclasses_overriding_forward_keep_their_forward(mode):
    # A dedicated rule re-implements torch's forward; a subclass's own forward must not be
    # replaced by it (it runs as a layer without a rule, by per-layer vmap, instead).
    torch.manual_seed(0)
    model = Subclassed().double()
    x, y = torch.randint(0, 30, (5, 6)), torch.randint(0, 3, (5,))
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    engine = make_engine(model, nn.CrossEntropyLoss(), mode)
    sq = engine.run((x, y))
    groups = layer_groups(model)
    for k in sq:
        want = sum(g.flatten(1).pow(2).sum(1) for n, g in ref.items() if groups[n] == k)
        _close(sq[k], want, torch.float64)
    if mode != "vmap":
        assert engine.plan()["attn"] == "ResidualAttention: vmap (per layer)"
        assert engine.plan()["rnn"] == "LastStateLSTM: vmap (per layer)"


class ScaledLinear(nn.Linear):
    """A Linear subclass whose forward scales its weight (a dedicated rule would miss it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, 1.5 * self.weight.tanh(), self.bias)


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized"])
def test_layer_subclass_with_its_own_forward_is_not_taken_for_its_base(mode):
    torch.manual_seed(0)
    model = nn.Sequential(ScaledLinear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    sq = make_engine(model, nn.CrossEntropyLoss(), mode).run((x, y))
    _close(
        sq["0"],
        ref["0.weight"].flatten(1).pow(2).sum(1) + ref["0.bias"].pow(2).sum(1),
        torch.float64,
    )


class _LayerCalledTwice(nn.Module):
    """A layer whose first call reaches no loss and whose second leaves one output unused."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(30, 8)
        if kind == "attention":
            self.layer: nn.Module = nn.MultiheadAttention(8, 2, batch_first=True)
        else:
            self.layer = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        if self.kind == "attention":
            self.layer(h[:, :2], h, h)  # a probe whose outputs are dropped
            out, _weights = self.layer(h, h, h)
            return self.head(out.mean(1))
        self.layer(h[:, :2])  # a probe whose outputs are dropped
        _seq, (last, _cell) = self.layer(h)  # only the last hidden state is used
        return self.head(last[0])


@pytest.mark.parametrize("kind", ["attention", "lstm"])
@pytest.mark.parametrize("mode", ENGINES)
def test_a_call_without_gradients_does_not_shift_the_others(mode, kind):
    # Outputs that reach no loss get zero gradients shaped like their own call's outputs.
    torch.manual_seed(0)
    model = _LayerCalledTwice(kind).double()
    x = torch.randint(0, 30, (4, 5), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    loss_fn = nn.CrossEntropyLoss()
    ref = loop_grads(model, loss_fn, x, y)
    groups = layer_groups(model)
    sq = make_engine(model, loss_fn, mode).run((x, y))
    ref_sq: dict[str, torch.Tensor] = {}
    for n, g in ref.items():
        ref_sq[groups[n]] = ref_sq.get(groups[n], 0) + g.flatten(1).pow(2).sum(1)
    assert sq.keys() == ref_sq.keys()
    for k in ref_sq:
        _close(sq[k], ref_sq[k], torch.float64)


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized"])
@pytest.mark.parametrize("trainable", ["weight and bias", "weight", "bias"])
@pytest.mark.parametrize("positions", [1, 3])
def test_linear_norms_with_and_without_bias_match_loop(positions, trainable, mode):
    # One position per example takes a shortcut (|g|^2 serves the weight and the bias norms);
    # a sequence of three takes the general block path.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 5, bias=trainable != "weight"),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * positions, 3),
    ).double()
    model[3].requires_grad_(False)
    if trainable == "bias":
        model[0].weight.requires_grad_(False)
    x = torch.randn(7, positions, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    sq = make_engine(model, nn.CrossEntropyLoss(), mode).run((x, y))
    assert set(ref) == {f"0.{n}" for n in trainable.split(" and ")}
    _close(sum(sq.values()), sum(g.flatten(1).pow(2).sum(1) for g in ref.values()), torch.float64)
