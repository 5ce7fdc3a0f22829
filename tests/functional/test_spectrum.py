"""eigvalsh, trace, diagonal, spectral_density: validation, error text, warnings, plotting."""

import pytest
import torch

import research_ext.functional as rf
from research_ext.core import DenseOperator

F64 = torch.float64


def _sym(n=8):
    a = torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(0))
    return a + a.T


def test_eigvalsh_errors():
    a = _sym()
    with pytest.raises(
        ValueError, match=r"eigvalsh: `op` must be square \(symmetric\), got op='shape \(3, 4\)'"
    ):
        rf.eigvalsh(DenseOperator(torch.ones(3, 4)), k=1)
    with pytest.raises(ValueError, match=r"eigvalsh: `k` must be an int in \[1, 8\], got k=9"):
        rf.eigvalsh(a, k=9)
    with pytest.raises(ValueError, match=r"eigvalsh: `k` must be an int in \[1, 8\], got k=0"):
        rf.eigvalsh(a, k=0)
    with pytest.raises(TypeError, match=r"eigvalsh: `k` must be an int in \[1, 8\], got k=2.0"):
        rf.eigvalsh(a, k=2.0)
    with pytest.raises(
        ValueError,
        match="eigvalsh: `which` must be one of 'largest', 'smallest', 'both', got which='LM'",
    ):
        rf.eigvalsh(a, which="LM")
    with pytest.raises(TypeError, match="eigvalsh: `op` must be a LinearOperator or a 2-D tensor"):
        rf.eigvalsh(torch.ones(3), k=1)
    with pytest.raises(
        ValueError, match="eigvalsh: `tol` must be a finite number > 0, got tol=0.0"
    ):
        rf.eigvalsh(a, k=1, tol=0.0)
    with pytest.raises(ValueError, match=r"eigvalsh: `v0` must have shape \(8,\), got \(3,\)"):
        rf.eigvalsh(a, k=1, v0=torch.ones(3, dtype=F64))
    with pytest.raises(
        ValueError, match="eigvalsh: `max_iter` must be an int >= 2, got max_iter=1"
    ):
        rf.eigvalsh(a, k=2, max_iter=1)


def test_eigvalsh_warns_when_not_converged():
    a = torch.diag(torch.arange(1.0, 401.0, dtype=F64))
    with pytest.warns(
        RuntimeWarning, match=r"eigvalsh: Lanczos did not reach tol=1e-12 in max_iter=10 steps"
    ):
        res = rf.eigvalsh(
            a, k=2, tol=1e-12, max_iter=10, generator=torch.Generator().manual_seed(0)
        )
    assert not res.converged and res.num_matvecs == 10
    # The bounds stay honest even before convergence.
    distance = (torch.arange(1.0, 401.0, dtype=F64)[None] - res.eigenvalues[:, None]).abs().amin(1)
    assert bool((distance <= res.residuals + 1e-9).all())


def test_eigvalsh_custom_start_vector_and_check_interval():
    a = _sym(30)
    v0 = torch.ones(30, dtype=F64)
    one = rf.eigvalsh(a, k=2, v0=v0, check_every=1)
    many = rf.eigvalsh(a, k=2, v0=v0, check_every=7)
    torch.testing.assert_close(one.eigenvalues, many.eigenvalues)
    assert one.num_matvecs <= many.num_matvecs


def test_estimator_errors():
    a = _sym()
    with pytest.raises(
        ValueError, match="trace: `num_samples` must be an int >= 3, got num_samples=2"
    ):
        rf.trace(a, 2)
    with pytest.raises(
        ValueError, match="trace: `num_samples` must be a positive int, got num_samples=0"
    ):
        rf.trace(a, 0, "hutchinson")
    with pytest.raises(
        ValueError,
        match="trace: `method` must be one of 'hutchinson', 'hutch\\+\\+', got method='xtrace'",
    ):
        rf.trace(a, 10, "xtrace")
    with pytest.raises(
        ValueError, match="trace: `distribution` must be one of 'rademacher', 'gaussian'"
    ):
        rf.trace(a, 10, distribution="uniform")
    with pytest.raises(ValueError, match=r"trace: `op` must be square \(symmetric\)"):
        rf.trace(torch.ones(2, 3), 10)
    with pytest.raises(
        ValueError, match="diagonal: `batch_size` must be a positive int, got batch_size=0"
    ):
        rf.diagonal(a, 10, batch_size=0)
    with pytest.raises(ValueError, match="diagonal: `method` must be one of 'hutchinson', 'exact'"):
        rf.diagonal(a, 10, method="diag++")
    with pytest.raises(
        ValueError, match="diagonal: `num_samples` must be an int >= 2 for Gaussian probes"
    ):
        rf.diagonal(a, 1, distribution="gaussian")


