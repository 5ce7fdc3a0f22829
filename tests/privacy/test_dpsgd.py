"""DPSGD: the update rule, noise, exact resume, checkpoints and argument errors."""

import math

import pytest
import torch
from torch import nn

from research_ext.errors import (
    CheckpointMismatchError,
    PrivacyBudgetExceededError,
    UnsupportedModuleError,
)
from research_ext.privacy import DPSGD, epsilon
from tests.helpers import (
    ATOL_FLOAT32,
    ATOL_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    RTOL_REORDERED_FLOAT64,
)
from tests.privacy.zoo import loop_grads, make


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _dp(model, lr=0.1, **kwargs):
    args = dict(
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=0.25,
        dataset_size=40,
        noise_multiplier=1.0,
        accountant="rdp",
        generator=torch.Generator().manual_seed(7),
    )
    args.update(kwargs)
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=lr), **args)


@pytest.mark.parametrize("mode", ["auto", "vmap"])
def test_no_noise_and_huge_clip_is_plain_sgd(mode):
    X, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    twin = make_twin(model)
    dp = _dp(model, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=1e9, grad_sample_mode=mode)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(3):
        dp.step((X.double(), y))
        sgd.zero_grad()
        nn.CrossEntropyLoss()(twin(X.double()), y).backward()
        sgd.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(
            p, q, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_UNIT_FLOAT64
        )
    assert dp.epsilon() == math.inf


def make_twin(model):
    import copy

    return copy.deepcopy(model)


def test_update_is_clipped_sum_plus_noise_over_expected_batch():
    model, x, y = make("mlp", torch.float64, batch=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    dp = _dp(
        model, lr=1.0, noise_multiplier=0.5, max_grad_norm=0.05, dataset_size=40, sample_rate=0.25
    )
    noise_gen = torch.Generator().manual_seed(7)
    torch.randint(0, 2**62, (1,), generator=noise_gen)  # the draw that seeds the sampler
    dp.step((x, y))
    total = torch.cat([g.flatten(1) for g in ref.values()], 1).norm(dim=1)
    factor = torch.clamp(0.05 / (total + 1e-6), max=1.0)
    for n, p in model.named_parameters():
        clipped = (ref[n] * factor.reshape(-1, *[1] * (ref[n].ndim - 1))).sum(0)
        noise = torch.randn(p.shape, generator=noise_gen, dtype=torch.float64) * 0.5 * 0.05
        torch.testing.assert_close(before[n] - p.detach(), (clipped + noise) / 10.0)


def test_noise_std_is_sigma_times_c_over_expected_batch():
    model = nn.Linear(200, 50, bias=False).double()
    dp = _dp(
        model, lr=1.0, noise_multiplier=2.0, max_grad_norm=0.5, sample_rate=0.1, dataset_size=40
    )
    before = model.weight.detach().clone()
    dp.step(
        (torch.zeros(0, 200, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    )  # empty batch
    update = before - model.weight.detach()
    n = update.numel()
    # sample std of n = 10,000 normals: relative error ~ 1/sqrt(2n) = 0.7%; allow 5 sigma.
    assert abs(update.std().item() / (2.0 * 0.5 / 4.0) - 1) < 5 / math.sqrt(2 * n)
    assert abs(update.mean().item()) < 5 * (2.0 * 0.5 / 4.0) / math.sqrt(n)


def test_sensitivity_of_one_example_is_bounded():
    model, x, y = make("mlp", torch.float64, batch=8)
    c, q, n = 0.3, 0.2, 40
    updates = []
    for scale in (1.0, 1e6):
        m = make_twin(model)
        weights = torch.ones(8, dtype=torch.float64)
        weights[3] = scale

        def loss_fn(out, tgt, w=weights):
            return (nn.functional.cross_entropy(out, tgt, reduction="none") * w[: len(tgt)]).sum()

        loss_fn.reduction = "sum"
        dp = _dp(
            m,
            lr=1.0,
            loss_fn=loss_fn,
            max_grad_norm=c,
            sample_rate=q,
            dataset_size=n,
            noise_multiplier=0.0,
        )
        dp.step((x, y))
        updates.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert (updates[0] - updates[1]).norm() <= 2 * c / (q * n) * (1 + 1e-9)


@pytest.mark.parametrize("clipping", ["flat", "per_layer", "adaptive"])
def test_micro_batches_equal_one_logical_batch(clipping):
    X, y = _data()
    results = []
    for micro in (None, 3):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        dp = _dp(model, clipping=clipping, accountant="rdp")
        for batch in dp.loader((X.double(), y), max_physical_batch_size=micro):
            dp.step(batch)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)


@pytest.mark.parametrize("clipping", ["flat", "adaptive"])
def test_exact_resume_is_bit_identical(tmp_path, clipping):
    X, y = _data()
    k = 3

    def fresh():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 3))
        return model, _dp(model, clipping=clipping, generator=torch.Generator().manual_seed(3))

    def run(dp, steps):
        loader = dp.loader((X, y), steps=steps)
        for batch in loader:
            dp.step(batch)

    model_a, dp_a = fresh()
    run(dp_a, 2 * k)
    model_b, dp_b = fresh()
    run(dp_b, k)
    dp_b.save(tmp_path / "ckpt.pt")
    torch.manual_seed(123)  # disturb the global RNG (dropout) before resuming
    model_c, dp_c = fresh()
    dp_c.load(tmp_path / "ckpt.pt")
    run(dp_c, k)
    for p, q in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(p, q)
    assert dp_c.steps == 2 * k and dp_c.epsilon() == dp_a.epsilon()
    assert [f.name for f in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sample_rate": 0.5}, r"sample_rate: checkpoint 0.25 vs run 0.5"),
        ({"noise_multiplier": 2.0}, r"noise_multiplier: checkpoint 1.0 vs run 2.0"),
        ({"accountant": "prv"}, r"accountant: checkpoint 'rdp' vs run 'prv'"),
    ],
)
def test_load_refuses_mismatched_checkpoint(tmp_path, change, match):
    model = nn.Linear(6, 3)
    _dp(model).save(tmp_path / "c.pt")
    other = nn.Linear(6, 3)
    before = other.weight.detach().clone()
    dp = _dp(other, **change)
    with pytest.raises(CheckpointMismatchError, match=match):
        dp.load(tmp_path / "c.pt")
    assert torch.equal(other.weight, before)  # nothing half-loaded


