"""DPOptimizer: DP-SGD in the user's own loop equals DPSGD.step on the same batch and seed."""

import copy

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.errors import PrivacyBudgetExceededError
from research_ext.privacy import DPSGD, DPOptimizer, NonDecomposableLossError
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64
from tests.privacy.zoo import ZOO, loop_grads, make

MODES = ("auto", "ghost", "materialized", "vmap")
CLIPPINGS = ("flat", "per_layer", "adaptive")


def _settings(**kwargs):
    base = dict(
        max_grad_norm=0.1,
        delta=1e-5,
        sample_rate=0.5,
        dataset_size=12,
        noise_multiplier=1.0,
    )
    return {**base, **kwargs}


def _pair(model, check_loss="first", **kwargs):
    """A DPSGD on ``model`` and a DPOptimizer on a copy, with equal noise seeds.

    With ``check_loss="first"``, the user's first backward computes parameter gradients (they
    are compared with ours) and later ones do not (the rules need none): both paths are run.
    """
    twin = copy.deepcopy(model)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        loss_fn=nn.CrossEntropyLoss(),
        generator=torch.Generator().manual_seed(3),
        **_settings(**kwargs),
    )
    opt = DPOptimizer(
        twin,
        torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9),
        generator=torch.Generator().manual_seed(3),
        check_loss=check_loss,
        **_settings(**kwargs),
    )
    return dp, opt, twin


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64, msg=name)


@pytest.mark.parametrize("clipping", CLIPPINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_user_loop_step_equals_dpsgd_step_with_accumulation(name, mode, clipping):
    model, x, y = make(name, torch.float64, batch=6)
    dp, opt, twin = _pair(model, clipping=clipping, grad_sample_mode=mode)
    for step in range(2):
        torch.manual_seed(step)
        dp.step([(x[:4], y[:4]), (x[4:], y[4:])])
        torch.manual_seed(step)
        for lo, hi in ((0, 4), (4, 6)):  # two micro-batches: one logical step
            F.cross_entropy(twin(x[lo:hi]), y[lo:hi]).backward()
        opt.step()
        opt.zero_grad()
    assert opt.steps == dp.steps == 2
    assert opt.max_grad_norm == pytest.approx(dp.max_grad_norm, rel=RTOL_FLOAT64)
    _assert_same(model, twin)


def assert_two_steps_agree(model: nn.Module, x, y, **pair_kwargs) -> DPOptimizer:
    """Two steps of DPSGD.step on ``model`` and of the user loop on a copy: same plan and
    parameters. Returns the user loop's optimizer."""
    dp, opt, twin = _pair(model, **pair_kwargs)
    for _ in range(2):
        dp.step((x, y))
        F.cross_entropy(twin(x), y).backward()
        opt.step()
        opt.zero_grad()
    assert opt.plan == dp.plan
    _assert_same(model, twin)
    return opt


@pytest.mark.parametrize("name", ["generic", "attention", "embedding_bag", "dp_attention_bias_kv"])
def test_user_loop_in_auto_mode_matches_on_harder_layers(name):
    # generic: per-layer vmap and a Linear called twice; dp_attention_bias_kv: auto's fallback,
    # which the user loop makes by an invisible second pass.
    model, x, y = make(name, torch.float64, batch=5)
    assert_two_steps_agree(model, x, y)


@pytest.mark.parametrize("name", [n for n in ZOO if n not in ("mlp", "cnn", "transformer")])
def test_unchecked_steps_equal_dpsgd_step_on_every_zoo_model(name):
    # check_loss="never": from the first step on, the user's backward runs without parameter
    # gradients, the first layers' outputs (or attention's inputs) get gradients through aliases.
    model, x, y = make(name, torch.float64, batch=5)
    dp, opt, twin = _pair(model, check_loss="never")
    dp.step((x, y))
    out = twin(x)
    F.cross_entropy(out, y).backward()
    opt.step()
    _assert_same(model, twin)


class FloatAttention(nn.Module):
    """Attention first on float features (no input needs a gradient), then to a fixed memory."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h, _ = self.attn(x, x, x)
        c, _ = self.cross(h, memory, value=memory, need_weights=False)
        return self.head(torch.tanh(c).mean(1))


class InplaceAfterLinear(nn.Module):
    """A Linear whose output is changed in place: "auto" falls back (an invisible replay)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(x).relu_()).mean(1)


