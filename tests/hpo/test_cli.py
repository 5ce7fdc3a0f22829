import json
import subprocess
import sys

import optuna
import pytest
import tomllib

import research_ext.hpo as rh
from research_ext.cli import main as top_main
from research_ext.hpo._cli import main
from tests.helpers import run_python
from tests.hpo.conftest import write_study

HEAVY = {"torch", "matplotlib", "pandas", "scipy", "sklearn", "opacus"}

COMMANDS = ["run", "worker", "status", "best", "trials", "pareto", "importance", "export", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: research-ext tune {command}" in capsys.readouterr().out


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_dispatcher_routes_tune(capsys):
    assert top_main(["tune", "--help"]) == 0
    assert "usage: research-ext tune" in capsys.readouterr().out


@pytest.fixture
def finished(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=6, sampler='"random"')
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "6/6 finished (complete 6)" in capsys.readouterr().out
    return path


def test_run_status_trials_best_export(finished, capsys):
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{finished.parent / 'study.db'}")

    assert main(["status", str(finished), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["states"]["COMPLETE"] == 6 and status["complete"] is True
    assert status["best_value"] == study.best_value

    assert main(["trials", str(finished), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("number,state,value,params.x") and len(lines) == 7

    assert main(["trials", str(finished), "--format", "json", "--state", "complete"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["value"] for r in rows] == [t.value for t in study.trials]

    assert main(["best", str(finished), "--format", "json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best[0]["params"] == study.best_params

    assert main(["export", str(finished)]) == 0
    exported = tomllib.loads(capsys.readouterr().out)
    assert exported["params"] == study.best_params and exported["number"] == study.best_trial.number
    target = finished.parent / "best.json"
    assert main(["export", str(finished), "--format", "json", "-o", str(target)]) == 0
    assert json.loads(target.read_text())["params"] == study.best_params


def test_importance_matches_optuna(finished, capsys):
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{finished.parent / 'study.db'}")
    for name, evaluator in [
        ("fanova", optuna.importance.FanovaImportanceEvaluator(seed=0)),
        ("ped_anova", optuna.importance.PedAnovaImportanceEvaluator()),
    ]:
        # the unconditional parameters are ranked on all trials (conditional ones: test_importance)
        expected = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=["x", "kind"]
        )
        got = rh.importance(finished, evaluator=name)
        assert {k: got[k] for k in expected} == pytest.approx(dict(expected))
    assert main(["importance", str(finished), "--evaluator", "fanova"]) == 0
    assert "parameter" in capsys.readouterr().out


def test_missing_study_and_bad_storage(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main(["status", str(path)]) == 1
    assert "no study named 's'" in capsys.readouterr().err
    assert main(["status", str(path), "--storage", str(tmp_path / "x.unknown")]) == 1
    assert "a new bare path must say by its suffix" in capsys.readouterr().err
    assert not (tmp_path / "study.db").exists()


def test_report_writes_pages_and_pngs(finished, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(finished), str(out)]) == 0
    assert (out / "index.md").read_text().startswith("# Study `s`")
    assert "data:image/png;base64," in (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"history.png", "importance.png", "parallel_coordinate.png", "timeline.png"} <= set(pngs)
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_report_multi_objective_has_pareto_plot(tmp_path):
    path = write_study(
        tmp_path,
        fn="two_objectives",
        n_trials=6,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='"random"',
    )
    rh.run(path)
    index = rh.report(path, tmp_path / "r")
    assert (tmp_path / "r" / "pareto_front.png").stat().st_size > 2000
    assert "## Pareto front" in index.read_text()


@pytest.mark.slow
def test_console_smoke(tmp_path):
    path = write_study(tmp_path, n_trials=2)
    result = subprocess.run(
        [sys.executable, "-m", "research_ext.cli", "tune", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "2/2 finished" in result.stdout


def test_password_never_printed_logged_or_written(tmp_path, postgres_server, capsys, caplog):
    secret = "Zq81-horse-staple"
    url = postgres_server.add_user("secretive", secret)
    path = write_study(tmp_path, n_trials=4, sampler='"random"')
    caplog.set_level("DEBUG")
    codes = [
        main(["run", str(path), "--storage", url, "--workers", "2", "--no-progress", "-v"]),
        main(["status", str(path), "--storage", url]),
        main(["status", str(path), "--storage", url, "--format", "json"]),
        main(["best", str(path), "--storage", url]),
        main(["trials", str(path), "--storage", url, "--format", "json"]),
        main(["export", str(path), "--storage", url, "-o", str(tmp_path / "best.toml")]),
        main(["report", str(path), str(tmp_path / "report"), "--storage", url]),
    ]
    assert codes == [0] * len(codes)
    out = capsys.readouterr()
    assert "4/4 finished" in out.out and "postgresql+psycopg2://secretive:***@127.0.0.1" in out.out
    # errors: a study that is not there, and a wrong password
    assert main(["status", str(path), "--storage", url, "--study", "nope"]) == 1
    wrong = url.replace(secret, secret[::-1])
    assert main(["status", str(path), "--storage", wrong]) == 4
    failed = capsys.readouterr()
    assert "no study named 'nope'" in failed.err and "password" in failed.err
    texts = [out.out, out.err, failed.out, failed.err, caplog.text]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:
        assert secret not in text and secret[::-1] not in text
    assert "secretive:***@" in (tmp_path / "report" / "index.md").read_text()


def test_storage_from_the_environment_variable(tmp_path, monkeypatch, capsys):
    path = write_study(tmp_path, n_trials=2, sampler='"random"')
    monkeypatch.setenv("RESEARCH_EXT_STORAGE", str(tmp_path / "elsewhere.db"))
    assert main(["run", str(path), "--no-progress"]) == 0
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "study.db").exists()
    assert main(["status", str(path)]) == 0
    assert "elsewhere.db: 2/2 finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    "code",
    [
        "import research_ext.hpo",
        "from research_ext.cli import main; assert main(['tune', '--help']) == 0",
        "from research_ext.hpo._cli import main; assert main(['run', '--help']) == 0",
    ],
)
def test_hpo_and_its_cli_start_without_torch(code):
    # torch costs seconds; only an objective or a privacy feature may bring it in
    result = run_python(f"import sys\n{code}\nprint(sorted({HEAVY!r} & set(sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_database_file_alone_holds_the_whole_study_after_run(tmp_path, capsys):
    # An archived copy of study.db (without -wal/-shm) must not lose the last trials.
    path = write_study(tmp_path, n_trials=5, sampler='"random"')
    assert main(["run", str(path), "--no-progress"]) == 0
    wal = tmp_path / "study.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "study.db").write_bytes((tmp_path / "study.db").read_bytes())
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{archive / 'study.db'}")
    assert len([t for t in study.trials if t.state.is_finished()]) == 5
