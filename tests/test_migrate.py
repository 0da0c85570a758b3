"""An output folder written by an earlier schema is migrated, not refused: the schema-5
fixture (built by `tests/fixtures/make_schema5.py` with that release) converts in place, its
numbers unchanged, and everything reads it afterwards."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transferlab import curves
from transferlab.errors import StoreError
from transferlab.migrate import migrate_folder
from transferlab.store import SCHEMA_VERSION, Store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "schema5"
DIGEST = "481f76166faef79912af35eafa5ab81e95e9784cfbbd5eb1327ea8a4658a4b08"  # printed when the fixture was built


@pytest.fixture
def old_folder(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_an_old_folder_is_refused_with_the_command_that_migrates_it(old_folder):
    before = (old_folder / "results.sqlite").read_bytes()
    with pytest.raises(StoreError, match=rf"schema 5, this version uses {SCHEMA_VERSION}\); run `transferlab "
                                         rf"migrate {old_folder}` to convert it in place"):
        Store.in_folder(old_folder, readonly=True)
    assert (old_folder / "results.sqlite").read_bytes() == before


def test_migration_keeps_every_number_and_everything_reads_it(old_folder):
    old = sqlite3.connect(old_folder / "results.sqlite")
    long_before = old.execute("SELECT run_id, split, name, epoch, value FROM metrics "
                              "ORDER BY run_id, split, name, epoch").fetchall()
    old.close()
    done = subprocess.run([sys.executable, "-m", "transferlab.cli", "migrate", str(old_folder)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert " ".join(done.stdout.split()) == (f"migrated {old_folder}: schema 5 → {SCHEMA_VERSION}, 24 runs; "
                                   f"numbers_digest unchanged ({DIGEST[:16]}…)")
    with Store.in_folder(old_folder, readonly=True) as store:
        assert store.numbers_digest() == DIGEST
        study_id, plan = store.stored_plan()
        long_after = store.metrics_frame(study_id)
    assert [tuple(row) for row in long_after.itertuples(index=False)] == [
        (run, split, name, epoch, value) for run, split, name, epoch, value in long_before]
    assert not (old_folder / "results.sqlite-wal").exists()
    again = migrate_folder(old_folder)
    assert again.before == again.after == SCHEMA_VERSION and again.digest == DIGEST
    from transferlab.reports import build_report

    assert build_report(old_folder).directions[0].runs_done == 10


def test_a_failed_migration_changes_nothing(old_folder, monkeypatch):
    from transferlab import migrate

    before = (old_folder / "results.sqlite").read_bytes()
    monkeypatch.setitem(migrate.DIGESTS, 5, lambda db: "0" * 64)  # the check must fail
    with pytest.raises(StoreError, match="the migrated copy's numbers differ .* the original is unchanged"):
        migrate_folder(old_folder)
    assert (old_folder / "results.sqlite").read_bytes() == before
    assert not list(old_folder.glob(".transferlab-tmp-*"))


def test_curves_round_trip_as_float32_arrays_with_non_finite_values_missing():
    stored = {"loss": np.array([[0.5, np.inf, 0.25]], np.float32), "val_loss": np.array([[1.0, 2.0, np.nan]])}
    names, values = curves.decode(*curves.encode(stored, 0))
    assert names == ["loss", "val_loss"] and values.dtype == np.float32
    np.testing.assert_array_equal(values[0], [0.5, np.nan, 0.25])
    rows = list(curves.digest_rows(("key",), *curves.encode(stored, 0)))
    assert rows[0] == ("key", "test", "loss", 1, 1.0) and rows[-1] == ("key", "train", "loss", 3, 0.25)
    assert rows[4] == ("key", "train", "loss", 2, None)