class GroupNormFirst(nn.Module):
    """A GroupNorm on the raw input: without parameter gradients its forward saves nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.head = nn.GroupNorm(1, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)).mean(1)


@pytest.mark.parametrize("model_cls", [FloatAttention, InplaceAfterLinear, GroupNormFirst])
def test_unchecked_steps_on_first_attention_fixed_memory_and_in_place_outputs(model_cls):
    torch.manual_seed(0)
    model = model_cls().double()
    for p in model.parameters():  # away from the identity GroupNorm starts with
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    memory = torch.randn(5, 2, 4, dtype=torch.float64)
    inputs = (x, memory) if model_cls is FloatAttention else x
    y = torch.randint(0, 3, (5,))
    for check_loss in ("first", "never"):
        twin_model = copy.deepcopy(model)
        dp, opt, twin = _pair(twin_model, check_loss=check_loss)
        for _ in range(2):
            dp.step((inputs, y))
            args = inputs if isinstance(inputs, tuple) else (inputs,)
            F.cross_entropy(twin(*args), y).backward()
            opt.step()
            opt.zero_grad()
        _assert_same(twin_model, twin)


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized"])
def test_unchecked_backward_computes_no_parameter_gradient(mode):
    # The engine needs only the layers' output gradients; the first (checked) step needs p.grad.
    model, x, y = make("transformer", torch.float64, batch=4)
    opt = DPOptimizer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), grad_sample_mode=mode, **_settings()
    )
    for step in range(2):
        F.cross_entropy(model(x), y).backward()
        computed = [n for n, p in model.named_parameters() if p.grad is not None]
        assert computed == ([n for n, _ in model.named_parameters()] if step == 0 else []), step
        opt.step()
        opt.zero_grad()
    assert all(p.requires_grad for p in model.parameters())


def test_a_forward_that_raises_leaves_the_parameters_trainable():
    model, x, y = make("mlp", torch.float64, batch=4)
    opt = DPOptimizer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), check_loss="never", **_settings()
    )
    with pytest.raises(RuntimeError):
        model(x[:, :3])  # wrong width: the first Linear raises inside the captured forward
    assert all(p.requires_grad for p in model.parameters())
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert opt.steps == 1


class TiedLM(nn.Module):
    """Tied input embedding and output layer, dropout; the forward reads ids, returns logits."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.tanh(self.mix(self.emb(ids))))
        return self.out(self.drop(h)).mean(1)


def clipped_sum_of(grads: dict[str, torch.Tensor], c: float) -> dict[str, torch.Tensor]:
    """Flat-clipped sum at norm ``c`` of per-example gradients ``grads[name]: (B, *shape)``."""
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values())
    factors = (c / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # DPSGD's (and Opacus's) factors
    return {n: torch.einsum("b,b...->...", factors, g) for n, g in grads.items()}


def _clipped_loop_sum(model, x, y, c):
    return clipped_sum_of(loop_grads(model, nn.CrossEntropyLoss(), x, y), c)


def assert_user_step_is_the_loop_clipped_sum(model, x, y):
    """One noiseless user-loop step at lr 1 moves each parameter by the loop's clipped sum / qN.

    Returns the optimizer (its ``plan`` says how the step was computed).
    """
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = _clipped_loop_sum(model, x, y, 0.1)
    opt = DPOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        check_loss="always",
        **_settings(noise_multiplier=0.0),
    )
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for n, p in model.named_parameters():
        update = (before[n] - p.detach()) * 6  # lr 1, divided by qN = 6
        torch.testing.assert_close(update, expected[n], rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64, msg=n)
    return opt


