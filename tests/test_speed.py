"""Learning-speed measures: the database's per-run values equal NumPy on the stored curves,
censored runs are counted and entered as epochs + 1, and every measure gets the final
score's statistics (checked against SciPy)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from transferlab import speed, study
from transferlab.loading import study_from_dict
from transferlab.reports import build_report
from transferlab import curves as curve_arrays
from transferlab.store import Store


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    raw = {
        "name": "speed", "seed": 3, "repeats": 3, "source_repeats": 2,
        "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
        "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
        "training": {"epochs": 4},
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 0}, {"name": "transfer", "freeze": 2}],
    }
    folder = tmp_path_factory.mktemp("speed") / "out"
    study.run_study(study_from_dict(raw), folder)
    return folder


def _reference(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per target run, by hand from the stored curves."""
    rows = []
    for (strategy, source, repeat), run in curves[curves.role == "target"].groupby(["strategy", "source_index", "repeat"]):
        values = run.sort_values("epoch")["val_accuracy"].to_numpy()
        reached = np.flatnonzero(values >= threshold)
        rows.append({"strategy": strategy, "source_index": source, "repeat": repeat, "jumpstart": values[0],
                     "auc": values.mean(), "reached": reached[0] + 1 if len(reached) else np.nan})
    return pd.DataFrame(rows)


def test_measures_equal_numpy_on_the_stored_curves(finished):
    with Store.in_folder(finished, readonly=True) as store:
        study_id, _ = store.stored_plan()
        runs = store.runs_frame(study_id)
        curves = store.curves_frame(study_id)
        threshold = float(np.median(curves.loc[curves.role == "target", "val_accuracy"]))
        measured = store.learning_measures(study_id, "forward", "accuracy", threshold)
    got = runs.merge(measured, on="run_id")[["strategy", "source_index", "repeat", "jumpstart", "auc", "reached"]]
    expected = _reference(curves, threshold)
    merged = got.merge(expected, on=["strategy", "source_index", "repeat"], suffixes=("", "_ref"))
    assert len(merged) == len(expected) == 3 + 2 * 2 * 3
    np.testing.assert_allclose(merged["jumpstart"], merged["jumpstart_ref"], rtol=1e-6)
    np.testing.assert_allclose(merged["auc"], merged["auc_ref"], rtol=1e-6)
    np.testing.assert_array_equal(merged["reached"].to_numpy(float), merged["reached_ref"].to_numpy(float))
    assert merged["reached"].isna().any() and merged["reached"].notna().any()  # some censored, some not

    table = speed.with_measures(runs, measured, 4, "test_accuracy")
    done = table[(table.role == "target") & (table.status == "done")]
    censored = done["reached"].isna()
    assert (done.loc[censored, "time_to_threshold"] == 5).all() and done["censored"].sum() == censored.sum()
    tables = speed.speed_tables(table)
    time = tables["time_to_threshold"].set_index("strategy")
    for strategy, group in done.groupby("strategy"):
        assert time.loc[strategy, "censored"] == group["censored"].sum()
        assert time.loc[strategy, "mean"] == pytest.approx(group["time_to_threshold"].mean())
    # a transfer row's statistics: per-source-model means as units, Welch against standalone's runs
    auc = tables["auc"].set_index("strategy")
    units = done[done.strategy == "transfer freeze=0"].groupby("source_index")["auc"].mean()
    base = done[done.strategy == "standalone"]["auc"]
    welch = scipy_stats.ttest_ind(units, base, equal_var=False)
    assert auc.loc["transfer freeze=0", "p_value"] == pytest.approx(welch.pvalue)
    assert auc.loc["transfer freeze=0", "diff"] == pytest.approx(units.mean() - base.mean())


