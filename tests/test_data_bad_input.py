"""Tasks from files through the CLI: a study on a CSV file runs from `run` to
`report.html`; every kind of bad data is one line naming the file, field, column or row
(exit code 2) and leaves an existing output folder byte for byte as it was; data that
changed since a folder's study ran are refused, naming the task."""

import numpy as np
import pandas as pd
import pytest

from test_bad_input import _assert_one_line, _folder_digest, _write, invoke

ROWS = 48


def _table(rng) -> pd.DataFrame:
    return pd.DataFrame({
        "a": rng.normal(size=ROWS).round(3), "b": rng.normal(size=ROWS).round(3), "c": rng.normal(size=ROWS).round(3),
        "group": ["north", "south"] * (ROWS // 2), "label": rng.choice(["no", "yes"], ROWS),
    })


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Good and bad data files side by side."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    good = _table(rng)
    good.to_csv(root / "good.csv", index=False)
    (root / "empty.csv").write_text("")
    (root / "ragged.csv").write_text("a,b,label\n1,2,no\n3,4,5,6\n")
    (root / "not.parquet").write_text("hello")
    (root / "latin.csv").write_bytes("a,b,c,group,label\n1,2,3,north,caf\u00e9\n".encode("latin-1"))
    good.assign(a=good["a"].astype(str).where(good.index != 3, "red")).to_csv(root / "text.csv", index=False)
    holes = good.copy()
    holes.loc[[5, 9], "a"] = np.nan
    holes.loc[7, "b"] = np.inf
    holes.to_csv(root / "holes.csv", index=False)
    lonely = good.copy()
    lonely.loc[0, "label"] = "maybe"
    lonely.to_csv(root / "lonely.csv", index=False)
    stray = good.assign(label=(rng.normal(size=ROWS) * 500 + 3000).round().astype(int).astype(str))
    stray.loc[3, "label"] = "3450 g"
    stray.to_csv(root / "stray.csv", index=False)
    good.assign(label=good["label"].where(good.index != 3, ".")).to_csv(root / "dots.csv", index=False)
    good.assign(when=pd.date_range("1970-01-01", periods=ROWS, freq="7D").strftime("%Y-%m-%d")).to_csv(
        root / "dates.csv", index=False)
    good.assign(a=good["a"].map(lambda v: f"{v:.3f}".replace(".", ","))).to_csv(root / "comma.csv", index=False,
                                                                                    sep=";")
    (root / "dupes.csv").write_text("a,b,a,group,label\n" + "".join(
        f"{i},{i + 1},{i + 2},{'north' if i % 2 == 0 else 'south'},{'no' if i % 3 else 'yes'}\n" for i in range(ROWS)))
    good.assign(a=good["a"].where(good.index != 3, 1e308)).to_csv(root / "huge.csv", index=False)
    np.savez(root / "arrays.npz", inputs=rng.normal(size=(10, 2)), labels=rng.integers(0, 2, 10))
    np.savez(root / "objects.npz", x=np.array([[1, "a"]], dtype=object), y=np.array([1]))
    return root


def _csv_study(name="data", **changes) -> dict:
    """Source: the northern rows of a CSV; target: the southern ones."""
    table = {"kind": "csv", "path": "good.csv", "target": "label", "drop": ["group"]}
    study = {
        "name": name, "seed": 1, "repeats": 2, "source_repeats": 2, "training": {"epochs": 3},
        "source": dict(table, query="group == 'north'"),
        "target": dict(table, query="group == 'south'", n_train=12),
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
    }
    for dotted, value in changes.items():
        role, field = dotted.split(".")
        if value is None:
            study[role].pop(field, None)
        else:
            study[role][field] = value
    return study


@pytest.fixture(scope="module")
def finished(data_dir):
    """A finished study on the CSV file, in the data folder (paths are relative to it)."""
    study_file = _write(data_dir, _csv_study(), name="data.toml")
    code, stdout, stderr = invoke("run", study_file, "--out", data_dir / "out", "--quiet")
    assert code == 0, stderr
    return study_file, data_dir / "out", stdout


def test_a_csv_study_runs_from_run_to_the_report(finished):
    _, out, stdout = finished
    # --quiet: the verdict sentence and where the outputs are, nothing else
    lines = stdout.replace("\n", " ").split("wrote ")
    assert lines[0].startswith("No strategy beat standalone") and lines[1].strip() == f"{out}/"
    report = (out / "report.html").read_text()
    assert "good.csv (group == &#39;north&#39;) → good.csv (group == &#39;south&#39;)" in report
    for text in ("good.csv", "data fingerprint", "a, b, c", "no, yes", "group == &#39;south&#39;",
                 "features by the task&#39;s own training rows"):
        assert text in report, text
    code, _, stderr = invoke("report", out)  # rebuilt from the database alone
    assert code == 0, stderr


W = "{dir}/data.toml"
STRAY = (W + ": target.target: column 'label' holds numbers, but line 5 of stray.csv has '3450 g': fix the file, or "
         "mark such cells missing with na_values = [\"3450 g\"] (rows with a missing label are dropped); set task = "
         "\"classification\" if they are class names")
DATA_CASES = [
    ("missing-file", {"target.path": "nothere.csv"},
     W + ": target.path: {dir}/nothere.csv: data file not found (a relative path is read from the study file's folder)"),
    ("empty-file", {"target.path": "empty.csv"},
     W + ": target.path: {dir}/empty.csv: the file is empty; give a CSV file with a header line and rows"),
    ("ragged-csv", {"target.path": "ragged.csv"},
     W + ": target.path: {dir}/ragged.csv: not a well-formed CSV file (Error tokenizing data. C error: Expected 3 "
     "fields in line 3, saw 4)"),
    ("not-parquet", {"target.kind": "parquet", "target.path": "not.parquet"},
     W + ": target.path: {dir}/not.parquet: cannot read it as parquet ({any}); check the file and its kind"),
    ("not-utf-8", {"target.path": "latin.csv"},
     W + ": target.path: {dir}/latin.csv: not UTF-8 text (byte 0xe9 on line 2); save the file as UTF-8"),
    ("missing-target-column", {"target.target": "lable"},
     W + ": target.target: column 'lable' is not in good.csv (its columns: a, b, c, group, label)"),
    ("text-feature", {"target.path": "text.csv"},
     W + ": target.features: column 'a' is not numeric (line 5 of text.csv has 'red'); list it in categorical = [\"a\"] to "
     "one-hot encode it, drop it (drop = [\"a\"]) or encode it as numbers"),
    ("nan-and-inf", {"target.path": "holes.csv", "target.query": None},
     W + ": target.dropna: holes.csv has 3 missing, NaN or infinite values (a: 2, b: 1; the first in line 7 of "
     "holes.csv); clean the data, or set dropna = true to drop those rows"),
    ("query-matches-nothing", {"target.query": "group == 'west'"},
     W + ": target.query: \"group == 'west'\" matches none of the 48 rows of good.csv "
     "(group holds 'north', 'south')"),
    ("query-does-not-parse", {"target.query": "group === 'west'"},
     W + ": target.query: \"group === 'west'\" does not parse or run on good.csv's columns (invalid syntax "
     "(<unknown>, line 1))"),
    ("unknown-class", {"target.classes": ["no", "perhaps"]},
     W + ": target.classes: label 'perhaps' does not exist in column 'label' (its labels: no, yes)"),
    ("one-class-left", {"target.classes": ["no"]},
     W + ": target.classes: column 'label' leaves 1 class (no); a classification task needs at least two"),
    ("too-few-rows", {"target.n_train": 30, "target.query": "group == 'south' and a > 0"},
     W + ": target.n_train: 30 leaves no test rows: the task has {south_positive} rows (after any selection); "
     "lower n_train"),
    ("lonely-class", {"target.path": "lonely.csv", "target.query": None},
     W + ": target.classes: class 'maybe' has only 1 row; a stratified random split needs at least 2 per class: "
     "drop the class with classes = [...], or use split = \"first\""),
    ("n-train-above-training-part", {"target.test_fraction": 0.5, "target.n_train": 20},
     W + ": target.n_train: 20 is larger than the training part (12 rows); lower n_train or test_fraction"),
    ("npz-without-arrays", {"target.kind": "npz", "target.path": "arrays.npz", "target.target": None,
                            "target.drop": None, "target.query": None},
     W + ": target.x_key: {dir}/arrays.npz: has no array 'x' (its arrays: inputs, labels); name them with x_key "
     "and y_key"),
    ("npz-with-objects", {"target.kind": "npz", "target.path": "objects.npz", "target.target": None,
                          "target.drop": None, "target.query": None},
     W + ": target.path: {dir}/objects.npz: holds a pickled object array; save plain numeric or string arrays"),
    ("different-widths", {"target.drop": ["group", "c"]},
     W + ": strategies[1]: transfer freeze=1 reuses the source's first layer, which takes 3 features (a, b, c), "
     "but the target has 2 (a, b); use new_input (a fresh first layer on the target's features) or standalone, or "
     "give both tasks the same features"),
    ("source-scaler-for-the-source", {"source.standardize": "source"},
     W + ": source.standardize: \"source\" is for the target (it applies the source task's scaler); use true or "
     "false"),
    ("features-and-drop", {"target.features": ["a"]},
     W + ": target: give features or drop, not both"),
    ("stray-text-in-a-numeric-label", {"target.path": "stray.csv"}, STRAY),
    ("stray-text-in-a-regression-target", {"target.path": "stray.csv", "target.task": "regression"}, STRAY),
    ("placeholder-label", {"target.path": "dots.csv"},
     W + ": target.target: column 'label': label '.' (1 row, the first on line 5 of dots.csv) looks like a "
     "placeholder for a missing value; set na_values = [\".\"] to drop those rows, or list it in classes = [...] "
     "if it is a class"),
    ("date-feature", {"target.path": "dates.csv", "target.parse_dates": ["when"]},
     W + ": target.features: column 'when' holds dates or times; a model cannot take them as they are: derive a "
     "number from it (e.g. its year, in a column of its own) or drop it (drop = [\"when\"])"),
    ("decimal-comma", {"target.path": "comma.csv"},
     W + ": target.features: column 'a' is not numeric (line 3 of comma.csv has '-0,132'); it looks like numbers "
     "with a decimal comma: set decimal = \",\""),
    ("duplicate-column", {"target.path": "dupes.csv"},
     W + ": target.path: {dir}/dupes.csv: column 'a' appears twice in the header; give every column its own name"),
    ("huge-value", {"target.path": "huge.csv"},
     W + ": target.features: column 'a': line 5 of huge.csv has 1e+308, beyond the ±1e+30 the engine can train on "
     "(it computes in float32); rescale the column or drop it"),
    ("query-unknown-column", {"target.query": "grup == 'south'"},
     W + ": target.query: \"grup == 'south'\": name 'grup' is not defined (its columns: a, b, c, group, label)"),
    ("query-leaves-one-class", {"target.query": "label == 'no'"},
     W + ": target.query: \"label == 'no'\" leaves 1 class (no) in column 'label'; a classification task needs "
     "at least two: widen the query, or set task = \"regression\" if the label is a number"),
    ("decimal-for-parquet", {"target.kind": "parquet", "target.path": "not.parquet", "target.decimal": ","},
     W + ": target.decimal: decimal and thousands are how a CSV file writes numbers; this data is not CSV"),
]


@pytest.mark.parametrize("case_id, changes, expected", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_one_line_and_the_folder_is_unchanged(data_dir, finished, case_id, changes, expected):
    _, out, _ = finished
    study_file = _write(data_dir, _csv_study(**changes), name="data.toml")
    good = pd.read_csv(data_dir / "good.csv")
    south_positive = int(((good.group == "south") & (good.a > 0)).sum())
    before = _folder_digest(out)
    code, _, stderr = invoke("run", study_file, "--out", out)
    expected = "error: " + expected.format(dir=data_dir, south_positive=south_positive, any="{any}")
    if "{any}" in expected:  # the reader library's own words (they vary by version) in the middle
        head, tail = expected.split("{any}")
        assert code == 2 and "\n" not in stderr.strip(), stderr
        assert stderr.strip().startswith(head) and stderr.strip().endswith(tail), stderr
    else:
        _assert_one_line(code, stderr, expected)
    assert _folder_digest(out) == before
    _write(data_dir, _csv_study(), name="data.toml")  # the good study file back for the next case


def test_dropna_drops_the_rows_instead(data_dir):
    from transferlab import study
    from transferlab.api import load_study

    study_file = _write(data_dir, _csv_study(**{"target.path": "holes.csv", "target.dropna": True}), name="drop.toml")
    target = study.plan_study(load_study(study_file)).directions[0].target_task
    assert target.provenance["rows_dropped_missing"] == 3
    assert len(target.x_train) + len(target.x_test) == 24 - sum(1 for row in (5, 7, 9) if row % 2 == 1)


def test_changed_data_refuse_the_folder_naming_the_task(data_dir, finished):
    study_file, out, _ = finished
    original = (data_dir / "good.csv").read_text()
    table = pd.read_csv(data_dir / "good.csv")
    table.loc[1, "a"] += 1.0  # row 1 is a southern row: the target's data change
    table.to_csv(data_dir / "good.csv", index=False)
    try:
        before = _folder_digest(out)
        code, _, stderr = invoke("run", study_file, "--out", out)
        assert code == 2 and "Traceback" not in stderr
        line = stderr.strip()
        assert line.startswith(f"error: {out}/results.sqlite: the data of the target task (good.csv (group == "
                               "'south')) changed since this folder's study ran (fingerprint ")
        assert line.endswith("; restore the data, or choose another --out folder (nothing here was changed)")
        assert _folder_digest(out) == before
    finally:
        (data_dir / "good.csv").write_text(original)
    code, stdout, stderr = invoke("run", study_file, "--out", out, "--quiet")  # restored: it resumes (nothing to do)
    assert code == 0, stderr and "resumed" in stdout
