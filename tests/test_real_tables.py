"""Messy real tables: each option against its pandas or scikit-learn reference
(`read_csv(na_values=..., decimal=..., thousands=...)`, `to_datetime`, `OneHotEncoder`),
the notes a task carries, and one whole path on a table with a text feature, placeholder
labels and class names that differ between source and target: run, interrupted,
resumed, reported, retrained, read with `results()`."""

import numpy as np
import pandas as pd
import pytest

import transferlab
from transferlab import datasets
from transferlab import Task, config, loading, study
from transferlab.api import load_study
from transferlab.tasks import DataError

ROWS = 120


def _penguins(seed: int = 0) -> pd.DataFrame:
    """A penguin-like table: numbers, a text column, a label with placeholders."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], ROWS)
    offset = pd.Series(species).map({"Adelie": 0.0, "Gentoo": 3.0, "Chinstrap": 1.5}).to_numpy()
    return pd.DataFrame({
        "bill": (40 + 3 * offset + rng.normal(size=ROWS)).round(1),
        "flipper": (190 + 8 * offset + rng.normal(size=ROWS) * 3).round(0),
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], ROWS),
        "site": np.where(np.arange(ROWS) % 2 == 0, "north", "south"),
        "species": species,
    })


def _make(kind: str = "csv", **fields) -> Task:
    raw = {"kind": kind, **fields}
    return datasets.task_of(config.DATA_TASKS[kind].model_validate(raw), "target")


def test_na_values_drop_the_rows_as_read_csv_marks_them(tmp_path):
    table = _penguins()
    table.loc[[4, 9], "species"] = "."
    table.to_csv(tmp_path / "p.csv", index=False)
    task = _make(path=str(tmp_path / "p.csv"), target="species", drop=["site", "island"], na_values=["."],
                 split="first", standardize=False)
    reference = pd.read_csv(tmp_path / "p.csv", na_values=["."]).dropna(subset=["species"])
    assert len(task.x_train) + len(task.x_test) == len(reference) == ROWS - 2
    np.testing.assert_array_equal(np.vstack([task.x_train, task.x_test]),
                                  reference[["bill", "flipper"]].to_numpy(np.float32))
    assert task.class_names == ("Adelie", "Chinstrap", "Gentoo")
    assert "2 rows with a missing label in 'species' dropped (the first: line 6 of p.csv)" in task.notes
    assert any(note.startswith("3 classes (train/test rows): Adelie ") for note in task.notes)


def test_decimal_and_thousands_read_as_pandas_reads_them(tmp_path):
    table = _penguins()
    text = table.assign(flipper=table["flipper"] * 10)
    text.to_csv(tmp_path / "eu.csv", index=False, sep=";", decimal=",")
    lines = (tmp_path / "eu.csv").read_text().splitlines()
    task = _make(path=str(tmp_path / "eu.csv"), target="species", drop=["site", "island"], decimal=",",
                 split="first", standardize=False)
    reference = pd.read_csv(tmp_path / "eu.csv", sep=";", decimal=",")
    np.testing.assert_array_equal(np.vstack([task.x_train, task.x_test]),
                                  reference[["bill", "flipper"]].to_numpy(np.float32))
    assert ";" in lines[0]
    (tmp_path / "k.csv").write_text('a,b,label\n"1,234.5",1,x\n"2,000",2,y\n"3,100.25",3,x\n"4",4,y\n')
    counted = _make(path=str(tmp_path / "k.csv"), target="label", thousands=",", split="first", n_train=2,
                    standardize=False)
    np.testing.assert_array_equal(counted.x_train[:, 0], pd.read_csv(tmp_path / "k.csv", thousands=",")["a"][:2])


def test_parse_dates_lets_a_query_use_the_year(tmp_path):
    table = _penguins().assign(year=pd.date_range("1970-06-01", periods=ROWS, freq="30D").strftime("%Y-%m-%d"))
    table.to_csv(tmp_path / "d.csv", index=False)
    task = _make(path=str(tmp_path / "d.csv"), target="species", drop=["site", "island", "year"],
                 parse_dates=["year"], query="year.dt.year < 1976", split="first", standardize=False)
    reference = pd.read_csv(tmp_path / "d.csv", parse_dates=["year"])
    assert len(task.x_train) + len(task.x_test) == int((reference["year"].dt.year < 1976).sum())


def test_categorical_columns_are_one_hot_from_both_tasks_training_rows(tmp_path):
    from sklearn.preprocessing import OneHotEncoder

    table = _penguins()
    table.loc[(table.site == "north") & (table.island == "Torgersen"), "island"] = "Biscoe"  # not in the source
    table.to_csv(tmp_path / "p.csv", index=False)
    common = {"kind": "csv", "path": str(tmp_path / "p.csv"), "target": "species", "drop": ["site"],
              "categorical": ["island"], "split": "first", "standardize": False}
    cfg = loading.study_from_dict({
        "name": "cats", "source": {**common, "query": "site == 'north'"},
        "target": {**common, "query": "site == 'south'"}, "strategies": [{"name": "standalone"}]})
    built = datasets.study_tasks(cfg)
    source, target = built["source"], built["target"]
    assert source.feature_names == target.feature_names == (
        "bill", "flipper", "island_Biscoe", "island_Dream", "island_Torgersen")
    south = table[table.site == "south"].reset_index(drop=True)
    encoder = OneHotEncoder(categories=[["Biscoe", "Dream", "Torgersen"]], sparse_output=False)
    expected = np.hstack([south[["bill", "flipper"]].to_numpy(), encoder.fit_transform(south[["island"]])])
    np.testing.assert_array_equal(np.vstack([target.x_train, target.x_test]), expected.astype(np.float32))
    assert target.categories == {"island": ["Biscoe", "Dream", "Torgersen"]}
    assert source.fingerprint() != Task.from_frame(table.query("site == 'north'"), "species", drop=["site", "island"],
                                                   split="first", standardize=False).fingerprint()


def test_a_category_only_in_test_rows_encodes_as_zeros_with_a_note():
    table = _penguins()
    table.loc[ROWS - 3:, "island"] = "Atlantis"
    task = Task.from_frame(table, "species", drop=["site"], categorical=["island"], split="first",
                           test_fraction=0.25, standardize=True)
    assert "Atlantis" not in task.categories["island"]
    assert task.x_test[-1, 2:].tolist() == [0.0, 0.0, 0.0]
    assert any("hold a category no training row has (Atlantis): encoded as all zeros" in n for n in task.notes)
    assert task.scaler.mean[2:].tolist() == [0.0, 0.0, 0.0] and task.scaler.scale[2:].tolist() == [1.0, 1.0, 1.0]


def test_a_thin_class_is_warned_about_and_a_date_column_refused():
    table = _penguins()
    table.loc[:3, "species"] = "Emperor"
    task = Task.from_frame(table, "species", drop=["site", "island"], split="first")
    assert any(note.startswith("warning: class Emperor (4) has fewer than 5 training rows") for note in task.notes)
    dated = table.assign(when=pd.Timestamp("2020-01-01"))
    with pytest.raises(DataError, match="column 'when' holds dates or times"):
        Task.from_frame(dated, "species", drop=["site", "island"])
    assert repr(task).startswith("Task('DataFrame', classification, 90 train + 30 test rows, 2 features, classes [")
    assert "\n" not in repr(task)


def test_whole_numbers_with_blanks_stay_classes():
    table = _penguins().assign(code=lambda t: t["species"].map({"Adelie": 1, "Gentoo": 2, "Chinstrap": 3}))
    table["code"] = table["code"].astype(float)
    table.loc[5, "code"] = np.nan  # pandas reads such a column as floats
    task = Task.from_frame(table, "code", drop=["site", "island", "species"])
    assert task.kind == "classification" and task.class_names == ("1", "2", "3")
    assert any("holds whole numbers and blanks (read as floats): its values are classes" in n for n in task.notes)


class _StopAfterOneShard:
    """An executor that trains one shard and is then interrupted (as by Ctrl-C)."""

    def map(self, jobs):
        from transferlab.executors import LocalExecutor

        for done, result in enumerate(LocalExecutor().map(jobs)):
            yield result
            raise KeyboardInterrupt


def test_a_messy_table_from_run_to_interrupt_resume_report_retrain_and_results(tmp_path):
    table = _penguins(3)
    table.loc[[6, 8], "species"] = "."  # placeholders in the label
    north = table[table.site == "north"].copy()
    south = table[table.site == "south"].copy()
    south["species"] = south["species"].replace({"Chinstrap": "Chinstrap penguin"})  # a class the source lacks
    pd.concat([north, south]).to_csv(tmp_path / "penguins.csv", index=False)
    common = {"kind": "csv", "path": "penguins.csv", "target": "species", "drop": ["site"], "categorical": ["island"],
              "na_values": ["."]}
    (tmp_path / "study.toml").write_text(config.as_toml({
        "name": "penguins", "seed": 2, "repeats": 3, "source_repeats": 2,
        "source": {**common, "query": "site == 'north'"}, "target": {**common, "query": "site == 'south'"},
        "training": {"epochs": 4, "optimizer": "adam"}, "execution": {"shard_size": 2},
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}]}))
    cfg = load_study(tmp_path / "study.toml")
    notes = []
    with pytest.raises(KeyboardInterrupt):
        study.run_study(cfg, tmp_path / "out", executor=_StopAfterOneShard(), notify=notes.append)
    assert any("2 rows with a missing label in 'species' dropped" in n for n in notes)
    assert any("Adelie ← source unit 0, Chinstrap penguin fresh" in n for n in notes)
    outcome = study.run_study(load_study(tmp_path / "study.toml"), tmp_path / "out")
    assert outcome.skipped_runs > 0 and outcome.trained_runs > 0
    from transferlab import reports

    outputs = reports.build_report(tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Chinstrap penguin fresh, Gentoo ← source unit 2; source class Chinstrap dropped" in html
    assert "island_Biscoe" in html
    assert "rows with a missing label" in html
    tables = transferlab.results(tmp_path / "out")
    runs = tables["runs"]
    assert set(runs["strategy"]) == {"source model", "standalone", "transfer freeze=1"}
    assert (runs[runs["strategy"] == "standalone"]["role"] == "target").all()
    alone = study.retrain_run(tmp_path / "out", "target", "transfer freeze=1", 1, 2)
    stored = runs[(runs.strategy == "transfer freeze=1") & (runs.source_index == 1) & (runs.repeat == 2)]
    assert alone.final["test_accuracy"][0] == pytest.approx(float(stored["test_accuracy"].iloc[0]), abs=1e-6)
    assert outputs.directions[0].summary.shape[0] == 2
