"""The report's own plots (matplotlib), each sized for a 1280 px page, legends inside.

History with best-so-far lines, readable parallel coordinates, learning curves, importance bars.

Every function takes an open study handle and returns a matplotlib ``Figure``.
"""

import math
from collections.abc import Sequence
from typing import Any

from research_ext.hpo._study import StudyHandle

__all__ = ["history", "importance_bars", "learning_curves", "parallel_coordinates"]

WIDTH, HEIGHT = 11.0, 4.8  # inches at 100 dpi: 1100 px wide, inside a 1280 px page


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _trials(handle: StudyHandle, *states: str) -> list[Any]:
    import optuna

    wanted = tuple(getattr(optuna.trial.TrialState, s) for s in states)
    return list(handle.study.get_trials(deepcopy=False, states=wanted))


def _pruned_value(trial: Any, metric: str, index: int) -> float | None:
    """What a pruned trial reached: the metric it reported, else its last intermediate value."""
    value = trial.user_attrs.get(metric)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    if index == 0 and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def history(handle: StudyHandle) -> Any:
    """Objective value per trial, one panel per objective, with its best-so-far line.

    Complete trials are dots, pruned trials crosses at what they reached when stopped.
    """
    plt = _plt()
    config = handle.config
    complete = sorted(_trials(handle, "COMPLETE"), key=lambda t: t.number)
    pruned = sorted(_trials(handle, "PRUNED"), key=lambda t: t.number)
    n = len(config.metrics)
    figure, axes = plt.subplots(1, n, figsize=(WIDTH, HEIGHT), squeeze=False)
    for i, (metric, direction) in enumerate(zip(config.metrics, config.directions, strict=True)):
        ax = axes[0][i]
        xs = [t.number for t in complete]
        ys = [t.values[i] for t in complete]
        ax.scatter(xs, ys, s=18, color="tab:blue", label="complete", zorder=3)
        reached = [(t.number, _pruned_value(t, metric, i)) for t in pruned]
        reached = [(x, y) for x, y in reached if y is not None]
        if reached:
            ax.scatter(
                *zip(*reached, strict=True),
                s=22,
                marker="x",
                color="tab:orange",
                label="pruned (value when stopped)",
                zorder=3,
            )
        elif pruned:
            ax.plot([], [], "x", color="tab:orange", label=f"pruned: {len(pruned)} (no value)")
        if ys:
            pick = max if direction == "maximize" else min
            best, line = ys[0], []
            for y in ys:
                best = pick(best, y)
                line.append(best)
            ax.step(xs, line, where="post", color="tab:red", label="best so far", zorder=2)
        ax.set_xlabel("trial number")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_ylabel(f"{metric} ({direction})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
    if n > 1:
        figure.suptitle("each panel's best-so-far line follows that objective alone", fontsize=9)
    figure.tight_layout()
    return figure


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _is_log(distribution: Any) -> bool:
    return bool(getattr(distribution, "log", False))


def _short(value: float) -> str:
    return f"{value:.3g}"


def parallel_coordinates(handle: StudyHandle, params: Sequence[str], max_params: int = 6) -> Any:
    """Parallel coordinates of the complete trials, coloured by the first objective.

    The axes are the first ``max_params`` of ``params`` (most important first).

    Log-scaled parameters get a log axis labelled with their values; categorical ones their
    choices; a conditional parameter's axis is skipped by the trials that lack it (no "None").
    """
    import numpy as np

    plt = _plt()
    config = handle.config
    complete = _trials(handle, "COMPLETE")
    shown = list(params)[:max_params]
    figure, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    if not complete or not shown:
        ax.text(0.5, 0.5, "no complete trial", ha="center", transform=ax.transAxes)
        return figure
    distributions: dict[str, Any] = {}
    for trial in complete:
        for p in shown:
            if p in trial.distributions:
                distributions.setdefault(p, trial.distributions[p])
    scale: dict[str, tuple[float, float, Any]] = {}
    ticks: dict[str, tuple[list[float], list[str]]] = {}
    for p in shown:
        d = distributions[p]
        if hasattr(d, "choices"):
            k = len(d.choices)
            scale[p] = (0.0, max(k - 1, 1), lambda v, d=d: float(d.choices.index(v)))
            ticks[p] = (
                [i / max(k - 1, 1) for i in range(k)],
                [str(c)[:18] for c in d.choices],
            )
        else:
            low, high = float(d.low), float(d.high)
            if _is_log(d):
                lo, hi = math.log10(low), math.log10(high)
                scale[p] = (lo, hi, lambda v: math.log10(float(v)))
                marks = np.geomspace(low, high, 4)
            else:
                lo, hi = low, high
                scale[p] = (lo, hi, float)
                marks = np.linspace(low, high, 4)
            span = (hi - lo) or 1.0
            to = scale[p][2]
            ticks[p] = ([(to(v) - lo) / span for v in marks], [_short(v) for v in marks])
    metric = config.metrics[0]
    values = [t.values[0] for t in complete]
    vmin, vmax = min(values), max(values)
    cmap = plt.get_cmap("viridis" if config.directions[0] == "maximize" else "viridis_r")
    norm = plt.Normalize(vmin, vmax if vmax > vmin else vmin + 1.0)
    order = sorted(
        range(len(complete)),
        key=lambda i: values[i] if config.directions[0] == "maximize" else -values[i],
    )  # the best trials drawn last, on top
    for i in order:
        trial = complete[i]
        xs, ys = [], []
        for j, p in enumerate(shown):
            if p not in trial.params:  # conditional parameter absent: break the line here
                xs.append(np.nan)
                ys.append(np.nan)
                continue
            lo, hi, to = scale[p]
            xs.append(j)
            ys.append((to(trial.params[p]) - lo) / ((hi - lo) or 1.0))
        ax.plot(xs, ys, color=cmap(norm(values[i])), alpha=0.75, linewidth=1.2)
    for j, p in enumerate(shown):
        ax.axvline(j, color="0.6", linewidth=0.8)
        positions, labels = ticks[p]
        for y, label in zip(positions, labels, strict=True):
            ax.text(j + 0.03, y, label, fontsize=7, va="center", ha="left", color="0.25")
    names = []
    for p in shown:
        d = distributions[p]
        suffix = " (log)" if _is_log(d) else ""
        share = sum(p in t.params for t in complete)
        cond = "" if share == len(complete) else f"\nin {share}/{len(complete)} trials"
        names.append(f"{p}{suffix}{cond}")
    ax.set_xticks(range(len(shown)), names, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(shown) - 0.4)
    ax.set_ylim(-0.05, 1.05)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    bar = figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(f"{metric} ({config.directions[0]})")
    ax.set_title(
        f"{len(complete)} complete trials over the {len(shown)} most important parameters",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def learning_curves(handle: StudyHandle) -> Any:
    """Intermediate values per step: complete trials in blue, pruned ones in orange."""
    plt = _plt()
    figure, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    drawn = {"complete": False, "pruned": False}
    for trial in _trials(handle, "COMPLETE", "PRUNED"):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        kind = trial.state.name.lower()
        ax.plot(
            steps,
            [trial.intermediate_values[s] for s in steps],
            color="tab:blue" if kind == "complete" else "tab:orange",
            alpha=0.6,
            linewidth=1.0,
            linestyle="-" if kind == "complete" else "--",
            marker=None if kind == "complete" else "o",  # a trial pruned at step 0 is a dot
            markersize=3,
            label=None if drawn[kind] else kind,
        )
        drawn[kind] = True
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("reported value")
    ax.grid(alpha=0.3)
    if any(drawn.values()):
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no trial reported intermediate values", ha="center")
    figure.tight_layout()
    return figure


def importance_bars(rows: list[dict[str, Any]], title: str) -> Any:
    """Horizontal bars of importance rows; a conditional parameter is labelled with its trials."""
    plt = _plt()
    rows = [r for r in rows if r["importance"] is not None]
    figure, ax = plt.subplots(figsize=(WIDTH, max(2.0, 0.45 * len(rows) + 1.2)))
    labels = [
        r["parameter"]
        if r["computed_on"] == "all complete trials"
        else f"{r['parameter']} (on {r['trials']} trials)"
        for r in rows
    ]
    ax.barh(range(len(rows)), [r["importance"] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
