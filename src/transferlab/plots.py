"""Figures: the two tasks, learning curves per strategy and all strategies on one pair of
axes, the score per strategy, per strategy and source model, sweeps and matrices.

Each function takes plain tables and a path and writes one PNG; nothing else. Figures are
`matplotlib.figure.Figure` objects drawn with Agg, never pyplot: no global backend or
figure registry is touched, so importing or calling this module changes no global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from transferlab import objectives
from transferlab.folder import atomic_path
from transferlab.stats import BASELINE, FINISHED
from transferlab.tasks import Task

_DPI = 110


SCATTER_POINTS = 4000  # at most this many points per task (a fixed random choice beyond)


def tasks_scatter(tasks: dict[str, Task], path: Path) -> Path:
    """The tutorial's first figure: each problem's points coloured by class (or by target
    for regression), on its two features, or on its first two principal components when it
    has more. Image tasks are drawn as sample images per class instead (`task_images`)."""
    if any(task.is_image for task in tasks.values()):
        return task_images(tasks, path)
    fig = Figure(figsize=(5 * len(tasks), 4.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, (title, task) in zip(axes[0], tasks.items()):
        x = np.concatenate([task.x_train, task.x_test]).reshape(len(task.x_train) + len(task.x_test), -1)
        y = np.concatenate([task.y_train, task.y_test])
        if len(x) > SCATTER_POINTS:
            chosen = np.sort(np.random.default_rng(0).choice(len(x), SCATTER_POINTS, replace=False))
            x, y = x[chosen], y[chosen]
        points, (x_label, y_label) = _plane(x, task.feature_names)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        if task.kind == "regression":
            if points.shape[1] > 1:
                drawn = ax.scatter(points[:, 0], points[:, 1], c=y[:, 0], s=9, cmap="viridis")
                fig.colorbar(drawn, ax=ax, label="target (standardised)")
                ax.set_ylabel(y_label)
            else:
                ax.scatter(points[:, 0], y[:, 0], s=9)
                ax.set_ylabel("target (standardised)")
            continue
        labels = y.argmax(axis=1) if y.shape[1] > 1 else (y[:, 0] > 0.5).astype(int)
        names = task.class_names
        jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(x))
        for label in np.unique(labels):
            chosen = labels == label
            name = names[label] if label < len(names) else str(label)
            if points.shape[1] == 1:  # one feature: classes spread on the y axis
                ax.scatter(points[chosen, 0], label + jitter[chosen], s=9, alpha=0.7, label=name)
            else:
                ax.scatter(points[chosen, 0], points[chosen, 1], s=9, alpha=0.7, label=name)
        ax.set_ylabel("class (jittered)" if points.shape[1] == 1 else y_label)
        ax.legend(fontsize=8, markerscale=1.5, ncols=1 + len(names) // 8)
    return _save(fig, path)


IMAGES_PER_CLASS = 6
IMAGE_CLASSES = 10  # at most this many classes (rows) per task


def task_images(tasks: dict[str, Task], path: Path) -> Path:
    """Each task's first training images of each class (a row per class; regression tasks
    and tasks of another kind: the first images), each scaled to its own value range."""
    most = max(len(_sample_rows(task)) for task in tasks.values())
    fig = Figure(figsize=(1.0 + 1.1 * IMAGES_PER_CLASS * len(tasks), 0.7 + 1.1 * most))
    panels = fig.subfigures(1, len(tasks), squeeze=False)[0]
    for panel, (title, task) in zip(panels, tasks.items()):
        rows = _sample_rows(task)
        axes = panel.subplots(len(rows), IMAGES_PER_CLASS, squeeze=False)
        panel.suptitle(title, fontsize=10)
        for ax_row, (name, indices) in zip(axes, rows):
            for column, ax in enumerate(ax_row):
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_frame_on(False)
                if column < len(indices):
                    ax.imshow(_displayable(task.x_train[indices[column]]), cmap="gray", interpolation="nearest")
            ax_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return _save(fig, path, tight=False)


def _sample_rows(task: Task) -> list[tuple[str, np.ndarray]]:
    if task.kind != "classification":
        return [("", np.arange(min(IMAGES_PER_CLASS, len(task.x_train))))]
    labels = task.labels_train
    return [(str(name), np.flatnonzero(labels == label)[:IMAGES_PER_CLASS])
            for label, name in enumerate(task.class_names[:IMAGE_CLASSES])]


def _displayable(image: np.ndarray) -> np.ndarray:
    """An image scaled to [0, 1] by its own range; one channel drawn in gray, RGBA as RGB."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low or 1.0)
    return scaled[..., 0] if scaled.shape[-1] == 1 else scaled[..., :3]