def test_target_epsilon_calibrates_noise():
    dp = _dp(nn.Linear(6, 3), noise_multiplier=None, target_epsilon=2.0, steps=40)
    assert epsilon(dp.noise_multiplier, 0.25, 40, 1e-5, accountant="rdp") <= 2.0


def test_target_epsilon_over_epochs_matches_the_loader_and_stops_at_the_budget():
    X, y = _data()
    model = nn.Linear(6, 3)
    dp = _dp(
        model,
        noise_multiplier=None,
        target_epsilon=3.0,
        epochs=2,
        sample_rate=0.3,
        accountant="prv",
    )
    for _ in range(2):
        for batch in dp.loader((X, y)):
            dp.step(batch)
    assert dp.steps == 2 * round(1 / 0.3) and dp.epsilon() <= 3.0
    before = model.weight.detach().clone()
    with pytest.raises(
        PrivacyBudgetExceededError,
        match=r"DPSGD.step: the noise was calibrated to target_epsilon over 6 steps",
    ):
        dp.step((X[:4], y[:4]))
    assert torch.equal(model.weight, before) and dp.steps == 6


@pytest.mark.parametrize("secure", [False, True])
def test_secure_noise_differs_between_identical_runs(secure):
    # Every seeded source is the same in both runs (global RNG, model, data, `generator`): only
    # secure noise, drawn from the OS, can tell them apart.
    X, y = _data()
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Linear(6, 3)
        torch.nn.init.zeros_(model.weight)
        dp = _dp(model, secure=secure)
        dp.step((X[:8], y[:8]))
        outs.append(model.weight.detach().clone())
    assert torch.equal(outs[0], outs[1]) is not secure