def test_the_report_shows_learning_speed_with_its_threshold(finished):
    outputs = build_report(finished)
    forward = outputs.directions[0]
    standalone_final = forward.summary.set_index("strategy").loc["standalone", "mean"]
    assert forward.threshold == pytest.approx(0.95 * standalone_final)
    assert set(forward.speed) == set(speed.MEASURES)
    final = forward.speed["final"].set_index("strategy")["mean"]
    np.testing.assert_allclose(final, forward.summary.set_index("strategy")["mean"])  # the asymptote is the final score
    html = (finished / "report.html").read_text()
    assert "How fast does each strategy learn?" in html and "epochs to threshold" in html
    csv = pd.read_csv(finished / "learning_speed.csv")
    assert set(csv["measure"]) == set(speed.MEASURES)
    given = build_report(finished, threshold=0.2).directions[0]  # `transferlab report --threshold 0.2`
    assert given.threshold == 0.2 and given.threshold_source == "given to the report"
    assert given.speed["time_to_threshold"]["censored"].sum() <= forward.speed["time_to_threshold"]["censored"].sum()


def test_measures_of_hand_made_curves_including_censored_runs(finished, tmp_path):
    """Curves written by hand into a copy of the database: the measures equal NumPy's."""
    import shutil
    import sqlite3

    shutil.copytree(finished, tmp_path / "copy")
    db = sqlite3.connect(tmp_path / "copy" / "results.sqlite")
    runs = [row[0] for row in db.execute("SELECT id FROM runs WHERE role = 'target' ORDER BY id")]
    curves = {run: np.round(np.linspace(0.1, 0.2 + 0.1 * (i % 7), 4), 4) for i, run in enumerate(runs)}
    curves[runs[0]] = np.array([0.3, 0.3, 0.3, 0.3])  # never reaches the threshold: censored
    for run, values in curves.items():  # the stored arrays' test accuracy row, rewritten
        names_json, epochs, blob = db.execute('SELECT names, epochs, "values" FROM curves WHERE run_id = ?',
                                              (run,)).fetchone()
        names, stored = curve_arrays.decode(names_json, epochs, blob)
        stored = stored.copy()
        stored[names.index("val_accuracy")] = values
        db.execute('UPDATE curves SET "values" = ? WHERE run_id = ?', (stored.astype("<f4").tobytes(), run))
    db.commit()
    db.close()
    threshold = 0.45
    with Store.in_folder(tmp_path / "copy", readonly=True) as store:
        study_id, _ = store.stored_plan()
        measured = store.learning_measures(study_id, "forward", "accuracy", threshold).set_index("run_id")
        frame = store.runs_frame(study_id)
    for run, values in curves.items():
        reached = np.flatnonzero(values >= threshold)
        assert measured.loc[run, "jumpstart"] == pytest.approx(values[0], rel=1e-6)  # stored as float32
        assert measured.loc[run, "auc"] == pytest.approx(values.astype(np.float32).astype(float).mean())
        if len(reached):
            assert measured.loc[run, "reached"] == reached[0] + 1
        else:
            assert np.isnan(measured.loc[run, "reached"])
    table = speed.with_measures(frame, measured.reset_index(), 4, "test_accuracy").set_index("run_id")
    assert table.loc[runs[0], "censored"] and table.loc[runs[0], "time_to_threshold"] == 5


def test_results_of_a_plain_study(finished):
    import transferlab

    tables = transferlab.results(finished)
    outputs = build_report(finished)
    assert tables["points"].empty and "point" not in tables["runs"]
    np.testing.assert_allclose(tables["summary"]["mean"], outputs.summary["mean"])
    speed_csv = pd.read_csv(finished / "learning_speed.csv")
    np.testing.assert_allclose(tables["learning_speed"]["mean"], speed_csv["mean"])
    assert set(tables["curves"]["name"]) == {"loss", "accuracy"} and set(tables["curves"]["split"]) == {"train", "test"}


def test_the_threshold_comes_from_the_report_then_the_study_file_then_standalone():
    summary = pd.DataFrame([{"strategy": "standalone", "mean": 0.8}, {"strategy": "transfer freeze=0", "mean": 0.9}])
    assert speed.threshold_for(0.5, {"report": {"threshold": 0.6}}, summary) == (0.5, "given to the report")
    assert speed.threshold_for(None, {"report": {"threshold": 0.6}}, summary) == (0.6, "the study's [report] threshold")
    assert speed.threshold_for(None, {}, summary) == (pytest.approx(0.76), "95% of standalone's final mean")
    assert speed.threshold_for(None, {}, summary.iloc[1:])[0] is None
