"""tune export --format tensorboard: one run per trial, read back with TensorBoard's own reader."""

import optuna
import pytest
import tensorboard.backend.event_processing.event_accumulator as event_accumulator
import tensorboard.plugins.hparams.plugin_data_pb2 as plugin_data_pb2

import research_ext.hpo as rh
from research_ext.hpo._cli import main
from tests.helpers import run_python
from tests.hpo.conftest import write_study


def _read(run_dir):
    accumulator = event_accumulator.EventAccumulator(str(run_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[key] = getattr(value, kind)
    return accumulator, hparams


def test_every_trial_is_a_run_with_params_values_and_curve(tmp_path, capsys):
    path = write_study(
        tmp_path,
        fn="stepped",
        n_trials=5,
        sampler='"random"',
        extra_study='pruner = { type = "median", n_startup_trials = 2 }',
    )
    rh.run(path, show_progress=False, log_trials=False)
    out = tmp_path / "tb"
    assert main(["export", "--format", "tensorboard", str(path), str(out)]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    assert main(["export", str(path), "--format", "tensorboard", "-o", str(out)]) == 0  # again
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    runs = sorted(p.name for p in out.iterdir())
    assert runs == [f"trial-{t.number:05d}" for t in study.trials]
    for trial in study.trials:
        accumulator, hparams = _read(out / f"trial-{trial.number:05d}")
        assert hparams["trial"] == trial.number
        assert hparams["state"] == trial.state.name.lower()
        for key, value in trial.params.items():
            assert hparams[key] == pytest.approx(value) if isinstance(value, float) else value
        assert ("y" in hparams) == ("y" in trial.params)  # conditional: only where it exists
        curve = accumulator.Scalars("intermediate/value")
        assert [e.step for e in curve] == sorted(trial.intermediate_values)
        assert [e.value for e in curve] == pytest.approx(
            [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        )
        if trial.state == optuna.trial.TrialState.COMPLETE:
            (final,) = accumulator.Scalars("objective/value")
            assert final.value == pytest.approx(trial.value)


def test_multi_objective_values_and_a_second_export_replaces_the_runs(tmp_path):
    path = write_study(
        tmp_path,
        fn="two_objectives",
        n_trials=3,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='"random"',
    )
    study = rh.run(path, show_progress=False, log_trials=False)
    from research_ext.hpo._tensorboard import export_tensorboard

    export_tensorboard(path, tmp_path / "tb")
    runs = export_tensorboard(path, tmp_path / "tb")
    assert len(runs) == 3
    for trial, run in zip(study.trials, runs, strict=True):
        accumulator, _ = _read(run)
        assert len(list(run.glob("events.out.tfevents.*"))) == 2  # old runs removed, not added to
        for name, value in zip(["loss", "size"], trial.values, strict=True):
            assert accumulator.Scalars(f"objective/{name}")[0].value == pytest.approx(value)
        assert accumulator.Scalars("metric/aux")[0].value == 1.0


def test_export_dir_needs_the_tensorboard_format(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=1)
    rh.run(path, show_progress=False, log_trials=False)
    assert main(["export", str(path), str(tmp_path / "x")]) == 2
    assert "--format tensorboard" in capsys.readouterr().err


def test_importing_hpo_and_the_exporter_does_not_import_torch():
    code = (
        "import sys, research_ext.hpo, research_ext.hpo._tensorboard, research_ext.hpo._cli; "
        "print('torch' in sys.modules)"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
