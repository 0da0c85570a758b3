"""The results database: one SQLite file per output folder.

Runs are planned up front (status `planned`) and each finished shard is written in
one transaction (runs set to `done`, or `diverged` with the epoch their loss stopped
being finite; their curves; source models), so a killed study loses at most the shards
in flight and a rerun trains only what is still planned. The study's plan is stored
once, in canonical JSON; resume, report and retrain read it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab import curves as curve_arrays
from transferlab import objectives
from transferlab.errors import StoreError
from transferlab.folder import disk_full
from transferlab.models import check_file_sha256
from transferlab.scores import SCORES

DATABASE_NAME = "results.sqlite"

SCHEMA_VERSION = 7  # 7: transferability scores; 6: curves as one array per run (5: one row per value)
MIGRATABLE = (5, 6)  # older schemas `transferlab migrate` converts (transferlab.migrate)
STATUSES = ("planned", "done", "diverged")
SPLITS = ("train", "test")
# the final metrics every study table shows, in the objectives' order
FINAL_COLUMNS = tuple(objectives.column(split, name) for split in SPLITS for name in objectives.METRICS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    plan_json TEXT NOT NULL,         -- the canonical plan (transferlab.plan.Plan)
    plan_sha256 TEXT NOT NULL UNIQUE,
    versions_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    point_index INTEGER,             -- a sweep's point (NULL: a plain study)
    point_json TEXT                  -- the point's values, e.g. {{"target.n_train": 50}}
);
CREATE TABLE IF NOT EXISTS sweeps (  -- at most one: the folder holds this sweep's points
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,         -- mode, axes and each point's plan hash
    sha256 TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS tasks (  -- every task's final arrays, written once with the study
    fingerprint TEXT PRIMARY KEY,    -- SHA-256 of the arrays (transferlab.tasks.Task.fingerprint)
    arrays BLOB NOT NULL             -- x_train, y_train, x_test, y_test as an .npz archive (no pickles)
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
    metrics_json TEXT NOT NULL,      -- final metrics, e.g. {{"test_accuracy": 0.8}}
    created_at TEXT NOT NULL,
    PRIMARY KEY (study_id, direction, source_index)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    direction TEXT NOT NULL CHECK (direction IN ('forward', 'reverse')),
    role TEXT NOT NULL CHECK (role IN ('source', 'target')),
    strategy TEXT NOT NULL,          -- display label
    strategy_json TEXT NOT NULL,     -- identity: canonical name and parameters
    source_index INTEGER NOT NULL,   -- -1: the run uses no source model
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    architecture_json TEXT NOT NULL, -- the model this run trained
    layers_json TEXT NOT NULL,       -- per layer: origin (source layer or fresh, and why), learning-rate schedule
    status TEXT NOT NULL CHECK (status IN ('planned', 'done', 'diverged')),
    diverged_epoch INTEGER,          -- first epoch whose loss was NaN or infinite
    finished_at TEXT,
    reuse_key TEXT,                  -- what decides its numbers (task data, recipe, training, seed) for a
                                     -- run that reuses no source model: another study's finished run with
                                     -- this key is adopted instead of trained again (sweeps, matrices)
    UNIQUE (study_id, direction, role, strategy_json, source_index, repeat)
);
CREATE INDEX IF NOT EXISTS runs_by_reuse_key ON runs (reuse_key) WHERE reuse_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS final_metrics (  -- evaluated with the trained weights
    run_id INTEGER NOT NULL REFERENCES runs(id),
    split TEXT NOT NULL CHECK (split IN ('train', 'test')),
    name TEXT NOT NULL,              -- 'loss', 'accuracy', 'mae', 'r2', ...
    value REAL,                      -- NULL: not finite (the run diverged)
    PRIMARY KEY (run_id, split, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS curves (  -- per epoch, as Keras' History: train = running mean, test = val_
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    names TEXT NOT NULL,             -- the History names, e.g. ["loss", "accuracy", "val_loss", "val_accuracy"]
    epochs INTEGER NOT NULL,
    "values" BLOB NOT NULL           -- float32 little-endian (names, epochs); NaN: not finite (transferlab.curves)
);
CREATE TABLE IF NOT EXISTS scores (  -- transferability scores of each source model on the target's training rows
    study_id INTEGER NOT NULL REFERENCES studies(id),
    direction TEXT NOT NULL,
    source_index INTEGER NOT NULL,
    score TEXT NOT NULL,             -- 'leep', 'nce', 'logme', ... (transferlab.scores)
    layer INTEGER NOT NULL,          -- the hidden layer whose output the feature scores read
    value REAL,                      -- NULL: the score does not apply (the note says why)
    note TEXT NOT NULL,
    seconds REAL NOT NULL,           -- time to compute it, its share of the forward pass included
    PRIMARY KEY (study_id, direction, source_index, score)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""

SCORES_TABLE = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS scores"):SCHEMA.index("PRAGMA user_version")]




BATCH_RUNS = 20_000  # runs' curves decoded at once when reading a whole study (about 30 MB at 100 epochs)


@dataclass(frozen=True)
class StoredRun:
    """A planned or finished run as the database knows it."""

    id: int
    direction: str
    role: str
    strategy: str
    strategy_json: str
    source_index: int
    repeat: int
    seed: int
    status: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Store:
    """The study's SQLite database; every write is one transaction.

    `readonly` opens an existing database for reading only (reports, retraining): nothing
    is created, and a missing or foreign file is a one-line `StoreError`."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a results database; move it away or choose another --out")
        if readonly and not self.path.is_file():
            raise StoreError(f"{self.path.parent}: no {DATABASE_NAME} here; run a study into this folder first")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise _unusable(self.path, error) or StoreError(
                f"{self.path}: not a transferlab results database ({error}); move it away or choose "
                "another --out (nothing was changed)"
            ) from None
        self._empty = not tables  # a run killed before it created the schema left this
        if tables and version != SCHEMA_VERSION:  # checked before anything writes
            self._db.close()
            if version in MIGRATABLE:
                raise StoreError(
                    f"{self.path}: written by an earlier version of transferlab (database schema {version}, this "
                    f"version uses {SCHEMA_VERSION}); run `transferlab migrate {self.path.parent}` to convert it in "
                    "place (nothing here was changed)")
            raise StoreError(
                f"{self.path}: written by another version of transferlab (database schema "
                f"{version}, this version uses {SCHEMA_VERSION}); choose a new --out folder "
                "(nothing here was changed)"
            )
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                if not tables:  # a new database; an existing one is left byte for byte until a write
                    self._db.executescript(SCHEMA)
                    self._empty = False
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.OperationalError as error:
            self._db.close()
            raise _unusable(self.path, error) or StoreError(
                f"{self.path}: cannot write the results database ({error}); choose a writable --out") from None

    @classmethod
    def in_folder(cls, folder: str | Path, readonly: bool = False) -> Store:
        return cls(Path(folder) / DATABASE_NAME, readonly=readonly)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self._db, self.path)

    @contextlib.contextmanager
    def snapshot(self):
        """Reads inside the block see one consistent state, even while a run commits shards."""
        self._db.execute("BEGIN")
        try:
            yield self
        finally:
            self._db.execute("COMMIT")

    # --- studies -------------------------------------------------------------------------

    def open_study(self, plan, versions: dict, point=None) -> int:
        """The study's id: created on first run, reused on resume, refused if the folder holds
        a different study (a different plan: tasks, model, training, strategies or seeds).
        `point` (a sweep's `Point`) stores the study as that point of the folder's sweep."""
        from transferlab.canonical import canonical_json

        plan_sha = plan.sha256()
        stored = self.study_holding(plan_sha) if point is None else self.point_holding(plan_sha)
        if stored is not None:
            return stored
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO studies (name, plan_json, plan_sha256, versions_json, created_at, point_index, "
                "point_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (plan.name, canonical_json(plan.to_dict()), plan_sha, json.dumps(versions), _now(),
                 None if point is None else point.index, None if point is None else canonical_json(point.values)),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO tasks (fingerprint, arrays) VALUES (?, ?)",
                [(fingerprint, _task_arrays(task)) for fingerprint, task in plan.tasks().items()],
            )
        return int(cursor.lastrowid)

    def has_study(self) -> bool:
        return not self._empty and self._db.execute("SELECT count(*) FROM studies").fetchone()[0] > 0

    def sweep(self) -> dict | None:
        """The sweep this folder holds (`name`, `spec`, `sha256`), None for a plain study."""
        if self._empty:
            return None
        row = self._db.execute("SELECT name, spec_json, sha256 FROM sweeps").fetchone()
        return None if row is None else {"name": row[0], "spec": json.loads(row[1]), "sha256": row[2]}

    def open_sweep(self, name: str, spec: dict, sha256: str) -> None:
        """Record that this folder holds the sweep (refused if it holds anything else)."""
        self.check_holds_sweep(name, sha256)
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO sweeps (name, spec_json, sha256) VALUES (?, ?, ?)",
                             (name, json.dumps(spec, sort_keys=True), sha256))

    def check_holds_sweep(self, name: str, sha256: str, differences: str = "") -> None:
        """A sweep may run into an empty folder or one holding this same sweep (`differences`
        names what changed, for the refusal)."""
        stored = self.sweep()
        if stored is None:
            if self.has_study():
                held = self._db.execute("SELECT name FROM studies").fetchone()[0]
                raise StoreError(f"{self.path}: this folder holds study {held!r}, not the sweep {name!r}; choose "
                                 "another --out folder (nothing here was changed)")
            return
        if stored["sha256"] != sha256:
            raise StoreError(f"{self.path}: this folder holds sweep {stored['name']!r} with a different "
                             f"configuration{f' ({differences})' if differences else ''}; choose another --out "
                             "folder (nothing here was changed)")

    def point_holding(self, plan_sha256: str) -> int | None:
        """The id of the sweep point with this plan, None if not stored yet (the folder's
        sweep was checked as a whole by `check_holds_sweep`)."""
        if self._empty:
            return None
        row = self._db.execute("SELECT id FROM studies WHERE plan_sha256 = ?", (plan_sha256,)).fetchone()
        return None if row is None else row[0]

    def study_holding(self, plan_sha256: str, differences: str = "") -> int | None:
        """The id of the stored study with this plan, None if the folder holds no study yet;
        a folder holding another study, or a sweep, is refused (`differences` names what
        changed, for the refusal)."""
        if self._empty:
            return None
        held = self.sweep()
        if held is not None:
            raise StoreError(f"{self.path}: this folder holds sweep {held['name']!r}; choose another --out folder "
                             "(nothing here was changed)")
        row = self._db.execute("SELECT id, name, plan_sha256 FROM studies").fetchone()
        if row is None:
            return None
        study_id, stored_name, stored_hash = row
        if stored_hash != plan_sha256:
            raise StoreError(
                f"{self.path}: this folder holds study {stored_name!r} with a different "
                f"configuration{f' ({differences})' if differences else ''}; choose another --out folder "
                "(nothing here was changed)"
            )
        return study_id

    def points(self) -> list[dict]:
        """A sweep folder's stored points in order: study id, index and values."""
        rows = self._db.execute(
            "SELECT id, point_index, point_json FROM studies WHERE point_index IS NOT NULL ORDER BY point_index")
        return [{"study_id": r[0], "index": r[1], "values": json.loads(r[2])} for r in rows.fetchall()]

    def study(self, study_id: int | None = None) -> dict:
        """The stored study (or sweep point `study_id`): id, name, plan (as stored), its hash,
        versions, creation time."""
        if self._empty:
            raise StoreError(f"{self.path}: no study has been run into this folder yet")
        query = "SELECT id, name, plan_json, plan_sha256, versions_json, created_at FROM studies"
        row = self._db.execute(query + " WHERE id = ?", (study_id,)).fetchone() if study_id is not None else (
            self._db.execute(query + " ORDER BY id").fetchone())
        if row is None:
            raise StoreError(f"{self.path}: no study has been run into this folder yet")
        keys = ("id", "name", "plan", "plan_sha256", "versions", "created_at")
        study = dict(zip(keys, row))
        try:
            study["plan"] = json.loads(study["plan"])
            study["versions"] = json.loads(study["versions"])
        except json.JSONDecodeError as error:
            raise StoreError(f"{self.path}: the stored study is damaged ({error}); rerun it into a new folder") from None
        study["config"] = study["plan"].get("study", {})
        return study

    def stored_plan(self, study_id: int | None = None):
        """`(study id, Plan)` as stored when the study (or sweep point `study_id`) first ran."""
        from transferlab.plan import Plan

        study = self.study(study_id)
        try:
            plan = Plan.from_dict(study["plan"])
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{self.path}: the stored plan cannot be read ({type(error).__name__}: {error}); "
                "rerun the study into a new folder"
            ) from None
        plan.attach_tasks({spec.fingerprint: self._task(role, spec)
                           for direction in plan.directions for role, spec in direction.task_specs().items()})
        return study["id"], plan

    def _task(self, role: str, spec):
        """A task's arrays read back, checked against the fingerprint the plan holds."""
        from transferlab.tasks import Scaler, Task

        row = self._db.execute("SELECT arrays FROM tasks WHERE fingerprint = ?", (spec.fingerprint,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: the {role} task's data ({spec.fingerprint[:12]}) are missing; "
                             "rerun the study into a new folder")
        with np.load(io.BytesIO(row[0]), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        scaler = spec.provenance.get("scaler")
        task = Task(role, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], spec.kind,
                    feature_names=spec.feature_names, class_names=spec.class_names, provenance=spec.provenance,
                    scaler=None if scaler is None else Scaler.from_dict(scaler))
        if task.fingerprint() != spec.fingerprint:
            raise StoreError(f"{self.path}: the stored {role} task's data do not match their fingerprint (the "
                             "database is damaged); rerun the study into a new folder")
        return task

    # --- runs ----------------------------------------------------------------------------

    def plan_runs(self, study_id: int, runs) -> None:
        """Insert planned runs; runs already known (finished or not) are left as they are."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO runs (study_id, direction, role, strategy, strategy_json, "
                "source_index, repeat, seed, architecture_json, layers_json, reuse_key, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned')",
                (
                    (
                        study_id,
                        run["direction"],
                        run["role"],
                        run["strategy"],
                        run["strategy_json"],
                        run["source_index"],
                        run["repeat"],
                        run["seed"],
                        json.dumps(run["architecture"], sort_keys=True),
                        json.dumps(run["layers"], ensure_ascii=False),
                        run.get("reuse_key"),
                    )
                    for run in runs
                ),
            )

    def adopt_runs(self, study_id: int, run_ids: list[int]) -> set[int]:
        """Give each planned run of `run_ids` the results of a finished run with the same
        `reuse_key` in another study of this folder (its curves, final metrics, status and,
        for a source run, its source model record); one transaction. Returns the adopted ids."""
        adopted = set()
        with self._transaction():
            for run_id in run_ids:
                donor = self._db.execute(
                    "SELECT d.id, d.status, d.diverged_epoch, d.study_id, d.direction, d.source_index, r.role, "
                    "r.direction, r.source_index FROM runs r JOIN runs d ON d.reuse_key = r.reuse_key "
                    "WHERE r.id = ? AND r.status = 'planned' AND d.status != 'planned' AND d.study_id != ? "
                    "ORDER BY d.id LIMIT 1", (run_id, study_id)).fetchone()
                if donor is None:
                    continue
                donor_id, status, diverged_epoch, donor_study, donor_direction, donor_index, role, direction, index = donor
                self._db.execute('INSERT INTO curves (run_id, names, epochs, "values") '
                                 'SELECT ?, names, epochs, "values" FROM curves WHERE run_id = ?', (run_id, donor_id))
                self._db.execute("INSERT INTO final_metrics (run_id, split, name, value) "
                                 "SELECT ?, split, name, value FROM final_metrics WHERE run_id = ?", (run_id, donor_id))
                self._db.execute("UPDATE runs SET status = ?, diverged_epoch = ?, finished_at = ? WHERE id = ?",
                                 (status, diverged_epoch, _now(), run_id))
                if role == "source":
                    self._db.execute(
                        "INSERT OR IGNORE INTO source_models (study_id, direction, source_index, file, file_sha256, "
                        "weights_sha256, trained_here, seed, metrics_json, created_at) "
                        "SELECT ?, ?, ?, file, file_sha256, weights_sha256, trained_here, seed, metrics_json, created_at "
                        "FROM source_models WHERE study_id = ? AND direction = ? AND source_index = ?",
                        (study_id, direction, index, donor_study, donor_direction, donor_index))
                adopted.add(run_id)
        return adopted

    def runs(self, study_id: int, role: str | None = None) -> list[StoredRun]:
        query = (
            "SELECT id, direction, role, strategy, strategy_json, source_index, repeat, seed, status FROM runs "
            "WHERE study_id = ?"
        )
        params: tuple = (study_id,)
        if role is not None:
            query += " AND role = ?"
            params += (role,)
        self.check_statuses(study_id)
        return [StoredRun(*row) for row in self._db.execute(query + " ORDER BY id", params)]

    def check_statuses(self, study_id: int) -> None:
        """Every run's status must be one this version knows (a hand-edited file may differ)."""
        placeholders = ", ".join("?" * len(STATUSES))
        row = self._db.execute(
            f"SELECT id, status FROM runs WHERE study_id = ? AND status NOT IN ({placeholders}) LIMIT 1",
            (study_id, *STATUSES),
        ).fetchone()
        if row is not None:
            raise StoreError(
                f"{self.path}: run {row[0]} has status {row[1]!r}, which is none of "
                f"{', '.join(STATUSES)}; the database was edited — restore it or rerun into a new folder"
            )

    def finish_shard(self, run_ids: list[int], result, source_models: list[dict] | None = None) -> int:
        """Record one finished shard (an engine `ShardResult`): final metrics, per-epoch curves,
        divergence and source models, atomically. Returns how many runs diverged."""
        return self.finish_shards([(run_ids, result, source_models)])

    def finish_shards(self, shards: list[tuple]) -> int:
        """Record several finished shards `(run_ids, result, source_models)` in one transaction
        (the writer thread's batch when shards arrive faster than one commit each): each shard
        is whole or absent, never half. Returns how many runs diverged."""
        finished = _now()
        with self._transaction():
            return sum(self._write_shard(*shard, finished) for shard in shards)

    def _write_shard(self, run_ids: list[int], result, source_models: list[dict] | None, finished: str) -> int:
        final, curves = result.final, result.curves
        diverged_at = result.diverged_epoch
        self._db.executemany(
            "UPDATE runs SET status = ?, diverged_epoch = ?, finished_at = ? WHERE id = ? AND status = 'planned'",
            [
                ("diverged" if diverged_at[i] else "done", int(diverged_at[i]) or None, finished, run_id)
                for i, run_id in enumerate(run_ids)
            ],
        )
        self._db.executemany(
            "INSERT INTO final_metrics (run_id, split, name, value) VALUES (?, ?, ?, ?)",
            (row for name, values in final.items() for row in _final_rows(run_ids, name, values)),
        )
        names, epochs, rows = curve_arrays.encode_shard(curves)
        self._db.executemany(
            'INSERT INTO curves (run_id, names, epochs, "values") VALUES (?, ?, ?, ?)',
            ((run_id, names, epochs, row) for run_id, row in zip(run_ids, rows)),
        )
        for source in source_models or []:
            self._insert_source_model(source, finished)
        return int(np.count_nonzero(diverged_at))

    def record_source_model(self, source: dict) -> None:
        with self._transaction():
            self._insert_source_model(source, _now())

    def _insert_source_model(self, source: dict, created_at: str) -> None:
        columns = ("study_id", "direction", "source_index", "file", "file_sha256", "weights_sha256",
                   "trained_here", "seed")
        values = [source.get(name) for name in columns]
        values[columns.index("trained_here")] = int(source["trained_here"])
        metrics = {
            name: _finite(value) for name, value in source.items()
            if _is_final_metric(name) and value is not None
        }
        self._db.execute(
            f"INSERT OR REPLACE INTO source_models ({', '.join(columns)}, metrics_json, created_at) "
            f"VALUES ({', '.join('?' * len(columns))}, ?, ?)",
            (*values, json.dumps(metrics, sort_keys=True), created_at),
        )

    def source_models(self, study_id: int, direction: str | None = None) -> list[dict]:
        """Each source model's record, its final metrics as keys (`test_accuracy`, …; the
        standard ones None where the objective has none)."""
        query = "SELECT * FROM source_models WHERE study_id = ?"
        params: tuple = (study_id,)
        if direction is not None:
            query += " AND direction = ?"
            params += (direction,)
        cursor = self._db.execute(query + " ORDER BY direction, source_index", params)
        names = [column[0] for column in cursor.description]
        records = []
        for row in cursor:
            record = dict(zip(names, row))
            metrics = json.loads(record.pop("metrics_json"))
            record["file"] = str(self.path.parent / record["file"])  # stored relative to the folder (or absolute)
            records.append({**record, **dict.fromkeys(FINAL_COLUMNS), **metrics})
        return records

    # --- tables for statistics and plots -------------------------------------------------

    def check_source_files(self, study_id: int, plan) -> None:
        """Every source model file the study has used must still hash to what was recorded."""
        if plan.model_file is not None:
            check_file_sha256(plan.model_file, plan.model_file_sha256)
        for record in self.source_models(study_id):
            check_file_sha256(record["file"], record["file_sha256"])

    def numbers_digest(self) -> str:
        """SHA-256 of every number this folder's studies trained (`numbers_digest`)."""
        return numbers_digest(self._db)

    # --- transferability scores ----------------------------------------------------------

    def record_scores(self, study_id: int, direction: str, rows) -> None:
        """One direction's scores (`transferability.ScoreRow`s), replacing any stored before."""
        with self._transaction():
            self._db.execute("DELETE FROM scores WHERE study_id = ? AND direction = ?", (study_id, direction))
            self._db.executemany(
                "INSERT INTO scores (study_id, direction, source_index, score, layer, value, note, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(study_id, direction, r.source_index, r.score, r.layer,
                  None if r.value is None else _finite(r.value), r.note, r.seconds)
                 for r in rows])

    def scores_frame(self, study_id: int) -> pd.DataFrame:
        """One row per source model and score: direction, source_index, score, layer, value
        (NaN where it does not apply), note, seconds."""
        frame = pd.read_sql_query(
            "SELECT direction, source_index, score, layer, value, note, seconds FROM scores WHERE study_id = ?",
            self._db, params=(study_id,)).astype({"value": float})
        order = {name: position for position, name in enumerate(SCORES)}
        return frame.sort_values(["direction", "source_index", "score"], key=lambda column: column.map(order)
                                 if column.name == "score" else column).reset_index(drop=True)

    def runs_frame(self, study_id: int) -> pd.DataFrame:
        """One row per run: its identity, status and final metrics as `{split}_{name}` columns."""
        self.check_statuses(study_id)
        runs = pd.read_sql_query(
            "SELECT id AS run_id, direction, role, strategy, source_index, repeat, seed, status, "
            "diverged_epoch FROM runs WHERE study_id = ? ORDER BY id",
            self._db,
            params=(study_id,),
        )
        finals = pd.read_sql_query(
            "SELECT f.run_id, f.split || '_' || f.name AS metric, f.value FROM final_metrics f "
            "JOIN runs r ON r.id = f.run_id WHERE r.study_id = ?",
            self._db,
            params=(study_id,),
        )
        wide = finals.pivot(index="run_id", columns="metric", values="value")
        columns = list(FINAL_COLUMNS) + sorted(set(wide.columns) - set(FINAL_COLUMNS))
        wide = wide.reindex(columns=columns).astype(float)
        return runs.join(wide, on="run_id")

    def learning_measures(self, study_id: int, direction: str, name: str, threshold: float | None) -> pd.DataFrame:
        """Per finished target run of `direction`, from its per-epoch test curve of metric
        `name`: the value after epoch 1 (`jumpstart`), the mean over epochs (`auc`) and the
        first epoch at or above `threshold` (`reached`, None if never or without a
        threshold), read run by run from the stored arrays so memory stays flat."""
        batches = self._curve_batches("r.study_id = ? AND r.direction = ? AND r.role = 'target' AND r.status = 'done'",
                                      (study_id, direction), BATCH_RUNS)
        return pd.concat([curve_arrays.learning_measures(ids, rows, name, threshold) for ids, rows in batches],
                         ignore_index=True)

    def _curve_rows(self, where: str, params: tuple):
        """`(run_id, names, epochs, blob)` of the runs `where` selects, in run order, a batch at a time."""
        cursor = self._db.execute(
            f'SELECT r.id, c.names, c.epochs, c."values" FROM curves c JOIN runs r ON r.id = c.run_id '
            f"WHERE {where} ORDER BY r.id", params)
        while batch := cursor.fetchmany(1024):
            yield from batch

    def layer_records(self, study_id: int) -> pd.DataFrame:
        """Each strategy's target architecture and per-layer record (one row per direction and strategy)."""
        return pd.read_sql_query(
            "SELECT direction, strategy, architecture_json, layers_json FROM runs "
            "WHERE study_id = ? AND role = 'target' GROUP BY direction, strategy ORDER BY min(id)",
            self._db,
            params=(study_id,),
        )

    def metrics_frame(self, study_id: int) -> pd.DataFrame:
        """The per-epoch metrics, long: one row per run, split, metric and epoch."""
        rows = list(self._curve_rows("r.study_id = ?", (study_id,)))
        return curve_arrays.long_rows([row[0] for row in rows], [row[1:] for row in rows])

    def curve_batches(self, study_id: int, runs: int = 0):
        """Every run's stored curves as `(run_ids, rows)` lists of `runs` runs (default
        `BATCH_RUNS`), in run order: bounded memory for huge studies."""
        return self._curve_batches("r.study_id = ?", (study_id,), runs or BATCH_RUNS)

    def _curve_batches(self, where: str, params: tuple, runs: int):
        """`_curve_rows` as `(run_ids, rows)` lists of at most `runs` runs (always one, even empty)."""
        ids, rows, yielded = [], [], False
        for run_id, *row in self._curve_rows(where, params):
            ids.append(run_id)
            rows.append(tuple(row))
            if len(ids) == runs:
                yield ids, rows
                ids, rows, yielded = [], [], True
        if ids or not yielded:
            yield ids, rows

    def curves_frame(self, study_id: int) -> pd.DataFrame:
        """Every run's per-epoch curves, one column per History name (large: prefer
        `mean_curves` for summaries)."""
        runs = pd.read_sql_query(
            "SELECT id AS run_id, direction, role, strategy, source_index, repeat FROM runs WHERE study_id = ?",
            self._db,
            params=(study_id,),
        ).set_index("run_id")
        long = self.metrics_frame(study_id)
        long["curve"] = [objectives.column(split, name, curve=True) for split, name in zip(long["split"], long["name"])]
        wide = long.pivot(index=["run_id", "epoch"], columns="curve", values="value").reset_index()
        curves = curve_arrays.curve_order([c for c in wide.columns if c not in ("run_id", "epoch")])
        table = wide.join(runs, on="run_id").sort_values(["run_id", "epoch"])
        return table[["direction", "role", "strategy", "source_index", "repeat", "epoch", *curves]].reset_index(drop=True)

    def mean_curves(self, study_id: int) -> pd.DataFrame:
        """Per direction, strategy and epoch, over the target runs that finished (not diverged):
        `n` and the mean and sample std of every curve, from the arrays with NumPy in two
        passes (means, then squared deviations), a batch of runs at a time, so memory is
        the groups' sums, however many runs there are."""
        where = "r.study_id = ? AND r.role = 'target' AND r.status = 'done'"
        groups = {run_id: (direction, strategy) for run_id, direction, strategy in self._db.execute(
            f"SELECT r.id, r.direction, r.strategy FROM runs r WHERE {where}", (study_id,))}
        means = curve_arrays.MeanCurves()
        for run_id, names_json, epochs, blob in self._curve_rows(where, (study_id,)):
            means.add(groups[run_id], run_id, *curve_arrays.decode(names_json, epochs, blob))
        for run_id, names_json, epochs, blob in self._curve_rows(where, (study_id,)):
            means.add_deviations(groups[run_id], curve_arrays.decode(names_json, epochs, blob)[1])
        return means.frame()


