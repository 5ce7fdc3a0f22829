"""Tied parameters (an output layer sharing the input embedding's weight) under the hook engine."""

import copy

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import DPSGD, DPOptimizer
from tests.privacy.test_own_loop import (
    CLIPPINGS,
    TiedLM,
    _assert_same,
    _clipped_loop_sum,
    _pair,
    _settings,
    assert_user_step_is_the_loop_clipped_sum,
    clipped_sum_of,
)


class TiedChain(nn.Module):
    """a.weight is b.weight and b.bias is c.bias: the three layers form one tie group."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.emb = nn.Embedding(7, 4)
        self.b.weight = self.a.weight
        self.c.bias = self.b.bias
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids).mean(1)
        h = self.c(torch.tanh(self.b(torch.tanh(self.a(h)))))
        return self.out(h)


class SharedTable(nn.Module):
    """One table for two embeddings (one with a padding index) and two biased output layers."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.ctx = nn.Embedding(9, 4), nn.Embedding(9, 4, padding_idx=0)
        self.ctx.weight = self.tok.weight
        self.out, self.aux = nn.Linear(4, 9), nn.Linear(4, 9)
        self.out.weight = self.aux.weight = self.tok.weight
        self.mix = nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mix(self.tok(ids) + self.ctx(ids.flip(1))))  # (B, T, 4)
        return self.out(h).mean(1) + self.aux(h[:, 0])


