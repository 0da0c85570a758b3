"""A table and its options → the fields of a `Task`: the one pipeline every kind of data goes through.

Order: `na_values` and `parse_dates` → target and feature columns → the task kind (by
`labels`' rules unless `task` says) → `query` → `classes` → rows with a missing label
dropped → numeric features → missing values (refused, or dropped with `dropna`) →
`n_rows` → split → `n_train` → arrays, `categorical` columns one-hot encoded (`encode`) →
standardisation (numeric features from the task's own training rows, as `StandardScaler`
fits them, or another task's scaler; regression targets by the training rows' mean and
std). What was done is recorded in the task's `provenance` (its `notes` are printed when
a study starts and shown in the report).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from transferlab.data import encode, labels, read, select
from transferlab.data.labels import KINDS, one_hot
from transferlab.data.read import Part, Table
from transferlab.data.scale import Scaler
from transferlab.data.split import METHODS, split_rows
from transferlab.errors import DataError
from transferlab.words import count

STANDARDIZE = (True, False, "source")


@dataclass(frozen=True)
class Options:
    """How a task is made from a dataset (the study file's dataset fields)."""

    target: str | tuple[str, ...] | None = None
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    task: str | None = None
    query: str | None = None
    classes: tuple | None = None
    n_rows: int | None = None
    dropna: bool = False
    split: str = "random"
    n_train: int | None = None
    test_fraction: float | None = None
    train_part: int | None = None
    split_column: str | None = None
    train: object = "train"
    test: object = "test"
    standardize: bool | str | Scaler = True
    seed: int = 0
    name: str | None = None
    categorical: tuple[str, ...] | None = None
    categories: dict | None = None  # per categorical column, its categories (a study's source and target together)
    na_values: tuple | None = None
    parse_dates: tuple[str, ...] | None = None

    @classmethod
    def of(cls, **given) -> Options:
        """Options from keyword arguments (the Python API), each name checked."""
        known = {f.name for f in fields(cls)}
        for key in given:
            if key not in known:
                raise DataError(f"unknown option {key!r} (options: {', '.join(sorted(known))})")
        for key in ("features", "drop", "classes", "categorical", "na_values", "parse_dates"):
            if given.get(key) is not None and not isinstance(given[key], (str, bytes)):
                given[key] = tuple(given[key])
            elif isinstance(given.get(key), str):
                given[key] = (given[key],)
        if given.get("drop") is None:
            given.pop("drop", None)
        return cls(**given)


def task_parts(table: Table, options: Options, role: str, source_scaler: Scaler | None = None,
               description: str | None = None) -> dict:
    """The fields of the `Task` `options` make of `table` (`Task(**parts)`). `source_scaler` serves `standardize = "source"`."""
    _check_options(options)
    _check_image_options(table, options)
    table = read.prepare(table, options.na_values, options.parse_dates)
    targets = select.target_columns(table, options.target)
    features = select.feature_columns(table, targets, options.features, options.drop, options.split_column)
    encode.check_columns(options.categorical or (), features, table.frame.columns)
    if options.split_column is not None and options.split_column not in table.frame.columns:
        raise DataError(f"column {options.split_column!r} is not in {table.name} "
                        f"(its columns: {select.listing(table.frame.columns)})", "split_column")
    kind, notes = _kind(table, targets, options.task)
    notes = list(table.origin.get("notes") or ()) + notes  # what reading decided (an image folder's left-out files)
    if kind == "regression" and options.classes is not None:
        raise DataError("classes selects labels of a classification task; this task is regression", "classes")
    rows_read = len(table.frame)
    table = select.apply_query(table, options.query)
    if kind == "classification" and options.classes is not None:
        table, _ = select.select_classes(table, targets[0], options.classes)
    table, dropped_labels = labels.drop_missing_labels(table, targets)
    notes += dropped_labels
    select.check_numeric(table, tuple(f for f in features if f not in (options.categorical or ())), "features")
    before = len(table.frame)
    table = select.finite_rows(table, features + targets, options.dropna)
    dropped = before - len(table.frame)
    classes = None
    if kind == "classification":
        table, classes = select.select_classes(table, targets[0], options.classes, options.query)
    table = select.subsample(table, options.n_rows, options.seed)
    return _arrays(table, options, role, description, targets, features, kind, classes,
                   {"rows_read": rows_read, "rows_dropped_missing": dropped, "notes": notes}, source_scaler)


def _check_options(options: Options) -> None:
    if options.task is not None and options.task not in KINDS:
        raise DataError(f"{options.task!r} is not a task kind; use \"classification\" or \"regression\"", "task")
    if options.split not in METHODS:
        raise DataError(f"{options.split!r} is not a split; use one of {', '.join(METHODS)}", "split")


def _check_image_options(table: Table, options: Options) -> None:
    """An image's pixels are one feature: they are not chosen, dropped or encoded one by one."""
    if table.sample_shape is None:
        return
    for name in ("features", "drop", "categorical"):
        if getattr(options, name):
            raise DataError(f"{table.name}'s rows are images ({'×'.join(map(str, table.sample_shape))}); "
                            f"{name} chooses table columns: leave it out", name)


def _kind(table: Table, targets: tuple[str, ...], task: str | None) -> tuple[str, list[str]]:
    """The task kind (`task`, else by `labels.decide_kind`'s rules) and notes on the choice."""
    if task == "classification" and len(targets) != 1:
        raise DataError(f"a classification task has one label column; got {len(targets)}", "target")
    if task is None and len(targets) == 1:
        kind, notes = labels.decide_kind(table, targets[0])
    else:
        kind, notes = task or "regression", []
    if kind == "regression":
        select.check_numeric(table, targets, "target")
    return kind, notes


def _arrays(table: Table, options: Options, role: str, description, targets, features, kind, classes,
            recorded: dict, source_scaler) -> dict:
    """The selected rows → split, encoded, standardised arrays, with their provenance."""
    frame = table.frame
    codes = None if classes is None else _codes(frame[targets[0]], classes)
    class_names = None if classes is None else [labels.label_text(c) for c in classes]
    if classes is not None:
        labels.check_placeholders(table, targets[0], classes, class_names, options.classes)
    parts = _parts(table, options)
    method = "column" if parts is not None else options.split
    split = split_rows(len(frame), method, options.seed, options.n_train, options.test_fraction,
                       labels=codes if method == "random" else None, parts=parts, class_names=class_names,
                       train_part=options.train_part)
    categorical = tuple(options.categorical or ())
    own = encode.training_categories(frame, categorical, split.train)
    categories = {c: list((options.categories or {}).get(c) or own[c]) for c in categorical}
    x, feature_names, encode_notes = encode.encode(frame, features, categories, split.test)
    _check_range(table, x, feature_names, "features")
    notes = recorded.pop("notes") + encode_notes
    if kind == "classification":
        y = one_hot(codes, len(classes))
        target_scaling = None
        recorded["class_counts"] = labels.class_counts(codes[split.train], codes[split.test], len(classes))
        notes += labels.thin_classes(class_names, recorded["class_counts"])
    else:
        y = frame[list(targets)].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        _check_range(table, y, list(targets), "target")
        mean, std = y[split.train].mean(axis=0), y[split.train].std(axis=0)
        y = (y - mean) / np.where(std > 0, std, 1.0)
        target_scaling = {"mean": mean.tolist(), "std": std.tolist()}
    one_hot_columns = np.array([name not in features for name in feature_names])
    scaler, scaling = _scaler(options.standardize, x[split.train], source_scaler, one_hot_columns, table.sample_shape)
    if scaler is not None:
        x = scaler.apply(x)
    if table.sample_shape is not None:
        x = x.reshape((len(x),) + tuple(table.sample_shape))
        recorded["input_shape"] = list(table.sample_shape)
    name = options.name or description or _describe(table.name, options, targets if table.target not in (None, targets) else None)
    provenance = {
        "name": name, "origin": table.origin, "target": list(targets), "features": list(features), "task": kind,
        "classes": class_names, "query": options.query,
        "classes_selected": None if options.classes is None else [labels.label_text(c) for c in options.classes],
        "n_rows": options.n_rows, **recorded, "rows": len(frame), "split": split.description,
        "train_rows": len(split.train), "test_rows": len(split.test), "standardize": scaling,
        "scaler": None if scaler is None else scaler.to_dict(), "target_standardization": target_scaling,
        "notes": notes,
    } | ({"categorical": {"encoder": "sklearn.preprocessing.OneHotEncoder(handle_unknown='ignore')",
                          "categories": categories, "own_categories": own}} if categorical else {}) | (
        {"na_values": list(options.na_values)} if options.na_values else {})
    return dict(
        name=role, x_train=x[split.train].astype(np.float32), y_train=y[split.train].astype(np.float32),
        x_test=x[split.test].astype(np.float32), y_test=y[split.test].astype(np.float32), kind=kind,
        feature_names=tuple(feature_names), class_names=tuple(class_names or ()), provenance=provenance, scaler=scaler,
    )


LARGEST = 1e30  # the engine computes in float32 (up to 3.4e38); squares of larger values overflow the scaler


def _check_range(table: Table, values: np.ndarray, names: list[str], field: str) -> None:
    """Values too large for float32 training: one line naming the column and the row."""
    with np.errstate(invalid="ignore"):
        huge = np.abs(values) > LARGEST
    if huge.any():
        row, column = (int(i) for i in np.argwhere(huge)[0])
        raise DataError(
            f"column {names[column]!r}: {table.where(table.frame.index[row])} has {values[row, column]:g}, beyond "
            f"the ±{LARGEST:g} the engine can train on (it computes in float32); rescale the column or drop it",
            field)


def _codes(labels: pd.Series, classes: list) -> np.ndarray:
    """Each row's class index: its label's position in `classes`."""
    values = labels.astype(object) if isinstance(labels.dtype, pd.CategoricalDtype) else labels
    return pd.Categorical(values, categories=classes).codes.astype(np.int64)


def _parts(table: Table, options: Options) -> np.ndarray | None:
    """`train`/`test`/`other` per row, when the split is given by a column or by two files."""
    if table.parts is not None:
        if options.split_column is not None:
            raise DataError("the data come as train_path and test_path already; drop split_column", "split_column")
        return table.parts.to_numpy()
    if options.split_column is None:
        return None
    values = table.frame[options.split_column]
    text = values.astype(str)
    parts = np.full(len(values), "other", dtype=object)
    for part, wanted in (("train", options.train), ("test", options.test)):
        matches = (values == wanted).to_numpy() | (text == str(wanted)).to_numpy()
        if not matches.any():
            raise DataError(f"no row of {table.name} has {options.split_column} = {wanted!r} (its values: "
                            f"{select.listing(pd.unique(values))})", part)
        parts[matches] = part
    return parts


def _scaler(standardize, x_train: np.ndarray, source_scaler: Scaler | None,
            one_hot_columns: np.ndarray, sample_shape: tuple[int, ...] | None = None) -> tuple[Scaler | None, str]:
    if isinstance(standardize, Scaler):
        return standardize, "features by a given scaler"
    if standardize is True and sample_shape is not None:
        return (Scaler.fit_channels(x_train, sample_shape[-1]),
                "each channel by the task's own training rows (its mean and standard deviation over every pixel)")
    if standardize is True:
        scaler = Scaler.fit(x_train)
        if not one_hot_columns.any():
            return scaler, "features by the task's own training rows (StandardScaler)"
        mean = np.where(one_hot_columns, 0.0, scaler.mean)
        scale = np.where(one_hot_columns, 1.0, scaler.scale)
        return Scaler(mean, scale), "numeric features by the task's own training rows (StandardScaler); one-hot columns as they are"
    if standardize is False:
        return None, "none"
    if standardize == "source":
        if source_scaler is None:
            raise DataError("\"source\" needs a source task that is standardised itself (standardize = true)",
                            "standardize")
        return source_scaler, "features by the source task's scaler (its training rows' mean and scale)"
    raise DataError(f"{standardize!r} is not an option; use true, false or \"source\"", "standardize")


def _describe(base: str, options: Options, chosen_target: tuple[str, ...] | None = None) -> str:
    """`digits (classes 5, 6, 7)`, `linnerud (target Pulse)`: the dataset and what was chosen."""
    details = [f"target {', '.join(chosen_target)}"] if chosen_target else []
    if options.query:
        details.append(options.query)
    if options.classes is not None:
        details.append("classes " + ", ".join(labels.label_text(c) for c in options.classes))
    if options.n_rows is not None:
        details.append(count(options.n_rows, "row"))
    return base + (f" ({'; '.join(details)})" if details else "")


# --- the Python API ----------------------------------------------------------------------


def task_from_frame(frame: pd.DataFrame, target, sample_shape: tuple[int, ...] | None = None, **options) -> dict:
    """The fields of `Task.from_frame`'s task: errors say which option is at fault (`query: ...`).
    `sample_shape`: the feature columns are images or sequences of this shape (C order)."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}", "frame")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    name = options.get("name") or "DataFrame"
    origin = {"kind": "frame", "rows": len(frame), "columns": len(frame.columns)}
    table = Table(frame, name, None, origin, (Part(name, 0, len(frame), 0),), sample_shape=sample_shape)
    try:
        return task_parts(table, Options.of(target=target, **options), name)
    except DataError as error:
        if error.field == "standardize" and options.get("standardize") == "source":
            raise DataError("standardize: in Python, give the source task's scaler: standardize=source.scaler",
                            error.field) from None
        raise DataError(f"{error.field}: {error}" if error.field else str(error), error.field) from None


def task_from_arrays(x, y, feature_names=None, **options) -> dict:
    """The fields of `Task.from_arrays`'s task: the arrays as a frame (features `x0`, ... unless named; the label
    `y`, or targets `y0`, ...), then `task_from_frame`."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (2, 3, 4):
        raise DataError(f"x: shape {x.shape}; give (rows, features), (rows, length, channels) or (rows, height, "
                        "width, channels)", "x")
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise DataError(f"y: shape {y.shape}; give one label (or row of targets) per row of x ({len(x)})", "y")
    if x.ndim > 2:  # images or sequences: their values are the features, in C order
        if feature_names is not None:
            raise DataError("feature_names: images and sequences have no feature names; leave it out", "feature_names")
        frame, sample_shape = read.pixel_frame(x), tuple(int(n) for n in x.shape[1:])
    else:
        names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(x.shape[1])]
        if len(names) != x.shape[1]:
            raise DataError(f"feature_names: {len(names)} names for {x.shape[1]} features", "feature_names")
        frame, sample_shape = pd.DataFrame(x, columns=names), None
    target = ["y"] if y.ndim == 1 else [f"y{i}" for i in range(y.shape[1])]
    if y.ndim == 1:
        frame["y"] = y
    else:
        for index, column in enumerate(target):
            frame[column] = y[:, index]
    options.setdefault("name", "arrays")
    return task_from_frame(frame, target[0] if len(target) == 1 else target, sample_shape=sample_shape, **options)