def _plane(x: np.ndarray, names) -> tuple[np.ndarray, tuple[str, str]]:
    """Points to draw: the features themselves (one or two), else the first two principal
    components, labelled with their share of the variance."""
    if x.shape[1] <= 2:
        labels = tuple(names[:2]) + ("",) * (2 - min(2, len(names)))
        return x, labels
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    share = singular**2 / max((singular**2).sum(), 1e-300)
    points = centred @ axes[:2].T
    return points, tuple(f"principal component {i + 1} ({share[i]:.0%} of variance)" for i in range(2))


metric_name = objectives.display  # `test_r2` → `test R²`: the objective's names


def _curve_range(mean_curves: pd.DataFrame, names: list[str], floor: float | None = None) -> tuple[float, float]:
    """One y-range for every panel of a metric: all strategies' mean ± std, both splits."""
    low = min(float(np.nanmin(mean_curves[f"{n}_mean"] - np.nan_to_num(mean_curves[f"{n}_std"]))) for n in names)
    high = max(float(np.nanmax(mean_curves[f"{n}_mean"] + np.nan_to_num(mean_curves[f"{n}_std"]))) for n in names)
    if floor is not None:
        low = max(low, floor)
    pad = 0.03 * (high - low or 1.0)
    return low - pad, high + pad


