"""The long `curves` table of `results()` and `export`, built from the stored arrays with
NumPy, against a plain pandas construction from the same rows; exported files read back
equal, whatever the batch size."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from transferlab import objectives, store as store_module, study
from transferlab.frames import export, results
from transferlab.loading import study_from_dict


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    raw = {
        "name": "long", "seed": 5, "repeats": 2, "source_repeats": 2, "reverse": True,
        "source": {"kind": "blobs", "seed": 1, "n_samples": 120, "n_train": 60},
        "target": {"kind": "blobs", "seed": 2, "n_samples": 120, "n_train": 60},
        "training": {"epochs": 3},
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
    }
    out = tmp_path_factory.mktemp("long") / "out"
    study.run_study(study_from_dict(raw), out)
    return out


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({c: object for c in frame.columns if str(frame[c].dtype) in ("category", "str", "string")})


def _reference(folder) -> pd.DataFrame:
    """One row per stored value, made with Python loops and a pandas merge."""
    db = sqlite3.connect(folder / "results.sqlite")
    rows = []
    for run_id, names, epochs, blob in db.execute('SELECT run_id, names, epochs, "values" FROM curves ORDER BY run_id'):
        values = np.frombuffer(blob, "<f4").reshape(len(json.loads(names)), epochs)
        keyed = sorted((*objectives.curve_key(name), i) for i, name in enumerate(json.loads(names)))
        for split, metric, i in keyed:
            for epoch in range(epochs):
                value = float(values[i, epoch])
                rows.append((run_id, split, metric, epoch + 1, value if np.isfinite(value) else np.nan))
    runs = pd.read_sql_query("SELECT id AS run_id, direction, role, strategy, source_index, repeat FROM runs", db)
    db.close()
    runs["strategy"] = runs["strategy"].where(runs["role"] != "source", "source model")
    long = pd.DataFrame(rows, columns=["run_id", "split", "name", "epoch", "value"])
    return long.merge(runs, on="run_id")


def test_the_curves_table_equals_a_plain_pandas_construction(folder):
    table = results(folder)["curves"]
    assert {c for c in table.columns if str(table[c].dtype) == "category"} == {
        "split", "name", "direction", "role", "strategy"}
    assert set(table["direction"]) == {"forward", "reverse"} and "source model" in set(table["strategy"])
    pd.testing.assert_frame_equal(_plain(table), _plain(_reference(folder)), check_dtype=False, check_exact=True)


@pytest.mark.parametrize("format", ["parquet", "csv"])
def test_exported_curves_read_back_as_results_has_them_whatever_the_batch(folder, tmp_path, monkeypatch, format):
    expected = _plain(results(folder)["curves"])
    monkeypatch.setattr(store_module, "BATCH_RUNS", 3)  # many batches, some ending mid-direction
    export(folder, format, tmp_path / "export")
    path = tmp_path / "export" / f"curves.{format}"
    read = pd.read_parquet(path) if format == "parquet" else pd.read_csv(path)
    pd.testing.assert_frame_equal(_plain(read), expected, check_dtype=False, check_exact=True)
