"""The demo objective never spends past the study's per-trial epsilon budget."""

import importlib.util
import pathlib

import optuna
import pytest

import research_ext.privacy as rp
from tests.helpers import RTOL_ACCOUNTING_SERIES

OBJECTIVE = pathlib.Path(__file__).parents[2] / "examples" / "dp_digits_objective.py"


def _objective():
    spec = importlib.util.spec_from_file_location("dp_digits_objective", OBJECTIVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.objective


class _Reporter:
    def __init__(self, budget):
        self.epsilon_budget = budget
        self.metrics = {}
        self.mechanism = None

    def report_dp_sgd(self, noise_multiplier, sample_rate, steps):
        self.mechanism = (noise_multiplier, sample_rate, steps)

    def report(self, value, step):
        pass

    def report_metric(self, name, value, step=None):
        self.metrics[name] = value


PARAMS = {"lr": 0.5, "max_grad_norm": 1.0, "sample_rate": 0.1, "width": 16}


def test_stops_before_the_epoch_that_would_pass_the_budget():
    objective = _objective()
    sigma, q, delta = 0.8, 0.1, 1e-5
    per_epoch = round(1 / q)
    # Budget between the epsilon of one and of two epochs: exactly one epoch may be trained.
    one = rp.epsilon(sigma, q, per_epoch, delta, accountant="rdp")
    two = rp.epsilon(sigma, q, 2 * per_epoch, delta, accountant="rdp")
    reporter = _Reporter((one + two) / 2)
    with pytest.raises(optuna.TrialPruned, match="epoch 1 would take epsilon to"):
        objective({**PARAMS, "noise_multiplier": sigma}, reporter=reporter, epochs=3, delta=delta)
    assert reporter.metrics["epsilon"] == pytest.approx(one, rel=RTOL_ACCOUNTING_SERIES)
    assert reporter.metrics["epsilon"] <= reporter.epsilon_budget
    assert reporter.mechanism == (sigma, q, per_epoch)  # what the study composes


def test_a_budget_below_one_epoch_spends_nothing():
    objective = _objective()
    reporter = _Reporter(1e-3)
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        objective({**PARAMS, "noise_multiplier": 0.5}, reporter=reporter, epochs=2)
    assert reporter.metrics["epsilon"] == 0.0
    assert reporter.mechanism == (0.5, 0.1, 0)


def test_reporter_exposes_the_budget(tmp_path):
    import research_ext.hpo as rh
    from research_ext.hpo._objective import Reporter

    config = rh.load_config(OBJECTIVE.parent / "dp_digits.toml", storage=str(tmp_path / "s.db"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert Reporter(study.ask(), config).epsilon_budget == config.epsilon_budget == 8.0
    assert Reporter(study.ask(), None).epsilon_budget is None
