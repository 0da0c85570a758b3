"""What a label column is: classes or numbers, decided by rule and never by accident.

The rules (each refusal names the column, the row and the value, and says what to do):

- booleans, categoricals and text are classes; floating-point numbers are regression
  targets;
- a column of numbers with a few cells that are not numbers (`"3450 g"`, `"?"`) is
  refused: a typo or a placeholder must not turn a number into 70 classes (fix the file,
  or mark placeholders with `na_values`; `task = "classification"` keeps them as classes);
- whole numbers are classes unless there are many distinct values (more than
  `MAX_DEFAULT_CLASSES` and more than `MAX_DISTINCT_FRACTION` of the rows): then they are
  predicted as numbers (regression) and a note says so; `task` overrides either way.
  A float column of whole numbers with missing cells counts as whole numbers (pandas
  reads a column of integers with blanks as floats);
- a class that looks like a placeholder for a missing value (`"."`, `"-"`, `"NA"`,
  `"null"`, ...) is refused unless `classes` lists it: set `na_values` to drop those rows;
- rows with a missing label are dropped, with a note naming the count.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pandas.api import types

from transferlab.data.read import Table
from transferlab.errors import DataError
from transferlab.words import count

MAX_DEFAULT_CLASSES = 20
MAX_DISTINCT_FRACTION = 0.05
PLACEHOLDER_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "missing", "nil", "#n/a", "<na>"})
FEW_TRAINING_ROWS = 5
SHOWN_PROBLEMS = 3

KINDS = ("classification", "regression")


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Keras' `to_categorical`: integer labels → float32 one-hot rows."""
    return np.eye(n_classes, dtype=np.float32)[labels]



def label_text(value) -> str:
    """A label (or category) as text: booleans in lower case, whole floats without `.0`
    (pandas reads integers with blanks as floats), NumPy scalars as Python values."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def decide_kind(table: Table, column: str) -> tuple[str, list[str]]:
    """`classification` or `regression` for one label column, and notes on what was decided."""
    values = table.frame[column]
    present = values.dropna()
    if types.is_bool_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype):
        return "classification", []
    if not types.is_numeric_dtype(values):
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.notna().all() and len(present):
            return _numeric_kind(column, numbers, len(values))
        if numbers.notna().sum() > len(present) / 2:
            raise DataError(stray_text(table, column, present[numbers.isna()]), "target")
        return "classification", []
    if types.is_float_dtype(values):
        whole = len(present) and values.isna().any() and bool((present == np.round(present)).all())
        if not whole:
            return "regression", []
        kind, notes = _numeric_kind(column, present, len(values))
        if kind == "classification":
            notes.append(f"target {column!r} holds whole numbers and blanks (read as floats): its values are "
                         "classes; set task = \"regression\" to predict it as a number")
        return kind, notes
    return _numeric_kind(column, present, len(values))


def _numeric_kind(column: str, numbers: pd.Series, rows: int) -> tuple[str, list[str]]:
    if not bool((numbers == np.round(numbers)).all()):
        return "regression", []
    distinct = int(numbers.nunique())
    if distinct > MAX_DEFAULT_CLASSES and distinct > MAX_DISTINCT_FRACTION * rows:
        note = (f"target {column!r} holds {distinct} distinct whole numbers in {rows:,} rows (more than "
                f"{MAX_DEFAULT_CLASSES} and {MAX_DISTINCT_FRACTION:.0%} of the rows): predicted as a number "
                "(regression); set task = \"classification\" to treat each value as a class")
        return "regression", [note]
    return "classification", []


def stray_text(table: Table, column: str, bad: pd.Series) -> str:
    """`column 'weight' holds numbers but line 88 of births.csv has '3450 g' (and 2 more: ...)`."""
    shown = [f"{table.where(index)} has {value!r}" for index, value in bad.iloc[:SHOWN_PROBLEMS].items()]
    more = len(bad) - len(shown)
    listing = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    quoted = ", ".join(f'"{v}"' for v in pd.unique(bad.astype(str))[:SHOWN_PROBLEMS])
    return (f"column {column!r} holds numbers, but {listing}: fix the file, or mark such cells missing with "
            f"na_values = [{quoted}] (rows with a missing label are dropped); set task = \"classification\" "
            "if they are class names")


def drop_missing_labels(table: Table, columns: tuple[str, ...]) -> tuple[Table, list[str]]:
    """Rows whose label (or any target) is missing (NaN, empty, `na_values`), dropped with a note."""
    missing = table.frame[list(columns)].isna().any(axis=1).to_numpy()
    if not missing.any():
        return table, []
    missing_rows = int(missing.sum())
    named = ", ".join(repr(c) for c in columns)
    if missing_rows == len(missing):
        raise DataError(f"every row of {table.name} has a missing label in {named}; nothing is left", "target")
    first = table.where(table.frame.index[missing][0])
    note = (f"{count(missing_rows, 'row')} with a missing label in {named} dropped "
            f"(the first: {first})")
    return table.rows(table.frame.index[~missing]), [note]


def is_placeholder(text: str) -> bool:
    """`.`, `-`, `?`, `NA`, `null`: text that stands for a missing value, not a class."""
    stripped = text.strip()
    return not re.search(r"\w", stripped) or stripped.lower() in PLACEHOLDER_WORDS


def check_placeholders(table: Table, column: str, classes: list, class_names: list[str], listed) -> None:
    """Refuse a class that looks like a placeholder unless `classes` lists it on purpose."""
    for value, name in zip(classes, class_names):
        if is_placeholder(name) and not (listed and name in {str(c) for c in listed}):
            rows = table.frame.index[(table.frame[column] == value).to_numpy()]
            raise DataError(
                f"column {column!r}: label {name!r} ({count(len(rows), 'row')}, the first "
                f"on {table.where(rows[0])}) looks like a placeholder for a missing value; set "
                f"na_values = [\"{name}\"] to drop those rows, or list it in classes = [...] if it is a class",
                "target")


def class_counts(train_codes: np.ndarray, test_codes: np.ndarray, n_classes: int) -> dict[str, list[int]]:
    """Rows per class in each part (stored in a task's provenance)."""
    return {"train": np.bincount(train_codes, minlength=n_classes).tolist(),
            "test": np.bincount(test_codes, minlength=n_classes).tolist()}


def describe_counts(class_names, counts: dict[str, list[int]]) -> str:
    """`3 classes (train/test rows): Adelie 110/36, ...`."""
    parts = [f"{name} {a:,}/{b:,}" for name, a, b in zip(class_names, counts["train"], counts["test"])]
    return f"{len(parts)} classes (train/test rows): {', '.join(parts)}"


def thin_classes(class_names, counts: dict[str, list[int]]) -> list[str]:
    """A warning for classes with fewer than `FEW_TRAINING_ROWS` training rows."""
    thin = [f"{name} ({count})" for name, count in zip(class_names, counts["train"]) if count < FEW_TRAINING_ROWS]
    if not thin:
        return []
    warning = (f"warning: class{'es' if len(thin) > 1 else ''} {', '.join(thin)} "
               f"{'have' if len(thin) > 1 else 'has'} fewer than {FEW_TRAINING_ROWS} training rows; "
               "results on them rest on very few examples")
    return [warning]


def notes_of(provenance: dict) -> list[str]:
    """Everything building a task decided that the user should hear: its notes, then its
    classes with their rows (printed when a study starts)."""
    notes = list(provenance.get("notes") or ())
    if provenance.get("class_counts"):
        notes.append(describe_counts(provenance["classes"], provenance["class_counts"]))
    return notes