def numbers_digest(db: sqlite3.Connection) -> str:
    """SHA-256 of every number this folder's studies hold: each run's identity, seed,
    status and diverged epoch, every final metric and curve value (floats by their exact
    `repr`), each source model's weights hash and metrics. Clock times, paths and ids
    are left out, so two runs of the same study (or the same study before and after a
    change that promises to change no bit) give the same digest. Transferability scores
    are left out: they are computed from what it covers (schema 7 added them and kept
    schema 6's digest)."""
    digest = hashlib.sha256()
    run_key = "s.plan_sha256, r.direction, r.role, r.strategy_json, r.source_index, r.repeat"
    for query in (
        f"SELECT {run_key}, r.seed, r.status, r.diverged_epoch FROM runs r "
        f"JOIN studies s ON s.id = r.study_id ORDER BY {run_key}",
        f"SELECT {run_key}, f.split, f.name, f.value FROM final_metrics f JOIN runs r ON r.id = f.run_id "
        f"JOIN studies s ON s.id = r.study_id ORDER BY {run_key}, f.split, f.name",
    ):
        for row in db.execute(query):
            digest.update(repr(tuple(row)).encode())
    # the curves, value by value in (run, split, metric, epoch) order: the digest is over
    # numbers, not rows, so it is what it was when each value was a row of its own
    for *key, names, epochs, blob in db.execute(
            f'SELECT {run_key}, c.names, c.epochs, c."values" FROM curves c JOIN runs r ON r.id = c.run_id '
            f"JOIN studies s ON s.id = r.study_id ORDER BY {run_key}"):
        for row in curve_arrays.digest_rows(tuple(key), names, epochs, blob):
            digest.update(repr(row).encode())
    for row in db.execute(
            "SELECT s.plan_sha256, m.direction, m.source_index, m.weights_sha256, m.metrics_json "
            "FROM source_models m JOIN studies s ON s.id = m.study_id "
            "ORDER BY s.plan_sha256, m.direction, m.source_index"):
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def finished_runs(folder: str | Path) -> int:
    """How many runs `folder`'s database holds finished (0 if it has none, or none this
    version reads: the run itself then says why)."""
    path = Path(folder) / DATABASE_NAME
    if not path.is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT count(*) FROM runs WHERE status != 'planned'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _task_arrays(task) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=task.x_train, y_train=task.y_train, x_test=task.x_test, y_test=task.y_test)
    return buffer.getvalue()


