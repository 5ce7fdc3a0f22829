"""The demo's objective: DP-SGD on scikit-learn's bundled digits, returning accuracy and epsilon.

``objective(params, *, reporter, epochs, delta, accountant, seed)`` trains a one-hidden-layer MLP
with :class:`research_ext.privacy.DPSGD` (Poisson sampling, per-sample clipping, Gaussian noise),
reports the test accuracy and the epsilon spent after every epoch, and returns both. With an
epsilon budget, a trial stops before the epoch that would pass it (the accountant knows an
epoch's cost before it is trained), so no trial spends more than the budget. Everything is
seeded from ``seed`` and the trial's parameters, so a re-queued trial redoes exactly the same run.
"""

import functools
import pathlib
import sys
import zlib
from typing import Any

import torch
from torch import nn

# Loaded by path (study files name `dp_digits_objective.py:objective`): make its sibling importable.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bundled_data import load_split  # noqa: E402


@functools.cache
def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1797 8x8 digits, standardized, split 80/20 (cached per worker process)."""
    return load_split("digits", seed)


def _trial_seed(params: dict[str, Any], seed: int) -> int:
    return zlib.crc32(repr(sorted(params.items())).encode()) ^ seed


def objective(
    params: dict[str, Any],
    *,
    reporter: Any = None,
    epochs: int = 8,
    delta: float = 1e-5,
    accountant: str = "rdp",
    seed: int = 0,
) -> dict[str, float]:
    import research_ext.privacy as rp

    torch.set_num_threads(1)  # one core per worker process
    x_train, y_train, x_test, y_test = digits()
    generator = torch.Generator().manual_seed(_trial_seed(params, seed))
    torch.manual_seed(_trial_seed(params, seed))
    width = int(params["width"])
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
    privacy: dict[str, Any] = {"noise_multiplier": params.get("noise_multiplier")}
    if params.get("calibration") == "target_epsilon":
        privacy = {"target_epsilon": params["target_epsilon"], "epochs": epochs}
    engine = rp.DPSGD(
        model,
        optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=params["max_grad_norm"],
        delta=delta,
        sample_rate=params["sample_rate"],
        dataset_size=len(x_train),
        accountant=accountant,
        generator=generator,
        **privacy,
    )
    accuracy = 0.0
    budget = None if reporter is None else reporter.epsilon_budget
    if reporter is not None:  # the mechanism on record lets the study compose trials' RDP curves
        reporter.report_dp_sgd(engine.noise_multiplier, engine.sample_rate, 0)
    for epoch in range(epochs):
        loader = engine.loader((x_train, y_train))
        if budget is not None:
            # Epsilon after this epoch is known before it is trained: stop short of the budget
            # instead of spending past it and being pruned afterwards.
            after = rp.epsilon(
                engine.noise_multiplier,
                engine.sample_rate,
                engine.steps + len(loader),
                delta,
                accountant=accountant,
            )
            if after > budget:
                import optuna

                spent = engine.epsilon() if engine.steps else 0.0
                reporter.report_metric("epsilon", spent, step=epoch)
                raise optuna.TrialPruned(
                    f"epoch {epoch} would take epsilon to {after:.4g}, past the budget {budget:g}"
                )
        model.train()
        for batch in loader:
            engine.step(batch)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
        if reporter is not None:
            reporter.report_dp_sgd(engine.noise_multiplier, engine.sample_rate, engine.steps)
            reporter.report(accuracy, epoch)
            reporter.report_metric("epsilon", engine.epsilon(), step=epoch)
            reporter.report_metric("noise_multiplier_used", engine.noise_multiplier)
    return {"accuracy": accuracy, "epsilon": engine.epsilon()}
