"""DistributedDPSGD over 2 gloo processes equals single-process DP-SGD; noise is drawn once."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import research_ext.privacy as privacy
from tests.helpers import (
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_DISTRIBUTED_NOISE_STD,
    RTOL_REORDERED_FLOAT64,
    run_on_gloo_ranks,
)

N, D, K = 64, 6, 3
RATE, SIGMA, STEPS, SEED = 0.25, 1.0, 6, 7
NOISE_IN, NOISE_OUT = 500, 4


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    x[:, 0] = torch.arange(N, dtype=torch.float64)  # an id column, to check the shards
    return x, torch.randint(K, (N,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Linear(D, K).double()


def _engine(model, *, distributed, lr=0.5, sigma=SIGMA, size=N, **options):
    cls = privacy.DistributedDPSGD if distributed else privacy.DPSGD
    return cls(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=RATE,
        dataset_size=size,
        noise_multiplier=sigma,
        accountant="rdp",
        generator=torch.Generator().manual_seed(SEED),
        **options,
    )


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, K)).double()


PER_LAYER = {"clipping": "per_layer", "grad_sample_mode": "ghost"}


def _worker(rank, world_size, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        model = _model()
        if rank == 1:  # a different replica: construction must broadcast rank 0's weights
            with torch.no_grad():
                model.weight.add_(1.0)
        dp = _engine(model, distributed=True)
        batches = []
        for batch in dp.loader(_data(), steps=STEPS):
            batches.append(batch)
            dp.step(batch)
        # per-layer clipping, ghost norms and physical micro-batches of at most 3 examples
        mlp = _mlp()
        dp_mlp = _engine(mlp, distributed=True, **PER_LAYER)
        mlp_batches = []
        for micro in dp_mlp.loader(_data(), steps=STEPS, max_physical_batch_size=3):
            mlp_batches.append((torch.cat([b[0] for b in micro]), torch.cat([b[1] for b in micro])))
            dp_mlp.step(micro)
        # noise check: zero inputs give zero per-sample gradients, so one step moves the
        # weights by exactly -lr * noise / (q N)
        noise_model = nn.Linear(NOISE_IN, NOISE_OUT, bias=False).double()
        noise_dp = _engine(noise_model, distributed=True, lr=1.0, sigma=2.0, size=N)
        before = noise_model.weight.detach().clone()
        zeros = (
            torch.zeros(N // world_size // 4, NOISE_IN, dtype=torch.float64),
            torch.zeros(N // world_size // 4, dtype=torch.long),
        )
        noise_dp.step(zeros)
        torch.save(
            {
                "batches": batches,
                "state": {k: v.clone() for k, v in model.state_dict().items()},
                "epsilon": dp.epsilon(),
                "mlp_batches": mlp_batches,
                "mlp_state": {k: v.clone() for k, v in mlp.state_dict().items()},
                "noise_update": noise_model.weight.detach() - before,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_on_gloo_ranks(_worker, tmp_path_factory.mktemp("ddp"))


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process_with_the_same_global_batches(two_ranks):
    x, _ = _data()
    for rank, result in enumerate(two_ranks):
        shard_ids = set(x[rank::2, 0].tolist())
        for inputs, _ in result["batches"]:
            assert set(inputs[:, 0].tolist()) <= shard_ids  # each rank samples only its shard
    # Single process: the same seed (same noise) on the union of the ranks' batches.
    model = _model()
    dp = _engine(model, distributed=False)
    for (x0, y0), (x1, y1) in zip(two_ranks[0]["batches"], two_ranks[1]["batches"], strict=True):
        dp.step((torch.cat([x0, x1]), torch.cat([y0, y1])))
    for result in two_ranks:
        for name, value in model.state_dict().items():
            torch.testing.assert_close(
                result["state"][name],
                value,
                rtol=RTOL_REORDERED_FLOAT64,
                atol=ATOL_REORDERED_UNIT_FLOAT64,
            )
        assert result["epsilon"] == pytest.approx(dp.epsilon(), rel=RTOL_REORDERED_FLOAT64)
    assert dp.epsilon() == pytest.approx(
        privacy.epsilon(SIGMA, RATE, STEPS, 1e-5, accountant="rdp")
    )


@pytest.mark.slow
def test_per_layer_ghost_and_micro_batches_across_ranks_equal_single_process(two_ranks):
    model = _mlp()
    dp = _engine(model, distributed=False, **PER_LAYER)
    pairs = zip(two_ranks[0]["mlp_batches"], two_ranks[1]["mlp_batches"], strict=True)
    for (x0, y0), (x1, y1) in pairs:
        dp.step((torch.cat([x0, x1]), torch.cat([y0, y1])))
    for result in two_ranks:
        for name, value in model.state_dict().items():
            torch.testing.assert_close(
                result["mlp_state"][name],
                value,
                rtol=RTOL_REORDERED_FLOAT64,
                atol=ATOL_REORDERED_UNIT_FLOAT64,
            )


@pytest.mark.slow
def test_noise_is_drawn_once_with_the_single_process_variance(two_ranks):
    update0, update1 = two_ranks[0]["noise_update"], two_ranks[1]["noise_update"]
    torch.testing.assert_close(
        update0, update1, rtol=0, atol=0
    )  # every rank applies the same noise
    noise = -update0 * RATE * N  # lr 1: update = -noise / (q N)
    expected_std = 2.0 * 1.0  # sigma * C
    n = noise.numel()
    # std of n Gaussians has relative standard error ~ 1 / sqrt(2 n) ~ 1.6%; noise added on both
    # ranks would give sqrt(2) x, noise split wrongly 1 / sqrt(2) x
    assert noise.std().item() == pytest.approx(expected_std, rel=RTOL_DISTRIBUTED_NOISE_STD)
    assert abs(noise.mean().item()) < 4 * expected_std / n**0.5


def test_requires_an_initialized_process_group():
    assert not dist.is_initialized(), "the tests run the process groups in child processes"
    with pytest.raises(
        RuntimeError, match="DistributedDPSGD: torch.distributed is not initialized"
    ):
        _engine(_model(), distributed=True)


def test_unknown_or_missing_options_are_refused_by_name_before_any_collective():
    model = _model()
    with pytest.raises(
        TypeError, match=r"DistributedDPSGD: got unexpected keyword argument\(s\) \['momentum'\]"
    ):
        _engine(model, distributed=True, momentum=0.9)
    with pytest.raises(
        TypeError, match=r"DistributedDPSGD: missing required keyword argument\(s\) \['delta'\]"
    ):
        privacy.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            sample_rate=0.5,
            dataset_size=N,
            noise_multiplier=1.0,
        )


def test_options_reach_the_ranks_dpsgd(single_rank_group):
    dp = _engine(_mlp(), distributed=True, **PER_LAYER, adaptive_lr=0.3)
    assert (dp.dpsgd.clipping, dp.dpsgd.grad_sample_mode) == ("per_layer", "ghost")
    assert (dp.dpsgd.adaptive_lr, dp.dpsgd.accountant.accountant) == (0.3, "rdp")
    assert dp.dpsgd.noise_multiplier == SIGMA and dp.dataset_size == N


@pytest.fixture
def single_rank_group(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_single_rank_bad_input_and_sharding(single_rank_group):
    model = _model()
    with pytest.raises(
        ValueError,
        match=r"DistributedDPSGD: `clipping` must be 'flat' or 'per_layer', got clipping='adaptive'",
    ):
        privacy.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=1e-5,
            sample_rate=0.5,
            dataset_size=N,
            noise_multiplier=1.0,
            clipping="adaptive",
        )
    with pytest.raises(
        ValueError,
        match=r"DistributedDPSGD: `noise_rank` must be an int in \[0, 0\], got noise_rank=1",
    ):
        privacy.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=1e-5,
            sample_rate=0.5,
            dataset_size=N,
            noise_multiplier=1.0,
            noise_rank=1,
        )
    with pytest.raises(ValueError, match="exactly one of `noise_multiplier` and `target_epsilon`"):
        privacy.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=1e-5,
            sample_rate=0.5,
            dataset_size=N,
        )
    with pytest.raises(
        ValueError,
        match=r"DistributedDPSGD: `noise_multiplier` must be a finite number >= 0, got noise_multiplier=-1.0",
    ):
        _engine(model, distributed=True, sigma=-1.0)
    with pytest.raises(
        ValueError,
        match=r"DistributedDPSGD: `sample_rate` must be a number in \(0.0, 1.0\], got sample_rate=0.0",
    ):
        privacy.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=1e-5,
            sample_rate=0.0,
            dataset_size=N,
            target_epsilon=1.0,
            epochs=2,
        )
    dp = _engine(model, distributed=True)
    x, y = _data()
    shard = dp.shard((x, y))
    assert torch.equal(shard[0], x) and dp.world_size == 1 and dp.rank == 0
    with pytest.raises(
        ValueError,
        match=r"DistributedDPSGD.shard: `dataset` must be the whole dataset of 64 examples, got dataset='<10 examples>'",
    ):
        dp.shard((x[:10], y[:10]))
    # one rank is plain DP-SGD: same seed, same batches, same weights
    reference_model = _model()
    reference = _engine(reference_model, distributed=False)
    for batch in dp.loader((x, y), steps=3):
        dp.step(batch)
        reference.step(batch)
    for name, value in reference_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    state = dp.state_dict()
    dp.load_state_dict(state)
    with pytest.raises(
        ValueError,
        match=r"`state` must be the checkpoint of rank 0 of 1, got state='<rank 1 of 2>'",
    ):
        dp.load_state_dict({**state, "rank": 1, "world_size": 2})
    target = privacy.DistributedDPSGD(
        _model(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=0.25,
        dataset_size=N,
        target_epsilon=2.0,
        epochs=3,
        accountant="rdp",
    )
    assert target.noise_multiplier == pytest.approx(
        privacy.noise_multiplier_for(2.0, 1e-5, 0.25, 12, accountant="rdp")
    )


@pytest.mark.parametrize("epochs,sample_rate", [(3, 0.3), (2.5, 0.07), (1, 0.9)])
def test_calibration_plans_the_steps_the_loaders_run(epochs, sample_rate):
    # Calibrating over fewer steps than the loaders take would overspend the target epsilon.
    from research_ext.privacy import DistributedDPSGD, noise_multiplier_for
    from research_ext.privacy._sampling import steps_per_epoch

    planned = max(1, round(epochs * steps_per_epoch(sample_rate)))
    sigma, steps = DistributedDPSGD._resolve_noise(
        None, 2.0, epochs, None, 1e-5, sample_rate, "rdp"
    )
    assert steps == planned
    assert sigma == noise_multiplier_for(2.0, 1e-5, sample_rate, planned, accountant="rdp")


def test_target_epsilon_run_refuses_steps_past_the_plan(single_rank_group):
    from research_ext.errors import PrivacyBudgetExceededError

    model = _model()
    dp = privacy.DistributedDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=RATE,
        dataset_size=N,
        target_epsilon=3.0,
        steps=2,
        accountant="rdp",
    )
    batches = list(dp.loader(_data(), steps=3))
    dp.step(batches[0])
    dp.step(batches[1])
    assert dp.epsilon() <= 3.0
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PrivacyBudgetExceededError, match="calibrated to target_epsilon over 2"):
        dp.step(batches[2])
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
