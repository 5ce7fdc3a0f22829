"""Progress when the output is not a terminal: a line per trial, -v, workers, rates on resume."""

import re

import pytest

from research_ext.hpo import load_config
from research_ext.hpo._cli import main
from research_ext.hpo._worker_loop import worker
from tests.hpo.conftest import write_study

pytest.importorskip("optuna")

LINE = re.compile(
    r"^trial (\d+) (complete|pruned|fail \(\w+\)): value=\S+ \((\d+\.\d) s\) \| "
    r"(\d+)/(\d+) finished, (\S+) trial/s this run"
)
SUMMARY = re.compile(r"study 's': (\d+) trials finished here in (\S+) s \((\S+) trial/s\)")


def _trial_lines(err: str) -> list[re.Match]:
    return [m for line in err.splitlines() if (m := LINE.match(line))]


def test_a_line_per_finished_trial_when_not_a_terminal(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=4)
    assert main(["run", str(path)]) == 0  # pytest's stderr is not a terminal
    err = capsys.readouterr().err
    lines = _trial_lines(err)
    assert [int(m[1]) for m in lines] == [0, 1, 2, 3]
    assert all(m[2] == "complete" for m in lines)
    assert [int(m[4]) for m in lines] == [1, 2, 3, 4] and {m[5] for m in lines} == {"4"}
    assert SUMMARY.search(err)[1] == "4"


def test_resume_counts_only_this_runs_trials_over_this_runs_time(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=3, args="{ sleep = 0.2 }")
    assert main(["run", str(path)]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--n-trials", "5"]) == 0
    err = capsys.readouterr().err
    lines = _trial_lines(err)
    assert [int(m[1]) for m in lines] == [3, 4]  # the resumed run logs its own trials only
    summary = SUMMARY.search(err)
    assert summary[1] == "2"
    # each trial sleeps 0.2 s: this run cannot have finished more than 5 trials per second
    # (counting the 3 earlier trials, as a bar's rate did, reads far higher)
    assert 0 < float(summary[3]) <= 5.0
    assert all(0 < float(m[6]) <= 5.0 for m in lines)


def test_no_progress_is_silent_and_verbose_logs_beside_the_bar(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2)
    assert main(["run", str(path), "--no-progress"]) == 0
    assert _trial_lines(capsys.readouterr().err) == []
    assert main(["run", str(path), "--n-trials", "3", "--progress", "-v"]) == 0
    err = capsys.readouterr().err
    assert [int(m[1]) for m in _trial_lines(err)] == [2]
    assert "3/3" in err  # the bar, counting from the 2 earlier trials


def test_failed_trials_are_logged_with_their_reason(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=3, args="{ fail_above = 0.5 }")
    main(["run", str(path)])
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if re.match(r"trial \d+ fail \(error\)", line)]
    complete = [m for m in _trial_lines(err) if m[2] == "complete"]
    assert len(complete) >= 1
    assert all("too large" in line for line in failed)


def test_a_worker_reports_the_trials_it_ran(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2)
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    config = load_config(path, n_trials=4)
    ran = worker(config, index=3, patience=0.0, poll_interval=0.01, log_trials=True)
    err = capsys.readouterr().err
    mine = [line for line in err.splitlines() if line.startswith("worker 3: trial ")]
    assert ran == 2 and [line.split()[3] for line in mine] == ["2", "3"]
    assert "worker 3: study 's': 2 trials finished here" in err

    assert main(["worker", str(path), "--exit-when-idle"]) == 0  # the CLI worker logs too
    assert "worker 0: study 's': 0 trials finished here" in capsys.readouterr().err