def test_per_layer_thresholds_mapping():
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    dp = _dp(model, clipping="per_layer", max_grad_norm={"0": 3.0, "1": 4.0})
    assert dp.max_grad_norm == pytest.approx(5.0)
    with pytest.raises(
        ValueError, match=r"`max_grad_norm` must be a threshold for every layer group"
    ):
        _dp(
            nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)),
            clipping="per_layer",
            max_grad_norm={"0": 1.0},
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"sample_rate": 0.0},
            ValueError,
            r"DPSGD: `sample_rate` must be a number in \(0.0, 1.0\], got sample_rate=0.0",
        ),
        (
            {"sample_rate": 1.5},
            ValueError,
            r"DPSGD: `sample_rate` must be a number in \(0.0, 1.0\], got sample_rate=1.5",
        ),
        (
            {"delta": 0.0},
            ValueError,
            r"DPSGD: `delta` must be a number in \(0.0, 1.0\), got delta=0.0",
        ),
        (
            {"max_grad_norm": 0.0},
            ValueError,
            r"DPSGD: `max_grad_norm` must be a finite number > 0, got max_grad_norm=0.0",
        ),
        (
            {"max_grad_norm": -1.0},
            ValueError,
            r"`max_grad_norm` must be a finite number > 0, got max_grad_norm=-1.0",
        ),
        (
            {"target_epsilon": 1.0, "steps": 10},
            ValueError,
            r"exactly one of `noise_multiplier` and `target_epsilon`",
        ),
        (
            {"noise_multiplier": None},
            ValueError,
            r"exactly one of `noise_multiplier` and `target_epsilon` must be given",
        ),
        (
            {"noise_multiplier": None, "target_epsilon": 1.0},
            ValueError,
            r"exactly one of `epochs` and `steps`",
        ),
        (
            {"noise_multiplier": None, "target_epsilon": 1e-9, "steps": 10**6, "sample_rate": 1.0},
            ValueError,
            r"`target_epsilon` must be reachable",
        ),
        (
            {"clipping": "none"},
            ValueError,
            r"DPSGD: `clipping` must be one of 'flat', 'per_layer', 'adaptive'",
        ),
        (
            {"grad_sample_mode": "hooks"},
            ValueError,
            r"`grad_sample_mode` must be one of 'auto', 'ghost'",
        ),
        (
            {"dataset_size": 0},
            ValueError,
            r"DPSGD: `dataset_size` must be a positive int, got dataset_size=0",
        ),
        (
            {"clipping": "adaptive", "noise_multiplier": 5.0, "adaptive_count_noise": 1.0},
            ValueError,
            r"`adaptive_count_noise` must be > noise_multiplier / 2",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _dp(nn.Linear(6, 3), **kwargs)


def test_unsupported_models_raise():
    with pytest.raises(UnsupportedModuleError, match=r"BatchNorm mixes examples"):
        _dp(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)))


def test_time_first_layers_are_refused():
    model = nn.Linear(4, 2)

    class TimeFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, x):
            return self.lin(x.transpose(0, 1)).mean(0)

    dp = _dp(TimeFirst(), grad_sample_mode="ghost")
    with pytest.raises(UnsupportedModuleError, match=r"whose first dim is not the batch size 3"):
        dp.step((torch.randn(3, 5, 4), torch.randint(0, 2, (3,))))


def test_dpsgd_loader_steps_on_logical_batches_of_bounded_micro_batches():
    X, y = _data()
    torch.manual_seed(0)
    dp = _dp(nn.Linear(6, 3), sample_rate=0.5, noise_multiplier=0.0)
    batches = list(dp.loader((X, y), max_physical_batch_size=4))
    assert len(batches) == 2  # round(1 / q) logical batches per epoch
    sizes = [len(xb) for batch in batches for xb, _ in batch]
    assert sum(sizes) > 0 and max(sizes) <= 4
    assert all(isinstance(batch, list) for batch in batches)
    for batch in batches:
        before = [p.detach().clone() for p in dp.model.parameters()]
        dp.step(batch)
        twin = _dp(copy_of(before), sample_rate=0.5, noise_multiplier=0.0)
        whole = [torch.cat(parts) for parts in zip(*batch, strict=True)]
        twin.step((whole[0], whole[1]))  # the logical batch in one piece: the same update
        for p, q in zip(dp.model.parameters(), twin.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=RTOL_FLOAT32, atol=ATOL_FLOAT32)
    assert dp.steps == 2


