"""Choosing a task's rows and columns from a table: the target and feature columns, a
`query`, the `classes` kept (in the given order), rows with missing values, a seeded
subsample. Each step is a pure function of a table; each refusal names the option and,
where one is at fault, the column and the row."""

from __future__ import annotations

import datetime
import re

import numpy as np
import pandas as pd
from pandas.api import types

from transferlab.data import labels
from transferlab.data.read import Table
from transferlab.errors import DataError
from transferlab.words import count

SHOWN = 8  # names listed in a message before "..."


def listing(values, shown: int = SHOWN) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:shown]) + (f", ... ({len(values)} in all)" if len(values) > shown else "")


def target_columns(table: Table, target) -> tuple[str, ...]:
    """The target column(s): as given, else the dataset's own; each must exist."""
    if target is None:
        if table.target is None:
            raise DataError(f"{table.name}: say which column is the label: target = \"COLUMN\" "
                            f"(its columns: {listing(table.frame.columns)})", "target")
        return table.target
    chosen = (target,) if isinstance(target, str) else tuple(target)
    if not chosen:
        raise DataError("give at least one target column", "target")
    for column in chosen:
        if column not in table.frame.columns:
            raise DataError(f"column {column!r} is not in {table.name} (its columns: {listing(table.frame.columns)})",
                            "target")
    return chosen


def feature_columns(table: Table, targets: tuple[str, ...], features, drop, split_column: str | None) -> tuple[str, ...]:
    """`features` as given (in that order), else every column but the target(s), the split
    column and `drop`, in the file's order."""
    columns = list(table.frame.columns)
    for option, names in (("features", features or ()), ("drop", drop or ())):
        for name in names:
            if name not in columns:
                raise DataError(f"column {name!r} is not in {table.name} (its columns: {listing(columns)})", option)
    if features is not None and drop:
        raise DataError("give features or drop, not both", "drop")
    if features is not None:
        chosen = tuple(features)
        overlap = [name for name in chosen if name in targets or name == split_column]
        if overlap:
            raise DataError(f"column {overlap[0]!r} is the target or split column; it cannot also be a feature",
                            "features")
        if len(set(chosen)) != len(chosen):
            raise DataError("a column is listed twice", "features")
    else:
        excluded = set(targets) | set(drop or ()) | ({split_column} if split_column else set())
        chosen = tuple(c for c in columns if c not in excluded)
    if not chosen:
        raise DataError(f"{table.name}: no feature column is left; list them with features = [...]", "features")
    return chosen


def check_numeric(table: Table, columns: tuple[str, ...], option: str) -> None:
    """Every feature (or regression target) column must hold numbers (booleans count);
    dates and text are refused with what to do (`categorical` for text features)."""
    for column in columns:
        values = table.frame[column]
        if types.is_datetime64_any_dtype(values) or types.is_timedelta64_dtype(values) or _has_dates(values):
            raise DataError(
                f"column {column!r} holds dates or times; a model cannot take them as they are: derive a number "
                f"from it (e.g. its year, in a column of its own) or drop it (drop = [\"{column}\"])", option)
        if types.is_bool_dtype(values) or (types.is_numeric_dtype(values) and not types.is_complex_dtype(values)):
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        if bad.empty:  # e.g. an object column of numbers and missing values
            continue
        if option == "target":
            raise DataError(labels.stray_text(table, column, bad), option)
        row = bad.index[0]
        found = f"({table.where(row)} has {bad.iloc[0]!r})"
        decimal = _decimal_hint(bad)
        if decimal:
            raise DataError(f"column {column!r} is not numeric {found}; {decimal}", option)
        hint = f"list it in categorical = [\"{column}\"] to one-hot encode it, " if option == "features" else ""
        raise DataError(f"column {column!r} is not numeric {found}; {hint}drop it (drop = [\"{column}\"]) or "
                        "encode it as numbers", option)


def _has_dates(values: pd.Series) -> bool:
    """An object column holding date or time objects (pandas cannot parse those as numbers)."""
    present = values.dropna()
    return bool(len(present)) and isinstance(present.iloc[0], (datetime.date, datetime.time, pd.Timestamp))


def _decimal_hint(bad: pd.Series) -> str:
    """For values like `37,8` or `1.234,5`: say how to read European numbers."""
    text = bad.astype(str).str.strip()
    if text.str.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+(,\d+)?").all():
        return 'it looks like European numbers: set decimal = "," and thousands = "."'
    if text.str.fullmatch(r"[-+]?\d+,\d+").all():
        return 'it looks like numbers with a decimal comma: set decimal = ","'
    if text.str.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?").all():
        return 'it looks like numbers with thousands separators: set thousands = ","'
    return ""


