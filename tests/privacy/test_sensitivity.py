"""Every quantity DP-SGD releases: brute-force sensitivity on neighbouring batches, and the noise.

For each released quantity Q (the clipped gradient sum in every clipping mode and engine, the
per-layer sums, the adaptive-clipping count, the distributed all-reduce) the test runs the real
step with the noise off on a batch B and on every neighbour B + {x} / B - {x} from a candidate
set (small, large and zero gradients), and takes the largest change as the sensitivity. The
accounted noise multiplier must then be what the mechanism adds: with std s_Q on each release,
1 / sigma^2 = sum_Q (Delta_Q / s_Q)^2 (Gaussian mechanisms compose like one whose multiplier is
that, Dong, Roth & Su 2019, Corollary 3.3).
"""

import math

import pytest
import torch
from torch import nn

import research_ext.privacy as privacy
from tests.helpers import (
    RTOL_NOISE_STD,
    RTOL_REORDERED_FLOAT64,
    RTOL_SENSITIVITY,
)

N_DATA, DIM, CLASSES = 40, 4, 3
RATE = 0.25
ENGINES = ("auto", "ghost", "materialized", "vmap")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 8), nn.Tanh(), nn.Linear(8, CLASSES)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_DATA, DIM, generator=g, dtype=torch.float64)
    y = torch.randint(CLASSES, (N_DATA,), generator=g)
    return x, y


