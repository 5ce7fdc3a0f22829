"""``report``: a self-contained Markdown + HTML page with PNG plots of a study.

Plots are our own (``_plots.py``: history with best-so-far lines and pruned trials, parallel
coordinates over the most important parameters, importance bars, learning curves) and Optuna's
Pareto front and timeline; the page adds the best trials (or the Pareto front), the importance
tables of PED-ANOVA and fANOVA with what each measures, failures, and for private studies the
privacy cost of the search itself. Each section appears once.
"""

import base64
import dataclasses
import html
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from research_ext.hpo._inspect import (
    as_handle,
    importance_table,
    pareto_front,
    status,
    trials_table,
)
from research_ext.hpo._objective import DP_SGD_ATTR
from research_ext.hpo._study import StudyHandle

__all__ = ["SearchPrivacyCost", "report", "search_privacy_cost"]


@dataclasses.dataclass(frozen=True)
class SearchPrivacyCost:
    """The privacy spent by a whole search: every trial that trained on the data composes.

    Naive (basic) composition: releasing the model chosen by the search costs at most
    (sum epsilon_i, sum delta_i) (Dwork & Roth 2014, Thm 3.16). When every counted trial recorded
    its DP-SGD mechanism (``Reporter.report_dp_sgd``), the trials' Rényi-DP curves are also
    composed (RDP composes adaptively, Mironov 2017) and converted at the same total delta: a
    bound that is never looser than the sum and usually far tighter. Random-stopping tuning
    bounds (Papernot & Steinke 2022) need a random number of identical runs, which a fixed
    search with per-trial settings is not, so they are not used.

    Attributes:
        epsilon: total epsilon by naive composition, the sum over trials.
        delta: total delta, the sum over trials (``None`` without ``[privacy] delta``).
        n_trials: trials that recorded an epsilon.
        n_unrecorded: trials that ran but recorded none (they may have spent privacy too).
        max_single_epsilon: the largest single-trial epsilon (what ignoring tuning would claim).
        method: how ``epsilon`` was composed.
        composed_epsilon: epsilon at ``delta`` by RDP composition of every trial's mechanism, or
            ``None`` when a trial did not record one (or no delta is configured).
    """

    epsilon: float
    delta: float | None
    n_trials: int
    n_unrecorded: int
    max_single_epsilon: float
    method: str = "naive composition (sum over trials; an upper bound)"
    composed_epsilon: float | None = None

    @property
    def best_epsilon(self) -> float:
        """The tighter of the two bounds."""
        if self.composed_epsilon is None:
            return self.epsilon
        return min(self.epsilon, self.composed_epsilon)


def search_privacy_cost(study: Any) -> SearchPrivacyCost | None:
    """Compose the privacy cost of every trial of a private study (``[privacy]`` in its file).

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.

    Returns:
        A :class:`SearchPrivacyCost`, or ``None`` for a study without a ``[privacy]`` table.
    """
    import optuna

    handle = as_handle(study)
    config = handle.config
    if config.epsilon_metric is None:
        return None
    ran = handle.storage.get_all_trials(
        handle.study_id,
        deepcopy=False,
        states=(
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
        ),
    )
    epsilons: list[float] = []
    mechanisms: list[tuple[float, float, int] | None] = []
    unrecorded = 0
    for trial in ran:
        if trial.system_attrs.get("research_ext:ended") == "surplus":
            continue
        eps = trial.user_attrs.get(config.epsilon_metric)
        if eps is None and trial.values is not None and config.epsilon_metric in config.metrics:
            eps = trial.values[config.metrics.index(config.epsilon_metric)]
        if eps is None:
            unrecorded += 1
        else:
            epsilons.append(float(eps))
            mechanism = trial.user_attrs.get(DP_SGD_ATTR)
            mechanisms.append(None if mechanism is None else _mechanism(mechanism))
    delta = None if config.delta is None else config.delta * len(epsilons)
    return SearchPrivacyCost(
        epsilon=float(sum(epsilons)),
        delta=delta,
        n_trials=len(epsilons),
        n_unrecorded=unrecorded,
        max_single_epsilon=max(epsilons, default=0.0),
        composed_epsilon=_rdp_composition(mechanisms, delta),
    )


def _mechanism(raw: Any) -> tuple[float, float, int]:
    sigma, rate, steps = raw
    return float(sigma), float(rate), int(steps)


def _rdp_composition(
    mechanisms: list[tuple[float, float, int] | None], delta: float | None
) -> float | None:
    if delta is None or not mechanisms or any(m is None for m in mechanisms) or delta >= 1:
        return None
    # The one allowed edge hpo -> privacy, inside a function (DESIGN.md rule 1).
    from research_ext.privacy import PrivacyAccountant

    accountant = PrivacyAccountant("rdp")
    for sigma, rate, steps in (m for m in mechanisms if m is not None):
        if steps > 0:
            accountant.step(noise_multiplier=sigma, sample_rate=rate, steps=steps)
    return accountant.epsilon(delta) if accountant.steps else 0.0


