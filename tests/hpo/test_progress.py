"""Progress when the output is not a terminal: a line per trial, -v, workers, rates on resume."""

import json
import re

from research_ext.hpo import load_config, trials_table
from research_ext.hpo._cli import main
from research_ext.hpo._worker_loop import worker
from tests.hpo.conftest import write_study

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


def test_with_worker_processes_each_trial_is_logged_once(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=4, sampler='"random"')
    assert main(["run", str(path), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert sorted(int(m[1]) for m in _trial_lines(err)) == [0, 1, 2, 3]
    assert SUMMARY.search(err)[1] == "4"


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
    ran = worker(path, n_trials=4, index=3, patience=0.0, poll_interval=0.01, log_trials=True)
    err = capsys.readouterr().err
    mine = [line for line in err.splitlines() if line.startswith("worker 3: trial ")]
    assert ran == 2 and [line.split()[3] for line in mine] == ["2", "3"]
    assert "worker 3: study 's': 2 trials finished here" in err

    assert main(["worker", str(path), "--exit-when-idle"]) == 0  # the CLI worker logs too
    assert "worker 0: study 's': 0 trials finished here" in capsys.readouterr().err


# --- the study remembers its target -------------------------------------------------------------


def test_status_shows_the_target_the_last_run_stored(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2)
    assert main(["run", str(path), "--no-progress"]) == 0
    assert main(["run", str(path), "--no-progress", "--n-trials", "4"]) == 0
    capsys.readouterr()
    assert main(["status", str(path)]) == 0  # no override: the study file still says 2
    assert "4/4 finished" in capsys.readouterr().out
    assert main(["status", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == 4
    # a worker joined with the study file alone aims for the stored target, not the file's 2
    assert worker(load_config(path), patience=0.0, poll_interval=0.01) == 0


def test_pareto_on_one_objective_says_so(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2)
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["pareto", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "one objective" in err and "tune best" in err


def test_a_failed_trial_is_replaced_not_retried(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=4, args="{ fail_above = 0.5 }")
    main(["run", str(path), "--no-progress"])
    capsys.readouterr()
    rows = {r["number"]: r for r in trials_table(path)}
    replacements = [r for r in rows.values() if "replaces" in r]
    assert replacements, "the objective fails for x > 0.5: some trial must have been replaced"
    for row in replacements:
        assert "retry_of" not in row and row["retry_reason"] == "error"
        assert rows[row["replaces"]]["state"] == "fail (error)"
        if row["state"] != "waiting":  # it ran: with parameters of its own
            assert rows[row["replaces"]]["params.x"] != row["params.x"]
    assert any(r["state"] != "waiting" for r in replacements)
    assert all("retry_of" not in r for r in rows.values())  # nothing re-ran the same trial
