"""Statistics against SciPy computed independently here, and Holm against a hand example."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from transferlab import stats


def _runs(rng):
    rows = []
    for repeat in range(30):
        rows.append(("target", "standalone", -1, repeat, rng.normal(0.78, 0.1)))
    for source in range(5):
        offset = rng.normal(0, 0.05)
        for repeat in range(30):
            rows.append(("target", "transfer freeze=0", source, repeat, 0.80 + offset + rng.normal(0, 0.01)))
    frame = pd.DataFrame(rows, columns=["role", "strategy", "source_index", "repeat", "test_accuracy"])
    frame["status"] = "done"
    return frame


def test_summary_uses_source_models_as_units_and_matches_scipy():
    runs = _runs(np.random.default_rng(0))
    table = stats.summary_table(runs, "test_accuracy").set_index("strategy")
    base = runs.loc[runs.strategy == "standalone", "test_accuracy"].to_numpy()
    transfer = runs[runs.strategy == "transfer freeze=0"]
    source_means = transfer.groupby("source_index")["test_accuracy"].mean().to_numpy()

    row = table.loc["standalone"]
    assert row.n == 30 and row.unit == "run"
    assert row["mean"] == pytest.approx(base.mean()) and row["std"] == pytest.approx(np.std(base, ddof=1))
    low, high = scipy_stats.t.interval(0.95, 29, loc=base.mean(), scale=scipy_stats.sem(base))
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high))

    row = table.loc["transfer freeze=0"]
    assert row.n == 150 and row.sources == 5 and row.unit == "source model"
    low, high = scipy_stats.t.interval(0.95, 4, loc=source_means.mean(), scale=scipy_stats.sem(source_means))
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
    welch = scipy_stats.ttest_ind(source_means, base, equal_var=False)
    assert row.p_value == pytest.approx(welch.pvalue)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert row.between_source_std == pytest.approx(np.std(source_means, ddof=1))
    # with 5 source models the interval is far wider than a naive one over 150 runs
    naive = scipy_stats.t.interval(0.95, 149, loc=transfer.test_accuracy.mean(), scale=scipy_stats.sem(transfer.test_accuracy))
    assert row.ci_high - row.ci_low > 2 * (naive[1] - naive[0])


def test_holm_matches_a_hand_computed_example():
    # p sorted: 0.01 (×3 = 0.03), 0.02 (×2 = 0.04), 0.04 (×1 = 0.04)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = stats.holm([float("nan"), 0.01])
    assert np.isnan(adjusted[0]) and adjusted[1] == pytest.approx(0.01)


def test_per_source_table_and_display():
    runs = _runs(np.random.default_rng(1))
    per_source = stats.per_source_table(runs, "test_accuracy")
    assert list(per_source.source_index) == [0, 1, 2, 3, 4] and set(per_source.n) == {30}
    shown = stats.display_table(stats.summary_table(runs, "test_accuracy"))
    assert shown.loc[1, "n"] == "150 (5 src)"
    assert shown.loc[0, "mean (std)"].count("(") == 1


def test_nearly_identical_groups_give_no_scipy_precision_warning():
    """SciPy warns of precision loss for near-identical values; the table shows n and std."""
    import warnings

    values = {"standalone": [0.8, 0.8 + 1e-15, 0.8], "transfer": [0.7, 0.7, 0.7 + 1e-15]}
    runs = pd.DataFrame([
        dict(role="target", status="done", strategy=name, source_index=-1 if name == "standalone" else 0,
             repeat=i, test_accuracy=v)
        for name, vals in values.items() for i, v in enumerate(vals)
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = stats.summary_table(runs, "test_accuracy")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert list(table["n"]) == [3, 3]