def _plots(
    handle: StudyHandle, importance_rows: list[dict[str, Any]] | None
) -> list[tuple[str, str, Callable[[], Any]]]:
    import optuna.visualization.matplotlib as vis

    from research_ext.hpo import _plots as ours

    study, config = handle.study, handle.config
    multi = config.is_multi_objective
    metric = config.metrics[0]
    ranked = [r["parameter"] for r in importance_rows or []]
    for p in _param_names(handle):
        if p not in ranked:
            ranked.append(p)
    plots: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "history",
            "Optimization history" + (" (each objective)" if multi else f" ({metric})"),
            lambda: ours.history(handle),
        ),
        (
            "parallel_coordinate",
            f"Parallel coordinates ({metric}; the {min(6, len(ranked))} most important "
            "parameters, by PED-ANOVA)",
            lambda: ours.parallel_coordinates(handle, ranked),
        ),
    ]
    if importance_rows:
        plots.append(
            (
                "importance",
                f"Hyperparameter importance for {metric} (PED-ANOVA)",
                lambda: ours.importance_bars(importance_rows, f"PED-ANOVA importance for {metric}"),
            )
        )
    if multi and len(config.metrics) in (2, 3):
        plots.append(
            (
                "pareto_front",
                "Pareto front",
                lambda: vis.plot_pareto_front(study, target_names=list(config.metrics)),
            )
        )
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(
            (
                "intermediate_values",
                "Learning curves (intermediate values; pruned trials dashed)",
                lambda: ours.learning_curves(handle),
            )
        )
    plots.append(
        ("timeline", "Timeline of trials (failures included)", lambda: vis.plot_timeline(study))
    )
    return plots


def _param_names(handle: StudyHandle) -> list[str]:
    names: list[str] = []
    for trial in handle.study.get_trials(deepcopy=False):
        names += [p for p in trial.params if p not in names]
    return names


def optuna_ped_anova() -> Any:
    """Optuna's PED-ANOVA evaluator, experimental warnings silenced."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.importance.PedAnovaImportanceEvaluator()


def _render(out_dir: pathlib.Path, name: str, make: Callable[[], Any]) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        axes = make()
    figure = getattr(axes, "figure", None) or axes
    if not hasattr(figure, "savefig"):  # some plots return an array of axes
        figure = axes.flat[0].figure
    if name in ("pareto_front", "timeline"):  # Optuna's plots: sized here, legends kept inside
        figure.set_size_inches(11, 4.8)
        for ax in figure.axes:
            legend = ax.get_legend()
            if legend is not None:
                ax.legend(
                    handles=legend.legend_handles,
                    labels=[t.get_text() for t in legend.get_texts()],
                    loc="best",
                    fontsize="small",
                    framealpha=0.85,
                )
    figure.tight_layout()
    path = out_dir / f"{name}.png"
    tmp = path.with_suffix(".png.tmp")
    figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    tmp.replace(path)
    return path


IMPORTANCE_NOTE = (
    "Two evaluators rank the parameters, and they answer different questions, so their tables "
    "may disagree. {ped_anova}. {fanova}. Parameters every trial has are ranked together on all "
    "complete trials (their importances sum to 1); a conditional parameter (one that exists only "
    "for some choice of another) is ranked on the trials where it exists, with its trial count: "
    "its share there, not comparable with the others. The parallel-coordinate plot orders its "
    "axes by PED-ANOVA."
)


def _table_rows(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Rows for a page: number, state, objectives, parameters (no prefix), duration."""
    out = []
    for row in rows:
        short: dict[str, Any] = {"number": row["number"]}
        if row.get("state") not in (None, "complete"):
            short["state"] = row["state"]
        short.update({m: row.get(m) for m in metrics})
        short.update({k[len("params.") :]: v for k, v in row.items() if k.startswith("params.")})
        short["duration_s"] = row.get("duration_s")
        out.append(short)
    return out


