"""The figures' shared scales and names: one y-range per metric over every panel (an R²
axis stopping at −1), metric names as a reader writes them, and each comparison figure
written for a study with several source models."""

import numpy as np
import pandas as pd
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
    boxes = imread(plots.accuracy_boxplot(runs, tmp_path / "b.png"))
    assert boxes.shape[0] > boxes.shape[1] * 0.6  # nine strategies: boxes on their side, the figure grows tall
    for image in (compared, heatmap, boxes):
        assert image.std() > 0.05  # something was drawn
