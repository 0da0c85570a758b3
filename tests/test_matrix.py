"""Transfer matrices: every ordered pair of tasks is a full study (a pair equals the same
study run on its own, bit for bit), each task's source models are trained once and reused
by every pair that starts from it, and the report marks Δ vs standalone with Holm over the
whole matrix, the asymmetry and the best source per target."""

import numpy as np
import pandas as pd
import pytest

from test_bad_input import _write, invoke
from transferlab import stats, study
from transferlab.errors import StudyFileError
from transferlab.loading import study_from_dict
from transferlab.store import Store
from transferlab.sweep import matrix_from_dict

TASK = {"kind": "blobs", "n_samples": 200, "n_train": 100}
BASE = {
    "name": "matrix", "seed": 5, "repeats": 2, "source_repeats": 2, "training": {"epochs": 3},
    "matrix": {"tasks": [dict(TASK, seed=1), dict(TASK, seed=2), dict(TASK, seed=3)]},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
}


def test_every_ordered_pair_is_a_point():
    matrix = matrix_from_dict(BASE)
    pairs = [(p.values["source"], p.values["target"]) for p in matrix.points]
    labels = ["blobs(seed=1)", "blobs(seed=2)", "blobs(seed=3)"]
    assert pairs == [(a, b) for a in labels for b in labels if a != b]
    assert matrix.points[0].config.source.seed == 1 and matrix.points[0].config.target.seed == 2


@pytest.mark.parametrize("change, message", [
    ({"matrix": {"tasks": [dict(TASK, seed=1)]}}, "matrix.tasks: give 2 to 32 tasks (got 1)"),
    ({"matrix": {"tasks": "blobs"}}, "matrix.tasks: give a list of task tables"),
    ({"matrix": {"tasks": [dict(TASK, seed=1), dict(TASK, seed=2)], "size": 2}}, "matrix.size: unknown field"),
    ({"source": dict(TASK, seed=1)}, "source: a matrix study takes its tasks from matrix.tasks; remove source"),
    ({"matrix": {"tasks": [dict(TASK, seed=1), dict(TASK, seed=2, n_train=500)]}},
     "m.toml (matrix.tasks[1]): source: n_train (500) must be smaller than n_samples (200)"),
])
def test_bad_matrix_tables_are_one_line(change, message):
    with pytest.raises(StudyFileError) as caught:
        matrix_from_dict({**BASE, **change}, source="m.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    study_file = _write(root, BASE, name="matrix.toml")
    code, stdout, stderr = invoke("run", study_file, "--out", root / "out")
    assert code == 0, stderr
    return root, stdout


def _pair_runs(folder, source, target) -> pd.DataFrame:
    with Store.in_folder(folder, readonly=True) as store:
        if store.sweep() is None:
            study_id, _ = store.stored_plan()
        else:
            study_id = next(p["study_id"] for p in store.points()
                            if p["values"] == {"source": source, "target": target})
        runs = store.runs_frame(study_id)
    return runs[["role", "strategy", "source_index", "repeat", "seed", "test_accuracy"]].reset_index(drop=True)


def test_a_pair_equals_its_study_run_alone(ran, tmp_path):
    root, _ = ran
    raw = {key: value for key, value in BASE.items() if key != "matrix"}
    raw.update(source=dict(TASK, seed=3), target=dict(TASK, seed=1))
    study.run_study(study_from_dict(raw), tmp_path / "alone")
    pd.testing.assert_frame_equal(_pair_runs(root / "out", "blobs(seed=3)", "blobs(seed=1)"),
                                  _pair_runs(tmp_path / "alone", None, None))


def test_source_models_are_trained_once_per_task(ran):
    root, stdout = ran
    out = root / "out"
    # 3 tasks × 2 source models, each reused by the second pair starting from its task; 2 standalone
    # runs per target likewise: 6 + 6 runs adopted
    assert "reused 12 runs of other points" in stdout.replace("\n", " ")
    files = {path.name for path in (out / "sources").rglob("*.keras")}
    assert len(list((out / "sources").rglob("*.keras"))) == 6, files


def test_the_report_marks_the_whole_matrix(ran):
    root, stdout = ran
    out = root / "out"
    assert "transfer freeze=1: Δ vs standalone" in stdout and "source ↓ target →" in stdout
    table = pd.read_csv(out / "matrix_summary.csv")
    compared = table[table["strategy"] != "standalone"]
    assert len(compared) == 6
    np.testing.assert_allclose(stats.holm(table["p_value"].tolist()), table["p_matrix"], equal_nan=True)
    asymmetry = pd.read_csv(out / "matrix_asymmetry.csv")
    assert len(asymmetry) == 3
    row = asymmetry.iloc[0]
    forward = compared[(compared.source == row.task_i) & (compared.target == row.task_j)]["diff"].item()
    backward = compared[(compared.source == row.task_j) & (compared.target == row.task_i)]["diff"].item()
    assert row.asymmetry == pytest.approx(forward - backward)
    best = pd.read_csv(out / "matrix_best.csv")
    for target, group in compared.groupby("target"):
        chosen = best[best.target == target].iloc[0]
        assert chosen["diff"] == pytest.approx(group["diff"].max())
    html = (out / "report.html").read_text()
    assert "transfer matrix of 3 tasks" in html and "data:image/png;base64," in html and "Asymmetry" in html


def test_the_matrix_holds_exactly_the_planned_runs_and_each_cell_is_the_difference_of_means(ran):
    root, _ = ran
    with Store.in_folder(root / "out", readonly=True) as store:
        points = store.points()
        assert len(points) == 6
        per_pair = []
        for point in points:
            runs = store.runs_frame(point["study_id"])
            assert (runs.status == "done").all()
            assert (runs.role == "source").sum() == 2 and (runs.role == "target").sum() == 2 + 2 * 2
            per_pair.append((point["values"], runs))
        models = {(r["file"], r["file_sha256"]) for p in points for r in store.source_models(p["study_id"])}
    assert len(models) == 3 * 2  # two source models per task, shared by the pairs that start from it
    table = pd.read_csv(root / "out" / "matrix_summary.csv")
    for values, runs in per_pair:
        targets = runs[runs.role == "target"]
        units = targets[targets.strategy == "transfer freeze=1"].groupby("source_index")["test_accuracy"].mean()
        base = targets[targets.strategy == "standalone"]["test_accuracy"]
        cell = table[(table.source == values["source"]) & (table.target == values["target"])
                     & (table.strategy == "transfer freeze=1")]["diff"].item()
        assert cell == pytest.approx(units.mean() - base.mean())


def test_a_matrix_scores_every_pairs_source_models(ran):
    import transferlab

    root, _ = ran
    tables = transferlab.results(root / "out")
    assert len(tables.scores) == 6 * 2 * 7  # pairs × source models × scores
    assert set(tables.scores["layer"]) == {2} and tables.scores["value"].notna().all()
    ranking = tables.score_agreement
    assert set(ranking["target_task"]) == {"blobs(seed=1)", "blobs(seed=2)", "blobs(seed=3)"}
    assert (ranking["note"] == "2 source tasks with a score; a ranking needs 3").all()  # two sources per target
    assert "Could it have been predicted?" in (root / "out" / "report.html").read_text()