def test_single_sample_has_infinite_error():
    est = rf.trace(_sym(), 1, "hutchinson")
    assert est.std_error == float("inf") and est.num_matvecs == 1


def test_spectral_density_errors_and_shapes():
    a = _sym(10)
    with pytest.raises(
        ValueError, match="spectral_density: `num_probes` must be a positive int, got num_probes=0"
    ):
        rf.spectral_density(a, num_probes=0)
    with pytest.raises(
        ValueError,
        match="spectral_density: `bandwidth` must be a finite number > 0, got bandwidth=-1.0",
    ):
        rf.spectral_density(a, bandwidth=-1.0)
    sd = rf.spectral_density(a, num_probes=3, num_steps=50, num_points=64)
    assert sd.grid.shape == sd.density.shape == (64,)
    assert sd.nodes.shape == sd.weights.shape == (3, 10)  # steps capped at n
    assert bool((sd.density >= 0).all())


def test_plot_spectral_density(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sd = rf.spectral_density(_sym(20), num_steps=20)
    fig, ax = plt.subplots()
    assert rf.plot_spectral_density(sd, ax, color="k") is ax
    assert ax.get_yscale() == "log" and len(ax.lines) == 1
    linear = rf.plot_spectral_density(sd, log_scale=False)
    assert linear.get_yscale() == "linear"
    fig.savefig(tmp_path / "density.png")
    plt.close("all")


def test_convergence_is_tested_once_per_check_every(monkeypatch):
    # each test is one small eigh and one host sync; between tests Lanczos runs without the host
    a = torch.diag(torch.linspace(1.0, 100.0, 60, dtype=torch.float64))
    calls = []
    eigh = torch.linalg.eigh

    def counting(*args, **kwargs):
        calls.append(1)
        return eigh(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counting)
    with pytest.warns(RuntimeWarning, match="did not reach"):  # tol unreachable: all 40 steps
        res = rf.eigvalsh(a, k=2, check_every=5, max_iter=40, tol=1e-300)
    assert res.num_matvecs == 40
    assert len(calls) == 40 // 5


@pytest.mark.parametrize(
    ("call", "desc", "total"),
    [
        (
            lambda A: rf.eigvalsh(A, k=2, max_iter=12, check_every=100, show_progress=True),
            "eigvalsh",
            12,
        ),
        (
            lambda A: rf.spectral_density(A, num_steps=10, show_progress=True),
            "spectral_density",
            10,
        ),
        (lambda A: rf.trace(A, num_samples=9, show_progress=True), "trace (hutch++)", 9),
        (lambda A: rf.diagonal(A, num_samples=7, show_progress=True), "diagonal (hutchinson)", 7),
        (
            lambda A: rf.diagonal(A, method="exact", batch_size=5, show_progress=True),
            "diagonal (exact)",
            20,
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:eigvalsh. Lanczos did not reach:RuntimeWarning")
def test_long_curvature_work_shows_progress_when_asked(call, desc, total, capsys):
    A = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    call(A)
    err = capsys.readouterr().err
    # tqdm redraws at most every 0.1 s and clears the bar at the end (leave=False): the first
    # frame carries the label and the total (matvecs or Lanczos steps)
    assert f"{desc}" in err and f" 0/{total} " in err


def test_progress_is_silent_when_not_a_terminal(capsys):
    A = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    rf.eigvalsh(A, k=2)
    rf.trace(A, num_samples=9)
    assert capsys.readouterr().err == ""
