"""Sweeps and transfer matrices: one study file, many studies.

A `[sweep]` table gives dotted field paths and
lists of values (`"target.n_train" = [10, 50, 200]`); `mode = "grid"` (every
combination, the default) or `"zip"` (the i-th value of every list together). Every
point is a full study with the same seed rules, so a point's numbers do not depend on
which other points exist; all points live in the one results database of the output
folder, and the sweep resumes after an interruption like a study.

A sweep over a task's `n_train` keeps that task's test rows the same at every point: each
point splits as if `n_train` were the largest swept value (`train_part`) and trains on
the first `n_train` rows of that training part.

A `[matrix]` table lists tasks (`tasks = [{ kind = "blobs", seed = 1 }, ...]`); every
ordered pair i → j (i ≠ j) is a point: the study's strategies from source task i to
target task j, with j's own standalone baseline. Source models of a task are trained
once and reused by every pair that starts from it, as are the standalone runs of a
target (a run that reuses no source model is adopted from any point with the same data,
recipe, training and seed: `Store.adopt_runs`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

from transferlab.canonical import canonical_json
from transferlab.config import StudyConfig
from transferlab.errors import StudyFileError
from transferlab.loading import study_from_dict
from transferlab.plan import plan_of

MODES = ("grid", "zip")
MAX_POINTS = 1000
MAX_MATRIX_TASKS = 32
FIXED_FIELDS = ("name", "sweep", "strategies", "execution", "report")


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its position, the swept values and its validated study."""

    index: int
    values: dict
    config: StudyConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{path}={value}" for path, value in self.values.items())


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its name (the output folder's), mode, axes and points."""

    name: str
    mode: str
    axes: dict[str, list]
    points: tuple[Point, ...]

    def spec(self, plan_hashes: list[str]) -> dict:
        return {"mode": self.mode, "axes": self.axes, "points": plan_hashes}

    @staticmethod
    def sha256(spec: dict) -> str:
        """The sweep's identity: its axes, mode and every point's plan hash."""
        return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def sweep_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> Sweep:
    """Expand and validate every point of a study dict holding a `[sweep]` table; errors
    name the sweep field or the point."""
    table = raw.get("sweep")
    if not isinstance(table, dict):
        raise StudyFileError(f"{source}: sweep: expected a table of field paths and lists of values")
    mode = table.get("mode", "grid")
    if mode not in MODES:
        raise StudyFileError(f"{source}: sweep.mode: {mode!r} is not a mode; use \"grid\" or \"zip\"")
    axes = _flatten({path: values for path, values in table.items() if path != "mode"})
    if not axes:
        raise StudyFileError(f"{source}: sweep: give at least one field path and its values, e.g. "
                             "\"target.n_train\" = [10, 50, 200]")
    for path, values in axes.items():
        where = f'{source}: sweep."{path}"'
        head = path.split(".")[0]
        if head not in StudyConfig.model_fields or head in FIXED_FIELDS:
            fields = ", ".join(f for f in StudyConfig.model_fields if f not in FIXED_FIELDS)
            raise StudyFileError(f"{where}: not a field a sweep can vary (the first part must be one of {fields})")
        if not isinstance(values, list) or not values:
            raise StudyFileError(f"{where}: give a list of values, e.g. [10, 50, 200]")
        if len({canonical_json(v) for v in values}) != len(values):
            raise StudyFileError(f"{where}: a value is listed twice")
    combos = expand(axes, mode, source)
    if len(combos) > MAX_POINTS:
        raise StudyFileError(f"{source}: sweep: {len(combos):,} points are above the ceiling of {MAX_POINTS:,} "
                             "(each point is a full study)")
    base = {key: value for key, value in raw.items() if key != "sweep"}
    fixed_test = _fixed_test_parts(base, axes)
    points = []
    for index, values in enumerate(combos):
        point_raw = copy.deepcopy(base)
        for path, value in {**values, **fixed_test}.items():
            set_path(point_raw, path, value)
        label = ", ".join(f"{path}={value}" for path, value in values.items())
        config = study_from_dict(point_raw, source=f"{source} (sweep point {label})", base_dir=base_dir)
        points.append(Point(index, values, config))
    return Sweep(str(raw.get("name")), mode, axes, tuple(points))


def _flatten(table: dict, prefix: str = "") -> dict:
    """`{"target": {"n_train": [...]}}` (TOML's unquoted dotted key) → `{"target.n_train": [...]}`."""
    flat = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def expand(axes: dict[str, list], mode: str, source: str = "study") -> list[dict]:
    """The points' values: every combination (`grid`, the first axis slowest) or the lists
    read together (`zip`, equal lengths)."""
    paths = list(axes)
    if mode == "zip":
        lengths = {len(values) for values in axes.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{path}: {len(values)}" for path, values in axes.items())
            raise StudyFileError(f"{source}: sweep: zip needs lists of one length ({sizes})")
        return [dict(zip(paths, row)) for row in zip(*axes.values())]
    return [dict(zip(paths, row)) for row in itertools.product(*axes.values())]


def set_path(raw: dict, dotted: str, value) -> None:
    """`set_path(raw, "target.n_train", 50)`: tables are created where missing."""
    *parents, leaf = dotted.split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise StudyFileError(f"sweep.\"{dotted}\": {part} is not a table")
    table[leaf] = value


def _fixed_test_parts(base: dict, axes: dict[str, list]) -> dict:
    """For each task whose `n_train` is swept (and whose split does not fix the test rows
    already), `train_part` = the largest swept `n_train`: the same test rows at every point."""
    fixed = {}
    for path, values in axes.items():
        role, _, field = path.partition(".")
        if field != "n_train" or role not in ("source", "target"):
            continue
        task = base.get(role) or {}
        if any(key in task for key in ("test_fraction", "split_column", "train_path", "train_part")):
            continue
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            fixed[f"{role}.train_part"] = max(values)
    return fixed


def matrix_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> Sweep:
    """Every ordered pair of a `[matrix]` table's tasks as a point (`mode = "matrix"`);
    errors name the task or the pair."""
    table = raw.get("matrix")
    tasks = table.get("tasks") if isinstance(table, dict) else None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise StudyFileError(f"{source}: matrix.tasks: give a list of task tables, e.g. "
                             "tasks = [{ kind = \"blobs\", seed = 1 }, { kind = \"blobs\", seed = 2 }]")
    extra = [key for key in table if key != "tasks"]
    if extra:
        raise StudyFileError(f"{source}: matrix.{extra[0]}: unknown field; the matrix table holds tasks")
    if not 2 <= len(tasks) <= MAX_MATRIX_TASKS:
        raise StudyFileError(f"{source}: matrix.tasks: give 2 to {MAX_MATRIX_TASKS} tasks (got {len(tasks)})")
    for key in ("source", "target", "sweep", "reverse"):
        if key in raw:
            raise StudyFileError(f"{source}: {key}: a matrix study takes its tasks from matrix.tasks; remove {key}")
    base = {key: value for key, value in raw.items() if key != "matrix"}
    labels = _task_labels(tasks, base, source, base_dir)
    points = []
    for index, (i, j) in enumerate((i, j) for i in range(len(tasks)) for j in range(len(tasks)) if i != j):
        point_raw = {**copy.deepcopy(base), "source": copy.deepcopy(tasks[i]), "target": copy.deepcopy(tasks[j])}
        values = {"source": labels[i], "target": labels[j]}
        config = study_from_dict(point_raw, source=f"{source} (matrix pair {labels[i]} → {labels[j]})",
                                 base_dir=base_dir)
        points.append(Point(index, values, config))
    return Sweep(str(raw.get("name")), "matrix", {"matrix.tasks": labels}, tuple(points))


def _task_labels(tasks: list[dict], base: dict, source: str, base_dir: Path | None) -> list[str]:
    """Each task's title (its `name`, or what it is made of), made unique by position."""
    labels = []
    for index, task in enumerate(tasks):
        probe = {**copy.deepcopy(base), "source": copy.deepcopy(task), "target": copy.deepcopy(task),
                 "strategies": [{"name": "standalone"}]}
        config = study_from_dict(probe, source=f"{source} (matrix.tasks[{index}])", base_dir=base_dir)
        labels.append(plan_of(config).directions[0].target_task.provenance.get("name", f"task {index}"))
    for index, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[index] = f"{label} #{index + 1}"
    return labels
