"""Tasks: the data a model is trained and judged on.

A `Task` holds train/test arrays: one-hot targets for classification, real-valued
targets for regression, with the names of its features and classes and a record of
where its rows came from. The built-in `blobs` task is the tutorial's `make_blobs`
problem, row for row; `regression` is scikit-learn's `make_regression`. Tasks from files,
DataFrames, arrays and scikit-learn's bundled datasets are made by `transferlab.data`
(`Task.from_frame`, `Task.from_arrays`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transferlab.data.labels import KINDS, one_hot  # noqa: F401  (part of this module's API)
from transferlab.data.scale import Scaler
from transferlab.errors import DataError, TaskError  # noqa: F401  (raised by Task's checks)

if TYPE_CHECKING:
    import pandas as pd

FINGERPRINT_ARRAYS = ("x_train", "y_train", "x_test", "y_test")








@dataclass(frozen=True, eq=False)
class Task:
    """Train/test arrays of one problem.

    `x_*` is `(rows, features)` float32, or `(rows, *input_shape)` for images and
    sequences (`(rows, height, width, channels)`, `(rows, length, channels)`); `y_*` is
    `(rows, classes)` one-hot float32 for `kind="classification"`, `(rows, targets)`
    float32 for `kind="regression"`.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str = "classification"
    params: dict = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)
    scaler: Scaler | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TaskError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        check_task_arrays(self)
        if not self.feature_names:
            object.__setattr__(self, "feature_names", tuple(f"x{i}" for i in range(self.n_features)))
        if not self.class_names and self.kind == "classification":
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(self.n_outputs)))
        if len(self.feature_names) != self.n_features:
            raise TaskError(f"task {self.name!r}: {len(self.feature_names)} feature names for {self.n_features} features")
        if self.kind == "classification" and len(self.class_names) != self.n_outputs:
            raise TaskError(f"task {self.name!r}: {len(self.class_names)} class names for {self.n_outputs} classes")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str | list[str], **options: object) -> Task:
        """A task from a pandas DataFrame, through the pipeline a study file's data goes through.

        Parameters
        ----------
        frame : DataFrame
            The rows, one column per feature and the label (or targets).
        target : str or list of str
            The label column (or columns, for regression).
        **options
            The study file's dataset options: `features`, `drop`, `task`, `query`,
            `classes`, `n_rows`, `dropna`, `split`, `n_train`, `test_fraction`,
            `split_column`, `train`, `test`, `standardize` (also another task's `scaler`),
            `categorical` (with `categories`, another task's), `na_values`, `seed`, `name`.

        Returns
        -------
        Task
            Split, encoded and standardised; `notes` says what building it decided.

        Raises
        ------
        DataError
            An option or a value that cannot make a task; the message names the option.

        Examples
        --------
        >>> north = Task.from_frame(table, target="outcome", query="clinic == 'north'")  # doctest: +SKIP
        """
        from transferlab.data import build

        return cls(**build.task_from_frame(frame, target, **options))

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, feature_names: list[str] | None = None,
                    **options: object) -> Task:
        """A task from NumPy arrays.

        Parameters
        ----------
        x : ndarray
            `(rows, features)`, or images `(rows, height, width, channels)` or sequences
            `(rows, length, channels)` (standardised per channel by default).
        y : ndarray
            One label per row, or `(rows, targets)` for regression.
        feature_names : list of str, optional
            The features' names (default `x0`, `x1`, ...).
        **options
            As `from_frame`.

        Returns
        -------
        Task
            As `from_frame`.

        Raises
        ------
        DataError
            Arrays of the wrong shape, or an option that cannot make a task.

        Examples
        --------
        >>> task = Task.from_arrays(x, labels, test_fraction=0.25, seed=1)  # doctest: +SKIP
        """
        from transferlab.data import build

        return cls(**build.task_from_arrays(x, y, feature_names, **options))

    def fingerprint(self) -> str:
        """SHA-256 of the final arrays (dtype, shape and bytes of x and y, train and test):
        the data's identity, whatever file or code produced them."""
        digest = hashlib.sha256()
        for name in FINGERPRINT_ARRAYS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
        encoding = self.provenance.get("categorical")
        if encoding:  # which category each one-hot column stands for is part of the data's identity
            digest.update(json.dumps(encoding["categories"], sort_keys=True).encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        classes = f", classes {list(self.class_names)}" if self.kind == "classification" else ""
        inputs = (f"{self.n_features} feature{'s' if self.n_features != 1 else ''}" if len(self.input_shape) == 1
                  else "rows of shape " + "×".join(map(str, self.input_shape)))
        return (f"Task({self.provenance.get('name', self.name)!r}, {self.kind}, {len(self.x_train):,} train + "
                f"{len(self.x_test):,} test rows, {inputs}{classes})")

    @property
    def notes(self) -> list[str]:
        """What building the task decided and the user should know (printed when a study
        starts): class counts, dropped rows, how the kind was chosen, unseen categories."""
        from transferlab.data.labels import notes_of

        return notes_of(self.provenance)

    @property
    def categories(self) -> dict[str, list[str]] | None:
        """Per categorical column, the categories its one-hot columns stand for (give them
        to another task's `categories` so both have the same input columns)."""
        encoding = self.provenance.get("categorical")
        return None if not encoding else {k: list(v) for k, v in encoding["categories"].items()}

    @property
    def score(self) -> str:
        """The headline test metric as stored (`test_accuracy`, `test_r2`): its objective's."""
        from transferlab.objectives import for_kind

        return for_kind(self.kind).score_column

    @property
    def n_features(self) -> int:
        """Values per row (an image's pixels × channels)."""
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """A row's shape: `(features,)`, or `(height, width, channels)` for images."""
        return tuple(int(n) for n in self.x_train.shape[1:])

    @property
    def inputs(self) -> int | tuple[int, ...]:
        """What a model on this task takes (`Architecture.n_inputs`): the number of
        features of a flat table, else the input shape."""
        shape = self.input_shape
        return shape[0] if len(shape) == 1 else shape

    @property
    def is_image(self) -> bool:
        """Rows are images (height, width, channels)."""
        return len(self.input_shape) == 3

    @property
    def n_outputs(self) -> int:
        return int(self.y_train.shape[1])

    @property
    def labels_train(self) -> np.ndarray:
        return np.argmax(self.y_train, axis=1)

    @property
    def labels_test(self) -> np.ndarray:
        return np.argmax(self.y_test, axis=1)


def check_task_arrays(task: Task) -> None:
    """Shapes, dtypes and finiteness, named by task and array, so the engine never sees bad data."""
    for split in ("train", "test"):
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        if x.ndim not in (2, 3, 4) or y.ndim != 2:
            raise TaskError(
                f"task {task.name!r}: x_{split} must be (rows, features), (rows, length, channels) or (rows, "
                f"height, width, channels) and y_{split} 2-D (rows, columns); got shapes {x.shape} and {y.shape}"
            )
        if x.shape[0] != y.shape[0]:
            raise TaskError(
                f"task {task.name!r}: x_{split} has {x.shape[0]} rows but y_{split} has "
                f"{y.shape[0]}; give one target per row"
            )
        if x.shape[0] == 0:
            raise TaskError(f"task {task.name!r}: the {split} split is empty")
        for label, array in ((f"x_{split}", x), (f"y_{split}", y)):
            bad = ~np.isfinite(array)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise TaskError(
                    f"task {task.name!r}: {label} has a NaN or infinite value in row {row}; "
                    "clean or impute the data first"
                )
    if task.x_train.shape[1:] != task.x_test.shape[1:]:
        raise TaskError(
            f"task {task.name!r}: train rows have shape {task.x_train.shape[1:]}, test rows "
            f"{task.x_test.shape[1:]}"
        )
    if task.y_train.shape[1] != task.y_test.shape[1]:
        raise TaskError(
            f"task {task.name!r}: train has {task.y_train.shape[1]} outputs, test has "
            f"{task.y_test.shape[1]}"
        )



def blobs(
    seed: int,
    n_samples: int = 1000,
    centers: int = 3,
    n_features: int = 2,
    cluster_std: float = 2.0,
    n_train: int = 500,
    name: str | None = None,
) -> Task:
    """The tutorial's problem: `make_blobs(...)`, first `n_train` rows train, the rest test."""
    if not 0 < n_train < n_samples:
        raise TaskError(f"blobs: n_train must be between 1 and n_samples-1 ({n_samples - 1})")
    params = {"seed": seed, "n_samples": n_samples, "centers": centers, "n_features": n_features,
              "cluster_std": cluster_std, "n_train": n_train}
    return generate("blobs", params, name or f"blobs(seed={seed})")


def regression(
    seed: int,
    n_samples: int = 1000,
    n_features: int = 2,
    n_informative: int | None = None,
    n_targets: int = 1,
    noise: float = 10.0,
    n_train: int = 500,
    name: str | None = None,
) -> Task:
    """`make_regression(..., random_state=seed)`: each seed draws its own coefficients. The
    first `n_train` rows train, the rest test; targets are standardised with the train
    split's mean and standard deviation, so one learning rate serves every seed."""
    if not 0 < n_train < n_samples:
        raise TaskError(f"regression: n_train must be between 1 and n_samples-1 ({n_samples - 1})")
    params = {"seed": seed, "n_samples": n_samples, "n_features": n_features,
              "n_informative": n_informative or n_features, "n_targets": n_targets, "noise": noise, "n_train": n_train}
    return generate("regression", params, name or f"regression(seed={seed})")


GENERATORS = ("blobs", "regression", "shapes")


def generate(kind: str, params: dict, name: str, source_scaler: Scaler | None = None, **options) -> Task:
    """A generated task by its kind (`blobs`, `regression`) and the generator's arguments;
    `options` are dataset options (`transferlab.data.build.Options`), by default the
    tutorial's: the first `n_train` rows train, features as generated."""
    from transferlab.data import build, images, read

    options = {"split": "first", "standardize": False, **options}
    if options.get("test_fraction") is None:
        options.setdefault("n_train", params["n_train"])
    table = images.generated_shapes(params) if kind == "shapes" else read.generated(kind, params)
    task = Task(**build.task_parts(table, build.Options.of(**options), name, source_scaler, description=name))
    object.__setattr__(task, "params", dict(params))
    return task