class WideTable(nn.Module):
    """A table wide enough (40 x 8) that three output positions keep the linear terms ghost."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(40, 8), nn.Linear(8, 40, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(ids))).mean(1)


def _models():
    torch.manual_seed(0)
    ids = torch.randint(0, 9, (5, 4))
    ids[0, 1] = ids[1, 2] = 0  # padding entries
    return [
        (TiedLM().double().eval(), torch.randint(0, 11, (5, 4)), torch.randint(0, 3, (5,))),
        (TiedChain().double(), torch.randint(0, 7, (5, 3)), torch.randint(0, 7, (5,))),
        (SharedTable().double(), ids, torch.randint(0, 9, (5,))),
        (WideTable().double(), torch.randint(0, 40, (5, 3)), torch.randint(0, 40, (5,))),
    ]


def test_the_output_layers_terms_are_ghost_or_materialized_by_cost():
    # TiedLM: 4 output positions over an 11 x 6 table (ghost 4 * 17 > 66); WideTable: 3 over
    # 40 x 8 (3 * 48 < 320). Either way the result is the per-example loop's (test above).
    plans = {}
    for model, x, y in _models()[::3]:
        opt = assert_user_step_is_the_loop_clipped_sum(model, x, y)
        plans[type(model).__name__] = opt.plan
    assert plans["TiedLM"]["out"] == "Linear: materialized (tied with `emb`)"
    assert plans["WideTable"]["out"] == "Linear: ghost (tied with `emb`)"
    assert plans["TiedLM"]["emb"] == "Embedding: ghost (tied with `out`)"


def _plan(model: nn.Module) -> dict[str, str]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return DPSGD(model, opt, loss_fn=nn.CrossEntropyLoss(), **_settings()).plan


def test_a_table_shared_by_embeddings_and_output_layers_takes_the_ghost_norm():
    plan = _plan(SharedTable())
    assert plan["ctx"] == "Embedding: ghost (tied with `tok`, `out`, `aux`)"
    assert "tied" not in plan["mix"]


def test_auto_runs_only_the_tied_layers_per_layer_not_the_whole_model():
    plan = _plan(TiedLM().double())
    assert not any("whole model" in v for v in plan.values()), plan
    assert plan["emb"] == "Embedding: ghost (tied with `out`)"
    assert plan["out"] == "Linear: ghost (tied with `emb`)"
    # The untied layers keep their own rules.
    assert plan["mix"].startswith("Linear: ") and "vmap" not in plan["mix"]
    assert plan["norm"] == "LayerNorm: materialized"


def test_a_chain_of_ties_is_one_group():
    plan = _plan(TiedChain().double())
    assert plan["a"] == "Linear: vmap (per layer, tied with `b`, `c`)"
    assert plan["emb"] == "Embedding: ghost (tied with `out`)"


@pytest.mark.parametrize("clipping", CLIPPINGS)
def test_tied_layers_by_hooks_equal_whole_model_vmap(clipping):
    for model, x, y in _models():
        twin = copy.deepcopy(model)
        runs = []
        for m, mode in ((model, "auto"), (twin, "vmap")):
            runs.append(
                DPSGD(
                    m,
                    torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9),
                    loss_fn=nn.CrossEntropyLoss(),
                    generator=torch.Generator().manual_seed(3),
                    grad_sample_mode=mode,
                    **_settings(clipping=clipping),
                )
            )
        for _ in range(2):
            for dp in runs:
                dp.step((x, y))
        _assert_same(model, twin)
        assert runs[0].max_grad_norm == pytest.approx(runs[1].max_grad_norm)


def test_tied_groups_are_exact_against_the_per_example_loop():
    for model, x, y in _models():
        opt = assert_user_step_is_the_loop_clipped_sum(model, x, y)
        assert not any("whole model" in v for v in opt.plan.values())


@pytest.mark.parametrize("clipping", CLIPPINGS)
def test_user_loop_with_ties_and_dropout_equals_dpsgd_step(clipping):
    torch.manual_seed(0)
    model = TiedLM().double()  # train mode: dropout between the untied and the tied layers
    x, y = torch.randint(0, 11, (6, 4)), torch.randint(0, 3, (6,))
    dp, opt, twin = _pair(model, clipping=clipping)
    for step in range(2):
        torch.manual_seed(10 + step)
        dp.step([(x[:4], y[:4]), (x[4:], y[4:])])
        torch.manual_seed(10 + step)
        for lo, hi in ((0, 4), (4, 6)):
            F.cross_entropy(twin(x[lo:hi]), y[lo:hi]).backward()
        opt.step()
        opt.zero_grad()
    assert opt.plan == dp.plan
    _assert_same(model, twin)


@pytest.mark.parametrize("mode", ["ghost", "materialized"])
def test_modes_without_per_layer_vmap_refuse_ties_and_name_the_alternatives(mode):
    model = TiedLM()
    with pytest.raises(UnsupportedModuleError, match="grad_sample_mode='auto'"):
        DPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            grad_sample_mode=mode,
            **_settings(),
        )


class InplaceBlock(nn.Module):
    """A Linear whose output is changed in place (its rule fails: "auto" falls back)."""

    def __init__(self, vocab: int = 7, dim: int = 4) -> None:
        super().__init__()
        self.mix, self.emb = nn.Linear(dim, dim), nn.Embedding(vocab, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mix(self.emb(ids).mean(1)).relu_()


class FallbackNearTies(nn.Module):
    """``widen``: the failing block holds one tied layer; else the tie is outside the block."""

    def __init__(self, widen: bool) -> None:
        super().__init__()
        self.widen = widen
        self.block = InplaceBlock()
        self.emb = nn.Embedding(7, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.block.emb.weight if widen else self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(ids) + self.emb(ids).mean(1))


@pytest.mark.parametrize("widen", [False, True])
def test_a_fallback_next_to_ties_merges_whole_tie_groups(widen):
    torch.manual_seed(0)
    model = FallbackNearTies(widen).double()
    x, y = torch.randint(0, 7, (5, 3)), torch.randint(0, 7, (5,))
    twin = copy.deepcopy(model)
    expected = _clipped_loop_sum(copy.deepcopy(model), x, y, 0.1)
    runs = [
        DPSGD(
            m,
            torch.optim.SGD(m.parameters(), lr=1.0),
            loss_fn=nn.CrossEntropyLoss(),
            grad_sample_mode=mode,
            **_settings(noise_multiplier=0.0),
        )
        for m, mode in ((model, "auto"), (twin, "vmap"))
    ]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for dp in runs:
        dp.step((x, y))
    plan = runs[0].plan
    if widen:  # block.emb is tied to out: the merged unit is the whole model
        assert list(plan) == ["<root>"] and "fallback: `block.mix`" in plan["<root>"]
    else:  # the tie stays outside the merged block
        assert "fallback: `block.mix`" in plan["block"]
        assert plan["emb"] == "Embedding: ghost (tied with `out`)"
    _assert_same(model, twin)
    for n, p in model.named_parameters():
        update = (before[n] - p.detach()) * 6
        torch.testing.assert_close(update, expected[n], msg=n)


class PositionsLM(nn.Module):
    """Position ids without a batch dim (``pos(arange(T))``) and ``model(**batch)`` -> loss."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(9, 4), nn.Embedding(5, 4)
        self.out = nn.Linear(4, 9, bias=False)
        if tied:
            self.out.weight = self.tok.weight

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        return F.cross_entropy(self.out(torch.tanh(h).mean(1)), labels)


