"""Reading a dataset into a table: files (CSV, Parquet, NPZ), scikit-learn's bundled
datasets and the generators (`make_blobs`, `make_regression`).

A `Table` is a DataFrame with the dataset's default target column(s) and a record of its
origin (file and SHA-256, or dataset name). Rows keep their position in the file as the
frame's index, so a message about a row can say which line it was. Nothing here decides
which rows or columns a task uses: that is `select`, `split` and `build`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types

from transferlab.errors import DataError
from transferlab.words import count

FILE_KINDS = ("csv", "parquet", "npz")
SKLEARN_CLASSIFICATION = ("iris", "digits", "wine", "breast_cancer")
SKLEARN_REGRESSION = ("diabetes", "linnerud")
SKLEARN_DATASETS = SKLEARN_CLASSIFICATION + SKLEARN_REGRESSION


@dataclass(frozen=True)
class Part:
    """One file's rows within a table: `first` is the index of its first row."""

    name: str
    first: int
    rows: int
    header_lines: int  # lines before the first data row (a CSV's header), 0 if rows are not lines


@dataclass
class Table:
    """A dataset as read: the frame, the default target column(s), where it came from.
    `parts` holds `train`/`test` per row when the data came as two files."""

    frame: pd.DataFrame
    name: str
    target: tuple[str, ...] | None = None
    origin: dict = field(default_factory=dict)
    files: tuple[Part, ...] = ()
    parts: pd.Series | None = None
    sample_shape: tuple[int, ...] | None = None  # images: the shape of a row's features (their columns, in C order)

    def rows(self, index) -> Table:
        """The table restricted to `index` (labels of `frame.index`), in that order."""
        parts = None if self.parts is None else self.parts.loc[index]
        return Table(self.frame.loc[index], self.name, self.target, self.origin, self.files, parts, self.sample_shape)

    def where(self, index) -> str:
        """A row named as the user would find it: `line 7 of data.csv`, or `row 12 of digits`."""
        index = int(index)
        for part in self.files:
            if part.first <= index < part.first + part.rows:
                position = index - part.first
                if part.header_lines:
                    return f"line {position + part.header_lines + 1} of {part.name}"
                return f"row {position + 1} of {part.name}"
        return f"row {index + 1} of {self.name}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_file(kind: str, path: str | Path, field_name: str = "path", x_key: str = "x", y_key: str = "y",
              csv_options: dict | None = None) -> Table:
    """One data file as a table (errors name the file and say what to do). `csv_options`
    are the `read_csv` options that say how a CSV file writes numbers: `decimal` and
    `thousands` (`na_values` and `parse_dates` apply to every kind: `prepare`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found (a relative path is read from the study file's folder)", field_name)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the path of a {kind} file", field_name)
    try:
        if kind == "csv":
            frame, header = _read_csv(path, csv_options or {}), 1
        elif kind == "parquet":
            frame, header = pd.read_parquet(path), 0
        else:
            frame, header = _read_npz(path, x_key, y_key), 0
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text ({first_bad_byte(path)}); save the file as UTF-8", field_name) from None
    except (OSError, ValueError, ImportError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: cannot read it as {kind} ({reason}); check the file and its kind", field_name) from None
    shape = frame.attrs.get("sample_shape")
    if frame.empty or not len(frame.columns):
        raise DataError(f"{path}: the file holds no data rows; give a file with a header and rows", field_name)
    frame = frame.reset_index(drop=True)
    frame.columns = [str(column) for column in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: column {duplicated[0]!r} appears twice; give every column its own name", field_name)
    origin = {"kind": kind, "file": path.name, "path": str(path.resolve()), "sha256": file_sha256(path),
              "rows": len(frame), "columns": len(frame.columns)}
    target = None
    if kind == "npz":  # its label is `y`, or its targets `y0`, `y1`, ...
        target = ("y",) if "y" in frame.columns else tuple(c for c in frame.columns if c[:1] == "y" and c[1:].isdigit())
        origin.update({"sample_shape": list(shape)} if shape else {})
    return Table(frame, path.name, target, origin, (Part(path.name, 0, len(frame), header),), sample_shape=shape)


def pixel_frame(x: np.ndarray) -> pd.DataFrame:
    """Rows of features as columns `x0`, `x1`, ...: an image's or a sequence's values in C
    order (channels last), its shape kept in `frame.attrs["sample_shape"]`."""
    flat = x.reshape(len(x), -1)
    frame = pd.DataFrame(flat, columns=[f"x{i}" for i in range(flat.shape[1])])
    if x.ndim > 2:
        frame.attrs["sample_shape"] = tuple(int(n) for n in x.shape[1:])
    return frame


SEPARATORS = (";", "\t", "|")  # tried when a comma finds only one column


def _read_csv(path: Path, options: dict) -> pd.DataFrame:
    """A CSV file; a file separated by semicolons, tabs or bars (one column when read with
    commas, its header holding the separator) is read with that separator. Duplicate
    column names are refused (pandas would rename them `a.1` and use both)."""
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v is not None}
    try:
        frame = pd.read_csv(path, skipinitialspace=True, **options)
        separator = ","
        if len(frame.columns) == 1:
            found = next((sep for sep in SEPARATORS if sep in str(frame.columns[0])), None)
            if found is not None:
                separator = found
                frame = pd.read_csv(path, sep=separator, skipinitialspace=True, **options)
        _check_header(path, pd.read_csv(path, sep=separator, skipinitialspace=True, nrows=1, header=None))
        return frame
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; give a CSV file with a header line and rows", "path") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: not a well-formed CSV file ({' '.join(str(error).split())})", "path") from None


def _check_header(path: Path, first_line: pd.DataFrame) -> None:
    names = [str(name).strip() for name in first_line.iloc[0].tolist()] if len(first_line) else []
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header; give every column its own name",
                            "path")
        seen.add(name)


def first_bad_byte(path: Path) -> str:
    """`byte 0xe9 on line 2`: where a file stops being UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return f"byte {data[error.start]:#04x} on line {line}"
    return "a byte that is not UTF-8"


