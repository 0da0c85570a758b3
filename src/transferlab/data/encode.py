"""Categorical feature columns as one-hot columns (scikit-learn's `OneHotEncoder`).

Categories come from training rows only — of the source and target tasks together in a
study (`StudyConfig.tasks`), so both have the same input columns — never from test rows:
a category seen only in test rows encodes as all zeros (`handle_unknown="ignore"`), and
a note counts those rows. Values are compared as text (`1` and `"1"` are one category),
and the columns are named as scikit-learn names them (`island_Biscoe`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlab.data.labels import label_text
from transferlab.errors import DataError
from transferlab.words import count


def as_text(values: pd.Series) -> np.ndarray:
    """Category values as text, as labels are named (`labels.label_text`)."""
    return np.array([label_text(v) for v in values.astype(object)], dtype=object)


def training_categories(frame: pd.DataFrame, columns, train_rows: np.ndarray) -> dict[str, list[str]]:
    """Each categorical column's categories in the training rows, sorted (as `OneHotEncoder`)."""
    return {column: sorted(set(as_text(frame[column].iloc[train_rows]))) for column in columns}


def merge(*found: dict[str, list[str]]) -> dict[str, list[str]]:
    """Categories of several tasks together (a study's source and target)."""
    merged: dict[str, set] = {}
    for categories in found:
        for column, values in categories.items():
            merged.setdefault(column, set()).update(values)
    return {column: sorted(values) for column, values in merged.items()}


def encode(frame: pd.DataFrame, features: tuple[str, ...], categories: dict[str, list[str]],
           test_rows: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """The feature matrix with each categorical column replaced, in place, by its one-hot
    columns; the feature names; notes (test rows with a category unseen in training)."""
    from sklearn.preprocessing import OneHotEncoder

    blocks, names, notes = [], [], []
    for column in features:
        if column not in categories:
            blocks.append(frame[[column]].apply(pd.to_numeric).to_numpy(dtype=np.float64))
            names.append(column)
            continue
        text = as_text(frame[column]).reshape(-1, 1)
        encoder = OneHotEncoder(categories=[categories[column]], handle_unknown="ignore", sparse_output=False,
                                dtype=np.float64)
        encoder.fit(np.array(categories[column], dtype=object).reshape(-1, 1))
        blocks.append(encoder.transform(text))
        names += [str(name) for name in encoder.get_feature_names_out([column])]
        unseen = ~np.isin(text[test_rows, 0], categories[column])
        if unseen.any():
            values = sorted(set(text[test_rows, 0][unseen]))
            notes.append(f"{count(int(unseen.sum()), 'test row')} of {column!r} hold a "
                         f"category no training row has ({', '.join(values[:5])}): encoded as all zeros")
    return np.hstack(blocks), names, notes


def check_columns(categorical, features: tuple[str, ...], columns) -> None:
    """Every categorical column exists and is a feature."""
    for column in categorical:
        if column not in columns:
            raise DataError(f"column {column!r} is not in the data (its columns: {', '.join(map(str, columns))})",
                            "categorical")
        if column not in features:
            raise DataError(f"column {column!r} is not a feature (the target, split column or dropped); "
                            "remove it from categorical", "categorical")
