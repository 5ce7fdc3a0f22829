import pytest
import torch
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import validate
from research_ext.privacy._cli import main
from tests.helpers import ATOL_PRINTED_EPSILON


def test_validate_flags_and_fixes_batchnorm():
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
    problems = validate(model)
    assert any("BatchNorm" in p for p in problems) and any("inplace" in p for p in problems)
    fixed = validate(model, fix=True)
    assert isinstance(fixed[1], nn.GroupNorm) and fixed[1].num_channels == 6
    assert validate(fixed) == []
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is untouched
    assert fixed(torch.randn(2, 1, 5, 5)).shape == (2, 6, 3, 3)


def test_validate_flags_embedding_and_rnn_pitfalls():
    model = nn.ModuleDict(
        {
            "e": nn.Embedding(5, 2, scale_grad_by_freq=True),
            "m": nn.Embedding(5, 2, max_norm=1.0),
            "r": nn.LSTM(2, 2),
        }
    )
    problems = validate(model)
    text = " ".join(problems)
    assert "scale_grad_by_freq" in text and "max_norm" in text and len(problems) == 2
    # Recurrent layers are supported in every layout, time-first included.
    assert validate(nn.ModuleList([nn.LSTM(2, 2), nn.GRU(2, 2, 2, bidirectional=True)])) == []


def test_validate_reports_tied_weights():
    emb, head = nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    problems = validate(nn.ModuleList([emb, head]))
    assert len(problems) == 1 and "tied" in problems[0]


def test_cli_epsilon_and_calibrate_tables(capsys):
    assert (
        main(
            [
                "epsilon",
                "--noise",
                "1.0",
                "--sample-rate",
                "0.01",
                "--steps",
                "1000",
                "--delta",
                "1e-5",
                "--accountant",
                "rdp",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["accountant", "epsilon", "seconds"]
    from research_ext.privacy import epsilon

    assert float(out.splitlines()[1].split()[1]) == pytest.approx(
        epsilon(1.0, 0.01, 1000, 1e-5, accountant="rdp"), abs=ATOL_PRINTED_EPSILON
    )
    assert (
        main(
            [
                "calibrate",
                "--target-epsilon",
                "2",
                "--sample-rate",
                "0.01",
                "--epochs",
                "10",
                "--delta",
                "1e-5",
                "--accountant",
                "rdp",
            ]
        )
        == 0
    )
    assert "noise_multiplier" in capsys.readouterr().out


def test_cli_errors(capsys):
    assert (
        main(
            [
                "epsilon",
                "--noise",
                "1.0",
                "--sample-rate",
                "2",
                "--steps",
                "10",
                "--delta",
                "1e-5",
                "--accountant",
                "rdp",
            ]
        )
        == 2
    )
    assert (
        "`sample_rate` must be a number in (0.0, 1.0], got sample_rate=2.0"
        in capsys.readouterr().err
    )
    assert main(["epsilon", "--sample-rate", "0.1"]) == 2


@pytest.mark.parametrize("shape", [(5, 16), (5, 16, 7)])
def test_fixed_batchnorm1d_normalises_each_example_over_its_channels(shape):
    # BatchNorm1d(C) used to become GroupNorm(C, C): on (N, C) inputs that is one value per
    # group, normalised to zero, so the layer's output was its bias whatever the input.
    torch.manual_seed(0)
    fixed = validate(nn.Sequential(nn.BatchNorm1d(16)), fix=True)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    out = fixed.double()(x)
    dims = tuple(range(1, x.dim()))  # each example over its channels (and length)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-5))
    assert validate(fixed) == []


def test_fix_refuses_batchnorm1d_of_one_channel():
    # A per-example normalisation of one channel is constant on (N, 1) inputs: refused, named.
    model = nn.Sequential(nn.Linear(3, 1), nn.BatchNorm1d(1))
    with pytest.raises(UnsupportedModuleError, match=r"`1` \(BatchNorm1d\).*one channel"):
        validate(model, fix=True)