def apply_query(table: Table, query: str | None) -> Table:
    """`DataFrame.query` on the dataset's columns, before features are taken."""
    if query is None:
        return table
    try:
        mask = table.frame.eval(query)
    except pd.errors.UndefinedVariableError as error:
        raise DataError(f"{query!r}: {' '.join(str(error).split())} (its columns: "
                        f"{listing(table.frame.columns, 30)})", "query") from None
    except Exception as error:  # noqa: BLE001  (pandas raises many kinds for a bad expression)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{query!r} does not parse or run on {table.name}'s columns ({reason})", "query") from None
    if not isinstance(mask, pd.Series) or not types.is_bool_dtype(mask):
        raise DataError(f"{query!r} is not a condition (it must give true or false per row, like \"age > 40\")", "query")
    if not mask.any():
        raise DataError(f"{query!r} matches none of the {count(len(table.frame), 'row')} of {table.name}"
                        f"{_values_of_named_columns(table, query)}", "query")
    return table.rows(table.frame.index[mask.to_numpy()])


def _values_of_named_columns(table: Table, query: str, few: int = 12) -> str:
    """`; clinic holds 'north', 'south'`: the distinct values of the columns a query names, when few."""
    shown = []
    for column in table.frame.columns:
        if not re.search(rf"(?<![\w`]){re.escape(str(column))}(?![\w`])|`{re.escape(str(column))}`", query):
            continue
        values = pd.unique(table.frame[column].dropna())
        if len(values) <= few:
            shown.append(f"{column} holds {', '.join(repr(_plain(v)) for v in values)}")
    return f" ({'; '.join(shown)})" if shown else ""


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def class_order(labels: pd.Series) -> list:
    """The default classes: a categorical's own order (those present), else sorted labels."""
    present = labels.dropna()
    if isinstance(labels.dtype, pd.CategoricalDtype):
        used = set(present.unique())
        return [c for c in labels.cat.categories if c in used]
    unique = pd.unique(present)
    try:
        return sorted(unique.tolist())
    except TypeError:  # mixed kinds of labels: order by their text
        return sorted(unique.tolist(), key=str)


def select_classes(table: Table, column: str, classes, query: str | None = None) -> tuple[Table, list]:
    """Keep the rows whose label is one of `classes` (all labels if None); returns the
    table and the class values in their order (index i of a one-hot row is class i).
    Too few classes left after a `query` is the query's fault, and the message says so."""
    labels = table.frame[column]
    present = class_order(labels)
    if classes is None:
        chosen = present
    else:
        by_text = {str(value): value for value in present}
        chosen = []
        for given in classes:
            value = given if given in present else by_text.get(str(given))
            if value is None:
                raise DataError(f"label {given!r} does not exist in column {column!r} "
                                f"(its labels: {listing(present, 12)})", "classes")
            if value in chosen:
                raise DataError(f"label {given!r} is listed twice", "classes")
            chosen.append(value)
        table = table.rows(table.frame.index[labels.isin(chosen).to_numpy()])
    if len(chosen) < 2:
        left = f"{len(chosen)} class{'' if len(chosen) == 1 else 'es'} ({listing(chosen)})"
        if classes is None and query is not None:
            raise DataError(f"{query!r} leaves {left} in column {column!r}; a classification task needs at least "
                            "two: widen the query, or set task = \"regression\" if the label is a number", "query")
        raise DataError(f"column {column!r} leaves {left}; a classification task needs at least two", "classes")
    return table, chosen


def finite_rows(table: Table, columns: tuple[str, ...], dropna: bool) -> Table:
    """Rows with a missing, NaN or infinite value in a used column: refused with a count per
    column, or dropped when `dropna`."""
    bad = pd.DataFrame({column: _bad_values(table.frame[column]) for column in columns}, index=table.frame.index)
    rows = bad.any(axis=1).to_numpy()
    if not rows.any():
        return table
    if dropna:
        kept = table.frame.index[~rows]
        if len(kept) == 0:
            raise DataError(f"every row of {table.name} has a missing or infinite value; nothing is left", "dropna")
        return table.rows(kept)
    counts = bad.sum()
    per_column = ", ".join(f"{column}: {int(count)}" for column, count in counts.items() if count)
    first = table.where(table.frame.index[rows][0])
    raise DataError(
        f"{table.name} has {int(counts.sum())} missing, NaN or infinite values ({per_column}; the first in "
        f"{first}); clean the data, or set dropna = true to drop those rows", "dropna")


def _bad_values(values: pd.Series) -> np.ndarray:
    """Missing values of a column; for numbers also NaN and ±inf."""
    if isinstance(values.dtype, pd.CategoricalDtype) or types.is_bool_dtype(values):
        return values.isna().to_numpy()
    numbers = values if types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() < values.notna().sum():  # text labels: only a missing one is bad
        return values.isna().to_numpy()
    return ~np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan))


def subsample(table: Table, n_rows: int | None, seed: int) -> Table:
    """`n_rows` rows drawn at random (seeded), kept in the table's order."""
    if n_rows is None:
        return table
    if n_rows > len(table.frame):
        raise DataError(f"{n_rows} is more than the {count(len(table.frame), 'row')} of {table.name} left after selection",
                        "n_rows")
    chosen = np.sort(np.random.default_rng(seed).choice(len(table.frame), n_rows, replace=False))
    return table.rows(table.frame.index[chosen])
