"""Migrations: an output folder written by an earlier schema is converted, not refused.

`migrate_folder(DIR)` (the `transferlab migrate DIR` command) converts `DIR/results.sqlite`
in place and atomically: the database is copied beside itself (SQLite's backup), the copy
is migrated one schema step at a time, its `numbers_digest()` is checked against the
original's, and only then is it renamed over the original. Holding the folder's lock, so no
run writes meanwhile. Every schema change ships its step here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab import curves as curve_arrays
from transferlab import objectives
from transferlab.errors import StoreError
from transferlab.folder import FolderLock
from transferlab.store import DATABASE_NAME, SCHEMA_VERSION, SCORES_TABLE, Store, numbers_digest

_RUN_KEY = "s.plan_sha256, r.direction, r.role, r.strategy_json, r.source_index, r.repeat"


@dataclass(frozen=True)
class Migration:
    """What `migrate_folder` did: the schema before and after, and the digest both share."""

    folder: Path
    before: int
    after: int
    runs: int
    digest: str

    def describe(self) -> str:
        if self.before == self.after:
            return f"{self.folder}: already schema {self.after}; nothing to do"
        return (f"migrated {self.folder}: schema {self.before} → {self.after}, {self.runs:,} runs; "
                f"numbers_digest unchanged ({self.digest[:16]}…)")


def migrate_folder(folder: str | Path) -> Migration:
    """Convert `folder`'s database to this version's schema, atomically, checked by its digest."""
    folder = Path(folder)
    path = folder / DATABASE_NAME
    if not path.is_file():
        raise StoreError(f"{folder}: no {DATABASE_NAME} here; give the output folder of a transferlab run")
    lock = FolderLock(folder).acquire()
    try:
        return _migrate(folder, path)
    finally:
        lock.release()


def _migrate(folder: Path, path: Path) -> Migration:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            with Store(path, readonly=True) as store:
                return Migration(folder, version, version, _count_runs(db), store.numbers_digest())
        if version not in STEPS:
            raise StoreError(f"{path}: database schema {version} has no migration to schema {SCHEMA_VERSION}; "
                             "choose a new --out folder (nothing here was changed)")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = DIGESTS[version](db)
        copy = path.with_name(f".transferlab-tmp-{os.getpid()}-migrating-{DATABASE_NAME}")
        try:
            with contextlib.closing(sqlite3.connect(copy, isolation_level=None)) as target:
                db.backup(target)
                step = version
                while step != SCHEMA_VERSION:
                    step = STEPS[step](target)
                target.execute("VACUUM")
            with Store(copy, readonly=True) as store:
                after = store.numbers_digest()
            if after != before:
                raise StoreError(f"{path}: the migrated copy's numbers differ from the original's (digest "
                                 f"{before[:12]} → {after[:12]}); the original is unchanged — please report it")
            runs = _count_runs(db)
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
    os.replace(copy, path)
    for leftover in (path.with_name(f"{DATABASE_NAME}-wal"), path.with_name(f"{DATABASE_NAME}-shm")):
        leftover.unlink(missing_ok=True)  # the old file's (empty, checkpointed) journal
    return Migration(folder, version, SCHEMA_VERSION, runs, before)


def _count_runs(db: sqlite3.Connection) -> int:
    return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def _digest_schema5(db: sqlite3.Connection) -> str:
    """`numbers_digest()` as schema 5 computed it, one curve value per row."""
    digest = hashlib.sha256()
    queries = (
        f"SELECT {_RUN_KEY}, r.seed, r.status, r.diverged_epoch FROM runs r "
        f"JOIN studies s ON s.id = r.study_id ORDER BY {_RUN_KEY}",
        f"SELECT {_RUN_KEY}, f.split, f.name, f.value FROM final_metrics f JOIN runs r ON r.id = f.run_id "
        f"JOIN studies s ON s.id = r.study_id ORDER BY {_RUN_KEY}, f.split, f.name",
        f"SELECT {_RUN_KEY}, m.split, m.name, m.epoch, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
        f"JOIN studies s ON s.id = r.study_id ORDER BY {_RUN_KEY}, m.split, m.name, m.epoch",
        "SELECT s.plan_sha256, m.direction, m.source_index, m.weights_sha256, m.metrics_json "
        "FROM source_models m JOIN studies s ON s.id = m.study_id ORDER BY s.plan_sha256, m.direction, m.source_index",
    )
    for query in queries:
        for row in db.execute(query):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def _schema5_to_6(db: sqlite3.Connection) -> int:
    """Curves: one row per run, split, metric and epoch → one float32 array per run."""
    db.execute("BEGIN IMMEDIATE")
    db.execute('CREATE TABLE curves (run_id INTEGER PRIMARY KEY REFERENCES runs(id), names TEXT NOT NULL, '
               'epochs INTEGER NOT NULL, "values" BLOB NOT NULL)')
    rows, current, values = [], None, {}
    cursor = db.execute("SELECT run_id, split, name, epoch, value FROM metrics ORDER BY run_id, split, name, epoch")
    for run_id, split, name, epoch, value in cursor:
        if run_id != current:
            if current is not None:
                rows.append(_encoded(current, values))
            current, values = run_id, {}
        values.setdefault(objectives.column(split, name, curve=True), []).append(np.nan if value is None else value)
    if current is not None:
        rows.append(_encoded(current, values))
    db.executemany('INSERT INTO curves (run_id, names, epochs, "values") VALUES (?, ?, ?, ?)', rows)
    db.execute("DROP TABLE metrics")
    db.execute("PRAGMA user_version = 6")
    db.execute("COMMIT")
    return 6


def _encoded(run_id: int, values: dict[str, list[float]]) -> tuple:
    names = curve_arrays.curve_order(values)
    return (run_id, *curve_arrays.encode({name: np.asarray([values[name]]) for name in names}, 0))


def _schema6_to_7(db: sqlite3.Connection) -> int:
    """A `scores` table (empty: the next `transferlab run` of the study computes them)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute(SCORES_TABLE)
    db.execute("PRAGMA user_version = 7")
    db.execute("COMMIT")
    return 7


STEPS = {5: _schema5_to_6, 6: _schema6_to_7}  # schema → the step that converts it to the next
DIGESTS = {5: _digest_schema5, 6: numbers_digest}  # schema → numbers_digest() as that schema computed it
