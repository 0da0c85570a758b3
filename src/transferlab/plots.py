"""Figures: the two tasks, learning curves per strategy, test accuracy per strategy.

Each function takes plain tables and a path and writes one PNG; nothing else.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transferlab.tasks import Task  # noqa: E402

_DPI = 110


def tasks_scatter(tasks: dict[str, Task], path: Path) -> Path:
    """The tutorial's first figure: each problem's points coloured by class."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.2), squeeze=False)
    for ax, (title, task) in zip(axes[0], tasks.items()):
        x = np.concatenate([task.x_train, task.x_test])
        labels = np.concatenate([task.labels_train, task.labels_test])
        for label in np.unique(labels):
            points = x[labels == label]
            ax.scatter(points[:, 0], points[:, 1], s=9, alpha=0.7, label=f"class {label}")
        ax.set_title(title)
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
        ax.legend(fontsize=8, markerscale=1.5)
    return _save(fig, path)


def learning_curves(mean_curves: pd.DataFrame, path: Path) -> Path:
    """Loss and accuracy per epoch for each strategy: mean over runs with a ±1 std band."""
    strategies = list(dict.fromkeys(mean_curves["strategy"]))
    fig, axes = plt.subplots(2, len(strategies), figsize=(3.6 * len(strategies), 6), squeeze=False, sharey="row")
    for column, strategy in enumerate(strategies):
        table = mean_curves[mean_curves["strategy"] == strategy]
        for row, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][column]
            for name, label in ((metric, "train"), (f"val_{metric}", "test")):
                mean = table[f"{name}_mean"].to_numpy()
                std = np.nan_to_num(table[f"{name}_std"].to_numpy())
                ax.plot(table["epoch"], mean, label=label)
                ax.fill_between(table["epoch"], mean - std, mean + std, alpha=0.25)
            ax.set_title(strategy if row == 0 else "", fontsize=10)
            ax.set_xlabel("epoch" if row == 1 else "")
            ax.set_ylabel(metric if column == 0 else "")
            ax.grid(alpha=0.3)
        axes[0][column].legend(fontsize=8)
    return _save(fig, path)


def accuracy_boxplot(runs: pd.DataFrame, path: Path, metric: str = "test_accuracy") -> Path:
    """The tutorial's box-and-whisker plot; with several source models, each source model's
    mean is drawn as a dot over its strategy's box."""
    runs = runs[(runs["role"] == "target") & (runs["status"] == "done")]
    strategies = list(dict.fromkeys(runs["strategy"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.7 * len(strategies)), 4.5))
    data = [runs.loc[runs["strategy"] == s, metric].to_numpy() for s in strategies]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(strategies) + 1), strategies, rotation=15)
    for position, strategy in enumerate(strategies, start=1):
        group = runs[runs["strategy"] == strategy]
        if group["source_index"].nunique() > 1:
            means = group.groupby("source_index")[metric].mean().to_numpy()
            jitter = np.linspace(-0.12, 0.12, len(means))
            ax.scatter(position + jitter, means, s=16, color="tab:red", zorder=3,
                       label="mean per source model" if position == 1 or "mean per source model"
                       not in ax.get_legend_handles_labels()[1] else None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path