def copy_of(params):
    model = nn.Linear(6, 3)
    with torch.no_grad():
        for p, q in zip(model.parameters(), params, strict=True):
            p.copy_(q)
    return model


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized", "vmap"])
@pytest.mark.parametrize("clipping", ["flat", "adaptive"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "generic"])
def test_gradients_after_a_step_are_plain_tensors(name, mode, clipping):
    model, x, y = make(name, torch.float64, batch=4)
    dp = _dp(model, grad_sample_mode=mode, clipping=clipping)
    dp.step((x, y))
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert not p.grad.requires_grad and p.grad.grad_fn is None, pname


def test_plan_names_each_layers_method():
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    dp = _dp(model)
    assert dp.plan["1"] == "LayerNorm: materialized"
    assert dp.plan["0"].startswith("Linear: ghost or materialized")
    X, y = _data()
    dp.step((X[:8], y[:8]))
    assert dp.plan == {"0": "Linear: ghost", "1": "LayerNorm: materialized", "2": "Linear: ghost"}
    assert set(_dp(model, grad_sample_mode="vmap").plan.values()) == {
        "Linear: vmap (whole model)",
        "LayerNorm: vmap (whole model)",
    }


def test_batchnorm_switched_to_train_after_construction_is_refused_at_step():
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).eval()
    dp = _dp(model)  # BatchNorm in eval mode uses running statistics: per-sample is fine
    X, y = _data()
    dp.step((X[:8], y[:8]))
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        UnsupportedModuleError,
        match=r"DPSGD.step: the model cannot be trained privately as is \(it changed after "
        r"DPSGD was built\): `1` \(BatchNorm1d\): BatchNorm mixes examples",
    ):
        dp.step((X[:8], y[:8]))
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert dp.steps == 1


@pytest.mark.parametrize("mode", ["auto", "vmap"])
def test_parameters_frozen_after_construction_get_no_update(mode):
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    dp = _dp(model, grad_sample_mode=mode)
    X, y = _data()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    head = model[2].weight.detach().clone()
    dp.step((X[:8], y[:8]))
    assert torch.equal(model[0].weight, frozen) and model[0].weight.grad is None
    assert not torch.equal(model[2].weight, head)
    model[0].requires_grad_(True)  # unfreezing brings the layer back under DP
    dp.step((X[:8], y[:8]))
    assert not torch.equal(model[0].weight, frozen)


class Scaled(nn.Module):
    """A layer without a dedicated rule."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5))

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized", "vmap"])
def test_hooks_registered_after_construction_are_part_of_the_model(mode):
    # Forward hooks that replace outputs and pre-hooks that replace inputs change the function;
    # the DP step (no clipping, no noise) must still be the batch gradient of the hooked model.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), Scaled(), nn.Tanh(), nn.Linear(5, 3)).double()
    twin = make_twin(model)
    dp = _dp(
        model,
        lr=1.0,
        sample_rate=1.0,
        dataset_size=8,
        noise_multiplier=0.0,
        max_grad_norm=1e12,
        grad_sample_mode=mode,
    )
    for m in (model, twin):
        m[0].register_forward_hook(lambda mod, args, out: 2 * out)
        m[1].register_forward_hook(lambda mod, args, out: out + 1)
        m[3].register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
    X, y = _data()
    dp.step((X[:8].double(), y[:8]))
    nn.CrossEntropyLoss()(twin(X[:8].double()), y[:8]).backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(
            p.detach(), q.detach() - q.grad, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64
        )


class KeywordModel(nn.Module):
    """Takes keyword inputs: token ids and a padding mask."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.lin = nn.Linear(6, 3)

    def forward(self, tokens, mask, scale=1.0):
        h = (self.emb(tokens) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.lin(torch.tanh(h)) * scale


def _keyword_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 20, (n, 5), generator=g)
    mask = (torch.rand(n, 5, generator=g) < 0.7).double()
    mask[:, 0] = 1
    labels = torch.randint(0, 3, (n,), generator=g)
    weight = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return {"tokens": tokens, "mask": mask, "labels": labels, "weight": weight}


def _weighted_loss(outputs, batch):
    ce = nn.functional.cross_entropy(outputs, batch["labels"], reduction="none")
    return ce * batch["weight"]