@pytest.mark.parametrize("tied", [False, True])
def test_auto_ends_in_whole_model_vmap_when_no_layer_can_take_over(tied):
    # The position table's output has no batch dim, so no layer rule (nor the model, whose
    # output is the scalar loss) can split it per example: "auto" then runs the whole model
    # per example (for DPSGD.step, see test_dpsgd_step_in_auto_ends_in_whole_model_vmap_...).
    torch.manual_seed(0)
    model = PositionsLM(tied).double()
    ids, labels = torch.randint(0, 9, (6, 5)), torch.randint(0, 9, (6,))
    twin = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = DPOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        check_loss="always",
        **_settings(noise_multiplier=0.0),
    )
    model(input_ids=ids, labels=labels).backward()
    opt.step()
    assert all("vmap (whole model)" in v for v in opt.plan.values()), opt.plan
    # The same update as the per-example loop gives (each example's own loss).
    params = dict(twin.named_parameters())
    rows = [
        torch.autograd.grad(
            twin(input_ids=ids[i : i + 1], labels=labels[i : i + 1]), list(params.values())
        )
        for i in range(6)
    ]
    grads = {n: torch.stack([row[k] for row in rows]) for k, n in enumerate(params)}
    expected = clipped_sum_of(grads, 0.1)
    for n, p in model.named_parameters():
        torch.testing.assert_close((before[n] - p.detach()) * 6, expected[n], msg=n)


class OutsideCall(nn.Module):
    """A sub-layer of the fallback unit called from outside that unit's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.block = InplaceBlock()
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.block(ids) + self.block.emb(ids[:, :1]).squeeze(1)  # block.emb, outside block
        return self.head(h)


@pytest.mark.parametrize("mode", ["auto", "ghost"])
def test_a_sub_layer_called_outside_its_unit_is_not_missed(mode):
    # "auto" merges the failing block.mix into `block`; block.emb, called outside block's
    # forward, would be missed by re-running `block`: the fallback goes one level further up.
    torch.manual_seed(0)
    model = OutsideCall().double()
    x, y = torch.randint(0, 7, (5, 3)), torch.randint(0, 3, (5,))
    expected = _clipped_loop_sum(copy.deepcopy(model), x, y, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        loss_fn=nn.CrossEntropyLoss(),
        grad_sample_mode=mode,
        **_settings(noise_multiplier=0.0),
    )
    if mode != "auto":
        with pytest.raises(UnsupportedModuleError, match="block.mix"):
            dp.step((x, y))
        return
    dp.step((x, y))
    assert list(dp.plan) == ["<root>"], dp.plan
    for n, p in model.named_parameters():
        torch.testing.assert_close((before[n] - p.detach()) * 6, expected[n], msg=n)


def test_an_unchecked_backward_computes_no_gradient_for_a_tied_table():
    # The table's ghost norm needs only the layers' inputs and output gradients: after the
    # checked first step its parameters leave the user's graph like every other layer's.
    torch.manual_seed(0)
    model = WideTable().double()
    x, y = torch.randint(0, 40, (5, 3)), torch.randint(0, 40, (5,))
    opt = DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), **_settings())
    for step in range(2):
        F.cross_entropy(model(x), y).backward()
        computed = [n for n, p in model.named_parameters() if p.grad is not None]
        assert computed == (["emb.weight"] if step == 0 else []), step
        opt.step()
        opt.zero_grad()
    assert all(p.requires_grad for p in model.parameters())


class ClassFirst(nn.Module):
    """Unbatched position ids and a (classes, batch) output: only whole-model vmap can split."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(9, 4), nn.Embedding(5, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.out(torch.tanh(h).mean(1)).T


def test_dpsgd_step_in_auto_ends_in_whole_model_vmap_like_vmap_mode():
    torch.manual_seed(0)
    model = ClassFirst().double()
    twin = copy.deepcopy(model)
    x, y = torch.randint(0, 9, (6, 5)), torch.randint(0, 3, (6,))

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.T, target)

    runs = [
        DPSGD(
            m,
            torch.optim.SGD(m.parameters(), lr=0.5),
            loss_fn=loss_fn,
            generator=torch.Generator().manual_seed(3),
            grad_sample_mode=mode,
            **_settings(),
        )
        for m, mode in ((model, "auto"), (twin, "vmap"))
    ]
    for _ in range(2):
        for dp in runs:
            dp.step((x, y))
    assert all("vmap (whole model)" in v for v in runs[0].plan.values()), runs[0].plan
    _assert_same(model, twin)