def learning_curves(mean_curves: pd.DataFrame, path: Path | None, score: str) -> Path | Figure:
    """Loss and `score` (accuracy, or r2 for regression) per epoch for each strategy: mean
    over runs with a ±1 std band; four strategies per row of panels, and one y-range per
    metric across all panels, so panels compare (an R² axis stops at −1)."""
    strategies = list(dict.fromkeys(mean_curves["strategy"]))
    per_row = min(4, len(strategies))
    rows = -(-len(strategies) // per_row)
    fig = Figure(figsize=(3.6 * per_row, 3 * 2 * rows))
    axes = fig.subplots(2 * rows, per_row, squeeze=False)
    limits = {metric: _curve_range(mean_curves, [metric, objectives.column("test", metric, curve=True)],
                                   objectives.METRICS[metric].axis_floor)
              for metric in ("loss", score)}
    for unused in range(len(strategies), rows * per_row):
        for row in (2 * (unused // per_row), 2 * (unused // per_row) + 1):
            axes[row][unused % per_row].set_visible(False)
    for index, strategy in enumerate(strategies):
        table = mean_curves[mean_curves["strategy"] == strategy]
        column, panel = index % per_row, 2 * (index // per_row)
        for row, metric in enumerate(("loss", score), start=panel):
            ax = axes[row][column]
            for name, label in ((metric, "train"), (objectives.column("test", metric, curve=True), "test")):
                mean = table[f"{name}_mean"].to_numpy()
                std = np.nan_to_num(table[f"{name}_std"].to_numpy())
                ax.plot(table["epoch"], mean, label=label)
                ax.fill_between(table["epoch"], mean - std, mean + std, alpha=0.25)
            ax.set_ylim(*limits[metric])
            ax.set_title(strategy if row == panel else "", fontsize=9)
            ax.set_xlabel("epoch" if row == panel + 1 else "")
            ax.set_ylabel(metric_name(metric) if column == 0 else "")
            ax.grid(alpha=0.3)
        axes[panel][column].legend(fontsize=8)
    return _save(fig, path)


def comparison_curves(mean_curves: pd.DataFrame, path: Path | None, score: str) -> Path | Figure:
    """Every strategy's mean test curve on one pair of axes, with a ±1 std band;
    standalone in black."""
    test_curve = objectives.column("test", score, curve=True)
    fig = Figure(figsize=(8, 4.6))
    ax = fig.subplots()
    for strategy in dict.fromkeys(mean_curves["strategy"]):
        table = mean_curves[mean_curves["strategy"] == strategy]
        mean = table[f"{test_curve}_mean"].to_numpy()
        std = np.nan_to_num(table[f"{test_curve}_std"].to_numpy())
        style = {"color": "black", "linewidth": 2.4, "zorder": 3} if strategy == BASELINE else {"linewidth": 1.4}
        line, = ax.plot(table["epoch"], mean, label=strategy, **style)
        ax.fill_between(table["epoch"], mean - std, mean + std, alpha=0.08 if strategy != BASELINE else 0.15,
                        color=line.get_color())
    low, high = _curve_range(mean_curves, [test_curve], objectives.METRICS[score].axis_floor)
    ax.set_ylim(low, high)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric_name(test_curve)} (mean ± std over runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=2 if mean_curves["strategy"].nunique() > 6 else 1)
    return _save(fig, path)


HORIZONTAL_FROM = 8  # strategies from which the box plot turns its boxes on their side


def score_boxplot(runs: pd.DataFrame, path: Path | None, metric: str) -> Path | Figure:
    """The tutorial's box-and-whisker plot, with a line at standalone's mean and a legend
    for every mark; with several source models, each one's mean is a dot over its
    strategy's box; with many strategies the boxes lie on their side."""
    targets = runs[runs["role"] == "target"]
    diverged = targets[targets["status"] == "diverged"].groupby("strategy").size()
    runs = targets[targets["status"] == "done"]
    if objectives.metric_of(metric).axis_floor is not None:  # a diverged run's R² can be −10⁶: keep boxes readable
        low = np.nanpercentile(runs[metric], 5) if len(runs) else 0.0
        ax_floor = min(low, 0.0)
    else:
        ax_floor = None
    strategies = list(dict.fromkeys(targets.loc[targets["status"].isin(FINISHED), "strategy"]))
    horizontal = len(strategies) >= HORIZONTAL_FROM
    size = (7.5, 1.2 + 0.42 * len(strategies)) if horizontal else (max(5.0, 1.5 * len(strategies)), 4.8)
    fig = Figure(figsize=size)
    ax = fig.subplots()
    data = [runs.loc[runs["strategy"] == s, metric].to_numpy() for s in strategies]
    positions = np.arange(len(strategies), 0, -1) if horizontal else np.arange(1, len(strategies) + 1)
    ax.boxplot(data, positions=positions, showmeans=True, orientation="horizontal" if horizontal else "vertical",
               medianprops={"color": "tab:orange"}, meanprops={"marker": "^", "markerfacecolor": "tab:green",
                                                                "markeredgecolor": "tab:green"})
    if horizontal:
        ax.set_yticks(positions, strategies, fontsize=8)
    else:
        ax.set_xticks(positions, strategies, rotation=20 if len(strategies) < 6 else 35, ha="right",
                      fontsize=8 if len(strategies) > 6 else 10)
    handles = [Line2D([], [], color="tab:orange", label="median"),
               Line2D([], [], marker="^", color="tab:green", linestyle="", label="mean"),
               Patch(facecolor="white", edgecolor="black", label="box: middle half of the runs; whiskers: 1.5 × IQR"),
               Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black", linestyle="",
                      label="a run outside the whiskers")]
    if BASELINE in strategies and len(data[strategies.index(BASELINE)]):
        baseline = float(np.mean(data[strategies.index(BASELINE)]))
        (ax.axvline if horizontal else ax.axhline)(baseline, color="gray", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="gray", linestyle="--", label=f"standalone mean ({baseline:.3f})"))
    for position, strategy in zip(positions, strategies):
        group = runs[runs["strategy"] == strategy]
        if group["source_index"].nunique() > 1:
            means = group.groupby("source_index")[metric].mean().to_numpy()
            jitter = np.linspace(-0.12, 0.12, len(means))
            xy = (means, position + jitter) if horizontal else (position + jitter, means)
            ax.scatter(*xy, s=16, color="tab:red", zorder=3)
    if runs.groupby("strategy")["source_index"].nunique().gt(1).any():
        handles.append(Line2D([], [], marker="o", color="tab:red", linestyle="", label="mean per source model"))
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    for position, strategy in zip(positions, strategies):
        if diverged.get(strategy, 0):  # a diverged run has no score: say how many, beside the box
            xy, coords = ((0, position), ("axes fraction", "data")) if horizontal else ((position, 0),
                                                                                      ("data", "axes fraction"))
            ax.annotate(f"{diverged[strategy]} diverged", xy, xycoords=coords, xytext=(4, 4),
                        textcoords="offset points", ha="left" if horizontal else "center", fontsize=8,
                        color="tab:red")
    (ax.set_xlabel if horizontal else ax.set_ylabel)(metric_name(metric))
    if ax_floor is not None:
        if horizontal:
            ax.set_xlim(left=max(ax.get_xlim()[0], ax_floor - 0.1))
        else:
            ax.set_ylim(bottom=max(ax.get_ylim()[0], ax_floor - 0.1))
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return _save(fig, path)


def per_source_heatmap(per_source: pd.DataFrame, path: Path, metric: str) -> Path:
    """Each transfer strategy's mean score on each source model (rows strategies, columns
    source models), the value in each cell: which source model carries a strategy."""
    strategies = list(dict.fromkeys(per_source["strategy"]))
    sources = sorted(per_source["source_index"].unique())
    grid = per_source.pivot(index="strategy", columns="source_index", values="mean").loc[strategies, sources]
    fig = Figure(figsize=(2.5 + 0.6 * len(sources), 1.2 + 0.42 * len(strategies)))
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto")
    for i in range(len(strategies)):
        for j in range(len(sources)):
            value = grid.iat[i, j]
            if np.isfinite(value):  # dark text on the bright end of the colour map
                bright = image.norm(value) > 0.6
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if bright else "white")
    ax.set_xticks(range(len(sources)), [str(s) for s in sources], fontsize=8)
    ax.set_yticks(range(len(strategies)), strategies, fontsize=8)
    ax.set_xlabel("source model")
    fig.colorbar(image, ax=ax, label=f"mean {metric_name(metric)}")
    return _save(fig, path)