def _keyword_loop_update(model, data, c, scale):
    """Explicit loop: per-example gradients of the weighted loss, clipped, summed, over qN."""
    params = list(model.parameters())
    clipped = [torch.zeros_like(p) for p in params]
    for i in range(len(data["labels"])):
        one = {k: v[i : i + 1] for k, v in data.items()}
        out = model(tokens=one["tokens"], mask=one["mask"])
        grads = torch.autograd.grad(_weighted_loss(out, one).sum(), params)
        norm = torch.cat([g.flatten() for g in grads]).norm()
        factor = min(1.0, c / (float(norm) + 1e-6))
        clipped = [s + factor * g for s, g in zip(clipped, grads, strict=True)]
    return [s * scale for s in clipped]


@pytest.mark.parametrize("form", ["mapping_batch", "keyword_inputs", "micro_batches"])
@pytest.mark.parametrize("mode", ["auto", "ghost", "materialized", "vmap"])
def test_batches_as_researchers_have_them(mode, form):
    torch.manual_seed(0)
    model = KeywordModel().double()
    data = _keyword_data()
    expected = _keyword_loop_update(make_twin(model), data, 0.3, 1 / 4)
    before = [p.detach().clone() for p in model.parameters()]
    if form == "keyword_inputs":
        # (inputs, targets) with keyword inputs; the loss sees the targets it is given.
        batch = ({"tokens": data["tokens"], "mask": data["mask"]}, data)
    elif form == "mapping_batch":
        batch = data  # targets inside; the model takes the entries its forward names
    else:
        batch = [{k: v[:3] for k, v in data.items()}, {k: v[3:] for k, v in data.items()}]
    dp = _dp(
        model,
        lr=1.0,
        loss_fn=_weighted_loss,
        max_grad_norm=0.3,
        sample_rate=0.1,
        dataset_size=40,
        noise_multiplier=0.0,
        grad_sample_mode=mode,
    )
    dp.step(batch)
    for b, p, e in zip(before, model.parameters(), expected, strict=True):
        torch.testing.assert_close(b - p.detach(), e, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)


def test_poisson_loader_over_a_mapping_dataset_gives_dict_batches():
    data = _keyword_data(n=40)
    torch.manual_seed(0)
    model = KeywordModel().double()
    dp = _dp(model, loss_fn=_weighted_loss, sample_rate=0.2)
    seen = 0
    for batch in dp.loader(data, max_physical_batch_size=3):
        assert all(isinstance(mb, dict) and set(mb) == set(data) for mb in batch)
        seen += sum(len(mb["labels"]) for mb in batch)
        dp.step(batch)
    assert dp.steps == 5 and seen > 0


def test_mapping_batch_errors():
    dp = _dp(KeywordModel(), loss_fn=_weighted_loss)
    with pytest.raises(
        TypeError, match=r"DPSGD.step: a mapping `batch` must name at least one argument of"
    ):
        dp.step({"x": torch.zeros(4, 5)})
    with pytest.raises(
        TypeError, match=r"DPSGD.step: `batch` must be a pair \(inputs, targets\) or a mapping"
    ):
        dp.step(torch.zeros(4, 5))


def test_options_typeddict_lists_exactly_dpsgds_keywords():
    import inspect

    from research_ext.privacy._dpsgd import DPSGDOptions

    params = inspect.signature(DPSGD.__init__).parameters
    keywords = {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "loss_fn"}
    assert set(DPSGDOptions.__annotations__) == set(keywords)
    required = {n for n, p in keywords.items() if p.default is inspect.Parameter.empty}
    assert DPSGDOptions.__required_keys__ == required
    for name, annotation in DPSGDOptions.__annotations__.items():
        assert annotation == keywords[name].annotation, name


def test_check_options_names_the_caller_and_the_keyword():
    from research_ext.privacy._dpsgd import check_options

    good = dict(max_grad_norm=1.0, delta=1e-5, sample_rate=0.1, dataset_size=10)
    check_options("Wrapper", good)
    with pytest.raises(TypeError, match=r"Wrapper: got unexpected keyword argument\(s\) \['lr'\]"):
        check_options("Wrapper", {**good, "lr": 0.1})
    check_options("Wrapper", {**good, "noise_rank": 0}, extra=("noise_rank",))
    with pytest.raises(
        TypeError, match=r"Wrapper: missing required keyword argument\(s\) \['delta'"
    ):
        check_options("Wrapper", {k: v for k, v in good.items() if k != "delta"})
