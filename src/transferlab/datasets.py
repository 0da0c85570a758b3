"""A study's task tables made into `Task`s: generating data, reading files, scikit-learn's sets.

The schema (`transferlab.config`) says what a `[source]` or `[target]` table may hold;
this module does the I/O it asks for, once per study, through `transferlab.data`.
Categorical columns take their categories from both tasks' training rows, so both tasks
get the same input columns.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transferlab import config as schema
from transferlab import tasks
from transferlab.data import build, images, read
from transferlab.data.encode import merge
from transferlab.errors import DataError, StudyFileError


class TaskDataError(StudyFileError):
    """A task's data cannot be made; the message starts with the role and field (`target.query`)."""


def study_tasks(config: schema.StudyConfig) -> dict[str, tasks.Task | None]:
    """The source task (None when the source is only a model file) and the target task.
    A `TaskDataError` names the role and the field."""
    source = make(config.source, "source") if config.source.given else None
    if getattr(config.source, "categorical", None) or getattr(config.target, "categorical", None):
        probe = make(config.target.model_copy(update={"standardize": False}), "target")
        shared = _shared_categories(source, probe)
        source = make(config.source, "source", categories=shared) if source is not None else None
        target = make(config.target, "target", None if source is None else source.scaler, shared)
    else:
        target = make(config.target, "target", None if source is None else source.scaler)
    return {"source": source, "target": target}


def make(table, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
    """One task from its table (`role` is its name); errors name `role.field`."""
    try:
        return task_of(table, role, source_scaler, categories)
    except DataError as error:
        field = f"{role}.{error.field}" if error.field else role
        raise TaskDataError(f"{field}: {error}") from None


def task_of(table, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
    """One task from its table; a `DataError` names the field (without the role)."""
    if isinstance(table, schema.GivenTask):
        return table.task
    if isinstance(table, schema._Generated):
        options = table.options(seed=table.seed)
        del options["name"]
        if table.test_fraction is None or "n_train" in table.model_fields_set:
            options["n_train"] = table.n_train
        task = tasks.generate(table.kind, table.generator_params(), table.name or table.describe(),
                              source_scaler=source_scaler, **options)
        return dataclasses.replace(task, name=role)
    if (table.decimal or table.thousands) and table.kind != "csv":
        raise DataError("decimal and thousands are how a CSV file writes numbers; this data is not CSV",
                        "decimal" if table.decimal else "thousands")
    options = build.Options(**table.dataset_options(categories))
    return tasks.Task(**build.task_parts(_read(table), options, role, source_scaler))


def _read(table) -> read.Table:
    """The rows a data table names: scikit-learn's bundled set, or the file(s)."""
    if isinstance(table, schema.SklearnTask):
        return read.load_sklearn(table.dataset, table.shape)
    if isinstance(table, schema.ImagesTask):
        if table.path is None:
            raise DataError("an image folder is one path (one subfolder per class); the split is made from it",
                            "train_path")
        return images.read_folder(table.path, **table.keys())
    keys = table.keys()
    if table.kind == "csv":
        keys["csv_options"] = {"decimal": table.decimal, "thousands": table.thousands}
    if table.path is not None:
        return read.read_file(table.kind, table.path, **keys)
    return read.read_pair(table.kind, Path(table.train_path), Path(table.test_path), **keys)


def _shared_categories(*built) -> dict | None:
    """The categories of every categorical column over the tasks' training rows together."""
    found = [task.provenance["categorical"]["own_categories"] for task in built
             if task is not None and task.provenance.get("categorical")]
    return merge(*found) if found else None
