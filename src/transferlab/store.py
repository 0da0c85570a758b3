"""The results database: one SQLite file per output folder.

Runs are planned up front (status `planned`) and each finished shard is written in
one transaction (runs set to `done`, their curves, and source models), so a killed
study loses at most the shards in flight and a rerun trains only what is not done.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATABASE_NAME = "results.sqlite"

SCHEMA_VERSION = 2
FINAL_COLUMNS = (
    "train_loss", "train_accuracy", "train_mae", "train_r2",
    "test_loss", "test_accuracy", "test_mae", "test_r2",
)
CURVE_COLUMNS = ("loss", "accuracy", "mae", "r2", "val_loss", "val_accuracy", "val_mae", "val_r2")
_FINAL_SQL = ", ".join(f"{name} REAL" for name in FINAL_COLUMNS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    config_json TEXT NOT NULL,
    config_sha256 TEXT NOT NULL UNIQUE,
    versions_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS source_models (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    direction TEXT NOT NULL,         -- 'forward', or 'reverse' (trained on the target task)
    source_index INTEGER NOT NULL,
    file TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    trained_here INTEGER NOT NULL,
    seed INTEGER,
    {_FINAL_SQL},
    created_at TEXT NOT NULL,
    PRIMARY KEY (study_id, direction, source_index)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    direction TEXT NOT NULL CHECK (direction IN ('forward', 'reverse')),
    role TEXT NOT NULL CHECK (role IN ('source', 'target')),
    strategy TEXT NOT NULL,
    strategy_json TEXT NOT NULL,
    source_index INTEGER NOT NULL,   -- -1: the run uses no source model
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    architecture_json TEXT NOT NULL, -- the model this run trained
    layers_json TEXT NOT NULL,       -- per layer: origin (source layer or fresh, and why), learning-rate schedule
    status TEXT NOT NULL CHECK (status IN ('planned', 'done')),
    {_FINAL_SQL},
    finished_at TEXT,
    UNIQUE (study_id, direction, role, strategy, source_index, repeat)
);
CREATE TABLE IF NOT EXISTS curves (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    {", ".join(f"{name} REAL" for name in CURVE_COLUMNS)},
    PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""


class StoreError(RuntimeError):
    """The output folder holds something this study must not overwrite."""


@dataclass(frozen=True)
class StoredRun:
    """A planned or finished run as the database knows it."""

    id: int
    direction: str
    role: str
    strategy: str
    source_index: int
    repeat: int
    seed: int
    status: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Store:
    """The study's SQLite database; every write is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if tables and version != SCHEMA_VERSION:  # checked before anything writes to the file
            self._db.close()
            raise StoreError(
                f"{self.path}: written by another version of transferlab (database schema "
                f"{version}, this version uses {SCHEMA_VERSION}); choose a new --out folder "
                "(nothing here was changed)"
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_folder(cls, folder: str | Path) -> Store:
        return cls(Path(folder) / DATABASE_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self._db)

    # --- studies -------------------------------------------------------------------------

    def open_study(self, name: str, config: dict, config_sha256: str, versions: dict) -> int:
        """The study's id: created on first run, reused on resume, refused if the folder holds
        a different study."""
        rows = self._db.execute("SELECT id, name, config_sha256 FROM studies").fetchall()
        for study_id, stored_name, stored_hash in rows:
            if stored_hash == config_sha256:
                return study_id
            raise StoreError(
                f"{self.path}: this folder holds study {stored_name!r} with a different "
                "configuration; choose another --out folder (nothing here was changed)"
            )
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO studies (name, config_json, config_sha256, versions_json, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, json.dumps(config, sort_keys=True), config_sha256, json.dumps(versions), _now()),
            )
        return int(cursor.lastrowid)

    def study(self) -> dict:
        row = self._db.execute(
            "SELECT id, name, config_json, config_sha256, versions_json, created_at FROM studies"
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no study has been run into this folder yet")
        keys = ("id", "name", "config", "config_sha256", "versions", "created_at")
        study = dict(zip(keys, row))
        study["config"] = json.loads(study["config"])
        study["versions"] = json.loads(study["versions"])
        return study

    # --- runs ----------------------------------------------------------------------------

    def plan_runs(self, study_id: int, runs: list[dict]) -> None:
        """Insert planned runs; runs already known (finished or not) are left as they are."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO runs (study_id, direction, role, strategy, strategy_json, "
                "source_index, repeat, seed, architecture_json, layers_json, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned')",
                [
                    (
                        study_id,
                        run["direction"],
                        run["role"],
                        run["strategy"],
                        json.dumps(run["strategy_json"], sort_keys=True),
                        run["source_index"],
                        run["repeat"],
                        run["seed"],
                        json.dumps(run["architecture"], sort_keys=True),
                        json.dumps(run["layers"], ensure_ascii=False),
                    )
                    for run in runs
                ],
            )

    def runs(self, study_id: int, role: str | None = None) -> list[StoredRun]:
        query = (
            "SELECT id, direction, role, strategy, source_index, repeat, seed, status FROM runs "
            "WHERE study_id = ?"
        )
        params: tuple = (study_id,)
        if role is not None:
            query += " AND role = ?"
            params += (role,)
        return [StoredRun(*row) for row in self._db.execute(query + " ORDER BY id", params)]

    def finish_shard(
        self,
        run_ids: list[int],
        final: dict[str, np.ndarray],
        curves: dict[str, np.ndarray],
        source_models: list[dict] | None = None,
    ) -> None:
        """Record one finished shard: final metrics, per-epoch curves and source models, atomically."""
        finished = _now()
        epochs = curves["loss"].shape[1]
        finals = [name for name in FINAL_COLUMNS if name in final]
        curve_names = [name for name in CURVE_COLUMNS if name in curves]
        with self._transaction():
            self._db.executemany(
                f"UPDATE runs SET status = 'done', {', '.join(f'{n} = ?' for n in finals)}, finished_at = ? "
                "WHERE id = ? AND status = 'planned'",
                [
                    tuple(float(final[name][i]) for name in finals) + (finished, run_id)
                    for i, run_id in enumerate(run_ids)
                ],
            )
            self._db.executemany(
                f"INSERT INTO curves (run_id, epoch, {', '.join(curve_names)}) "
                f"VALUES (?, ?, {', '.join('?' * len(curve_names))})",
                [
                    (run_id, epoch + 1) + tuple(float(curves[name][i, epoch]) for name in curve_names)
                    for i, run_id in enumerate(run_ids)
                    for epoch in range(epochs)
                ],
            )
            for source in source_models or []:
                self._insert_source_model(source, finished)

    def record_source_model(self, source: dict) -> None:
        with self._transaction():
            self._insert_source_model(source, _now())

    def _insert_source_model(self, source: dict, created_at: str) -> None:
        columns = ("study_id", "direction", "source_index", "file", "file_sha256", "weights_sha256",
                   "trained_here", "seed") + FINAL_COLUMNS
        values = [source.get(name) for name in columns]
        values[columns.index("trained_here")] = int(source["trained_here"])
        self._db.execute(
            f"INSERT OR REPLACE INTO source_models ({', '.join(columns)}, created_at) "
            f"VALUES ({', '.join('?' * len(columns))}, ?)",
            (*values, created_at),
        )

    def source_models(self, study_id: int, direction: str | None = None) -> list[dict]:
        query = "SELECT * FROM source_models WHERE study_id = ?"
        params: tuple = (study_id,)
        if direction is not None:
            query += " AND direction = ?"
            params += (direction,)
        cursor = self._db.execute(query + " ORDER BY direction, source_index", params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    # --- tables for statistics and plots -------------------------------------------------

    def runs_frame(self, study_id: int) -> pd.DataFrame:
        return pd.read_sql_query(
            "SELECT id AS run_id, direction, role, strategy, source_index, repeat, seed, status, "
            f"{', '.join(FINAL_COLUMNS)} FROM runs WHERE study_id = ? ORDER BY id",
            self._db,
            params=(study_id,),
        )

    def layer_records(self, study_id: int) -> pd.DataFrame:
        """Each strategy's target architecture and per-layer record (one row per direction and strategy)."""
        return pd.read_sql_query(
            "SELECT direction, strategy, architecture_json, layers_json FROM runs "
            "WHERE study_id = ? AND role = 'target' GROUP BY direction, strategy ORDER BY min(id)",
            self._db,
            params=(study_id,),
        )

    def curves_frame(self, study_id: int) -> pd.DataFrame:
        return pd.read_sql_query(
            "SELECT r.direction, r.role, r.strategy, r.source_index, r.repeat, c.epoch, "
            f"{', '.join('c.' + name for name in CURVE_COLUMNS)} FROM curves c JOIN runs r ON r.id = c.run_id "
            "WHERE r.study_id = ? ORDER BY r.id, c.epoch",
            self._db,
            params=(study_id,),
        )


class _Transaction:
    """`BEGIN IMMEDIATE … COMMIT`, rolled back on any error (including KeyboardInterrupt)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
        return False