def report(study: Any, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write ``index.md`` and a self-contained ``index.html`` with PNG plots into ``out_dir``.

    Sections, each once: the best trials (or the Pareto front), the privacy cost of the search
    (private studies), importance by PED-ANOVA and fANOVA with what each measures, failures,
    then the plots.

    Args:
        study: a :class:`StudyConfig`, a study file path, or an open handle.
        out_dir: the directory to write (created if missing).

    Returns:
        The path of ``index.md``.
    """
    handle = as_handle(study)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = handle.config
    st = status(handle)
    md: list[str] = [f"# Study `{config.name}`", "", str(st), ""]
    htm: list[str] = [
        f"<h1>Study <code>{html.escape(config.name)}</code></h1>",
        f"<p>{html.escape(str(st))}</p>",
    ]

    def section(title: str, body_md: str, body_html: str) -> None:
        md.extend([f"## {title}", "", body_md, ""])
        htm.extend([f"<h2>{html.escape(title)}</h2>", body_html])

    if config.is_multi_objective:
        best = pareto_front(handle)
        title = f"Pareto front ({len(best)} trials, sorted by {config.metrics[0]})"
    else:
        best = trials_table(handle, states=["complete"])
        key = config.metrics[0]
        best = sorted(best, key=lambda r: r[key], reverse=config.directions[0] == "maximize")[:10]
        title = "Best trials (the first is the best; up to 10)"
    best = _table_rows(best, config.metrics)
    section(title, _md_table(best), _html_table(best))
    cost = search_privacy_cost(handle)
    if cost is not None:
        text = _privacy_text(cost, config.epsilon_budget)
        section("Privacy cost of the search", text, f"<p>{html.escape(text)}</p>")
    from research_ext.hpo._importance import EVALUATORS

    note = IMPORTANCE_NOTE.format(**EVALUATORS)
    importance_md, importance_html = [note], [f"<p>{html.escape(note)}</p>"]
    ped_rows: list[dict[str, Any]] | None = None
    for evaluator, label in (("ped_anova", "PED-ANOVA"), ("fanova", "fANOVA")):
        try:
            rows = importance_table(handle, evaluator=evaluator)
        except (ValueError, RuntimeError) as err:
            importance_md.append(f"**{label}**: not available: {err}")
            importance_html.append(f"<h3>{label}</h3><p>not available: {html.escape(str(err))}</p>")
            continue
        if evaluator == "ped_anova":
            ped_rows = rows
        shown = [
            {**r, "importance": None if r["importance"] is None else round(r["importance"], 4)}
            for r in rows
        ]
        importance_md += [f"**{label}** ({config.metrics[0]})", "", _md_table(shown)]
        importance_html += [
            f"<h3>{label} ({html.escape(config.metrics[0])})</h3>",
            _html_table(shown),
        ]
    section("Importance", "\n\n".join(importance_md), "\n".join(importance_html))
    failed = _table_rows(trials_table(handle, states=["fail"]), config.metrics)
    for row, full in zip(failed, trials_table(handle, states=["fail"]), strict=True):
        row["error"] = str(full.get("error", ""))[:80] or None
    section(
        f"Failures ({len(failed)})",
        _md_table(failed) if failed else "none",
        _html_table(failed) if failed else "<p>none</p>",
    )
    for name, caption, make in _plots(handle, ped_rows):
        try:
            path = _render(out, name, make)
        except Exception as err:  # a plot that does not apply (too few trials) is noted, not fatal
            section(caption, f"not available: {err}", html.escape(f"not available: {err}"))
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        section(
            caption,
            f"![{caption}]({path.name})",
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">',
        )
    _write(out / "index.md", "\n".join(md))
    page = "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(config.name)}</title>",
            "<style>body{font-family:sans-serif;max-width:1180px;margin:auto;padding:0 12px}"
            "table{border-collapse:collapse;font-size:13px;display:block;max-width:100%;"
            "overflow-x:auto}td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}"
            "th{background:#f3f3f3}img{max-width:100%}h3{font-size:1em}</style></head><body>",
            *htm,
            "</body></html>",
        ]
    )
    _write(out / "index.html", page)
    return out / "index.md"


def _privacy_text(cost: SearchPrivacyCost, budget: float | None) -> str:
    delta = "" if cost.delta is None else f", delta = {cost.delta:.3g}"
    budget_text = "" if budget is None else f" Each trial was held to epsilon <= {budget:g}."
    unrecorded = (
        f" {cost.n_unrecorded} trial(s) ran without recording an epsilon and are not counted."
        if cost.n_unrecorded
        else ""
    )
    composed = (
        ""
        if cost.composed_epsilon is None
        else f" Composing the trials' Rényi-DP curves instead gives epsilon = "
        f"{cost.composed_epsilon:.4g} at the same delta."
    )
    return (
        f"Releasing a model chosen by this search costs at most epsilon = {cost.epsilon:.4g}{delta} "
        f"over {cost.n_trials} trials, by {cost.method}.{composed} The most any single trial "
        f"spent is epsilon = {cost.max_single_epsilon:.4g}; quoting only the chosen trial's "
        "epsilon ignores the search."
        f"{budget_text}{unrecorded}"
    )


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "none"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