def score_scatter(wide_scores: pd.DataFrame, outcomes: pd.DataFrame, path: Path | None, metric: str) -> Path | Figure:
    """One panel per transferability score: each source model's score (x) against each
    transfer strategy's measured mean on it (y), a colour per strategy — does the score
    order the source models as training did? `wide_scores`: one row per source model,
    one column per score; `outcomes`: strategy, source_index, mean."""
    names = [name for name in wide_scores.columns if wide_scores[name].notna().any()]
    columns = min(4, max(1, len(names)))
    rows = -(-max(1, len(names)) // columns)
    fig = Figure(figsize=(3.1 * columns, 2.7 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    strategies = list(dict.fromkeys(outcomes["strategy"]))
    colours = {strategy: f"C{index % 10}" for index, strategy in enumerate(strategies)}
    for ax, name in zip(axes, names):
        for strategy in strategies:
            measured = outcomes[outcomes["strategy"] == strategy].set_index("source_index")["mean"]
            both = wide_scores.index.intersection(measured.index)
            ax.scatter(wide_scores.loc[both, name], measured.loc[both], s=18, color=colours[strategy], label=strategy)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if names:
        axes[0].set_ylabel(f"mean {metric_name(metric)}", fontsize=8)
        axes[0].legend(fontsize=7, loc="best")
    # a fixed layout: `tight_layout` over 8 panels cost a third of the figure's time
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.09 / rows, top=1 - 0.07 / rows, wspace=0.28, hspace=0.45)
    return _save(fig, path, tight=False)


def _save(fig, path: Path | None, tight: bool = True) -> Path | Figure:
    """Write `fig` to `path` as PNG (atomically); with no path, the figure itself, so a
    caller (or a test) can read what was drawn. `tight`: lay out with `tight_layout`
    (figures made of subfigures lay themselves out)."""
    if tight:
        fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=_DPI, format="png")
    return path


def sweep_figure(table: pd.DataFrame, axes: dict, path: Path, metric_label: str) -> Path:
    """Left: each strategy's mean score with its 95% interval against the swept value
    (standalone in black); right: the difference to standalone with its 95% interval, a
    filled marker where Holm-corrected p < 0.05. One numeric axis is drawn to scale (log
    for `n_train` or a wide range); several axes are drawn point by point."""
    fig = Figure(figsize=(12, 4.4))
    score_ax, diff_ax = fig.subplots(1, 2)
    names = list(axes)
    numeric = len(names) == 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in axes[names[0]])
    if numeric:
        values = [float(v) for v in axes[names[0]]]
        x_of = {point: float(group.iloc[0][names[0]]) for point, group in table.groupby("point")}
        log = _log_axis(names[0], values)
        label = names[0]
    else:
        x_of = {point: float(point) for point in table["point"].unique()}
        log, label = False, "sweep point"
    for strategy in dict.fromkeys(table["strategy"]):
        rows = table[table["strategy"] == strategy].sort_values("point")
        x = np.array([x_of[p] for p in rows["point"]])
        baseline = strategy == "standalone"
        line = _score_line(score_ax, x, rows, strategy)
        if baseline:
            continue
        diff = rows["diff"].to_numpy(float)
        errors = np.vstack([diff - rows["diff_ci_low"].to_numpy(float), rows["diff_ci_high"].to_numpy(float) - diff])
        diff_ax.errorbar(x, diff, yerr=errors, color=line.get_color(), capsize=3, marker=None, linestyle="-")
        significant = rows["p_holm"].to_numpy(float) < 0.05
        diff_ax.scatter(x[significant], diff[significant], color=line.get_color(), zorder=3, s=36)
        diff_ax.scatter(x[~significant], diff[~significant], facecolors="white", edgecolors=line.get_color(),
                        zorder=3, s=36)
    diff_ax.axhline(0, color="black", linewidth=1)
    for ax in (score_ax, diff_ax):
        ax.set_xlabel(label)
        if log:
            _log_ticks(ax, values)
        if not numeric:
            points = sorted(x_of)
            ax.set_xticks([x_of[p] for p in points])
            ax.set_xticklabels([_point_label(table, p, names) for p in points], rotation=30, ha="right", fontsize=7)
    score_ax.set_ylabel(f"{metric_label} (mean, 95% interval)")
    diff_ax.set_ylabel("Δ vs standalone (95% interval; filled: Holm p < 0.05)")
    score_ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _score_line(ax, x, rows: pd.DataFrame, strategy: str):
    """A strategy's mean score against `x` with its 95% band; standalone in black."""
    style = {"color": "black", "linewidth": 2.2} if strategy == "standalone" else {}
    line, = ax.plot(x, rows["mean"], marker="o", label=strategy, **style)
    ax.fill_between(x, rows["ci_low"], rows["ci_high"], alpha=0.15, color=line.get_color())
    return line