def _final_rows(run_ids: list[int], column: str, values: np.ndarray):
    """`(run_id, split, metric, value)` of one final metric over a shard's runs (None: not finite)."""
    split, metric = _split_and_metric(column)
    values = np.asarray(values, np.float64)
    kept = np.where(np.isfinite(values), values, np.nan).tolist()
    return ((run_id, split, metric, None if value != value else value) for run_id, value in zip(run_ids, kept))


def _split_and_metric(column: str) -> tuple[str, str]:
    """`test_accuracy` → ("test", "accuracy"): a final metric's row key (the objective's names)."""
    split, metric = objectives.parse_column(column)
    return split, metric.name


def _is_final_metric(name: str) -> bool:
    try:
        return name.startswith(tuple(f"{split}_" for split in SPLITS)) and bool(objectives.parse_column(name))
    except KeyError:
        return False


def _finite(value) -> float | None:
    """A metric as stored: NaN and infinities become NULL (the run's status says why)."""
    value = float(value)
    return value if math.isfinite(value) else None


class _Transaction:
    """`BEGIN IMMEDIATE … COMMIT`, rolled back on any error (including KeyboardInterrupt). A
    full disk or a read-only database is one `StoreError` line: SQLite has then rolled the
    transaction back itself, so what was committed before is all there is, intact."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db, self._path = db, path

    def __enter__(self):
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise _unusable(self._path, error) or error from None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return False
            except sqlite3.OperationalError as error:
                self._rollback()
                raise _unusable(self._path, error) or error from None
        self._rollback()
        if isinstance(exc, sqlite3.OperationalError):
            problem = _unusable(self._path, exc)
            if problem is not None:
                raise problem from None
        return False

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite ends a transaction itself on some errors (a full disk)
            self._db.execute("ROLLBACK")


def _unusable(path: Path, error: sqlite3.Error) -> StoreError | None:
    """The one line for a database SQLite cannot write (a full disk, a read-only file), or
    None for other errors."""
    text = str(error).lower()
    if "disk is full" in text or "database or disk is full" in text:
        return StoreError(disk_full(path, f"SQLite: {error}", "every shard committed before is kept"))
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: the results database is read-only ({error}); make it and its folder writable, "
                          "or copy the folder and use the copy (nothing stored was changed)")
    if "unable to open" in text:
        return StoreError(f"{path}: cannot open the results database ({error}); check that it and its folder are "
                          "readable and writable by you (nothing stored was changed)")
    return None
