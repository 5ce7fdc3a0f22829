"""The report: each section once, readable tables, importance explained, our plots written."""

import re

import pytest

import research_ext.hpo as rh
from research_ext.hpo import _plots
from research_ext.hpo._inspect import as_handle
from tests.hpo.conftest import write_study


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory):
    """A conditional space (y exists when kind = b), learning curves, some trials pruned."""
    path = write_study(
        tmp_path_factory.mktemp("report"),
        fn="stepped",
        n_trials=10,
        sampler='"random"',
        extra_study='pruner = { type = "median", n_startup_trials = 2 }',
    )
    rh.run(path, show_progress=False, log_trials=False)
    return path


@pytest.fixture(scope="module")
def two_objective_study(tmp_path_factory):
    path = write_study(
        tmp_path_factory.mktemp("report2"),
        fn="two_objectives",
        n_trials=8,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='"random"',
    )
    rh.run(path, show_progress=False, log_trials=False)
    return path


def _sections(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_each_section_once_and_no_repeated_best_parameters(pruned_study, tmp_path):
    rh.report(pruned_study, tmp_path)
    page = (tmp_path / "index.html").read_text()
    markdown = (tmp_path / "index.md").read_text()
    sections = _sections(page)
    assert len(sections) == len(set(sections))
    assert "Best parameters" not in markdown and "Best parameters" not in page
    assert sum(s.startswith("Best trials") for s in sections) == 1
    assert sum(s == "Importance" for s in sections) == 1
    assert any(s.startswith("Learning curves") for s in sections)
    assert markdown.count("## ") == len(sections)


def test_tables_show_parameters_by_name_and_fit_the_page(pruned_study, tmp_path):
    rh.report(pruned_study, tmp_path)
    page = (tmp_path / "index.html").read_text()
    best_table = page.split("<h2>Best trials")[1].split("</table>")[0]
    header = re.findall(r"<th>(.*?)</th>", best_table)
    assert header[:2] == ["number", "value"] and "x" in header and "kind" in header
    assert not any(h.startswith("params.") for h in header)
    assert "max-width:1180px" in page and "overflow-x:auto" in page  # wide tables scroll


def test_importance_names_each_evaluator_and_why_they_differ(pruned_study, tmp_path):
    rh.report(pruned_study, tmp_path)
    page = (tmp_path / "index.html").read_text()
    importance = page.split("<h2>Importance</h2>")[1].split("<h2>")[0]
    assert "<h3>PED-ANOVA (value)</h3>" in importance and "<h3>fANOVA (value)</h3>" in importance
    assert "may disagree" in importance and "top 10%" in importance and "variance" in importance
    assert "where y exists (conditional)" in importance  # y exists only when kind = b


def test_pareto_front_is_not_repeated_and_history_covers_each_objective(
    two_objective_study, tmp_path
):
    rh.report(two_objective_study, tmp_path)
    page = (tmp_path / "index.html").read_text()
    sections = _sections(page)
    assert sum(s.startswith("Pareto front (") for s in sections) == 1
    assert "Optimization history (each objective)" in sections
    figure = _plots.history(as_handle(two_objective_study))
    assert len(figure.axes) == 2
    for ax in figure.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "best so far" in labels and "complete" in labels


def test_history_shows_pruned_trials_and_the_best_so_far(pruned_study):
    handle = as_handle(pruned_study)
    states = [t.state.name for t in handle.study.trials]
    assert "PRUNED" in states, "the median pruner stops some trials of this study"
    (ax,) = _plots.history(handle).axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["complete", "pruned (value when stopped)", "best so far"]
    best_line = ax.get_lines()[-1].get_ydata()
    assert list(best_line) == sorted(best_line, reverse=True)  # minimized: never goes up


def test_parallel_coordinates_label_log_axes_and_skip_absent_parameters(tmp_path):
    path = write_study(
        tmp_path,
        n_trials=8,
        sampler='"random"',
        extra='[space.lr]\ntype = "float"\nlow = 1e-4\nhigh = 1.0\nlog = true\n',
    )
    rh.run(path, show_progress=False, log_trials=False)
    handle = as_handle(path)
    figure = _plots.parallel_coordinates(handle, ["lr", "x", "kind", "y"])
    ax = figure.axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names[0] == "lr (log)" and names[1] == "x" and names[3].startswith("y\nin ")
    texts = [t.get_text() for t in ax.texts]
    assert "0.0001" in texts and "1" in texts  # log axis labelled with values
    assert "None" not in texts  # a trial without y does not get a "None" category
    for line in ax.get_lines():
        ys = line.get_ydata()
        assert all(0 <= y <= 1 for y in ys if y == y)
