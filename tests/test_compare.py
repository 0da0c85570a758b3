"""`transferlab compare`: two small studies side by side, against values computed directly
from their databases (per-source means in SQL, SciPy's Welch test, Holm)."""

import sqlite3

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from test_bad_input import _assert_one_line, _write, invoke
from transferlab import stats

STUDY = {
    "name": "lr", "seed": 5, "repeats": 3, "source_repeats": 3,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
    "training": {"epochs": 4},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
}


def _units(folder, strategy: str) -> np.ndarray:
    query = ("SELECT r.source_index, avg(f.value) FROM runs r JOIN final_metrics f ON f.run_id = r.id "
             "WHERE r.role = 'target' AND r.strategy = ? AND f.split = 'test' AND f.name = 'accuracy' "
             "GROUP BY r.source_index" if strategy != "standalone" else
             "SELECT r.id, f.value FROM runs r JOIN final_metrics f ON f.run_id = r.id "
             "WHERE r.role = 'target' AND r.strategy = ? AND f.split = 'test' AND f.name = 'accuracy'")
    with sqlite3.connect(folder / "results.sqlite") as db:
        return np.array([value for _, value in db.execute(query, (strategy,)).fetchall()])


def test_compare_two_studies_against_their_databases(tmp_path):
    a = _write(tmp_path, STUDY, name="a.toml")
    b = _write(tmp_path, {**STUDY, "name": "lr-high", "training": {"epochs": 4, "learning_rate": 0.05}}, name="b.toml")
    for study_file, out in ((a, "out-a"), (b, "out-b")):
        code, _, stderr = invoke("run", study_file, "--out", tmp_path / out, "--quiet")
        assert code == 0, stderr
    code, stdout, stderr = invoke("compare", tmp_path / "out-a", tmp_path / "out-b", "--out", tmp_path / "c.csv")
    assert code == 0, stderr
    assert "configurations differ in: name: \"lr\" → \"lr-high\"; training.learning_rate: 0.01 → 0.05" in \
        stdout.replace("\n", " ")
    table = pd.read_csv(tmp_path / "c.csv")
    assert list(table["strategy"]) == ["standalone", "transfer freeze=1"]
    p_values = []
    for row in table.itertuples(index=False):
        units_a, units_b = _units(tmp_path / "out-a", row.strategy), _units(tmp_path / "out-b", row.strategy)
        assert (row.units_a, row.units_b) == (len(units_a), len(units_b))
        assert row.mean_a == pytest.approx(units_a.mean(), abs=1e-12)
        assert row.diff == pytest.approx(units_b.mean() - units_a.mean(), abs=1e-12)
        test = scipy_stats.ttest_ind(units_b, units_a, equal_var=False)
        assert row.p_value == pytest.approx(test.pvalue, rel=1e-9)
        assert row.diff_ci_low == pytest.approx(test.confidence_interval(0.95).low, rel=1e-9)
        p_values.append(test.pvalue)
    np.testing.assert_allclose(table["p_holm"], stats.holm(p_values), rtol=1e-12)


def test_compare_refuses_folders_without_a_study(tmp_path):
    code, _, stderr = invoke("compare", tmp_path / "nothing", tmp_path / "nothing-either")
    _assert_one_line(code, stderr, f"error: {tmp_path / 'nothing'}: no results.sqlite here; run a study into this "
                                   "folder first")
