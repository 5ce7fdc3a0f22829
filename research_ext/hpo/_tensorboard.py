"""A study in TensorBoard: one run per trial, shown side by side in the HParams dashboard.

``research-ext tune export STUDY.toml --format tensorboard DIR`` (or :func:`export_tensorboard`)
writes ``DIR/trial-00007/`` per finished trial through ``torch.utils.tensorboard``: its parameters
and state as hyperparameters, its objective values as the run's metrics (``objective/NAME``), its
intermediate values (``reporter.report``) as the scalar ``intermediate/value`` per step, and the
metrics it reported (``reporter.report_metric``, e.g. epsilon) as ``metric/NAME``. Then
``tensorboard --logdir DIR``. torch and tensorboard are imported only here, when called
(``pip install research-ext[tensorboard]``).
"""

import pathlib
from typing import Any

__all__ = ["export_tensorboard"]


def _hparam(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else str(value)


def export_tensorboard(study: Any, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Write every complete, pruned or failed trial of a study as a TensorBoard run.

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.
        out_dir: the log directory (created if missing); ``trial-NNNNN`` runs go in it, and a
            second export replaces them.

    Returns:
        The run directories written, in trial order.

    Raises:
        ModuleNotFoundError: if torch or tensorboard is not installed (the message says which
            extra installs it).

    Example:
        ``research-ext tune export examples/dp_digits.toml --format tensorboard runs/tb`` then
        ``tensorboard --logdir runs/tb`` (the HParams tab compares the trials).
    """
    import shutil

    import optuna

    from research_ext.hpo._inspect import as_handle
    from research_ext.hpo._study import ENDED

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "export_tensorboard: needs torch and tensorboard "
            f"(pip install 'research-ext[tensorboard]'); {err}"
        ) from err

    handle = as_handle(study)
    config = handle.config
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    written = []
    for trial in sorted(handle.study.get_trials(deepcopy=False, states=states), key=_number):
        if trial.system_attrs.get(ENDED) == "surplus":
            continue
        run_dir = out / f"trial-{trial.number:05d}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        hparams = {k: _hparam(v) for k, v in trial.params.items()}
        state = trial.state.name.lower()
        ended = trial.system_attrs.get(ENDED)
        hparams["state"] = f"{state} ({ended})" if ended else state
        hparams["trial"] = trial.number
        metrics: dict[str, float] = {}
        if trial.values is not None:
            metrics = {
                f"objective/{m}": float(v)
                for m, v in zip(config.metrics, trial.values, strict=True)
            }
        with SummaryWriter(log_dir=str(run_dir)) as writer:
            for step, value in sorted(trial.intermediate_values.items()):
                writer.add_scalar("intermediate/value", value, step)
            curves = trial.user_attrs.get("intermediate_values")  # multi-objective studies
            if isinstance(curves, dict):
                for step, value in sorted((int(k), v) for k, v in curves.items()):
                    writer.add_scalar("intermediate/value", value, step)
            for key, value in trial.user_attrs.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    writer.add_scalar(f"metric/{key}", float(value), 0)
            if trial.duration is not None:
                writer.add_scalar("duration_s", trial.duration.total_seconds(), 0)
            # run_name="." keeps the hyperparameters in this run's directory (not a subfolder)
            writer.add_hparams(hparams, metrics, run_name=".")
        written.append(run_dir)
    return written


def _number(trial: Any) -> int:
    return int(trial.number)