def _log_ticks(ax, values) -> None:
    """A log axis labelled with the swept values themselves (10, 20, 45), not powers of ten."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ticks = sorted({float(v) for v in values})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=8)


def _log_axis(axis: str, values) -> bool:
    """A log axis for `n_train` or a range over a factor of ten."""
    return axis.endswith("n_train") or (min(values) > 0 and max(values) / min(values) >= 10)


def _point_label(table: pd.DataFrame, point: int, names: list[str]) -> str:
    row = table[table["point"] == point].iloc[0]
    return ", ".join(f"{name.split('.')[-1]}={row[name]}" for name in names)


def matrix_heatmaps(table: pd.DataFrame, labels: list[str], path: Path) -> Path:
    """One heatmap per strategy: Δ vs the target's standalone for every ordered pair (rows
    source, columns target), the value in each cell, `*` where Holm p < 0.05 over the matrix."""
    strategies = [s for s in dict.fromkeys(table["strategy"]) if s != "standalone"]
    per_row = min(3, max(1, len(strategies)))
    rows = -(-len(strategies) // per_row)
    size = 1.2 + 0.55 * len(labels)
    fig = Figure(figsize=(size * per_row + 1, size * rows + 0.6))
    axes = fig.subplots(rows, per_row, squeeze=False)
    limit = float(np.nanmax(np.abs(table.loc[table["strategy"] != "standalone", "diff"]))) if strategies else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    for index in range(rows * per_row):
        ax = axes[index // per_row][index % per_row]
        if index >= len(strategies):
            ax.set_visible(False)
            continue
        strategy = strategies[index]
        grid = np.full((len(labels), len(labels)), np.nan)
        marks = np.zeros_like(grid, dtype=bool)
        for row in table[table["strategy"] == strategy].itertuples(index=False):
            i, j = labels.index(row.source), labels.index(row.target)
            grid[i, j] = row.diff
            marks[i, j] = row.p_matrix < 0.05
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.2f}{'*' if marks[i, j] else ''}", ha="center", va="center",
                            fontsize=7)
        ax.set_xticks(range(len(labels)))
        ax.set_yticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_title(strategy, fontsize=9)
        ax.set_xlabel("target task", fontsize=8)
        ax.set_ylabel("source task", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8, label="Δ vs standalone")
    fig.tight_layout()
    return _save(fig, path)


MAX_PANELS = 12


def sweep_dimension_figure(table: pd.DataFrame, axes: dict, axis: str, path: Path, metric_label: str) -> Path:
    """One swept dimension of a multi-dimensional sweep: the score against `axis` per
    strategy (95% bands), one panel per combination of the other dimensions' values."""
    others = [name for name in axes if name != axis]
    groups = list(table.groupby(others, sort=False)) if others else [((), table)]
    groups = groups[:MAX_PANELS]
    per_row = min(3, len(groups))
    rows = -(-len(groups) // per_row)
    fig = Figure(figsize=(4.6 * per_row, 3.6 * rows))
    panels = fig.subplots(rows, per_row, squeeze=False, sharey=True)
    values = axes[axis]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    for index, (key, group) in enumerate(groups):
        ax = panels[index // per_row][index % per_row]
        key = key if isinstance(key, tuple) else (key,)
        for strategy in dict.fromkeys(group["strategy"]):
            rows_ = group[group["strategy"] == strategy]
            order = [values.index(v) for v in rows_[axis]]
            rows_ = rows_.iloc[np.argsort(order)]
            x = rows_[axis].astype(float).to_numpy() if numeric else np.sort(order)
            _score_line(ax, x, rows_, strategy)
        if numeric and _log_axis(axis, values):
            _log_ticks(ax, values)
        if not numeric:
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels([str(v) for v in values], fontsize=8)
        ax.set_title(", ".join(f"{name.split('.')[-1]}={value}" for name, value in zip(others, key)), fontsize=9)
        ax.set_xlabel(axis)
    for index in range(len(groups), rows * per_row):
        panels[index // per_row][index % per_row].set_visible(False)
    panels[0][0].set_ylabel(f"{metric_label} (mean, 95% interval)")
    panels[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