def _read_npz(path: Path, x_key: str, y_key: str) -> pd.DataFrame:
    """`x` (rows, features) and `y` (one label per row, or (rows, targets)) of an `.npz`
    archive; object arrays are refused (they would need unpickling)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise DataError(f"{path}: holds a pickled object array; save plain numeric or string arrays", "path") from None
        raise
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: a .npy array, not an .npz archive; save x and y with numpy.savez", "path")
    with archive:
        for key, option in ((x_key, "x_key"), (y_key, "y_key")):
            if key not in archive.files:
                raise DataError(
                    f"{path}: has no array {key!r} (its arrays: {', '.join(archive.files) or 'none'}); "
                    "name them with x_key and y_key", option)
        try:
            x, y = archive[x_key], archive[y_key]
        except ValueError:
            raise DataError(f"{path}: holds a pickled object array; save plain numeric or string arrays", "path") from None
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{path}: array {x_key!r} has shape {x.shape}; it must be (rows, features), (rows, length, "
                        "channels) or (rows, height, width, channels) (give a grayscale image a channel axis of 1)",
                        "x_key")
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise DataError(f"{path}: array {y_key!r} has shape {y.shape}; give one label (or target row) per row "
                        f"of {x_key!r} ({count(len(x), 'row')})", "y_key")
    if x.ndim > 2 and not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: array {x_key!r} holds {x.dtype} values; images and sequences must be numbers",
                        "x_key")
    frame = pixel_frame(x)
    if y.ndim == 1:
        frame["y"] = y
    else:
        for column in range(y.shape[1]):
            frame[f"y{column}"] = y[:, column]
    return frame


def read_pair(kind: str, train_path: Path, test_path: Path, **keys) -> Table:
    """Separate train and test files as one table whose `parts` says which row is which."""
    train = read_file(kind, train_path, "train_path", **keys)
    test = read_file(kind, test_path, "test_path", **keys)
    if list(train.frame.columns) != list(test.frame.columns):
        missing = [c for c in train.frame.columns if c not in test.frame.columns]
        extra = [c for c in test.frame.columns if c not in train.frame.columns]
        detail = (f"missing {missing}" if missing else "") + (" and " if missing and extra else "") + (
            f"extra {extra}" if extra else "") or "their order differs"
        raise DataError(f"{test_path}: its columns differ from {train_path.name}'s ({detail}); "
                        "give both files the same columns", "test_path")
    frame = pd.concat([train.frame, test.frame], ignore_index=True)
    parts = pd.Series(["train"] * len(train.frame) + ["test"] * len(test.frame), index=frame.index)
    first = train.files[0]
    files = (first, Part(test.files[0].name, len(train.frame), len(test.frame), test.files[0].header_lines))
    if train.sample_shape != test.sample_shape:
        raise DataError(f"{test_path}: its rows have shape {test.sample_shape or (len(test.frame.columns),)}, "
                        f"{train_path.name}'s {train.sample_shape}; give both files rows of one shape", "test_path")
    origin = {"kind": kind, "train": train.origin, "test": test.origin, "rows": len(frame), "columns": len(frame.columns)}
    return Table(frame, f"{train.name} + {test.name}", train.target, origin, files, parts, train.sample_shape)


IMAGE_DATASETS = {"digits": (8, 8, 1)}  # bundled sets whose rows are images, and their shape


def load_sklearn(name: str, shape: str = "table") -> Table:
    """One of the datasets scikit-learn ships (no download). Classification labels keep
    scikit-learn's names and order (`setosa`, ...) as an ordered categorical column.
    `shape = "image"` reads digits' 64 pixels as 8×8×1 images."""
    if shape == "image" and name not in IMAGE_DATASETS:
        raise DataError(f"{name}'s rows are not images; shape = \"image\" works with "
                        f"{', '.join(IMAGE_DATASETS)}", "shape")
    from sklearn import datasets

    if name not in SKLEARN_DATASETS:
        raise DataError(f"{name!r} is not a bundled scikit-learn dataset; use one of {', '.join(SKLEARN_DATASETS)}",
                        "dataset")
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    target_columns = list(bunch.target.columns) if isinstance(bunch.target, pd.DataFrame) else [bunch.target.name]
    if name in SKLEARN_CLASSIFICATION:
        names = [str(n) if not isinstance(n, (int, np.integer)) else int(n) for n in bunch.target_names]
        codes = frame[target_columns[0]].to_numpy()
        frame[target_columns[0]] = pd.Categorical.from_codes(codes, categories=names, ordered=True)
    origin = {"kind": "sklearn", "dataset": name, "loader": f"sklearn.datasets.load_{name}",
              "rows": len(frame), "columns": len(frame.columns)}
    sample_shape = IMAGE_DATASETS[name] if shape == "image" else None
    if sample_shape:
        origin["sample_shape"] = list(sample_shape)
    return Table(frame, name, tuple(target_columns), origin, (Part(name, 0, len(frame), 0),), sample_shape=sample_shape)


