"""The figures draw the numbers they are given: every line, box, dot and heatmap cell is read
back from the figure's artists and compared with the table it was drawn from; shared
scales (one y-range per metric, an R² axis stopping at −1) and metric names as a reader
writes them."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from transferlab import plots


def _curves(strategy: str, values: np.ndarray) -> pd.DataFrame:
    epochs = np.arange(1, len(values) + 1)
    frame = {"strategy": strategy, "epoch": epochs}
    for name in ("loss", "r2", "val_loss", "val_r2"):
        frame[f"{name}_mean"] = values
        frame[f"{name}_std"] = np.full(len(values), 0.01)
    return pd.DataFrame(frame)


def test_every_panel_of_a_metric_shares_one_range_and_r2_stops_at_minus_one():
    curves = pd.concat([_curves("standalone", np.linspace(0.70, 0.95, 5)), _curves("transfer", np.linspace(-3, 1, 5))])
    low, high = plots._curve_range(curves, ["r2", "val_r2"], floor=-1.0)
    assert low < -1.0 + 0.1 and low >= -1.0 - 0.1 and 1.0 < high < 1.2
    low, high = plots._curve_range(curves[curves["strategy"] == "standalone"], ["r2", "val_r2"])
    assert 0.65 < low < 0.70 and 0.95 < high < 1.0


def test_metric_names_are_written_as_readers_write_them():
    assert [plots.metric_name(m) for m in ("test_r2", "mae", "val_accuracy", "train_loss", "r2")] == [
        "test R²", "MAE", "test accuracy", "train loss", "R²"]


def test_the_comparison_figures_are_drawn(tmp_path):
    curves = pd.concat([_curves(s, np.linspace(0.2, v, 20)) for s, v in (("standalone", 0.9), ("a", 0.8), ("b", 0.7))])
    curves = curves.rename(columns=lambda c: c.replace("r2", "accuracy"))
    compared = imread(plots.comparison_curves(curves, tmp_path / "c.png", "accuracy"))
    rows = [{"strategy": s, "source_index": i, "n": 3, "mean": 0.5 + 0.05 * i, "std": 0.01}
            for s in ("a", "b") for i in range(4)]
    heatmap = imread(plots.per_source_heatmap(pd.DataFrame(rows), tmp_path / "h.png", "test_accuracy"))
    runs = pd.DataFrame([{"role": "target", "status": "done", "strategy": f"s{k}" if k else "standalone",
                          "source_index": i % 3 if k else -1, "test_accuracy": 0.5 + 0.01 * (i + k)}
                         for k in range(9) for i in range(6)])
    boxes = imread(plots.score_boxplot(runs, tmp_path / "b.png", "test_accuracy"))
    assert boxes.shape[0] > boxes.shape[1] * 0.6  # nine strategies: boxes on their side, the figure grows tall
    for image in (compared, heatmap, boxes):
        assert image.std() > 0.05  # something was drawn


def _score_curves():
    return pd.concat([_curves(s, np.linspace(0.2, v, 20)) for s, v in (("standalone", 0.9), ("a", 0.8), ("b", 0.7))])


def test_learning_curves_draw_each_strategys_mean_train_and_test_curves():
    curves = _score_curves()
    curves["val_r2_mean"] = curves["r2_mean"] - 0.05  # the test curve differs from the train curve
    fig = plots.learning_curves(curves, None, "r2")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 * 3  # a loss and a score panel per strategy
    for index, strategy in enumerate(("standalone", "a", "b")):
        table = curves[curves["strategy"] == strategy]
        loss_panel, score_panel = panels[index], panels[3 + index]  # one row of panels per metric
        assert loss_panel.get_title() == strategy
        for panel, metric in ((loss_panel, "loss"), (score_panel, "r2")):
            train, test = panel.get_lines()
            np.testing.assert_allclose(train.get_ydata(), table[f"{metric}_mean"])
            np.testing.assert_allclose(test.get_ydata(), table[f"val_{metric}_mean"])
            np.testing.assert_allclose(train.get_xdata(), table["epoch"])
        assert score_panel.get_ylim() == panels[3].get_ylim()  # one range per metric over the panels


def test_the_comparison_figure_draws_every_strategys_mean_test_curve():
    curves = _score_curves().rename(columns=lambda c: c.replace("r2", "accuracy"))
    (ax,) = plots.comparison_curves(curves, None, "accuracy").axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"standalone", "a", "b"}
    for strategy, line in lines.items():
        np.testing.assert_allclose(line.get_ydata(), curves.loc[curves["strategy"] == strategy, "val_accuracy_mean"])
    assert lines["standalone"].get_color() == "black"
    assert ax.get_ylabel().startswith("test accuracy")


def test_the_boxplot_draws_each_strategys_runs_and_each_source_models_mean():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([{"role": "target", "status": "done", "strategy": s, "source_index": i % 3 if s != "standalone"
                          else -1, "test_accuracy": rng.uniform(0.5, 0.9)}
                         for s in ("standalone", "a", "b") for i in range(12)])
    (ax,) = plots.score_boxplot(runs, None, "test_accuracy").axes
    medians = [line for line in ax.get_lines() if line.get_color() == "tab:orange" and len(line.get_xdata()) == 2]
    for median, strategy in zip(medians, ("standalone", "a", "b")):
        expected = np.median(runs.loc[runs["strategy"] == strategy, "test_accuracy"])
        assert median.get_ydata()[0] == pytest.approx(expected)
    baseline = np.mean(runs.loc[runs["strategy"] == "standalone", "test_accuracy"])
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed and dashed[0].get_ydata()[0] == pytest.approx(baseline)
    dots = [collection.get_offsets()[:, 1] for collection in ax.collections]
    expected_dots = [runs[runs["strategy"] == s].groupby("source_index")["test_accuracy"].mean().to_numpy()
                     for s in ("a", "b")]
    np.testing.assert_allclose(np.concatenate(dots), np.concatenate(expected_dots))


def test_the_per_source_heatmap_holds_each_strategys_mean_per_source_model():
    rows = [{"strategy": s, "source_index": i, "n": 3, "mean": 0.5 + 0.05 * i + (0.1 if s == "b" else 0), "std": 0.01}
            for s in ("a", "b") for i in range(4)]
    fig = plots.per_source_heatmap(pd.DataFrame(rows), None, "test_accuracy")
    ax = fig.axes[0]
    grid = ax.get_images()[0].get_array()
    np.testing.assert_allclose(grid, [[0.5, 0.55, 0.6, 0.65], [0.6, 0.65, 0.7, 0.75]])
    assert [t.get_text() for t in ax.texts][:4] == ["0.50", "0.55", "0.60", "0.65"]
    assert fig.axes[1].get_ylabel() == "mean test accuracy"


def test_the_matrix_heatmaps_hold_each_pairs_difference():
    labels = ["t1", "t2", "t3"]
    rows = [{"strategy": s, "source": a, "target": b, "diff": d, "p_matrix": p}
            for s, d0 in (("standalone", 0.0), ("transfer", 0.1)) for (a, b), d, p in
            zip([(a, b) for a in labels for b in labels if a != b], np.linspace(-0.2, 0.3, 6) + d0, [0.01, 0.5] * 3)]
    fig = plots.matrix_heatmaps(pd.DataFrame(rows), labels, None)
    ax = fig.axes[0]
    grid = ax.get_images()[0].get_array()
    transfer = pd.DataFrame(rows).query("strategy == 'transfer'")
    for row in transfer.itertuples():
        assert grid[labels.index(row.source), labels.index(row.target)] == pytest.approx(row.diff)
    assert np.ma.is_masked(grid[0, 0]) or np.isnan(grid[0, 0])  # no pair of a task with itself
    assert sum(t.get_text().endswith("*") for t in ax.texts) == 3  # Holm p < 0.05 marked
