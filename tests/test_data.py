"""Tasks from data, checked against pandas, NumPy and scikit-learn doing the same by hand:
loaders, selection, splits and standardisation."""

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from transferlab import config
from transferlab.datasets import task_of
from transferlab.tasks import DataError, Task


def make(kind: str, **fields) -> Task:
    """A task from a study file's table, as `study_from_dict` makes it."""
    table = {"csv": config.CsvTask, "parquet": config.ParquetTask, "npz": config.NpzTask,
             "sklearn": config.SklearnTask}[kind]
    return task_of(table.model_validate({"kind": kind, **fields}), "target")


def everything(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """All rows in split order (train then test): features and labels (or targets)."""
    x = np.concatenate([task.x_train, task.x_test])
    y = np.concatenate([task.y_train, task.y_test])
    return x, (y.argmax(1) if task.kind == "classification" else y)


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    """A small mixed table: numbers, a boolean, string labels, a fold column."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "height": rng.normal(170, 10, 60).round(1),
        "age": rng.integers(18, 80, 60),
        "smoker": rng.integers(0, 2, 60).astype(bool),
        "species": rng.choice(["cat", "dog", "emu"], 60),
        "weight": rng.normal(70, 5, 60),
        "fold": ["train"] * 45 + ["test"] * 15,
    })
    root = tmp_path_factory.mktemp("tables")
    frame.to_csv(root / "animals.csv", index=False)
    frame.to_parquet(root / "animals.parquet", index=False)
    return root, frame


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_file_loaders_equal_pandas(table_file, kind):
    root, _ = table_file
    read = getattr(pd, f"read_{kind}")(root / f"animals.{kind}")
    task = make(kind, path=str(root / f"animals.{kind}"), target="species", drop=["fold"], split="first",
                test_fraction=0.25, standardize=False)
    expected_x = read[["height", "age", "smoker", "weight"]].to_numpy(np.float64).astype(np.float32)
    x, labels = everything(task)
    np.testing.assert_array_equal(x, expected_x)
    assert task.feature_names == ("height", "age", "smoker", "weight")
    assert task.class_names == ("cat", "dog", "emu")  # string labels keep their names, sorted
    assert [task.class_names[i] for i in labels] == read["species"].tolist()
    assert (len(task.x_train), len(task.x_test)) == (45, 15)
    assert task.provenance["origin"]["sha256"] and task.provenance["origin"]["file"] == f"animals.{kind}"


def test_npz_loader_equals_numpy_with_named_arrays(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 4, 40)
    np.savez(tmp_path / "d.npz", inputs=x, labels=y)
    task = make("npz", path=str(tmp_path / "d.npz"), x_key="inputs", y_key="labels", split="first", n_train=30,
                standardize=False)
    got_x, got_y = everything(task)
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    np.testing.assert_array_equal(got_y, y)
    assert task.kind == "classification" and task.n_outputs == 4 and len(task.x_train) == 30


def test_npz_float_targets_are_regression(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    np.savez(tmp_path / "r.npz", x=x, y=y)
    task = make("npz", path=str(tmp_path / "r.npz"), split="first", n_train=30, standardize=False)
    assert task.kind == "regression" and task.n_outputs == 2
    expected = (y - y[:30].mean(0)) / y[:30].std(0)  # targets standardised on the train rows, as today
    np.testing.assert_allclose(np.concatenate([task.y_train, task.y_test]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["iris", "digits", "wine", "breast_cancer", "diabetes", "linnerud"])
def test_sklearn_datasets_equal_scikit_learn(name):
    bunch = getattr(datasets, f"load_{name}")()
    task = make("sklearn", dataset=name, split="first", test_fraction=0.25, standardize=False)
    x, y = everything(task)
    np.testing.assert_array_equal(x, bunch.data.astype(np.float32))
    assert list(task.feature_names) == list(bunch.feature_names)
    if name in ("diabetes", "linnerud"):
        assert task.kind == "regression" and task.n_outputs == (1 if name == "diabetes" else 3)
    else:
        assert task.kind == "classification"
        assert list(task.class_names) == [str(n) for n in bunch.target_names]  # scikit-learn's names and order
        np.testing.assert_array_equal(y, bunch.target)


def test_random_split_equals_stratified_train_test_split():
    digits = datasets.load_digits()
    task = make("sklearn", dataset="digits", seed=7, standardize=False)  # random and stratified by default
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, stratify=digits.target, random_state=7)
    np.testing.assert_array_equal(task.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(task.x_test, x_test.astype(np.float32))
    np.testing.assert_array_equal(task.labels_train, y_train)
    np.testing.assert_array_equal(task.labels_test, y_test)


def test_n_train_alone_sets_the_random_split_size():
    wine = datasets.load_wine()
    task = make("sklearn", dataset="wine", n_train=100, seed=3, standardize=False)
    x_train, x_test = train_test_split(wine.data, train_size=100, stratify=wine.target, random_state=3)[:2]
    np.testing.assert_array_equal(task.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(task.x_test, x_test.astype(np.float32))


def test_standardisation_equals_standard_scaler_on_the_train_rows():
    raw = make("sklearn", dataset="wine", seed=1, standardize=False)
    task = make("sklearn", dataset="wine", seed=1)  # standardize = true is the default for data
    scaler = StandardScaler().fit(raw.x_train.astype(np.float64))
    np.testing.assert_allclose(task.x_train, scaler.transform(raw.x_train), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(task.x_test, scaler.transform(raw.x_test), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(task.scaler.mean, scaler.mean_, rtol=1e-6)
    assert "training rows" in task.provenance["standardize"]


def test_query_and_classes_select_what_pandas_selects():
    frame = datasets.load_diabetes(as_frame=True).frame
    task = make("sklearn", dataset="diabetes", query="sex > 0", drop=["sex"], split="first", test_fraction=0.2,
                standardize=False)
    chosen = frame.query("sex > 0")
    x, _ = everything(task)
    np.testing.assert_array_equal(x, chosen.drop(columns=["sex", "target"]).to_numpy().astype(np.float32))
    assert "sex" not in task.feature_names and task.provenance["rows"] == len(chosen)

    digits = datasets.load_digits(as_frame=True).frame
    task = make("sklearn", dataset="digits", classes=[9, 5, 7], split="first", test_fraction=0.25, standardize=False)
    kept = digits[digits["target"].isin([9, 5, 7])]
    x, codes = everything(task)
    np.testing.assert_array_equal(x, kept.drop(columns="target").to_numpy().astype(np.float32))
    assert task.class_names == ("9", "5", "7")  # in the given order
    np.testing.assert_array_equal(np.array([9, 5, 7])[codes], kept["target"].to_numpy())


def test_smaller_n_train_keeps_the_test_rows():
    whole = make("sklearn", dataset="digits", test_fraction=0.3, seed=4, standardize=False)
    small = make("sklearn", dataset="digits", test_fraction=0.3, n_train=50, seed=4, standardize=False)
    np.testing.assert_array_equal(small.x_test, whole.x_test)
    np.testing.assert_array_equal(small.x_train, whole.x_train[:50])


def test_split_column_and_separate_files(table_file, tmp_path):
    root, frame = table_file
    by_column = make("csv", path=str(root / "animals.csv"), target="species", split_column="fold", standardize=False)
    assert (len(by_column.x_train), len(by_column.x_test)) == (45, 15)
    assert "fold" not in by_column.feature_names
    frame[frame.fold == "train"].drop(columns="fold").to_csv(tmp_path / "train.csv", index=False)
    frame[frame.fold == "test"].drop(columns="fold").to_csv(tmp_path / "test.csv", index=False)
    by_files = make("csv", train_path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"),
                    target="species", standardize=False)
    np.testing.assert_array_equal(by_files.x_train, by_column.x_train)
    np.testing.assert_array_equal(by_files.x_test, by_column.x_test)


def test_task_kind_follows_the_target_and_can_be_forced(table_file):
    root, _ = table_file
    path = str(root / "animals.csv")
    assert make("csv", path=path, target="weight", drop=["species", "fold"]).kind == "regression"
    # 60 rows of ages: many distinct whole numbers are predicted as numbers, with a note
    ages = make("csv", path=path, target="age", drop=["species", "fold"], split="first")
    assert ages.kind == "regression" and any("distinct whole numbers" in note for note in ages.notes)
    forced = make("csv", path=path, target="age", drop=["species", "fold"], split="first", task="classification")
    assert forced.kind == "classification" and forced.n_outputs > 20
    smoker = make("csv", path=path, target="smoker", drop=["species", "fold"])
    assert smoker.class_names == ("false", "true")


def test_source_scaler_applies_to_the_target():
    source = make("sklearn", dataset="wine", classes=["class_0", "class_1"], seed=2)
    raw = make("sklearn", dataset="wine", classes=["class_1", "class_2"], seed=2, standardize=False)
    target = task_of(config.SklearnTask.model_validate(
        {"kind": "sklearn", "dataset": "wine", "classes": ["class_1", "class_2"], "seed": 2, "standardize": "source"}
    ), "target", source.scaler)
    np.testing.assert_allclose(target.x_train, (raw.x_train - source.scaler.mean) / source.scaler.scale, rtol=1e-5, atol=1e-5)
    assert "source task" in target.provenance["standardize"]


def test_tasks_from_a_frame_and_from_arrays_agree():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(80, 3)), rng.choice(["no", "yes"], 80)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(answer=y)
    from_frame = Task.from_frame(frame, target="answer", seed=1)
    from_arrays = Task.from_arrays(x, y, feature_names=["a", "b", "c"], seed=1)
    np.testing.assert_array_equal(from_frame.x_train, from_arrays.x_train)
    assert from_frame.fingerprint() == from_arrays.fingerprint()
    assert from_frame.class_names == ("no", "yes") and from_frame.feature_names == ("a", "b", "c")
    changed = x.copy()
    changed[3, 1] += 1e-3
    assert Task.from_arrays(changed, y, seed=1).fingerprint() != from_arrays.fingerprint()
    with pytest.raises(DataError, match="unknown option 'n_trian'"):
        Task.from_frame(frame, target="answer", n_trian=5)
    with pytest.raises(DataError, match=r"^query: 'answer == 1' matches none of the 80 rows of DataFrame \(answer holds 'no', 'yes'\)$"):
        Task.from_frame(frame, target="answer", query="answer == 1")
    with pytest.raises(DataError, match=r"^standardize: in Python, give the source task's scaler"):
        Task.from_frame(frame, target="answer", standardize="source")
    with pytest.raises(DataError, match=r"^y: shape \(79,\); give one label"):
        Task.from_arrays(x, y[:79])


def test_blobs_through_the_pipeline_equal_the_tutorial_rule():
    from sklearn.datasets import make_blobs

    x, labels = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    task = task_of(config.BlobsTask.model_validate({"seed": 2}), "target")
    np.testing.assert_array_equal(task.x_train, x[:500].astype(np.float32))
    np.testing.assert_array_equal(task.labels_test, labels[500:])
    subset = task_of(config.BlobsTask.model_validate({"seed": 2, "centers": 4, "classes": [3, 1], "n_train": 250}), "target")
    assert subset.class_names == ("3", "1") and subset.n_outputs == 2


def test_a_reverse_plan_stores_each_task_once_and_reads_both_directions_back(tmp_path):
    from transferlab.loading import study_from_dict
    from transferlab.plan import build_plan
    from transferlab.store import Store

    raw = {"name": "iris", "reverse": True, "repeats": 1,
           "source": {"kind": "sklearn", "dataset": "iris", "classes": ["setosa", "versicolor"]},
           "target": {"kind": "sklearn", "dataset": "iris", "classes": ["virginica", "versicolor"],
                      "standardize": "source"},
           "strategies": [{"name": "standalone"}, {"name": "new_input"}]}
    plan = build_plan(study_from_dict(raw))
    assert len(plan.tasks()) == 2
    with Store(tmp_path / "results.sqlite") as store:
        store.open_study(plan, {})
        _, stored = store.stored_plan()
    assert stored.sha256() == plan.sha256()
    forward, reverse = stored.directions
    np.testing.assert_array_equal(reverse.source_task.x_train, forward.target_task.x_train)
    assert reverse.target_task.class_names == ("setosa", "versicolor")
    assert forward.target_task.provenance["standardize"].startswith("features by the source task's scaler")


def test_a_semicolon_csv_is_read_with_its_separator(tmp_path):
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5, 4.5] * 3, "b": range(12), "label": ["x", "y"] * 6})
    frame.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    task = make("csv", path=str(tmp_path / "semi.csv"), target="label", split="first", n_train=8, standardize=False)
    np.testing.assert_array_equal(everything(task)[0], frame[["a", "b"]].to_numpy(np.float32))


def test_a_chosen_target_of_a_bundled_dataset_is_in_the_title():
    task = make("sklearn", dataset="linnerud", target="Pulse", features=["Chins", "Situps", "Jumps"])
    assert task.provenance["name"] == "linnerud (target Pulse)"
    assert make("sklearn", dataset="linnerud").provenance["name"] == "linnerud"


def test_n_train_of_a_given_split_is_a_seeded_sample_of_its_training_rows(table_file):
    root, frame = table_file
    whole = make("csv", path=str(root / "animals.csv"), target="species", split_column="fold", standardize=False)
    part = make("csv", path=str(root / "animals.csv"), target="species", split_column="fold", n_train=20, seed=5,
                standardize=False)
    np.testing.assert_array_equal(part.x_test, whole.x_test)
    rows = {tuple(r) for r in whole.x_train.tolist()}
    assert len(part.x_train) == 20 and all(tuple(r) in rows for r in part.x_train.tolist())
    expected = np.random.default_rng(5).permutation(45)[:20]
    np.testing.assert_array_equal(part.x_train, whole.x_train[expected])
    first = make("csv", path=str(root / "animals.csv"), target="species", drop=["fold"], split="first",
                 test_fraction=0.25, n_train=10, standardize=False)
    np.testing.assert_array_equal(first.x_train, whole.x_train[:10])  # file order: the first rows


def test_the_fingerprint_covers_every_array():
    task = make("sklearn", dataset="iris", seed=0, standardize=False)
    fingerprint = task.fingerprint()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        arrays = {k: getattr(task, k).copy() for k in ("x_train", "y_train", "x_test", "y_test")}
        arrays[name][-1, 0] += 1.0
        changed = Task(task.name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], task.kind,
                       feature_names=task.feature_names, class_names=task.class_names)
        assert changed.fingerprint() != fingerprint, name