def _candidates():
    """Examples to add: ordinary, huge (clipped in every layer) and zero-gradient ones."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, DIM, generator=g, dtype=torch.float64)
    x = torch.cat([x, 1e3 * x[:3], torch.zeros(1, DIM, dtype=torch.float64)])
    return x, torch.randint(CLASSES, (len(x),), generator=g)


def _engine(model, **options):
    options = {
        "max_grad_norm": 0.3,
        "noise_multiplier": 0.0,
        "grad_sample_mode": "auto",
        **options,
    }
    return privacy.DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=nn.CrossEntropyLoss(),
        delta=1e-5,
        sample_rate=RATE,
        dataset_size=N_DATA,
        accountant="rdp",
        generator=torch.Generator().manual_seed(3),
        **options,
    )


def _released(batch, **options):
    """What one noiseless step releases: the clipped sum (flat) and, if adaptive, the count."""
    model = _model()
    dp = _engine(model, **options)
    before = dp.max_grad_norm
    dp.step(batch)
    total = (
        torch.cat([p.grad.detach().flatten() for p in model.parameters()]) * dp.expected_batch_size
    )
    count = None
    if dp.clipping == "adaptive":
        # C' = C exp(-lr (released / qN - quantile)) up to a constant offset, which cancels in
        # the differences between neighbours.
        fraction = dp.adaptive_quantile - math.log(dp.max_grad_norm / before) / dp.adaptive_lr
        count = fraction * dp.expected_batch_size
    return total, count


def _neighbours(batch):
    """B with one candidate added, and B with one of its own examples removed."""
    x, y = batch
    cx, cy = _candidates()
    for i in range(len(cx)):
        yield torch.cat([x, cx[i : i + 1]]), torch.cat([y, cy[i : i + 1]])
    for i in range(len(x)):
        keep = torch.arange(len(x)) != i
        yield x[keep], y[keep]


def _brute_force(**options):
    """Largest change of each released quantity between B and its neighbours."""
    x, y = _data()
    batch = (x[:10], y[:10])
    total, count = _released(batch, **options)
    d_sum, d_count = 0.0, 0.0
    for other in _neighbours(batch):
        t, c = _released(other, **options)
        d_sum = max(d_sum, float((t - total).norm()))
        if count is not None:
            d_count = max(d_count, abs(c - count))
    return d_sum, d_count


@pytest.mark.parametrize("mode", ENGINES)
@pytest.mark.parametrize("clipping", ["flat", "per_layer", "adaptive"])
def test_clipped_sum_sensitivity_is_the_noise_scale(mode, clipping):
    c = 0.3
    d_sum, _ = _brute_force(clipping=clipping, grad_sample_mode=mode, max_grad_norm=c)
    # flat and adaptive: ||clip_C(g_x)|| <= C; per_layer: sqrt(sum_k C_k^2) = C for a float C.
    assert d_sum <= c * (1 + RTOL_SENSITIVITY)
    assert d_sum >= c * (1 - 1e-6)  # attained by the huge candidates: the bound is tight
    dp = _engine(_model(), clipping=clipping, grad_sample_mode=mode, max_grad_norm=c)
    assert dp.max_grad_norm == pytest.approx(c, rel=RTOL_REORDERED_FLOAT64)


@pytest.mark.parametrize("mode", ["ghost", "materialized"])
def test_per_layer_thresholds_sensitivity(mode):
    thresholds = {"0": 0.2, "2": 0.5}
    d_sum, _ = _brute_force(clipping="per_layer", grad_sample_mode=mode, max_grad_norm=thresholds)
    bound = math.sqrt(0.2**2 + 0.5**2)
    assert d_sum <= bound * (1 + RTOL_SENSITIVITY)
    assert d_sum >= bound * (1 - 1e-6)
    dp = _engine(_model(), clipping="per_layer", grad_sample_mode=mode, max_grad_norm=thresholds)
    assert dp.max_grad_norm == pytest.approx(bound, rel=RTOL_REORDERED_FLOAT64)


def test_adaptive_count_sensitivity_matches_the_accounted_noise():
    # C = 1.7 sits among the per-sample norms (1.0 to 3.3 here), so neighbours move the count.
    _, d_count = _brute_force(clipping="adaptive", max_grad_norm=1.7)
    for sigma in (0.5, 1.0, 4.0):
        dp = _engine(_model(), clipping="adaptive", noise_multiplier=sigma, max_grad_norm=1.7)
        d_sum = dp.max_grad_norm  # brute-forced above for every clipping mode
        z_grad = dp.grad_noise_multiplier * dp.max_grad_norm / d_sum
        z_count = dp.count_noise / d_count
        dp.step(_data())
        assert dp.accountant.history[0][0] == sigma  # what the accountant composes
        assert (z_grad**-2 + z_count**-2) ** -0.5 == pytest.approx(
            sigma, rel=RTOL_REORDERED_FLOAT64
        )
    # One example moves the released count by 1/2 (Andrew et al. 2021: b_i - 1/2 in {-1/2, 1/2}).
    assert d_count == pytest.approx(0.5, rel=RTOL_SENSITIVITY)


def test_adaptive_noise_stds_are_the_ones_applied():
    sigma = 1.0
    model = nn.Linear(60, 40, bias=False).double()
    dp = privacy.DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=0.3,
        delta=1e-5,
        sample_rate=RATE,
        dataset_size=N_DATA,
        noise_multiplier=sigma,
        accountant="rdp",
        clipping="adaptive",
        adaptive_lr=1e-3,
        generator=torch.Generator().manual_seed(4),
    )
    empty = (torch.zeros(0, 60, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    c = dp.max_grad_norm
    dp.step(empty)  # nothing clipped: the gradient is pure noise, the count pure noise + offset
    grad_std = float(model.weight.grad.detach().std()) * dp.expected_batch_size
    assert grad_std == pytest.approx(dp.grad_noise_multiplier * c, rel=RTOL_NOISE_STD)
    releases = []
    for _ in range(2000):
        before = dp.max_grad_norm
        dp.step(empty)
        releases.append(-math.log(dp.max_grad_norm / before) / dp.adaptive_lr)
    count_std = float(torch.tensor(releases).std()) * dp.expected_batch_size
    assert count_std == pytest.approx(dp.count_noise, rel=RTOL_NOISE_STD)


def _distributed_worker(rank, world_size, port, out_path):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        x, y = _data()
        mine = (x[rank:20:world_size], y[rank:20:world_size])
        cx, cy = _candidates()

        def release(batch, sigma=0.0, shape=None):
            model = _model() if shape is None else nn.Linear(*shape, bias=False).double()
            dp = privacy.DistributedDPSGD(
                model,
                torch.optim.SGD(model.parameters(), lr=0.0),
                loss_fn=nn.CrossEntropyLoss(),
                max_grad_norm=0.3,
                delta=1e-5,
                sample_rate=RATE,
                dataset_size=N_DATA,
                noise_multiplier=sigma,
                accountant="rdp",
                generator=torch.Generator().manual_seed(5),
            )
            dp.step(batch)
            grads = [p.grad.detach().flatten() for p in model.parameters()]
            return torch.cat(grads) * RATE * N_DATA

        base = release(mine)
        changes = []
        for i in range(len(cx)):  # rank 1 holds the extra example; rank 0's batch is unchanged
            batch = (
                mine
                if rank == 0
                else (torch.cat([mine[0], cx[i : i + 1]]), torch.cat([mine[1], cy[i : i + 1]]))
            )
            changes.append(float((release(batch) - base).norm()))
        empty = (torch.zeros(0, 60, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
        noise = release(empty, sigma=2.0, shape=(60, 40))
        torch.save({"changes": changes, "noise": noise}, f"{out_path}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_all_reduce_sensitivity_and_noise(tmp_path):
    from tests.helpers import run_on_gloo_ranks

    results = run_on_gloo_ranks(_distributed_worker, tmp_path, weights_only=True)
    c, sigma = 0.3, 2.0
    for result in results:
        # one example on one rank moves the all-reduced sum by at most C, and by C when clipped
        assert max(result["changes"]) <= c * (1 + RTOL_SENSITIVITY)
        assert max(result["changes"]) >= c * (1 - 1e-6)
        # the noise is drawn once over the group: std sigma C, as accounted (not sqrt(W) sigma C)
        assert float(result["noise"].std()) == pytest.approx(sigma * c, rel=RTOL_NOISE_STD)
    torch.testing.assert_close(results[0]["noise"], results[1]["noise"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("clipping", "max_grad_norm", "bound"),
    [("flat", 0.3, 0.3), ("per_layer", {"0": 0.2, "1": 0.5}, math.sqrt(0.29))],
)
def test_gradient_noise_std_is_sigma_times_the_sensitivity(clipping, max_grad_norm, bound):
    sigma = 2.0
    model = nn.Sequential(nn.Linear(60, 40, bias=False), nn.Linear(40, 40, bias=False)).double()
    dp = privacy.DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=max_grad_norm,
        delta=1e-5,
        sample_rate=RATE,
        dataset_size=N_DATA,
        noise_multiplier=sigma,
        accountant="rdp",
        clipping=clipping,
        generator=torch.Generator().manual_seed(6),
    )
    empty = (torch.zeros(0, 60, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    dp.step(empty)  # nothing clipped: the released sum is the noise alone
    noise = torch.cat([p.grad.detach().flatten() for p in model.parameters()])
    std = float(noise.std()) * dp.expected_batch_size
    assert std == pytest.approx(sigma * bound, rel=RTOL_NOISE_STD)
    assert dp.accountant.history == [[sigma, RATE, 1]]