def test_tied_weights_and_a_layer_used_twice_are_exact_against_the_per_example_loop():
    torch.manual_seed(0)
    for model, x in (
        (TiedLM().double().eval(), torch.randint(0, 11, (5, 4))),
        (make("generic", torch.float64, batch=5)[0], torch.randn(5, 2, 4, 4).double()),
    ):
        assert_user_step_is_the_loop_clipped_sum(model, x, torch.randint(0, 3, (5,)))


@pytest.mark.parametrize("mode", ["auto", "vmap"])
def test_tied_weights_with_dropout_replay_the_users_masks(mode):
    # "vmap": the whole-model second pass replays the user's dropout masks; "auto": the tied
    # layers run per-layer vmap on the calls captured in the user's forward.
    torch.manual_seed(0)
    model = TiedLM().double()
    x, y = torch.randint(0, 11, (6, 4)), torch.randint(0, 3, (6,))
    dp, opt, twin = _pair(model, grad_sample_mode=mode)
    for step in range(2):
        torch.manual_seed(10 + step)
        dp.step((x, y))
        torch.manual_seed(10 + step)
        F.cross_entropy(twin(x), y).backward()
        state = torch.get_rng_state()
        opt.step()
        opt.zero_grad()
        # The replay leaves the user's random stream where their forward left it.
        assert torch.equal(torch.get_rng_state(), state)
    expected = "vmap (whole model)" if mode == "vmap" else "ghost (tied with `out`)"
    assert expected in opt.plan["emb"]
    _assert_same(model, twin)


