"""Sweeps: points expand as grid or zip, each point is a full study whose numbers do not
depend on the other points, an n_train sweep tests every point on the same rows, the whole
sweep lives in one database, resumes after an interruption and reports the sample-efficiency
table, figure and headline; bad sweep tables are one line."""

import sqlite3

import numpy as np
import pandas as pd
import pytest

from test_bad_input import _assert_one_line, _folder_digest, _write, invoke
from transferlab import study
from transferlab.errors import StudyFileError
from transferlab.api import load_study
from transferlab.store import Store
from transferlab.sweep import expand, sweep_from_dict

BASE = {
    "name": "sweep", "seed": 4, "repeats": 2, "source_repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 200},
    "training": {"epochs": 3},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
}


def _sweep(**axes) -> dict:
    return {**BASE, "sweep": {path.replace("__", "."): values for path, values in axes.items()}}


def test_grid_and_zip_expand_as_documented():
    axes = {"a": [1, 2], "b": ["x", "y", "z"]}
    assert expand(axes, "grid") == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert expand({"a": [1, 2], "b": [3, 4]}, "zip") == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(StudyFileError, match=r"zip needs lists of one length \(a: 2, b: 3\)"):
        expand(axes, "zip")


@pytest.mark.parametrize("table, message", [
    ({"mode": "diagonal", "seed": [1]}, 'sweep.mode: \'diagonal\' is not a mode; use "grid" or "zip"'),
    ({"trainingg.epochs": [1, 2]}, 'sweep."trainingg.epochs": not a field a sweep can vary'),
    ({"name": ["a", "b"]}, 'sweep."name": not a field a sweep can vary'),
    ({"training.epochs": 5}, 'sweep."training.epochs": give a list of values, e.g. [10, 50, 200]'),
    ({"training.epochs": [2, 2]}, 'sweep."training.epochs": a value is listed twice'),
    ({"target.n_train": [50, 500]},
     ("s.toml (sweep point target.n_train=50): target.train_part: 500 leaves no test rows: the task has 200 rows "
      "(after any selection); lower it (a sweep over n_train sets it to the largest n_train)")),
    ({}, "sweep: give at least one field path and its values"),
])
def test_bad_sweep_tables_are_one_line(table, message):
    with pytest.raises(StudyFileError) as caught:
        sweep_from_dict({**BASE, "sweep": table}, source="s.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_n_train_sweep_tests_every_point_on_the_same_rows():
    sweep = sweep_from_dict(_sweep(target__n_train=[20, 40, 80]))
    targets = [study.plan_study(point.config).directions[0].target_task for point in sweep.points]
    for task in targets:
        np.testing.assert_array_equal(task.x_test, targets[0].x_test)
    assert [len(t.x_train) for t in targets] == [20, 40, 80] and len(targets[0].x_test) == 120
    np.testing.assert_array_equal(targets[0].x_train, targets[2].x_train[:20])  # the first rows of one part


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A three-point n_train sweep run through the CLI."""
    root = tmp_path_factory.mktemp("sweep")
    study_file = _write(root, _sweep(target__n_train=[20, 40, 80]), name="sweep.toml")
    code, stdout, stderr = invoke("run", study_file, "--out", root / "out")
    assert code == 0, stderr
    return root, study_file, stdout


def test_a_sweep_runs_into_one_database_and_reports(swept):
    root, study_file, stdout = swept
    out = root / "out"
    assert "mean test accuracy and Δ vs standalone by target.n_train" in stdout and "standalone" in stdout
    assert "largest target.n_train at which each strategy beats standalone significantly" in stdout
    with Store.in_folder(out, readonly=True) as store:
        points = store.points()
        assert [p["values"] for p in points] == [{"target.n_train": n} for n in (20, 40, 80)]
        plans = [store.stored_plan(p["study_id"])[1] for p in points]
    tests = {plan.directions[0].target_task.x_test.tobytes() for plan in plans}
    assert len(tests) == 1  # the same test rows at every point
    # the source task is the same at every point: its models are trained once and adopted by the others
    assert "reused 4 runs of other points" in stdout.replace("\n", " ")
    sources = [_point_results(out, n)[lambda t: t.role == "source"].reset_index(drop=True) for n in (20, 40, 80)]
    for other in sources[1:]:
        pd.testing.assert_frame_equal(other, sources[0])
    assert len({tuple(sorted(r["file"] for r in Store.in_folder(out, readonly=True).source_models(p["study_id"])))
                for p in points}) == 1  # one set of .keras files
    summary = pd.read_csv(out / "sweep_summary.csv")
    assert len(summary) == 3 * 2 and set(summary["target.n_train"]) == {20, 40, 80}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Mean test accuracy per target.n_train" in html
    code, stdout, stderr = invoke("run", study_file, "--out", out)  # all done: it resumes
    assert code == 0, stderr and "resumed" in stdout
    code, _, stderr = invoke("report", out)
    assert code == 0, stderr


def _point_results(folder, n_train) -> pd.DataFrame:
    with Store.in_folder(folder, readonly=True) as store:
        point = next(p for p in store.points() if p["values"] == {"target.n_train": n_train})
        runs = store.runs_frame(point["study_id"])
    return runs[["direction", "role", "strategy", "source_index", "repeat", "seed", "test_accuracy"]].reset_index(drop=True)


class _Interrupting:
    """The local executor, stopped (as by Ctrl-C) after `shards` finished shards."""

    def __init__(self, shards: int):
        from transferlab.executors import LocalExecutor

        self.inner, self.left = LocalExecutor(), shards

    def map(self, jobs):
        for item in self.inner.map(jobs):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            yield item


def test_points_do_not_depend_on_each_other_and_an_interrupted_sweep_resumes(swept, tmp_path):
    root, _, _ = swept
    # another sweep holding two of the three points, interrupted, then resumed
    two = sweep_from_dict(_sweep(target__n_train=[40, 80]))
    with pytest.raises(KeyboardInterrupt):
        study.run_sweep(two, tmp_path / "two", executor=_Interrupting(2), shard_size=4)
    with sqlite3.connect(tmp_path / "two" / "results.sqlite") as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    assert statuses.get("planned", 0) > 0 and statuses.get("done", 0) > 0
    outcome = study.run_sweep(two, tmp_path / "two", shard_size=4)
    assert outcome.skipped_runs > 0
    for n_train in (40, 80):
        pd.testing.assert_frame_equal(_point_results(tmp_path / "two", n_train), _point_results(root / "out", n_train))


def test_a_sweep_folder_refuses_other_studies_and_sweeps(swept, tmp_path):
    root, _, _ = swept
    out = root / "out"
    plain = _write(tmp_path, {**BASE, "target": {**BASE["target"], "n_train": 100}}, name="plain.toml")
    before = _folder_digest(out)
    code, _, stderr = invoke("run", plain, "--out", out)
    _assert_one_line(code, stderr, f"error: {out}/results.sqlite: this folder holds sweep 'sweep'; choose another "
                                   "--out folder (nothing here was changed)")
    other = _write(tmp_path, _sweep(target__n_train=[20, 60]), name="other.toml")
    code, _, stderr = invoke("run", other, "--out", out)
    _assert_one_line(code, stderr, f"error: {out}/results.sqlite: this folder holds sweep 'sweep' with a different "
                                   "configuration (sweep.target.n_train: [20, 40, 80] → [20, 60]); choose another "
                                   "--out folder (nothing here was changed)")
    assert _folder_digest(out) == before
    assert isinstance(load_study(other), type(sweep_from_dict(_sweep(target__n_train=[20]))))


def test_a_sweep_point_equals_the_same_study_run_alone(swept, tmp_path):
    root, _, _ = swept
    point = sweep_from_dict(_sweep(target__n_train=[20, 40, 80])).points[1]
    study.run_study(point.config, tmp_path / "alone")
    with Store.in_folder(tmp_path / "alone", readonly=True) as store:
        study_id, _ = store.stored_plan()
        alone = store.runs_frame(study_id)
    alone = alone[["direction", "role", "strategy", "source_index", "repeat", "seed", "test_accuracy"]]
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), _point_results(root / "out", 40))


def test_a_value_of_the_wrong_type_names_the_point_and_field():
    with pytest.raises(StudyFileError, match=r"^s.toml \(sweep point target.n_train=ten\): target.n_train: "
                                             r"Input should be a valid integer"):
        sweep_from_dict({**BASE, "sweep": {"target.n_train": ["ten"]}}, source="s.toml")


def test_results_and_export_read_every_table_of_a_sweep(swept, tmp_path):
    import transferlab

    root, _, _ = swept
    tables = transferlab.results(root / "out")
    assert set(tables) == {"runs", "curves", "summary", "verdict", "learning_speed", "scores", "score_agreement",
                           "points"}
    assert sorted(tables["points"]["target.n_train"]) == [20, 40, 80]
    summary = tables["summary"]
    reported = pd.read_csv(root / "out" / "sweep_summary.csv")
    merged = summary.merge(reported, on=["point", "strategy"], suffixes=("", "_csv"))
    np.testing.assert_allclose(merged["mean"], merged["mean_csv"])
    runs, curves = tables["runs"], tables["curves"]
    assert len(curves) == len(runs[runs.status == "done"]) * 3 * 4  # epochs × (loss, accuracy on train and test)
    assert set(tables["learning_speed"]["measure"]) >= {"jumpstart", "auc", "final"}
    code, _, stderr = invoke("export", root / "out", "--format", "csv", "--out", tmp_path / "export")
    assert code == 0, stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "export" / "points.csv"),
                                  tables["points"], check_dtype=False)
    exported = pd.read_csv(tmp_path / "export" / "scores.csv")
    assert len(exported) == 3 * 2 * 7 and "target.n_train" in exported  # points × source models × scores
    np.testing.assert_allclose(exported["value"], tables["scores"]["value"])
    code, _, _ = invoke("export", root / "out", "--out", tmp_path / "parquet")
    assert code == 0 and len(pd.read_parquet(tmp_path / "parquet" / "runs.parquet")) == len(runs)


def test_a_two_dimensional_sweep_gets_a_figure_and_a_headline_per_dimension(tmp_path):
    from transferlab.reports import build_report

    sweep = sweep_from_dict({**_sweep(target__n_train=[20, 40]),
                             "sweep": {"target.n_train": [20, 40], "training.learning_rate": [0.01, 0.05]}})
    assert [p.values for p in sweep.points] == [
        {"target.n_train": n, "training.learning_rate": lr} for n in (20, 40) for lr in (0.01, 0.05)]
    study.run_sweep(sweep, tmp_path / "out")
    outputs = build_report(tmp_path / "out")
    assert {"sweep.png", "sweep_1.png", "sweep_2.png"} <= set(outputs.files)
    assert [line.split(":")[0] for line in outputs.headline] == [
        "with training.learning_rate=0.01", "with training.learning_rate=0.05"]
    assert list(outputs.pivot.columns) == ["strategy", "n_train=20, learning_rate=0.01", "n_train=20, learning_rate=0.05",
                                           "n_train=40, learning_rate=0.01", "n_train=40, learning_rate=0.05"]
    assert "By training.learning_rate" in (tmp_path / "out" / "report.html").read_text()


def test_a_sweep_point_run_retrains_alone(swept):
    root, _, _ = swept
    stored = _point_results(root / "out", 40)
    row = stored[(stored.strategy == "transfer freeze=1") & (stored.source_index == 1) & (stored.repeat == 0)].iloc[0]
    alone = study.retrain_run(root / "out", "target", "transfer freeze=1", 1, 0, point=1)
    assert float(alone.final["test_accuracy"][0]) == pytest.approx(row.test_accuracy, abs=1e-6)
    from transferlab.store import StoreError

    with pytest.raises(StoreError, match="this folder holds a sweep; give point = one of 0, 1, 2"):
        study.retrain_run(root / "out", "target", "transfer freeze=1", 1, 0)


def test_the_headline_counts_only_significant_gains():
    from transferlab.sweep_report import headline

    rows = [{"target.n_train": n, "strategy": s, "diff": d, "p_holm": p}
            for n, s, d, p in [(10, "a", 0.10, 0.01), (50, "a", 0.08, 0.20), (100, "a", -0.01, 0.5),
                               (10, "b", 0.02, 0.30), (50, "b", 0.05, 0.04), (100, "b", 0.01, 0.9)]]
    rows += [{"target.n_train": n, "strategy": "standalone", "diff": np.nan, "p_holm": np.nan} for n in (10, 50, 100)]
    lines = headline(pd.DataFrame(rows), {"target.n_train": [10, 50, 100]})
    assert lines == ["largest target.n_train at which each strategy beats standalone significantly "
                     "(Δ > 0, Holm p < 0.05): a: 10, b: 50"]


def test_the_sweep_page_shows_each_points_learning_speed(swept):
    """Per point: jumpstart, area under the curve, epochs to threshold and the final score;
    the final score's means equal the point's summary (another path through the runs)."""
    root, _, _ = swept
    out = root / "out"
    speeds = pd.read_csv(out / "sweep_learning_speed.csv")
    summary = pd.read_csv(out / "sweep_summary.csv")
    assert set(speeds["measure"]) == {"jumpstart", "auc", "time_to_threshold", "final"}
    final = speeds[speeds["measure"] == "final"].merge(summary, on=["point", "strategy"], suffixes=("", "_summary"))
    assert len(final) == len(summary)
    np.testing.assert_allclose(final["mean"], final["mean_summary"])
    html = (out / "report.html").read_text()
    for n_train in (20, 40, 80):
        assert f"How fast each strategy learns at target.n_train={n_train}" in html
    assert html.count("area under curve") >= 3