def prepare(table: Table, na_values=None, parse_dates=None) -> Table:
    """`na_values` (cells equal to one of them become missing, as `read_csv(na_values=...)`
    marks them: by text, and by value in a column of numbers; a column of text that is
    numbers once they are gone becomes numbers) and `parse_dates` (columns turned into
    dates, as `pd.to_datetime` parses them), for every kind of table."""
    if not na_values and not parse_dates:
        return table
    frame = table.frame.copy()
    for column in frame.columns if na_values else ():
        values = frame[column]
        hit = _placeholders(values, na_values)
        if hit.any():
            kept = (values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values).mask(hit)
            numbers = pd.to_numeric(kept, errors="coerce")
            frame[column] = numbers if numbers.notna().sum() == kept.notna().sum() else kept
    for column in parse_dates or ():
        if column not in frame.columns:
            raise DataError(f"column {column!r} is not in {table.name} (its columns: "
                            f"{', '.join(map(str, frame.columns))})", "parse_dates")
        try:
            frame[column] = pd.to_datetime(frame[column])
        except (ValueError, TypeError) as error:
            raise DataError(f"column {column!r} does not parse as dates ({' '.join(str(error).split())}); "
                            "fix the file or leave the column out of parse_dates", "parse_dates") from None
    return Table(frame, table.name, table.target, table.origin, table.files, table.parts, table.sample_shape)


def _placeholders(values: pd.Series, na_values) -> pd.Series:
    """Cells of one column that `na_values` marks missing."""
    if types.is_numeric_dtype(values) and not types.is_bool_dtype(values):
        numbers = pd.to_numeric(pd.Series(list(na_values), dtype=object), errors="coerce").dropna()
        return values.isin(numbers.astype(float).tolist())
    wanted = {str(v).strip() for v in na_values}
    return values.astype(str).str.strip().isin(wanted) & values.notna()


def generated(kind: str, params: dict) -> Table:
    """A generator's rows (`make_blobs`, `make_regression`) as a table: features `x0`, `x1`,
    ...; the label `y` (blobs) or targets `y`/`y0`, `y1`, ... (regression)."""
    from sklearn.datasets import make_blobs, make_regression

    if kind == "blobs":
        x, y = make_blobs(n_samples=params["n_samples"], centers=params["centers"], n_features=params["n_features"],
                          cluster_std=params["cluster_std"], random_state=params["seed"])
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        frame["y"] = y
        target = ("y",)
        name = "make_blobs"
    else:
        x, y = make_regression(n_samples=params["n_samples"], n_features=params["n_features"],
                               n_informative=params.get("n_informative") or params["n_features"],
                               n_targets=params["n_targets"], noise=params["noise"], random_state=params["seed"])
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        y = y.reshape(len(x), params["n_targets"])
        target = ("y",) if params["n_targets"] == 1 else tuple(f"y{i}" for i in range(params["n_targets"]))
        for index, column in enumerate(target):
            frame[column] = y[:, index]
        name = "make_regression"
    origin = {"kind": kind, "generator": f"sklearn.datasets.{name}", "params": dict(params), "rows": len(frame)}
    return Table(frame, name, target, origin, (Part(name, 0, len(frame), 0),))