class KeywordLossModel(nn.Module):
    """``model(**batch)`` returning the mean loss, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(self.emb(input_ids).mean(1)), labels)


@pytest.mark.parametrize("mode", MODES)
def test_model_returning_its_loss_from_keyword_batches(mode):
    torch.manual_seed(0)
    model = KeywordLossModel().double()
    batch = {"input_ids": torch.randint(0, 20, (6, 3)), "labels": torch.randint(0, 3, (6,))}
    twin = copy.deepcopy(model)
    settings = _settings(grad_sample_mode=mode)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        loss_fn=lambda out, b: out,
        generator=torch.Generator().manual_seed(3),
        **settings,
    )
    opt = DPOptimizer(
        twin,
        torch.optim.SGD(twin.parameters(), lr=0.5),
        generator=torch.Generator().manual_seed(3),
        check_loss="always",
        **settings,
    )
    dp.step(batch)
    twin(**batch).backward()
    opt.step()
    _assert_same(model, twin)


def test_sum_reduction_equals_mean_reduction():
    model, x, y = make("mlp", torch.float64, batch=6)
    twin = copy.deepcopy(model)
    outs = []
    for m, reduction in ((model, "mean"), (twin, "sum")):
        opt = DPOptimizer(
            m,
            torch.optim.SGD(m.parameters(), lr=0.5),
            loss_reduction=reduction,
            generator=torch.Generator().manual_seed(1),
            **_settings(),
        )
        F.cross_entropy(m(x), y, reduction=reduction).backward()
        opt.step()
        outs.append(m)
    _assert_same(*outs)


def test_a_regulariser_bypassing_the_layers_is_refused_and_nothing_changes():
    model, x, y = make("mlp", torch.float64, batch=6)
    opt = DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.5), **_settings())
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y) + 0.1 * model[0].weight.pow(2).sum()
    loss.backward()
    with pytest.raises(NonDecomposableLossError, match="regulariser.*weight_decay"):
        opt.step()
    assert opt.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_exact_resume_is_bit_identical(tmp_path):
    def run(opt, model, x, y, steps):
        for s in steps:
            torch.manual_seed(s)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()

    model, x, y = make("transformer", torch.float64, batch=6)
    twin = copy.deepcopy(model)
    kwargs = _settings(clipping="adaptive")
    opt = DPOptimizer(model, torch.optim.Adam(model.parameters(), lr=1e-2), generator=0, **kwargs)
    run(opt, model, x, y, range(2))
    opt.save(tmp_path / "ckpt.pt")
    run(opt, model, x, y, range(2, 4))
    resumed = DPOptimizer(twin, torch.optim.Adam(twin.parameters(), lr=1e-2), generator=5, **kwargs)
    resumed.load(tmp_path / "ckpt.pt")
    run(resumed, twin, x, y, range(2, 4))
    assert resumed.steps == 4
    assert resumed.epsilon() == opt.epsilon()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_schedulers_closures_and_no_grad_forwards_work():
    model, x, y = make("mlp", torch.float64, batch=6)
    opt = DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.5), **_settings())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with torch.no_grad():
        model(x)  # evaluation: not captured

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert opt.step(closure) is not None
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.25
    model(x)  # a forward with gradients but no backward is dropped at step()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert opt.steps == 2


def test_budget_and_argument_errors():
    model, x, y = make("mlp", torch.float64, batch=6)
    with pytest.raises(TypeError, match="loss_fn"):
        DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match="loss_reduction"):
        DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_reduction="none")
    opt = DPOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        **{**_settings(noise_multiplier=None), "target_epsilon": 8.0, "steps": 1},
    )
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(PrivacyBudgetExceededError, match="DPOptimizer.step"):
        opt.step()


@pytest.mark.slow
def test_transformer_example_trains_privately_in_its_own_loop():
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
    try:
        import dp_transformer_own_loop as example
    finally:
        sys.path.pop(0)
    accuracy, epsilon = example.main(
        ["--epochs", "1", "--batch-size", "700", "--max-physical-batch-size", "400"]
    )
    assert 0.0 <= accuracy <= 1.0
    assert 0 < epsilon <= 4.0 + 1e-6


def _distributed_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    from research_ext.privacy import DistributedDPSGD

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(40, 6, generator=g).double(), torch.randint(0, 3, (40,), generator=g)
        settings = dict(
            max_grad_norm=0.5,
            delta=1e-5,
            sample_rate=0.25,
            dataset_size=40,
            noise_multiplier=1.0,
            clipping="per_layer",
        )
        models = []
        for own_loop in (False, True):
            torch.manual_seed(1)
            model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            seed = torch.Generator().manual_seed(4)
            if own_loop:
                opt = DPOptimizer(model, optimizer, distributed=True, generator=seed, **settings)
                for xb, yb in opt.loader((x, y), steps=3):
                    F.cross_entropy(model(xb), yb).backward()
                    opt.step()
                    opt.zero_grad()
                epsilon = opt.epsilon()
            else:
                dp = DistributedDPSGD(
                    model, optimizer, loss_fn=nn.CrossEntropyLoss(), generator=seed, **settings
                )
                for batch in dp.loader((x, y), steps=3):
                    dp.step(batch)
                epsilon = dp.epsilon()
            models.append(({k: v.clone() for k, v in model.state_dict().items()}, epsilon))
        torch.save(models, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_user_loop_equals_distributed_dpsgd_on_two_gloo_ranks(tmp_path):
    from tests.helpers import run_on_gloo_ranks

    results = run_on_gloo_ranks(_distributed_worker, tmp_path)
    for (dpsgd_state, eps_a), (loop_state, eps_b) in results:
        assert eps_a == eps_b > 0
        for name, value in dpsgd_state.items():
            torch.testing.assert_close(
                loop_state[name], value, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64, msg=name
            )
    # The two ranks hold the same replica after the all-reduced steps.
    for name, value in results[0][1][0].items():
        assert torch.equal(results[1][1][0][name], value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mlp", "generic"])
def test_gradients_after_a_step_are_plain_tensors(name, mode):
    model, x, y = make(name, torch.float64, batch=4)
    opt = DPOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        grad_sample_mode=mode,
        check_loss="never",
        **_settings(),
    )
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert not p.grad.requires_grad and p.grad.grad_fn is None, pname


def test_distributed_keywords_need_distributed():
    model = nn.Linear(4, 2)
    with pytest.raises(
        TypeError, match=r"DPOptimizer: got unexpected keyword argument\(s\) \['noise_rank'\]"
    ):
        DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_rank=0, **_settings())
